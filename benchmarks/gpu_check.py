"""A prepared GPU check of ``rl``: PPO, GRPO (scalar and per-line) and one loop round in bf16 on a CUDA GPU.

    python -m benchmarks.gpu_check --out gpu-check                # a CUDA GPU: bf16, about 5 minutes
    python -m benchmarks.gpu_check --cpu-smoke --out /tmp/gpucheck # anywhere: CPU, float32, tiny sizes

Models, both built here (no download) and loaded back through ``from_pretrained(path)``:

- ``tiny``: the tests' tiny model (:func:`rl.train.sft.warm_start` with 8 steps: a 1-layer, d = 32
  Qwen2-style model and the character tokenizer of the synthetic benchmark);
- ``qwen2-0.5b``: a random-init Qwen2 with Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads,
  2 KV heads, intermediate 4864, RMSNorm eps 1e-6, rope theta 1e6, tied embeddings) and the
  character tokenizer's vocabulary (about 0.36 B parameters, Qwen2-0.5B's non-embedding count).

Stages per model, each in its own process (a CUDA error cannot poison the next stage) and each
reported on its own (one failing does not stop the others):

- ``build``: build, ``save_pretrained``, reload with ``from_pretrained``;
- ``ppo``: a few :class:`rl.train.ppo.PPOTrainer` steps as the tests run them (``load_policy``
  + LoRA, ``generate``, ``trainer.step``), ``mixed_precision="bf16"``;
- ``ppo_ddp``: the same steps data parallel, ``torchrun --standalone --nproc_per_node=2`` (each process
  samples half of the prompts; one DDP step on the union; the parameters are checked identical on
  both processes). Needs 2 GPUs (its row says ``n/a`` with fewer); ``--cpu-smoke`` runs it as 2 CPU
  processes (gloo);
- ``grpo_scalar``, ``grpo_lines``: ``rl grpo`` settings parsed from its command line
  (``--device cuda --dtype bfloat16 --advantages scalar|lines``, crowd reward ``majority``) and
  :func:`rl.train.grpo.train_grpo`;
- ``loop`` (tiny only): ``rl loop --config FILE`` with a one-round config.

Reported per stage: rollout and update tokens per second (completion tokens of every process; the first step or
generation batch is left out when there are several: warm-up), peak GPU memory
(``torch.cuda.max_memory_allocated``), and the error, if any. ``--out`` gets ``gpu_check.json``
and ``gpu_check.md`` (the table, also printed). Exit status 1 if a stage failed, 3 if none failed
but some were skipped (time budget), 2 without a GPU outside ``--cpu-smoke``, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks._torch_timing import step_prompts, sync, timed, wrapped

ROOT = Path(__file__).resolve().parents[1]

#: GPU sizes (about 5 minutes on an H200 for everything) and the CPU smoke sizes (tiny model only)
FULL = {
    "models": ("tiny", "qwen2-0.5b"),
    "ppo": {"steps": 3, "prompts": 8, "samples": 8, "max_new_tokens": 64, "ppo_epochs": 2, "minibatch_size": 32},
    "ppo_big": {"steps": 3, "prompts": 8, "samples": 8, "max_new_tokens": 128, "ppo_epochs": 2, "minibatch_size": 32},
    "grpo": {"steps": 2, "batch_size": 64, "num_generations": 8, "max_completion_length": 64},
    "grpo_big": {"steps": 2, "batch_size": 64, "num_generations": 8, "max_completion_length": 128},
    "loop": {"prompts_per_round": 8, "samples": 8, "max_new_tokens": 64, "eval_n": 2, "eval_problems": 8},
    "stage_timeout_s": 150,
    "budget_s": 270,  # no stage starts after this many seconds
    "deadline_s": 360,  # and every stage is stopped by then
}
SMOKE = {
    "models": ("tiny",),
    "ppo": {"steps": 2, "prompts": 2, "samples": 4, "max_new_tokens": 8, "ppo_epochs": 1, "minibatch_size": 8},
    "grpo": {"steps": 1, "batch_size": 8, "num_generations": 4, "max_completion_length": 12},
    "loop": {"prompts_per_round": 2, "samples": 3, "max_new_tokens": 14, "eval_n": 2, "eval_problems": 3},
    "stage_timeout_s": 300,
    "budget_s": 600,
    "deadline_s": 900,
}
STAGES = ("build", "ppo", "ppo_ddp", "grpo_scalar", "grpo_lines", "loop")
#: the stages each model runs (``ppo_ddp``: 2 processes under torchrun, with 2 GPUs or more, 2 CPU processes in the smoke run)
MODEL_STAGES = {"tiny": STAGES, "qwen2-0.5b": ("build", "ppo", "ppo_ddp", "grpo_scalar", "grpo_lines")}
#: the training problems of every stage (their characters are the tokenizer's)
BENCH = {"seed": 0, "n_train_per_template": 3}


# ---------------------------------------------------------------------------------------------
# models


def qwen2_05b_config(tokenizer, num_layers: int = 24):
    """Qwen2-0.5B's shape (its config.json) with ``tokenizer``'s vocabulary; ``num_layers`` < 24 for tests."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=num_layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_qwen2_05b(out, tokenizer, *, num_layers: int = 24, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A random-init Qwen2-0.5B-shaped model for ``tokenizer``, saved (with the tokenizer) to ``out``.

    Initialised on the GPU when there is one (seconds instead of a minute on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = qwen2_05b_config(tokenizer, num_layers)
    torch.manual_seed(seed)
    where = torch.device("cuda") if torch.cuda.is_available() else contextlib.nullcontext()
    with where:
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    model.generation_config = GenerationConfig(**ids)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _stage_build(spec: dict) -> dict:
    """Build the model, save it, load it back through ``from_pretrained(path)``."""
    import torch
    from transformers import AutoModelForCausalLM

    path, env = Path(spec["model_path"]), spec["env"]
    if spec["model"] == "tiny":
        from rl.train.sft import SFTConfig, warm_start

        cfg = SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, lr=3e-3, threads=2, **_bench_sft())
        warm_start(path, cfg, progress=False)
    else:
        from rl.policy.models import train_char_tokenizer
        from rl.tasks.synthetic import make_benchmark
        from rl.train.sft import all_texts

        tok = train_char_tokenizer(all_texts(make_benchmark(**BENCH)), Path(spec["work"]) / "tok")
        build_qwen2_05b(path, tok, num_layers=spec.get("big_layers", 24), dtype=env["dtype"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, env["dtype"]))
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    shape = f"{c.num_hidden_layers} layers, d={c.hidden_size}, vocab {c.vocab_size}"
    count = f"{n / 1e6:.1f} M" if n >= 10**6 else f"{n:,}"
    return {"n_parameters": n, "note": f"{count} parameters ({shape})"}


