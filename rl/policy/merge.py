"""``rl merge``: fold a LoRA adapter into its base model and save a plain model directory.

    rl merge --model BASE --adapter CKPT --out DIR      # --model: default the adapter's base

``CKPT`` is any peft adapter directory: the ``--out`` of ``rl train``, a checkpoint of ``rl loop``
(``OUT/checkpoints/round_NNN``). The merged weights are ``W + (alpha / r) B A`` (peft's
``merge_and_unload``), so the model computes what base + adapter computes, with no peft at load
time: ``AutoModelForCausalLM.from_pretrained(DIR)`` and ``rl evaluate --model DIR`` load it, and the
tokenizer is saved beside it. Loaded and saved in float32 unless ``--dtype`` says otherwise. The
directory is written atomically (docs/cli.md, "Output directories").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crowdstat.io.atomic import atomic_write_dir, check_output_dir

__all__ = ["merge_adapter", "add_arguments", "run"]

_TOOL = "rl merge"


def merge_adapter(adapter, out, model=None, *, dtype: str = "float32", force: bool = False) -> Path:
    """Merge the LoRA adapter in ``adapter`` into ``model`` (default: the adapter's base) and save the
    plain model and its tokenizer to ``out`` atomically. Returns the output directory."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rl.policy.models import adapter_base, load_tokenizer, quiet_gradient_checkpointing_warning

    base = adapter_base(adapter)  # a one-line error for a directory without adapter_config.json
    model = model or base
    if not model:
        raise ValueError(f"{adapter}: adapter_config.json names no base model; pass --model")
    check_output_dir(out, tool=_TOOL, force=force, inputs=[adapter, model])
    tok = load_tokenizer(model)
    plain = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
    with quiet_gradient_checkpointing_warning():
        merged = PeftModel.from_pretrained(plain, str(adapter)).merge_and_unload()
    merged.eval()

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_write_dir(out, write, tool=_TOOL, force=force, inputs=[adapter, model])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="LoRA adapter directory (rl train --out, rl loop checkpoints/round_NNN)")
    p.add_argument("--model", default=None, help="base model (default: the adapter's base_model_name_or_path)")
    p.add_argument("--out", required=True, type=Path, help="output model directory (written atomically)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights dtype (default float32)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out that is not an earlier output of rl merge")


def run(args: argparse.Namespace) -> int:
    out = merge_adapter(args.adapter, args.out, args.model, dtype=args.dtype, force=args.force)
    print(f"rl merge: {args.adapter} merged into {args.model or 'its base'} -> {out}")
    return 0
