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

GRPO sees one scalar per completion (no value head), so line rewards enter only through s. The
adapter is built from the same :class:`rl.config.LoraSpec` as PPO's (``--lora-r``, ``--lora-alpha``, ...).

CPU settings: ``GRPOConfig`` defaults to bf16, gradient checkpointing and lr 1e-6; here
``use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False``, lr 1e-4, constant schedule,
``beta=0`` (no reference model), ``loss_type="dr_grpo"``, ``scale_rewards="none"``,
``report_to="none"``, ``save_strategy="no"``. TRL samples with its own generate call, from the full
distribution (``top_k=0, top_p=1``) as :mod:`rl.policy.sampling` does by default. The model has
rotary positions (Qwen2 config), so TRL's log-prob pass, which passes no position ids, agrees with
``generate()`` under left padding.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crowdstat.io.atomic import atomic_write_json
from rl.config import LoraSpec, add_dataclass_arguments, dataclass_from_args

__all__ = ["GRPOSettings", "crowd_reward_func", "grpo_config", "train_grpo", "add_arguments", "settings_from_args", "run"]


@dataclass
class GRPOSettings:
    """``rl grpo`` settings.

    steps: optimizer steps. batch_size: completions per step (= prompts x num_generations).
    num_generations: completions per prompt (the GRPO group). max_completion_length: tokens.
    lr: learning rate of the LoRA weights. lora: the adapter (:class:`rl.config.LoraSpec`).
    reward_source: a crowdstat method, ``true_lines`` or ``execution``. reward_field: ``reward``
    or ``reward_soft``. honeypot_fraction: programs whose line truth is revealed to crowdstat.
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


def crowd_reward_func(rewarder, problems: dict, field_: str = "reward") -> Callable:
    """A TRL reward function: ``(prompts, completions, task_id, **kw) -> list[float]``.

    Each call is one generation batch; it is scored in one sandbox pass and (for crowd
    sources) one ``crowdstat fit``. Per-call reward means are kept in ``func.history``.
    """
    calls = {"n": 0}
    history: list[dict] = []

    def reward(prompts, completions, task_id, **kwargs) -> list[float]:
        calls["n"] += 1
        tag = f"g{calls['n']:05d}"
        items = [(f"{tag}-{i}", problems[t], c) for i, (t, c) in enumerate(zip(task_id, completions))]
        recs, scored, info = rewarder.rewards(items, tag)
        out = [float(recs[prog][field_]) for prog, _, _ in items]
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
    return reward


def grpo_config(s: GRPOSettings, out_dir: str | Path):
    """The TRL ``GRPOConfig`` that ran on CPU (see the module docstring)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
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
        scale_rewards="none",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_steps=s.steps,
        seed=s.seed,
        data_seed=s.seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def train_grpo(
    model_path: str | Path,
    out_dir: str | Path,
    s: GRPOSettings | None = None,
    reward_funcs: list | None = None,
    problems: list | None = None,
) -> dict:
    """Train a LoRA adapter with GRPO; writes ``out_dir/adapter`` and ``out_dir/grpo.json``.

    ``reward_funcs``: override the crowd reward (e.g. a plain verifiable function in tests).
    ``problems``: training problems (default: the synthetic benchmark's training split).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from rl.crowd.pipeline import DEFAULT_POPULATION, CrowdRewarder
    from rl.execution.sandbox import Sandbox
    from rl.policy.models import default_target_modules, load_tokenizer
    from rl.tasks.synthetic import make_benchmark

    s = s or GRPOSettings()
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    if s.batch_size % s.num_generations:
        raise ValueError(f"batch_size ({s.batch_size}) must be a multiple of num_generations ({s.num_generations})")
    if s.reward_field not in ("reward", "reward_soft"):
        raise ValueError(f"reward_field must be 'reward' or 'reward_soft', got {s.reward_field!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if problems is None:
        problems = make_benchmark(seed=s.bench_seed, n_train_per_template=s.n_train_per_template).train
    by_task = {p.task_id: p for p in problems}
    ds = Dataset.from_list([{"prompt": p.prompt, "task_id": p.task_id} for p in problems])
    tok = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
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
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=grpo_config(s, out_dir / "trainer"),
            train_dataset=ds,
            processing_class=tok,
            peft_config=lora,
        )
        trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    trainer.model.save_pretrained(out_dir / "adapter")
    summary = {
        "settings": asdict(s),
        "seconds": time.time() - t0,
        "reward_per_step": [h["reward"] for h in logs],
        "history": getattr(funcs[0], "history", None),
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
        if isinstance(val, list):
            p.add_argument(f"--{f.name.replace('_', '-')}", nargs="*", default=val, help="extra crowdstat fit options")
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(val), default=val, help=f"(default {val})")
    add_dataclass_arguments(p, LoraSpec, prefix="lora-", title="LoRA adapter")


def settings_from_args(args: argparse.Namespace) -> GRPOSettings:
    """The settings :func:`add_arguments` options describe."""
    return GRPOSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(GRPOSettings) if f.name != "lora"},
        lora=dataclass_from_args(LoraSpec, args, prefix="lora-"),
    )


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    res = train_grpo(args.model, args.out, s)
    r = res["reward_per_step"]
    print(f"grpo: {len(r)} steps, mean reward {r[0]:.3f} -> {r[-1]:.3f}, {res['seconds']:.0f} s -> {args.out}")
    return 0