def _bench_sft() -> dict:
    return {"bench_seed": BENCH["seed"], "n_train_per_template": BENCH["n_train_per_template"]}


# ---------------------------------------------------------------------------------------------
# stages (run in a child process)


def _rates(rollout: list[tuple[int, float]], update: list[tuple[int, float]]) -> dict:
    """Tokens per second from per-step (tokens, seconds); the first step is left out when there are several."""

    def rate(xs):
        xs = xs[1:] if len(xs) > 1 else xs
        tok, sec = sum(t for t, _ in xs), sum(s for _, s in xs)
        return tok / sec if sec > 0 else None

    return {
        "rollout_tok_s": rate(rollout),
        "update_tok_s": rate(update),
        "rollout_steps": [[t, round(s, 4)] for t, s in rollout],
        "update_steps": [[t, round(s, 4)] for t, s in update],
    }


def _finite(stats: dict, keys: tuple[str, ...], where: str) -> None:
    bad = {k: stats.get(k) for k in keys if not (isinstance(stats.get(k), (int, float)) and math.isfinite(stats[k]))}
    if bad:
        raise FloatingPointError(f"{where}: non-finite statistics {bad}")


def _stage_ppo(spec: dict) -> dict:
    """A few PPO steps as tests/rl/test_ppo_train.py runs them; the reward: the share of spaces, on the last token.

    Under ``torchrun`` (stage ``ppo_ddp``) every process samples its share of the step's prompts and the
    trainer takes one data-parallel step on the union; the rates count the completion tokens of every
    process (the slowest process's generation time, the update time of the lock-stepped processes)."""
    import torch

    from rl.policy.models import LoraSpec, load_policy
    from rl.policy.rollouts import generate
    from rl.tasks.synthetic import make_benchmark
    from rl.train.ppo import PPOConfig, PPOTrainer

    env, size = spec["env"], spec["size"]
    torch.manual_seed(0)
    model, tok = load_policy(spec["model_path"], LoraSpec(r=8, alpha=16), dtype=env["dtype"])
    cfg = PPOConfig(
        learning_rate=1e-4,
        ppo_epochs=size["ppo_epochs"],
        minibatch_size=size["minibatch_size"],
        reward_mode="program",
        mixed_precision=env["mixed_precision"],
        seed=0,
    )
    trainer = PPOTrainer(model, tok, cfg)
    dist = trainer.dist
    train = make_benchmark(**BENCH).train
    rollout, update, history = [], [], []
    for step in range(size["steps"]):
        prompts = step_prompts(train, step, size["prompts"])[dist.rank :: dist.world]
        rs, dt = timed(
            generate, model, tok, prompts, n=size["samples"], max_new_tokens=size["max_new_tokens"], seed=step * dist.world + dist.rank
        )
        dt = float(dist.max(torch.tensor([dt], device=trainer.device)).item())
        scores = [[0.0] * (len(r.completion_ids) - 1) + [r.completion.count(" ") / max(1, len(r.completion))] for r in rs]
        t1 = time.perf_counter()
        stats = trainer.step(rs, scores)
        sync()
        n = stats["tokens/n"]  # every process's completion tokens
        rollout.append((n, dt))
        update.append((n, time.perf_counter() - t1))
        _finite(stats, ("loss/policy", "loss/value", "kl/k1_mean", "grad_norm"), f"PPO step {step}")
        history.append({k: stats[k] for k in ("reward/score_mean", "loss/policy", "kl/k1_mean", "logprob/rollout_mismatch_max")})
    note = f"mixed_precision {trainer.mixed_precision}, rollout mismatch max {max(h['logprob/rollout_mismatch_max'] for h in history):.2g}"
    if dist.world > 1:
        flat = torch.cat([p.detach().reshape(-1).float() for p in trainer.params])
        same = bool(torch.equal(dist.max(flat), -dist.max(-flat)))  # every process holds the same parameters
        if not same:
            raise RuntimeError("PPO under torchrun: the processes' parameters differ after the steps")
        note = f"{dist.world} processes ({trainer.device.type}), parameters identical on all; " + note
    return {**_rates(rollout, update), "history": history, "note": note, "processes": dist.world}


