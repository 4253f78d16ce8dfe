"""RL throughput: completion tokens per second of one rollout + update step, ``rl``'s trainers against plain TRL.

    python -m benchmarks.rl_throughput --out /tmp/rl_throughput.json               # CPU, small settings
    python -m benchmarks.rl_throughput --smoke --out /tmp/rl_throughput.json       # CPU, < 60 s on 2 cores
    python -m benchmarks.rl_throughput --device cuda --out /tmp/rl_throughput.json # a CUDA GPU, bf16

One tiny model for all (the tests' one: :func:`rl.train.sft.warm_start`, 8 steps, a 1-layer d = 32
Qwen2-config model and the locally trained character tokenizer of the synthetic benchmark), the
same LoRA adapter (:class:`rl.config.LoraSpec` defaults), the same batch (prompts x samples
completions per step, one optimizer step per batch) and the same completion length limit:

- ``ppo``: :func:`rl.policy.rollouts.generate` + :meth:`rl.train.ppo.PPOTrainer.step`
  (``ppo_epochs=1``, one minibatch of the whole batch);
- ``grpo_scalar``, ``grpo_lines``: :func:`rl.train.grpo.train_grpo` with ``advantages`` ``scalar``
  / ``lines`` and a trivial stand-in for the crowd reward (each completion line's share of spaces as
  its posterior, handed over in ``last_lines`` as :func:`rl.train.grpo.crowd_reward_func` does): no
  sandbox, no ``crowdstat fit``;
- ``trl``: plain ``trl.GRPOTrainer`` with a trivial scalar reward function (the completion's share
  of spaces) and ``GRPOConfig`` defaults except what must match for equal work: batch, group,
  length, sampling (temperature 1, top_k 0, top_p 1), ``beta=0``, no gradient checkpointing, lr,
  device and precision. The reference of the ratios.

What is timed: a step is rollout (generation, including any log-prob passes the trainer makes)
plus update (loss, backward, optimizer step); the reward computation is left out of the timed
part. PPO: ``generate`` and ``step`` are timed; the per-token scores are computed between the two,
untimed. TRL-based trainers: ``GRPOTrainer.training_step`` is timed and the reward call inside it
(``GRPOTrainer._calculate_rewards``) is timed apart and subtracted. Tokens: completion tokens
actually generated (EOS stops early, so counts differ between trainers; the rate counts them).
Each trainer runs 1 + ``repeats`` steps in this process; the first step (warm-up) is left out and
the reported rate is the median over the others of tokens / seconds per step. ``ratio_vs_trl`` =
rate / TRL's rate, all measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._torch_timing import step_prompts, sync, timed, wrapped

SMOKE = {"prompts": 2, "samples": 4, "max_new_tokens": 8, "repeats": 2}
SMALL = {"prompts": 4, "samples": 8, "max_new_tokens": 32, "repeats": 5}
GPU = {"prompts": 8, "samples": 8, "max_new_tokens": 64, "repeats": 3}
TRAINERS = ("ppo", "grpo_scalar", "grpo_lines", "trl")
BENCH = {"seed": 0, "n_train_per_template": 3}


def build_model(out: Path, threads: int) -> Path:
    """The tests' tiny model (8 warm-start steps), saved with its character tokenizer to ``out``."""
    from rl.train.sft import SFTConfig, warm_start

    bench = {"bench_seed": BENCH["seed"], "n_train_per_template": BENCH["n_train_per_template"]}
    cfg = SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, lr=3e-3, threads=threads, **bench)
    warm_start(out, cfg, progress=False)
    return out


def _share(text: str) -> float:
    return text.count(" ") / max(1, len(text))


def line_reward_func():
    """The crowd reward's stand-in: each completion line's share of spaces as its posterior (in ``last_lines``)."""
    from rl.train.grpo_lines import CompletionLines

    def reward(prompts, completions, **kw) -> list[float]:
        last = []
        for pr, c in zip(prompts, completions):
            code = pr + c
            texts = code.split("\n")
            post = {ln: _share(texts[ln - 1]) for ln in range(pr.count("\n") + 1, len(texts) + 1) if c}
            last.append(CompletionLines(c, code, len(pr), post))
        reward.last_lines = last
        return [sum(cl.posteriors.values()) / len(cl.posteriors) if cl.posteriors else 0.0 for cl in last]

    reward.last_lines = []
    return reward


