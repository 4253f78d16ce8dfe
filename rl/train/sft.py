"""Supervised warm start of a tiny code model on the synthetic benchmark (``rl warmstart``).

A character-level tokenizer is trained locally on the benchmark's texts and a tiny
rotary-position model (Qwen2 config: no absolute position embeddings, so left padding in
generation and log-prob passes agree) is built from a config by :mod:`rl.policy.models`. It is
trained with next-token cross-entropy on the completions only (the prompt is context),
on a mix of correct and systematically buggy solutions (:meth:`SyntheticBenchmark.sft_texts`),
so the warm-started policy is partly right and partly wrong in the ways a crowd can flag.

The output directory holds the model and tokenizer (``from_pretrained(DIR)`` works for both)
and ``warmstart.json`` (settings, loss curve, timing, and ``heldout``: the held-out pass@k). It is
written atomically: into a temporary sibling, renamed at the end.

``heldout`` is the evaluation ``rl loop`` runs at round 0 on this model (``eval_n`` samples per
held-out problem, by default 10, with the loop's default evaluation sampler: temperature 0.8, full
distribution, 64 new tokens, seed 10000 + ``seed``): ``{"n", "n_problems", "pass@1", "pass@10"
(when eval_n >= 10), "per_template"}``, or None with ``eval_n = 0``. For the same seed and benchmark
it equals the loop's round-0 numbers.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from crowdstat.io.atomic import atomic_write_dir, atomic_write_json

__all__ = ["SFTConfig", "warm_start", "heldout_pass", "add_arguments", "run"]


@dataclass
class SFTConfig:
    """Warm-start settings.

    steps, batch_size, lr, weight_decay: AdamW on completion tokens (linear warmup 5 %, cosine decay to 10 %).
    hidden_size, num_layers, num_heads: the tiny model (Qwen2 config, rotary positions), trained in
    full (every weight: the model starts from random, so there is no base for a LoRA adapter).
    bench_seed, n_train_per_template, hold_single: the synthetic benchmark (rl.tasks.synthetic.make_benchmark;
    hold_single=True keeps a quarter of the values of one-constant templates out of the warm start).
    seed: torch and data-order seed. threads: torch CPU threads.
    eval_n: samples per held-out problem of the final evaluation (0 = no evaluation; module docstring).

    The defaults are the warm start of the study (docs/rl_study.md): a policy that is partly right,
    leaving headroom for RL. How they were chosen, with the measurements: docs/rl.md, "The warm start".
    """

    steps: int = 400
    batch_size: int = 48
    lr: float = 3e-3
    weight_decay: float = 0.01
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    bench_seed: int = 0
    n_train_per_template: int = 200
    seed: int = 0
    threads: int = 2
    hold_single: bool = False
    eval_n: int = 10

    def __post_init__(self) -> None:
        import math

        for name in ("steps", "batch_size", "hidden_size", "num_layers", "num_heads", "n_train_per_template", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SFTConfig.{name}: expected an integer >= 1, got {v!r}")
        if isinstance(self.eval_n, bool) or not isinstance(self.eval_n, int) or self.eval_n < 0:
            raise ValueError(f"SFTConfig.eval_n: expected an integer >= 0 (0 = no evaluation), got {self.eval_n!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"SFTConfig: hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise ValueError(f"SFTConfig.{name}: expected a finite number {'> 0' if name == 'lr' else '>= 0'}, got {v!r}")


def all_texts(bench) -> list[str]:
    """Every text the tokenizer must cover: prompts, canonical and buggy solutions."""
    texts = []
    for p in bench.train + bench.heldout:
        texts.append(p.prompt + p.canonical_solution)
        texts.extend(bench.buggy_completions(p))
    return texts


def heldout_pass(model, tok, bench, cfg: SFTConfig, progress: bool = False) -> dict | None:
    """The held-out pass@k of ``model`` as ``rl loop`` evaluates it at round 0 (module docstring); None when eval_n is 0."""
    if cfg.eval_n == 0:
        return None
    from rl.config import LoopConfig
    from rl.execution.passk import pass_at_k
    from rl.execution.sandbox import Sandbox
    from rl.policy.sampling import sample
    from rl.tasks.synthetic import template_of

    sc = LoopConfig(seed=cfg.seed).eval_sampling()  # the loop's round-0 sampler for this seed
    problems = bench.heldout
    samples = sample(model, tok, [p.prompt for p in problems], cfg.eval_n, sc, progress=progress)
    jobs = [problems[s.prompt_index].job(s.completion) for s in samples]
    with Sandbox(workers=2) as sb:
        results = sb.map(jobs, progress=progress)
    per: dict[str, list[bool]] = {p.task_id: [] for p in problems}
    for s, r in zip(samples, results):
        per[problems[s.prompt_index].task_id].append(r.status == "passed")
    groups: dict[str, dict[str, list[bool]]] = {}
    for tid, passed in per.items():
        groups.setdefault(template_of(tid), {})[tid] = passed
    ks = (1, 10)
    return {
        "n": cfg.eval_n,
        "n_problems": len(problems),
        **pass_at_k(per, ks=ks),
        "per_template": {g: pass_at_k(v, ks=ks) for g, v in sorted(groups.items())},
    }


def warm_start(out: str | Path, cfg: SFTConfig | None = None, progress: bool = True) -> dict:
    """Train the tiny model and write it (with its tokenizer) to ``out``. Returns the summary."""
    import torch
    from tqdm.auto import tqdm

    from rl.policy.models import build_tiny_model, train_char_tokenizer
    from rl.tasks.synthetic import make_benchmark

    cfg = cfg or SFTConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    result: dict = {}

    def write(tmp: Path) -> None:  # the model directory appears only when complete
        bench = make_benchmark(seed=cfg.bench_seed, n_train_per_template=cfg.n_train_per_template, hold_single=cfg.hold_single)
        tok = train_char_tokenizer(all_texts(bench), tmp)
        path = build_tiny_model(tmp, tok, arch="qwen2", hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.train()
        eos = tok.eos_token
        if eos is None:
            raise ValueError(f"the tokenizer written to {tmp} has no eos_token; the warm start needs one to stop")
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        data = bench.sft_texts(cfg.steps * cfg.batch_size, seed=cfg.seed, eos=eos)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, cfg.steps // 20)

        def lr_at(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            frac = (step - warm) / max(1, cfg.steps - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        losses = []
        bar = tqdm(range(cfg.steps), desc="warm start", disable=not progress)
        for step in bar:
            batch = data[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            ids, labels = [], []
            for prompt, completion, _ in batch:
                p = tok(prompt, add_special_tokens=False)["input_ids"]
                c = tok(completion, add_special_tokens=False)["input_ids"]
                ids.append(p + c)
                labels.append([-100] * len(p) + c)
            n = max(map(len, ids))
            input_ids = torch.tensor([x + [pad_id] * (n - len(x)) for x in ids])
            lab = torch.tensor([y + [-100] * (n - len(y)) for y in labels])
            mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids])
            loss = model(input_ids=input_ids, attention_mask=mask, labels=lab).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        with torch.no_grad():
            heldout = heldout_pass(model, tok, bench, cfg, progress=progress)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        summary = {
            "config": asdict(cfg),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "loss_first": losses[0],
            "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
            "losses": losses,
            "seconds": time.time() - t0,
            "frac_buggy_examples": sum(not ok for _, _, ok in data) / len(data),
            "heldout": heldout,
        }
        atomic_write_json(tmp / "warmstart.json", summary)
        result["summary"] = summary

    atomic_write_dir(out, write)
    return result["summary"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SFTConfig()
    p.add_argument("--out", required=True, help="output model directory (written atomically)")
    for name, val in asdict(d).items():
        if isinstance(val, bool):
            p.add_argument(f"--{name.replace('_', '-')}", action="store_true", help="(flag)")
        else:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val, help=f"(default {val})")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    cfg = SFTConfig(**{k: getattr(args, k) for k in asdict(SFTConfig())})
    s = warm_start(args.out, cfg, progress=not args.no_progress)
    ev = s["heldout"]
    passes = "" if ev is None else f"held-out pass@1 {ev['pass@1']:.3f}" + (f", pass@10 {ev['pass@10']:.3f}" if "pass@10" in ev else "")
    passes += "" if ev is None else f" ({ev['n_problems']} problems x {ev['n']} samples), "
    print(
        f"warm start: {s['n_parameters']} parameters, loss {s['loss_first']:.3f} -> {s['loss_last10']:.3f}, {passes}"
        f"{s['seconds']:.0f} s -> {args.out}"
    )
    return 0