def _stage_grpo(spec: dict, advantages: str) -> dict:
    """``rl grpo``'s settings from its own command line, then one short :func:`train_grpo` run.

    Timed inside TRL: ``_generate`` (rollout), ``_generate_and_score_completions`` (rollout, reward,
    log-prob passes) and ``training_step``; update = training step minus generate-and-score."""
    from trl import GRPOTrainer

    from rl.tasks.synthetic import make_benchmark
    from rl.train.grpo import add_arguments, settings_from_args, train_grpo

    env, size = spec["env"], spec["size"]
    work = Path(spec["work"])
    argv = ["--model", spec["model_path"], "--out", str(work / "grpo"), "--reward-source", "majority", "--seed", "0"]
    argv += ["--device", env["device"], "--dtype", env["dtype"], "--advantages", advantages, "--threads", "2"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in size.items()]
    p = argparse.ArgumentParser(prog="rl grpo")
    add_arguments(p)
    s = settings_from_args(p.parse_args(argv))
    gen: list[tuple[int, float]] = []
    scored: list[float] = []
    steps: list[float] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(wrapped(GRPOTrainer, "_generate", lambda out, sec: gen.append((sum(map(len, out[1])), sec))))
        stack.enter_context(wrapped(GRPOTrainer, "_generate_and_score_completions", lambda out, sec: scored.append(sec)))
        stack.enter_context(wrapped(GRPOTrainer, "training_step", lambda out, sec: steps.append(sec)))
        res = train_grpo(spec["model_path"], work / "grpo", s, problems=make_benchmark(**BENCH).train)
    r = res["reward_per_step"]
    _finite({f"reward{i}": x for i, x in enumerate(r)}, tuple(f"reward{i}" for i in range(len(r))), "GRPO")
    if len(r) != s.steps or len(gen) != len(steps):
        raise RuntimeError(f"GRPO: {len(r)} logged steps, {len(gen)} generation batches, {len(steps)} training steps")
    update = [(n, max(1e-9, st - sc)) for (n, _), st, sc in zip(gen, steps, scored)]
    note = f"{res['device']} {res['dtype']}, reward per step {[round(x, 3) for x in r]}"
    return {**_rates(gen, update), "reward_per_step": r, "note": note}