def scalar_reward(completions, **kw) -> list[float]:
    """TRL's reference reward: the completion's share of spaces."""
    return [_share(c) for c in completions]


def _rate(steps: list[tuple[int, float]]) -> dict:
    """Median tokens/s over the steps after the first (warm-up)."""
    timed = steps[1:] if len(steps) > 1 else steps
    rates = [n / s for n, s in timed if s > 0]
    return {
        "tok_s": statistics.median(rates) if rates else None,
        "tokens_per_step": statistics.median([n for n, _ in timed]) if timed else None,
        "step_s": statistics.median([s for _, s in timed]) if timed else None,
        "steps": [[n, round(s, 5)] for n, s in steps],
    }


def run_ppo(model_path: Path, size: dict, env: dict) -> dict:
    """``generate`` + ``PPOTrainer.step``, timed; the per-token scores between them, untimed."""
    import torch

    from rl.config import LoraSpec
    from rl.policy.models import load_policy
    from rl.policy.rollouts import generate
    from rl.tasks.synthetic import make_benchmark
    from rl.train.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(0)
    model, tok = load_policy(str(model_path), LoraSpec(), device=env["device"], dtype=env["dtype"])
    batch = size["prompts"] * size["samples"]
    cfg = PPOConfig(ppo_epochs=1, minibatch_size=batch, reward_mode="program", mixed_precision=env["mixed_precision"], seed=0)
    trainer = PPOTrainer(model, tok, cfg)
    train = make_benchmark(**BENCH).train
    steps, reward_s = [], []
    for step in range(1 + size["repeats"]):
        prompts = step_prompts(train, step, size["prompts"])
        t0 = time.perf_counter()
        rs, dt = timed(generate, model, tok, prompts, n=size["samples"], max_new_tokens=size["max_new_tokens"], seed=step)
        t1 = t0 + dt
        scores = [[0.0] * (len(r.completion_ids) - 1) + [_share(r.completion)] for r in rs]
        t2 = time.perf_counter()
        stats = trainer.step(rs, scores)
        sync()
        t3 = time.perf_counter()
        if not math.isfinite(stats["loss/policy"]):
            raise FloatingPointError(f"PPO step {step}: loss/policy {stats['loss/policy']}")
        steps.append((sum(len(r.completion_ids) for r in rs), (t1 - t0) + (t3 - t2)))
        reward_s.append(t2 - t1)
    return {**_rate(steps), "reward_s_median": statistics.median(reward_s[1:] or reward_s)}


@contextlib.contextmanager
def trl_timer():
    """Time TRL's training steps: yields a list that gets one ``(completion tokens, seconds - reward seconds)`` per step."""
    from trl import GRPOTrainer

    gen: list[int] = []
    rew: list[float] = []
    steps: list[tuple[int, float]] = []
    reward_s: list[float] = []

    def on_step(out, sec):
        r = sum(rew)
        steps.append((sum(gen), sec - r))
        reward_s.append(r)
        gen.clear()
        rew.clear()

    with contextlib.ExitStack() as stack:
        stack.enter_context(wrapped(GRPOTrainer, "_generate", lambda out, sec: gen.append(sum(map(len, out[1])))))
        stack.enter_context(wrapped(GRPOTrainer, "_calculate_rewards", lambda out, sec: rew.append(sec)))
        stack.enter_context(wrapped(GRPOTrainer, "training_step", on_step))
        yield steps, reward_s


def run_grpo(model_path: Path, size: dict, env: dict, work: Path, advantages: str) -> dict:
    """:func:`rl.train.grpo.train_grpo` (1 + repeats steps) with the stand-in line reward."""
    from rl.config import LoraSpec
    from rl.tasks.synthetic import make_benchmark
    from rl.train.grpo import GRPOSettings, train_grpo

    s = GRPOSettings(
        steps=1 + size["repeats"],
        batch_size=size["prompts"] * size["samples"],
        num_generations=size["samples"],
        max_completion_length=size["max_new_tokens"],
        lora=LoraSpec(),
        device=env["device"],
        dtype=env["dtype"],
        advantages=advantages,
        threads=env["threads"],
        seed=0,
    )
    with trl_timer() as (steps, reward_s):
        train_grpo(model_path, work / f"grpo_{advantages}", s, reward_funcs=[line_reward_func()], problems=make_benchmark(**BENCH).train)
    return {**_rate(steps), "reward_s_median": statistics.median(reward_s[1:] or reward_s)}


