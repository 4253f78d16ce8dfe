"""The comparison trainer: TRL 1.16 ``GRPOTrainer`` with LoRA and a crowd-backed reward (``rl grpo``).

For every generation batch, the reward function runs each completion in the sandbox and gets its
reward from :class:`rl.crowd.pipeline.CrowdRewarder`, the same pipeline as the PPO loop:

- a crowdstat method (``crowdstat.estimators.METHODS``: majority, sequential, proximal, ...): a
  simulated population votes on the completion's lines, and ``python -m crowdstat fit`` (a
  subprocess: JAX never enters this process) aggregates the votes of all batches so far into
  ``rewards.jsonl``; the completion's reward is its ``reward`` field (s = c / k), or
  ``reward_soft`` with ``--reward-field reward_soft``. One fit per generation batch, not per
  completion (the subprocess start-up dominates a fit): the cheaper equivalent that still goes
  through crowdstat's CLI and reward file.
- ``true_lines``: the share of correct completion lines; ``execution``: the share of tests passed.

With ``--advantages scalar`` (the default) GRPO sees one scalar per completion (no value head), so
line rewards enter only through s. With ``--advantages lines`` the same scalar reward function
also hands its line posteriors to :class:`rl.train.grpo_lines.LineGRPOTrainer`, which gives each
token its line's group-baselined advantage (the math is in :mod:`rl.train.grpo_lines`). The
adapter is built from the same :class:`rl.config.LoraSpec` as PPO's (``--lora-r``, ``--lora-alpha``, ...).

Device and dtype (:func:`resolve_precision`): ``--device auto`` trains on the CUDA GPU when one is
visible, else on the CPU (``use_cpu`` only then, or with ``--device cpu``); ``--dtype auto`` is
bfloat16 on a GPU that supports it, else float32. bfloat16/float16 load the base weights in that
dtype and turn on TRL's ``bf16``/``fp16`` mixed precision; peft keeps the LoRA weights in float32.
float16 needs a GPU.

Other settings: ``GRPOConfig`` defaults to gradient checkpointing and lr 1e-6; here
``activation_checkpointing=False`` (transformers 5's name; the old ``gradient_checkpointing`` warns),
lr 1e-4, constant schedule, ``beta=0`` (no reference model), ``loss_type="dr_grpo"``,
``scale_rewards="none"`` (``--scale-rewards group`` divides by the group std as GRPO does),
``report_to="none"``, ``save_strategy="no"``. TRL samples with its own generate call, from the full
distribution (``top_k=0, top_p=1``) as :mod:`rl.policy.sampling` does by default. The model has
rotary positions (Qwen2 config), so TRL's log-prob pass, which passes no
position ids, agrees with ``generate()`` under left padding.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crowdstat.io.atomic import atomic_write_json
from rl.config import LoraSpec, add_dataclass_arguments, dataclass_from_args
from rl.config.paths import check_model, check_output
from rl.train.grpo_lines import LINE_REWARDS, SCALES

__all__ = [
    "DEVICES",
    "DTYPES",
    "ADVANTAGES",
    "GRPOSettings",
    "resolve_precision",
    "crowd_reward_func",
    "grpo_config",
    "train_grpo",
    "add_arguments",
    "settings_from_args",
    "run",
]

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: ``scalar``: TRL's one advantage per completion; ``lines``: per-line advantages (rl.train.grpo_lines)
ADVANTAGES = ("scalar", "lines")


@dataclass
class GRPOSettings:
    """``rl grpo`` settings.

    steps: optimizer steps. batch_size: completions per step (= prompts x num_generations).
    num_generations: completions per prompt (the GRPO group). max_completion_length: tokens.
    lr: learning rate of the LoRA weights. lora: the adapter (:class:`rl.config.LoraSpec`).
    reward_source: a crowdstat method, ``true_lines`` or ``execution``. reward_field: ``reward``
    or ``reward_soft``. honeypot_fraction: programs whose line truth is revealed to crowdstat.
    device, dtype: see :func:`resolve_precision`. advantages: ``scalar`` or ``lines``.
    line_reward: f(P) of a line for ``lines`` (``auto``: ``hard`` for ``reward``, ``posterior``
    for ``reward_soft``). scale_rewards: TRL's ``none``, ``group`` or ``batch``.
    """

    steps: int = 20
    batch_size: int = 64
    num_generations: int = 8
    max_completion_length: int = 64
    temperature: float = 1.0
    lr: float = 1e-4
    lora: LoraSpec = field(default_factory=LoraSpec)
    reward_source: str = "sequential"
    reward_field: str = "reward"
    honeypot_fraction: float = 0.1
    crowd_args: list = field(default_factory=list)
    bench_seed: int = 0
    n_train_per_template: int = 200
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    dtype: str = "auto"
    advantages: str = "scalar"
    line_reward: str = "auto"
    scale_rewards: str = "none"


#: the values each string setting takes (the CLI's ``choices``)
_CHOICES = {
    "reward_field": ("reward", "reward_soft"),
    "device": DEVICES,
    "dtype": DTYPES,
    "advantages": ADVANTAGES,
    "line_reward": LINE_REWARDS,
    "scale_rewards": SCALES,
}


def resolve_precision(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """``(device, dtype)`` to train with: ``"cpu"`` or ``"cuda"``; ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    ``auto`` device: CUDA when ``torch.cuda.is_available()``, else CPU. ``auto`` dtype: bfloat16 on
    a GPU that supports it, else float32. Refused: ``cuda`` without a GPU, float16 on the CPU,
    bfloat16 on a GPU without it.
    """
    import torch

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    gpu = torch.cuda.is_available()
    if device == "cuda" and not gpu:
        raise ValueError("device 'cuda': no CUDA GPU is visible (torch.cuda.is_available() is False)")
    dev = "cuda" if device == "cuda" or (device == "auto" and gpu) else "cpu"
    bf16_ok = dev == "cuda" and torch.cuda.is_bf16_supported()
    dt = ("bfloat16" if bf16_ok else "float32") if dtype == "auto" else dtype
    if dt == "float16" and dev == "cpu":
        raise ValueError("dtype float16 needs a GPU; on the CPU use float32 or bfloat16")
    if dt == "bfloat16" and dev == "cuda" and not bf16_ok:
        raise ValueError("dtype bfloat16: this GPU does not support it; use float16 or float32")
    return dev, dt


def crowd_reward_func(rewarder, problems: dict, field_: str = "reward") -> Callable:
    """A TRL reward function: ``(prompts, completions, task_id, **kw) -> list[float]``.

    Each call is one generation batch; it is scored in one sandbox pass and (for crowd
    sources) one ``crowdstat fit``. Per-call reward means are kept in ``func.history``, and the
    call's line posteriors in ``func.last_lines`` (one :class:`rl.train.grpo_lines.CompletionLines`
    per completion, in call order: what ``--advantages lines`` reads).
    """
    from rl.train.grpo_lines import CompletionLines

    calls = {"n": 0}
    history: list[dict] = []

    def reward(prompts, completions, task_id, **kwargs) -> list[float]:
        calls["n"] += 1
        tag = f"g{calls['n']:05d}"
        items = [(f"{tag}-{i}", problems[t], c) for i, (t, c) in enumerate(zip(task_id, completions))]
        recs, scored, info = rewarder.rewards(items, tag)
        out = [float(recs[prog][field_]) for prog, _, _ in items]
        last = []
        for prog, p, c in items:
            code = p.program(c)
            if not code.endswith(c):
                raise ValueError(f"{p.task_id}: the program does not end with the completion; its lines cannot be mapped to tokens")
            r = recs[prog]
            last.append(CompletionLines(c, code, len(code) - len(c), dict(zip(r["lines"], r["posteriors"])), r.get("tau", 0.5)))
        reward.last_lines = last  # type: ignore[attr-defined]
        history.append(
            {
                "call": calls["n"],
                "mean_reward": sum(out) / len(out),
                "exec_pass_rate": sum(s.passed for s in scored) / len(scored),
                "line_accuracy": info.get("line_accuracy"),
            }
        )
        return out

    reward.__name__ = f"crowd_{rewarder.source}"
    reward.history = history  # type: ignore[attr-defined]
    reward.last_lines = []  # type: ignore[attr-defined]
    return reward


def grpo_config(s: GRPOSettings, out_dir: str | Path):
    """The TRL ``GRPOConfig`` of ``rl grpo`` (see the module docstring); device and dtype by :func:`resolve_precision`."""
    from trl import GRPOConfig

    dev, dt = resolve_precision(s.device, s.dtype)
    return GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=dev == "cpu",
        bf16=dt == "bfloat16",
        fp16=dt == "float16",
        activation_checkpointing=False,
        per_device_train_batch_size=s.batch_size,
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        temperature=s.temperature,
        top_k=0,
        top_p=1.0,
        learning_rate=s.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        num_iterations=1,
        loss_type="dr_grpo",
        scale_rewards=s.scale_rewards,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_steps=s.steps,
        seed=s.seed,
        data_seed=s.seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def _check(s: GRPOSettings) -> None:
    for name in ("steps", "batch_size", "num_generations", "max_completion_length", "n_train_per_template", "threads"):
        if getattr(s, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(s, name)!r}")
    for name in ("temperature", "lr"):
        if not (math.isfinite(getattr(s, name)) and getattr(s, name) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {getattr(s, name)!r}")
    if not 0.0 <= s.honeypot_fraction <= 1.0:
        raise ValueError(f"honeypot_fraction must be in [0, 1], got {s.honeypot_fraction!r}")
    if s.batch_size % s.num_generations:
        raise ValueError(f"batch_size ({s.batch_size}) must be a multiple of num_generations ({s.num_generations})")
    for name, allowed in _CHOICES.items():
        if getattr(s, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(s, name)!r}")
    resolve_precision(s.device, s.dtype)


def _line_reward(s: GRPOSettings) -> str:
    """``--line-reward auto``: the transform whose mean over a program's lines is its scalar reward."""
    if s.line_reward != "auto":
        return s.line_reward
    return "hard" if s.reward_field == "reward" else "posterior"