def _stage_loop(spec: dict) -> dict:
    """``rl loop --config FILE``: one round (generate, crowd, ``crowdstat fit``, PPO, held-out pass@k, checkpoint)."""
    import rl.loop
    from rl.cli import main as rl_main

    env, size = spec["env"], spec["size"]
    work = Path(spec["work"])
    cfg = {
        "model": spec["model_path"],
        "out": str(work / "loop"),
        "rounds": 1,
        "prompts_per_round": size["prompts_per_round"],
        "samples": size["samples"],
        "sampling": {"max_new_tokens": size["max_new_tokens"]},
        "reward_source": "majority",
        "bench": dict(BENCH),
        "eval": {"n": size["eval_n"], "n_mid": 1, "temperature": 0.8, "n_problems": size["eval_problems"], "every": 1},
        "ppo": {"learning_rate": 1e-3, "ppo_epochs": 1, "minibatch_size": size["prompts_per_round"] * size["samples"]},
        "lora": {"r": 4, "alpha": 8},
        "threads": 2,
        "seed": 1,
    }
    cfg["ppo"].update(reward_mode="lines", mixed_precision=env["mixed_precision"])
    path = work / "loop.json"
    path.write_text(json.dumps(cfg, indent=1))
    rollout: list[tuple[int, float]] = []
    update: list[tuple[int, float]] = []
    tokens = {"n": 0}

    def on_generate(out, sec):
        tokens["n"] = sum(len(r.completion_ids) for r in out)
        rollout.append((tokens["n"], sec))

    with wrapped(rl.loop, "_generate", on_generate), wrapped(rl.loop, "_train", lambda out, sec: update.append((tokens["n"], sec))):
        rc = rl_main(["loop", "--config", str(path), "--no-progress"])
    if rc != 0:
        raise RuntimeError(f"rl loop exited with {rc}")
    h = json.loads((work / "loop" / "state.json").read_text())["history"][-1]
    _finite(h["ppo"], ("loss/policy", "loss/value"), "loop round 1")
    return {**_rates(rollout, update), "note": f"round 1: mean reward {h['mean_reward']:.3f}, pass@1 {h.get('pass@1', float('nan')):.3f}"}


def _child(spec_file: str) -> int:
    """Run one stage; write its result (or its error) next to the spec."""
    spec = json.loads(Path(spec_file).read_text())
    result: dict = {}
    try:
        import torch

        if spec["env"]["device"] == "cpu":
            torch.set_num_threads(2 // int(os.environ.get("WORLD_SIZE", "1")) or 1)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        fn = {
            "build": _stage_build,
            "ppo": _stage_ppo,
            "ppo_ddp": _stage_ppo,
            "grpo_scalar": lambda s: _stage_grpo(s, "scalar"),
            "grpo_lines": lambda s: _stage_grpo(s, "lines"),
            "loop": _stage_loop,
        }[spec["stage"]]
        result = {"status": "ok", **fn(spec)}
    except BaseException as e:  # noqa: BLE001 - every failure of a stage is its result
        if isinstance(e, KeyboardInterrupt):
            raise
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()[-4000:]}
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: the first process reports
        Path(spec["result_file"]).write_text(json.dumps(result, default=str))
    gc.collect()
    return 0 if result["status"] == "ok" else 1