def run_trl(model_path: Path, size: dict, env: dict, work: Path) -> dict:
    """Plain ``trl.GRPOTrainer``: the trivial scalar reward, ``GRPOConfig`` defaults but for what must match."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rl.config import LoraSpec
    from rl.policy.models import default_target_modules
    from rl.tasks.synthetic import make_benchmark

    torch.manual_seed(0)
    problems = make_benchmark(**BENCH).train
    ds = Dataset.from_list([{"prompt": p.prompt} for p in problems])
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, env["dtype"]))
    lora = LoraConfig(**LoraSpec().peft_kwargs(default_target_modules(model.config.model_type)))
    args = GRPOConfig(
        output_dir=str(work / "trl"),
        use_cpu=env["device"] == "cpu",
        bf16=env["dtype"] == "bfloat16",
        per_device_train_batch_size=size["prompts"] * size["samples"],
        num_generations=size["samples"],
        max_completion_length=size["max_new_tokens"],
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        activation_checkpointing=False,
        learning_rate=1e-4,
        max_steps=1 + size["repeats"],
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[scalar_reward], args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    with trl_timer() as (steps, reward_s):
        trainer.train()
    return {**_rate(steps), "reward_s_median": statistics.median(reward_s[1:] or reward_s)}


def run(size: dict, env: dict, work: Path, only: tuple[str, ...] = TRAINERS) -> dict:
    """Build the model, run each trainer; rows with tokens/s and the ratio against TRL."""
    import torch

    torch.set_num_threads(env["threads"])
    t0 = time.perf_counter()
    model_path = build_model(work / "model", env["threads"])
    rows = {}
    for name in only:
        t = time.perf_counter()
        if name == "ppo":
            r = run_ppo(model_path, size, env)
        elif name == "trl":
            r = run_trl(model_path, size, env, work)
        else:
            r = run_grpo(model_path, size, env, work, name.removeprefix("grpo_"))
        rows[name] = {**r, "wall_s": time.perf_counter() - t}
    ref = (rows.get("trl") or {}).get("tok_s")
    for r in rows.values():
        r["ratio_vs_trl"] = r["tok_s"] / ref if ref and r["tok_s"] else None
    return {"settings": size, "env": env, "rows": rows, "total_s": time.perf_counter() - t0}


def table(res: dict) -> str:
    """The markdown table of :func:`run`'s result."""
    s = res["settings"]
    head = (
        f"RL throughput, {res['env']['device']} {res['env']['dtype']}: {s['prompts']} prompts x {s['samples']} samples, "
        f"<= {s['max_new_tokens']} new tokens, median of {s['repeats']} steps after 1 warm-up; reward time excluded\n\n"
    )
    lines = [
        "| trainer | tokens/s | x TRL | tokens/step | step s (no reward) | reward s |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def f(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    for name, r in res["rows"].items():
        cols = [name, f(r["tok_s"], ".1f"), f(r["ratio_vs_trl"], ".2f"), f(r["tokens_per_step"], ".0f")]
        cols += [f(r["step_s"], ".3f"), f(r["reward_s_median"], ".4f")]
        lines.append("| " + " | ".join(cols) + " |")
    return head + "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rl_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s on 2 CPU cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--prompts", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--repeats", type=int, help="timed steps after the warm-up step")
    p.add_argument("--only", default=",".join(TRAINERS), help=f"comma-separated subset of {','.join(TRAINERS)}")
    p.add_argument("--out", help="JSON result file")
    args = p.parse_args(argv)
    size = dict(SMOKE if args.smoke else GPU if args.device == "cuda" else SMALL)
    for k in size:
        if getattr(args, k) is not None:
            size[k] = getattr(args, k)
    only = tuple(args.only.split(","))
    if set(only) - set(TRAINERS):
        p.error(f"unknown trainers {sorted(set(only) - set(TRAINERS))}")
    env = {"device": "cpu", "dtype": "float32", "mixed_precision": "no", "threads": args.threads}
    if args.device == "cuda":
        env.update(dtype="bfloat16", mixed_precision="bf16")
    with tempfile.TemporaryDirectory(prefix="rl_throughput_") as d:
        res = run(size, env, Path(d), only)
    res["smoke"] = args.smoke
    print(table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
