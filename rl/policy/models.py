"""Policy models: a local character tokenizer, tiny test models, and base + LoRA policies.

Nothing here downloads: :func:`train_char_tokenizer` and :func:`build_tiny_model` write a
tokenizer and a randomly initialised model to a directory, and every run (tests included) loads
models back through ``from_pretrained(path)``, exactly as a real run loads a hub snapshot.

Rotary position embeddings (``arch="qwen2"`` or ``"llama"``) are the default because the
policy generates with *left* padding: with absolute position embeddings (GPT-2) the positions
that ``generate()`` derives from the attention mask and those of a plain forward pass differ,
and so do the log probabilities (docs/rl.md). rl.policy.rollouts and rl.train.ppo pass
``position_ids`` explicitly anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from rl.config import LoraSpec

__all__ = [
    "LoraSpec",
    "SPECIAL_TOKENS",
    "train_char_tokenizer",
    "build_tiny_model",
    "default_target_modules",
    "load_tokenizer",
    "load_policy",
    "adapter_base",
    "quiet_gradient_checkpointing_warning",
    "free_cpu_threads",
    "pick_device",
    "pick_dtype",
]

#: special tokens of the character tokenizer, in id order 0..3
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def train_char_tokenizer(texts: list[str], out_dir, *, extra_chars: str = ""):
    """Build a character-level tokenizer from ``texts`` (local, no download) and save it to ``out_dir``.

    The vocabulary is ``<pad> <bos> <eos> <unk>`` (ids 0-3) followed by every distinct character
    of ``texts`` and ``extra_chars`` in sorted order; unseen characters map to ``<unk>``. A BPE
    model without merges splits text into single characters (spaces and newlines included, no
    pre-tokenizer), and ``decoders.Fuse()`` joins them back without separators. Padding is on the
    left (for generation); no special tokens are added when encoding.

    Returns
    -------
    transformers.PreTrainedTokenizerFast, also saved in ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str):
        raise TypeError("train_char_tokenizer: expected a list of strings, got one str")
    chars = sorted(set("".join(texts)) | set(extra_chars))
    if not chars:
        raise ValueError("train_char_tokenizer: the texts contain no characters")
    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.add_special_tokens(specials)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **SPECIAL_TOKENS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(
    out_dir,
    tokenizer,
    *,
    arch: str = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position: int = 512,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Randomly initialise a small causal LM for ``tokenizer`` and save it (with the tokenizer) to ``out_dir``.

    ``arch``: ``"qwen2"`` (default) or ``"llama"`` (rotary positions), or ``"gpt2"`` (absolute
    positions; only to reproduce the left-padding pitfall). ``initializer_range`` is the init std
    of the weights: at the Hugging Face default 0.02 a tiny model's logits span well under one nat
    (|h| ~ sqrt(hidden) after the final RMSNorm times |e| ~ 0.02 sqrt(hidden)), and since LoRA does
    not touch the (tied) embedding or the norms, a LoRA policy on an untrained tiny model can barely
    sharpen its distribution; tests that train a LoRA policy from scratch use 0.2. Load it back
    with ``AutoModelForCausalLM.from_pretrained(out_dir)`` or :func:`load_policy`.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    if hidden_size % num_heads:
        raise ValueError(f"build_tiny_model: hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
    ids = dict(
        vocab_size=len(tokenizer),
        initializer_range=initializer_range,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if arch in ("qwen2", "llama"):
        from transformers import LlamaConfig, Qwen2Config

        cls = Qwen2Config if arch == "qwen2" else LlamaConfig
        config = cls(
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_position,
            tie_word_embeddings=True,
            **ids,
        )
    elif arch == "gpt2":
        from transformers import GPT2Config

        config = GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_position, **ids)
    else:
        raise ValueError(f"build_tiny_model: arch must be 'qwen2', 'llama' or 'gpt2', got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if k.endswith("token_id")})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


_TARGETS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_bigcode": ("c_attn", "c_proj", "c_fc"),
}


def default_target_modules(model_type: str) -> tuple[str, ...] | str:
    """LoRA target modules by ``config.model_type``: all attention + MLP projections; else ``"all-linear"``."""
    return _TARGETS.get(model_type, "all-linear")


def pick_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available (``cuda:$LOCAL_RANK`` under ``accelerate launch``), else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """``dtype`` if given; float32 on CPU; bfloat16 on a GPU that supports it, else float16."""
    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(name_or_path):
    """The tokenizer of a model directory, set up for generation: left padding, a pad token.

    A directory whose ``tokenizer_config.json`` names the generic ``TokenizersBackend`` /
    ``PreTrainedTokenizerFast`` class (our character tokenizer) is loaded with that class:
    transformers 5.23's ``AutoTokenizer`` forces ``Qwen2Tokenizer`` on every ``model_type=qwen2``
    directory (``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS``), which swaps in a byte-level
    pre-tokenizer and decoder and silently breaks a character vocabulary.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = Path(name_or_path) / "tokenizer_config.json"
    cls_name = json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class") if cfg.is_file() else None
    if cls_name in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        tok = PreTrainedTokenizerFast.from_pretrained(name_or_path)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad nor an eos token; add a pad token")
        tok.pad_token = tok.eos_token
    return tok


def adapter_base(adapter_path) -> str | None:
    """The base model an adapter directory names (``base_model_name_or_path`` of its ``adapter_config.json``);
    FileNotFoundError (one line) when the directory holds no adapter."""
    cfg = Path(adapter_path) / "adapter_config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{adapter_path}: no adapter_config.json (not a peft adapter directory)")
    return json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")


_adapter_base = adapter_base  # the earlier private name


@contextlib.contextmanager
def quiet_gradient_checkpointing_warning() -> Iterator[None]:
    """Hide exactly transformers' FutureWarning "`is_gradient_checkpointing` is deprecated", which peft
    (``PeftModel.__init__``: ``getattr(model, "is_gradient_checkpointing", True)``) triggers on every
    model it wraps; our code never reads the property. Every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def load_policy(name_or_path, lora: LoraSpec | None, device=None, adapter_path=None, dtype=None):
    """Load the base model and tokenizer, and wrap the model with a (new or saved) LoRA adapter.

    Parameters
    ----------
    name_or_path : a model directory (or hub id, offline cache only).
    lora : a new trainable LoRA adapter with this spec; ignored when ``adapter_path`` is given.
    device : default CUDA when available, else CPU.
    adapter_path : a directory written by ``PeftModel.save_pretrained`` (or
        :meth:`rl.train.ppo.PPOTrainer.save`); loaded trainable.
    dtype : default float32 on CPU, bfloat16/float16 on GPU (LoRA weights stay float32, peft's
        ``autocast_adapter_dtype``).

    Returns
    -------
    (model, tokenizer): a ``peft.PeftModel`` (or the plain base model when ``lora`` and
    ``adapter_path`` are both None), in eval mode, on ``device``; the tokenizer pads on the left.
    """
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if name_or_path is None:
        if adapter_path is None:
            raise ValueError("load_policy: give a model path (or an adapter_path whose config names the base model)")
        name_or_path = _adapter_base(adapter_path)
    tokenizer = load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dt)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if adapter_path is not None:
        from peft import PeftModel

        _adapter_base(adapter_path)  # a clear error if it is not an adapter directory
        with quiet_gradient_checkpointing_warning():
            model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        with quiet_gradient_checkpointing_warning():
            model = get_peft_model(model, LoraConfig(**lora.peft_kwargs(default_target_modules(model.config.model_type))))
    model.to(dev)
    model.eval()
    return model, tokenizer


def free_cpu_threads(cpus: int | None = None, load: float | None = None) -> int:
    """Torch threads for a CPU run: the cores this process may use minus the runnable load already on
    them (1-minute load average, rounded), at least 1. More threads than free cores make every step
    wait on descheduled OpenMP workers (a PPO step of 1.4 s took 36.6 s next to another job)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - int(load + 0.5)))


def _cpu_threads() -> int:
    """Set torch's CPU threads: ``RL_TORCH_THREADS`` (a number, or ``auto``: :func:`free_cpu_threads`,
    the default); on a GPU nothing is changed. Results do not depend on the thread count (checked for
    PPO on CPU: bitwise-equal adapters with 1 and 2 threads). Returns the thread count."""
    if torch.cuda.is_available():
        return torch.get_num_threads()
    raw = os.environ.get("RL_TORCH_THREADS", "auto").strip()
    if raw == "auto":
        n = free_cpu_threads()
    else:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"RL_TORCH_THREADS: expected a positive integer or 'auto', got {raw!r}") from None
        if n < 1:
            raise ValueError(f"RL_TORCH_THREADS: expected a positive integer or 'auto', got {raw!r}")
    torch.set_num_threads(n)
    return n