def _trainer(s: GRPOSettings, model, tok, funcs: list, ds, lora, out_dir: Path):
    from trl import GRPOTrainer

    kw = dict(model=model, reward_funcs=funcs, args=grpo_config(s, out_dir / "trainer"), train_dataset=ds, processing_class=tok)
    if s.advantages == "scalar":
        return GRPOTrainer(**kw, peft_config=lora)
    from rl.train.grpo_lines import LineGRPOTrainer

    return LineGRPOTrainer(**kw, peft_config=lora, line_source=funcs[0], line_reward=_line_reward(s))


def train_grpo(
    model_path: str | Path,
    out_dir: str | Path,
    s: GRPOSettings | None = None,
    reward_funcs: list | None = None,
    problems: list | None = None,
) -> dict:
    """Train a LoRA adapter with GRPO; writes ``out_dir/adapter`` and ``out_dir/grpo.json``.

    ``reward_funcs``: override the crowd reward (e.g. a plain verifiable function in tests; with
    ``advantages="lines"`` the first one must set ``last_lines`` as :func:`crowd_reward_func` does).
    ``problems``: training problems (default: the synthetic benchmark's training split).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from rl.crowd.pipeline import DEFAULT_POPULATION, CrowdRewarder
    from rl.execution.sandbox import Sandbox
    from rl.policy.models import default_target_modules, load_tokenizer, quiet_gradient_checkpointing_warning
    from rl.tasks.synthetic import make_benchmark

    s = s or GRPOSettings()
    _check(s)
    device, dtype = resolve_precision(s.device, s.dtype)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if problems is None:
        problems = make_benchmark(seed=s.bench_seed, n_train_per_template=s.n_train_per_template).train
    by_task = {p.task_id: p for p in problems}
    ds = Dataset.from_list([{"prompt": p.prompt, "task_id": p.task_id} for p in problems])
    tok = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    lora = LoraConfig(**s.lora.peft_kwargs(default_target_modules(model.config.model_type)))
    t0 = time.time()
    with Sandbox(workers=2) as sb:
        funcs = reward_funcs
        if funcs is None:
            rewarder = CrowdRewarder(
                s.reward_source,
                out_dir / "crowdwork",
                population=DEFAULT_POPULATION,
                honeypot_fraction=s.honeypot_fraction,
                crowd_args=s.crowd_args,
                sandbox=sb,
                seed=s.seed,
            )
            funcs = [crowd_reward_func(rewarder, by_task, s.reward_field)]
        # peft (wrapping the model) and TRL (around each generation) read the deprecated
        # is_gradient_checkpointing property: hide exactly that FutureWarning, as rl.policy.models does
        with quiet_gradient_checkpointing_warning():
            trainer = _trainer(s, model, tok, funcs, ds, lora, out_dir)
            trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    trainer.model.save_pretrained(out_dir / "adapter")
    summary = {
        "settings": asdict(s),
        "device": device,
        "dtype": dtype,
        "seconds": time.time() - t0,
        "reward_per_step": [h["reward"] for h in logs],
        "history": getattr(funcs[0], "history", None),
        # TRL's per-step log (completion lengths, entropy, kl when beta > 0, clip ratios, ...)
        "log": [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in trainer.state.log_history],
    }
    atomic_write_json(out_dir / "grpo.json", summary)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="warm-started model directory")
    p.add_argument("--out", required=True, help="output directory (adapter/, grpo.json, crowdwork/)")
    for f in dataclasses.fields(GRPOSettings):
        if f.name == "lora":
            continue
        val = getattr(GRPOSettings(), f.name)
        opt = f"--{f.name.replace('_', '-')}"
        if isinstance(val, list):
            p.add_argument(opt, nargs="*", default=val, help="extra crowdstat fit options")
        elif f.name in _CHOICES:
            p.add_argument(opt, choices=_CHOICES[f.name], default=val, help=f"(default {val})")
        else:
            p.add_argument(opt, type=type(val), default=val, help=f"(default {val})")
    add_dataclass_arguments(p, LoraSpec, prefix="lora-", title="LoRA adapter")


def settings_from_args(args: argparse.Namespace) -> GRPOSettings:
    """The settings :func:`add_arguments` options describe."""
    return GRPOSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(GRPOSettings) if f.name != "lora"},
        lora=dataclass_from_args(LoraSpec, args, prefix="lora-"),
    )


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    _check(s)  # every setting, and --out, before the benchmark is built and the model loads
    check_output(args.out)
    check_model(args.model)
    res = train_grpo(args.model, args.out, s)
    r = res["reward_per_step"]
    print(
        f"grpo ({res['device']}, {res['dtype']}, {s.advantages} advantages): {len(r)} steps, "
        f"mean reward {r[0]:.3f} -> {r[-1]:.3f}, {res['seconds']:.0f} s -> {args.out}"
    )
    return 0