# ---------------------------------------------------------------------------------------------
# the driver (parent process): one child per stage, the table, the exit status


def _machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "jax"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["gpu_count"] = torch.cuda.device_count() if info["cuda"] else 0
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
            info["bf16"] = torch.cuda.is_bf16_supported()
    except Exception as e:  # noqa: BLE001 - reported, the stages then fail with their own errors
        info["cuda"] = False
        info["torch_error"] = f"{type(e).__name__}: {e}"
    return info


def _child_env(smoke: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if smoke:
        env["RL_TORCH_THREADS"] = "2"
    return env


def _run_child(spec: dict, d: Path, timeout: float, smoke: bool) -> dict:
    """The stage in a fresh process (its own session, killed with its children on timeout); its result dict."""
    import signal

    (d / "spec.json").write_text(json.dumps(spec, indent=1))
    log = d / "log.txt"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--child", str(d / "spec.json")]
    if spec["stage"] == "ppo_ddp":  # 2 processes, DDP (nccl on GPUs, gloo on the CPU)
        cmd[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=_child_env(smoke), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    result_file = Path(spec["result_file"])
    if result_file.exists():
        return json.loads(result_file.read_text())
    tail = log.read_text(errors="replace")[-3000:]
    why = f"timed out after {timeout:.0f} s" if rc is None else f"the stage process exited with {rc} and wrote no result"
    return {"status": "failed", "error": why, "traceback": tail}


def run_checks(
    sizes: dict, env: dict, work: Path, models: tuple, stages: tuple, smoke: bool, big_layers: int = 24, n_gpus: int = 0
) -> list[dict]:
    """Every (model, stage) in order; a failed build skips its model's other stages; the time budget skips the rest;
    ``ppo_ddp`` on a GPU needs ``n_gpus >= 2`` (else its row says n/a)."""
    t_start = time.perf_counter()
    rows: list[dict] = []
    for model in models:
        built = True
        for stage in MODEL_STAGES[model]:
            if stage not in stages:
                continue
            row = {"model": model, "stage": stage, "device": env["device"], "dtype": env["dtype"]}
            elapsed = time.perf_counter() - t_start
            timeout = min(sizes["stage_timeout_s"], sizes["deadline_s"] - elapsed)
            if not built:
                rows.append({**row, "status": "skipped", "note": "the model's build failed"})
                continue
            if stage == "ppo_ddp" and env["device"] == "cuda" and n_gpus < 2:
                rows.append({**row, "status": "n/a", "note": f"needs 2 GPUs, {n_gpus} visible"})
                continue
            if elapsed > sizes["budget_s"] or timeout < 20:
                rows.append({**row, "status": "skipped", "note": f"time budget ({sizes['budget_s']} s) spent"})
                continue
            d = work / "stages" / model / stage
            d.mkdir(parents=True, exist_ok=True)
            size_key = stage.split("_")[0] + ("_big" if model != "tiny" and stage != "loop" else "")
            spec = {
                "model": model,
                "stage": stage,
                "model_path": str(work / "models" / model),
                "work": str(d),
                "env": env,
                "size": sizes.get(size_key, sizes.get(stage.split("_")[0], {})),
                "result_file": str(d / "result.json"),
                "big_layers": big_layers,
            }
            t0 = time.perf_counter()
            res = _run_child(spec, d, timeout, smoke)
            rows.append({**row, **res, "seconds": time.perf_counter() - t0})
            built = built and not (stage == "build" and res["status"] != "ok")
            print(_row_line(rows[-1]), flush=True)
    return rows


def _fmt(x, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def _row_line(r: dict) -> str:
    msg = r.get("error") or r.get("note") or ""
    return f"[gpu_check] {r['model']}/{r['stage']}: {r['status']} ({_fmt(r.get('seconds'), '.1f')} s) {msg[:300]}"


def markdown(rows: list[dict], machine: dict, mode: str) -> str:
    where = machine.get("gpu") or "CPU"
    head = (
        f"GPU check ({mode}): {where}, torch {machine.get('torch')}, transformers {machine.get('transformers')}, "
        f"trl {machine.get('trl')}, peft {machine.get('peft')}\n\n"
    )
    lines = [
        "| model | stage | status | device, dtype | seconds | rollout tok/s | update tok/s | peak GPU GiB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = (r.get("error") or r.get("note") or "").splitlines()
        note_s = (note[0] if note else "").replace("|", "\\|")[:160]
        lines.append(
            f"| {r['model']} | {r['stage']} | {r['status']} | {r['device']}, {r['dtype']} | {_fmt(r.get('seconds'), '.1f')} | "
            f"{_fmt(r.get('rollout_tok_s'))} | {_fmt(r.get('update_tok_s'))} | {_fmt(r.get('peak_gpu_gib'), '.2f')} | {note_s} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="directory for gpu_check.json and gpu_check.md")
    p.add_argument("--cpu-smoke", action="store_true", help="CPU, float32, the tiny model, minimal sizes")
    p.add_argument("--models", default=None, help="comma-separated subset of: tiny, qwen2-0.5b")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of: {', '.join(STAGES)} (a model's build is always run)")
    p.add_argument("--work", default=None, help="working directory (models, runs, logs); kept when given, else a removed temp dir")
    p.add_argument(
        "--budget-s", type=float, default=None, help="no stage starts after this many seconds (270 on a GPU; every stage stops by 360)"
    )
    p.add_argument("--big-layers", type=int, default=24, help="layers of qwen2-0.5b (24; fewer to test the script on a CPU)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child)
    if not args.out:
        p.error("--out is required")
    sizes = dict(SMOKE if args.cpu_smoke else FULL)
    if args.budget_s is not None:
        sizes["budget_s"] = args.budget_s
        sizes["deadline_s"] = max(sizes["deadline_s"], args.budget_s + sizes["stage_timeout_s"])
    machine = _machine()
    if not args.cpu_smoke and not machine.get("cuda"):
        print("gpu_check: no CUDA GPU is visible; run with --cpu-smoke on a machine without one", file=sys.stderr)
        return 2
    env = {"device": "cpu", "dtype": "float32", "mixed_precision": "no"}
    if not args.cpu_smoke:
        env = {"device": "cuda", "dtype": "bfloat16", "mixed_precision": "bf16"}
    models = tuple(args.models.split(",")) if args.models else sizes["models"]
    stages = ("build", *args.stages.split(",")) if args.stages else STAGES
    unknown = sorted(set(models) - set(MODEL_STAGES)) + sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown models or stages: {unknown}")
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        work.mkdir(parents=True, exist_ok=True)
        rows = run_checks(sizes, env, work, models, stages, args.cpu_smoke, args.big_layers, n_gpus=machine.get("gpu_count", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = [f"{r['model']}/{r['stage']}" for r in rows if r["status"] == "failed"]
    skipped = [f"{r['model']}/{r['stage']}" for r in rows if r["status"] == "skipped"]
    res = {"mode": mode, "machine": machine, "env": env, "sizes": sizes, "big_layers": args.big_layers, "seconds": time.time() - t0}
    res["results"] = rows
    res.update(failed=failed, skipped=skipped)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    table = markdown(rows, machine, mode)
    (out / "gpu_check.md").write_text(table)
    print(table)
    print(
        f"gpu_check: {len(rows) - len(failed) - len(skipped)} ok, {len(failed)} failed {failed}, {len(skipped)} skipped, "
        f"{res['seconds']:.0f} s -> {out}"
    )
    return 1 if failed else 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
