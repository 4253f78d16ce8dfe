"""Evaluation: sample completions, run them in the sandbox, report pass@k; one evaluation for
``rl evaluate`` and for the held-out evaluation of ``rl loop``.

Sampling goes through the one sampler (:mod:`rl.policy.sampling`) with a
:class:`~rl.config.SamplingConfig`, by default the model's full distribution (top_k=0, top_p=1),
as the loop's rollouts are sampled: pass@k of ``rl evaluate`` and of the loop then measure the
same policy and are comparable. ``--top-p`` / ``--top-k`` select truncated sampling.

- :func:`generate_completions` and :func:`evaluate` work on an in-memory model and any problems
  with a ``prompt`` and a ``job(completion)`` (HumanEval, MBPP, the synthetic benchmark).
  Completions end at the benchmark's stop sequences (:data:`STOP_SEQUENCES`) unless
  ``SamplingConfig.stop`` gives others.
- ``rl evaluate`` loads a model with ``AutoModelForCausalLM.from_pretrained(PATH_OR_NAME)`` (set
  ``HF_HUB_OFFLINE=1`` to forbid downloads), GPU with bf16/fp16 when available, CPU float32
  otherwise, with ``--adapter DIR`` a LoRA adapter on it (a checkpoint of ``rl train`` or ``rl loop``;
  ``--model`` defaults to the adapter's base), on HumanEval, MBPP or the synthetic benchmark
  (``--split``: MBPP test, synthetic heldout by default), reports pass@k for ``--k`` (default 1, 10
  and 100, those <= ``--n``) and writes ``samples.jsonl``, ``problems.jsonl`` and ``summary.json`` atomically.
- :func:`evaluate_heldout` / :func:`heldout_pass`: the loop's evaluation on held-out problems of the
  synthetic benchmark (pass@1, pass@10 when n >= 10, per template), with :func:`eval_sampling`.

torch is imported inside functions only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.config import LoopConfig, SamplingConfig
from rl.config.paths import check_model, check_output
from rl.policy import sampling
from rl.policy.sampling import add_sampling_arguments

__all__ = [
    "STOP_SEQUENCES",
    "truncate",
    "default_stop",
    "generate_completions",
    "evaluate",
    "EvalResult",
    "eval_sampling",
    "heldout_problems",
    "heldout_pass",
    "evaluate_heldout",
    "add_arguments",
    "sampling_from_args",
    "run",
    "load_model",
]

# HumanEval: Chen et al. (2021) stop sequences. MBPP: bigcode-evaluation-harness's, where a
# completion is a whole function (so "\ndef " must not stop it: helpers are allowed).
STOP_SEQUENCES: dict[str, tuple[str, ...]] = {
    "humaneval": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"),
    "mbpp": ("\nclass", "\nassert", '\n"""', "\nprint(", "\nif __name__", "\n#", "\n```", "\n<|/"),
}


def truncate(completion: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut ``completion`` at the earliest stop sequence (the sequence itself is dropped)."""
    cut = len(completion)
    for s in stop:
        i = completion.find(s)
        if i != -1 and i < cut:
            cut = i
    return completion[:cut]


def default_stop(problems) -> tuple[str, ...]:
    """The stop sequences of the problems' benchmark (none for a benchmark without any, e.g. synthetic)."""
    sources = {p.source for p in problems}
    if len(sources) != 1:
        raise ValueError(f"problems mix benchmarks {sorted(sources)}; evaluate one benchmark at a time")
    return STOP_SEQUENCES.get(sources.pop(), ())


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    pass_at_k: dict[str, float]
    samples: list[dict]  # one per completion: task_id, completion_id, completion, status, ...
    problems: list[dict]  # one per problem: task_id, n, n_passed, statuses
    status_counts: dict[str, int]
    network_isolated: bool
    timings: dict[str, float] = field(default_factory=dict)
    #: group -> pass@k of its problems (when evaluate() was given ``group``)
    per_group: dict[str, dict[str, float]] = field(default_factory=dict)


def generate_completions(
    model, tokenizer, prompts: list[str], n: int, sampling: SamplingConfig, *, progress: bool = False
) -> list[list[str]]:
    """``n`` completions of each prompt (cut at ``sampling.stop``) from :func:`rl.policy.sampling.sample`."""
    from rl.policy.sampling import sample

    outs: list[list[str]] = [[] for _ in prompts]
    for s in sample(model, tokenizer, prompts, n, sampling, progress=progress):
        outs[s.prompt_index].append(s.completion)
    return outs


def evaluate(
    model,
    tokenizer,
    problems,
    n: int,
    sampling: SamplingConfig | None = None,
    *,
    sandbox=None,
    workers: int = 2,
    limits=None,
    ks=(1, 10, 100),
    group: Callable[[str], str] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Sample ``n`` completions per problem, run them in the sandbox and compute pass@k.

    ``sampling``: default :class:`SamplingConfig` (full distribution); ``stop=None`` means the
    benchmark's :data:`STOP_SEQUENCES`. ``sandbox``: an open sandbox to reuse, else a fresh
    ``Sandbox(workers, limits)``. ``ks``: the k reported (those <= n). ``group``: task id -> group
    name, for pass@k per group (``EvalResult.per_group``).
    """
    from rl.execution.passk import pass_at_k
    from rl.execution.sandbox import Limits, Sandbox

    problems = list(problems)
    if not problems:
        raise ValueError("no problems to evaluate")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sampling = sampling or SamplingConfig()
    if sampling.stop is None:
        sampling = dataclasses.replace(sampling, stop=default_stop(problems))
    t0 = time.monotonic()
    comps = generate_completions(model, tokenizer, [p.prompt for p in problems], n, sampling, progress=progress)
    t1 = time.monotonic()
    jobs = [p.job(c) for p, cs in zip(problems, comps) for c in cs]
    own = sandbox is None
    sb = Sandbox(workers=workers, limits=limits or Limits()) if own else sandbox
    try:
        results = sb.map(jobs, progress=progress)
        netns = sb.network_isolated
    finally:
        if own:
            sb.close()
    t2 = time.monotonic()
    samples, per_problem, per = [], [], {}
    it = iter(results)
    for p, cs in zip(problems, comps):
        statuses = []
        for j, c in enumerate(cs):
            r = next(it)
            statuses.append(r.status)
            samples.append(
                {
                    "task_id": p.task_id,
                    "completion_id": j,
                    "completion": c,
                    "status": r.status,
                    "passed": r.status == "passed",
                    "failing_test": r.failing_test,
                    "exception_type": r.exception_type,
                    "line": r.line,
                    "message": r.message,
                }
            )
        per[p.task_id] = [s == "passed" for s in statuses]
        per_problem.append({"task_id": p.task_id, "n": len(cs), "n_passed": sum(per[p.task_id]), "statuses": statuses})
    groups: dict[str, dict[str, list[bool]]] = {}
    for tid, passed in per.items():
        if group is not None:
            groups.setdefault(group(tid), {})[tid] = passed
    return EvalResult(
        pass_at_k=pass_at_k(per, ks=ks),
        samples=samples,
        problems=per_problem,
        status_counts=dict(Counter(s["status"] for s in samples).most_common()),
        network_isolated=bool(netns),
        timings={"generate_s": round(t1 - t0, 3), "execute_s": round(t2 - t1, 3)},
        per_group={g: pass_at_k(v, ks=ks) for g, v in sorted(groups.items())},
    )


# ---------------------------------------------------------------------------------------------
# the loop's held-out evaluation


def eval_sampling(cfg: LoopConfig) -> SamplingConfig:
    """The sampler of the loop's evaluation (:meth:`rl.config.LoopConfig.eval_sampling`)."""
    return cfg.eval_sampling()


def heldout_problems(cfg: LoopConfig, bench) -> list:
    """The held-out problems the loop evaluates on (``eval.per_template``, then ``eval.n_problems``)."""
    from rl.tasks.synthetic import template_of

    heldout = bench.heldout
    if cfg.eval.per_template:  # the first k held-out problems of every template
        seen: dict[str, int] = {}
        kept = []
        for p in heldout:
            t = template_of(p.task_id)
            if seen.get(t, 0) < cfg.eval.per_template:
                seen[t] = seen.get(t, 0) + 1
                kept.append(p)
        heldout = kept
    if cfg.eval.n_problems and cfg.eval.n_problems < len(heldout):
        heldout = random.Random(f"eval/{cfg.seed}").sample(heldout, cfg.eval.n_problems)
    return heldout


def heldout_pass(model, tokenizer, problems, cfg: LoopConfig, *, sandbox, n: int | None = None, progress: bool = False) -> dict[str, Any]:
    """The loop's evaluation: ``n`` (default ``eval.n``) samples per problem with :func:`eval_sampling`;
    ``{"n", "n_problems", "pass@1", "pass@10" (n >= 10), "per_template": {template: {"pass@1", ...}}}``."""
    from rl.tasks.synthetic import template_of

    n = n or cfg.eval.n
    res = evaluate(model, tokenizer, problems, n, eval_sampling(cfg), sandbox=sandbox, ks=(1, 10), group=template_of, progress=progress)
    return {"n": n, "n_problems": len(problems), **res.pass_at_k, "per_template": res.per_group}


def evaluate_heldout(cfg: LoopConfig) -> dict[str, Any]:
    """The round-0 evaluation of :func:`rl.loop.run_rounds` (the base model, the run's held-out set and
    eval seed); pass it as ``initial_eval`` to runs of the same model, seed and eval settings."""
    import torch

    from rl.execution.sandbox import Sandbox
    from rl.policy.models import load_policy
    from rl.tasks.synthetic import make_benchmark

    if not cfg.model:
        raise ValueError("evaluate_heldout: the config names no model")
    torch.set_num_threads(cfg.threads)
    model, tok = load_policy(cfg.model, None)
    with Sandbox(workers=2) as sb:
        problems = heldout_problems(cfg, make_benchmark(**dataclasses.asdict(cfg.bench)))
        return heldout_pass(model, tok, problems, cfg, sandbox=sb)


# ---------------------------------------------------------------------------------------------
# rl evaluate


def load_model(name_or_path: str | None, device: str | None = None, adapter: str | os.PathLike | None = None):
    """(model, tokenizer, device) via AutoModelForCausalLM.from_pretrained and rl.policy.models.load_tokenizer;
    with ``adapter``, the LoRA adapter in that directory on top (peft), and the base model defaults to the
    adapter's ``base_model_name_or_path``.

    ``load_tokenizer`` (not AutoTokenizer) because transformers 5.23's AutoTokenizer forces
    Qwen2Tokenizer on every qwen2 directory, which breaks locally trained character vocabularies.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from rl.policy.models import adapter_base, load_tokenizer, quiet_gradient_checkpointing_warning

    if name_or_path is None:
        name_or_path = adapter_base(adapter) if adapter is not None else None
        if not name_or_path:
            raise ValueError("--model: not given, and the adapter's adapter_config.json names no base model")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    tok = load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        adapter_base(adapter)  # a one-line error when it is not an adapter directory
        with quiet_gradient_checkpointing_warning():
            model = PeftModel.from_pretrained(model, str(adapter))
    model.to(dev)
    model.eval()
    return model, tok, dev


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rl.execution.check import add_k_argument

    parser.add_argument("--model", default=None, help="a local path or hub name for from_pretrained (default: the --adapter's base)")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter directory on top of --model (a checkpoint of rl train or rl loop)")
    parser.add_argument("--benchmark", required=True, choices=("humaneval", "mbpp", "synthetic"))
    parser.add_argument("--n", type=int, default=100, help="samples per problem (default 100)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--split", default=None, help="MBPP split (default test); synthetic: heldout (default), train or all")
    add_k_argument(parser, (1, 10, 100))
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 2), help="sandbox workers")
    parser.add_argument("--timeout", type=float, default=5.0, help="sandbox wall-clock seconds per program")
    add_sampling_arguments(parser, temperature=0.8, batch_size=16)
    parser.add_argument("--no-progress", action="store_true")


def sampling_from_args(args: argparse.Namespace) -> SamplingConfig:
    """The sampler of ``rl evaluate`` (the benchmark's stop sequences)."""
    return sampling.sampling_from_args(args, stop=STOP_SEQUENCES.get(args.benchmark, ()))


def run(args: argparse.Namespace) -> int:
    from crowdstat.io.atomic import atomic_write_json, atomic_write_jsonl
    from rl.execution.check import check_ks
    from rl.execution.sandbox import Limits
    from rl.tasks.benchmarks import default_split, load

    try:
        for name in ("n", "workers"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        if not (math.isfinite(args.timeout) and args.timeout > 0):
            raise ValueError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
        check_output(args.out)  # before the model loads, not after the sampling
        if args.model is None and args.adapter is None:
            raise ValueError("give --model (and optionally --adapter), or --adapter alone when its config names the base model")
        if args.model is not None:
            check_model(args.model)
        ks = check_ks(args.k, args.n, (1, 10, 100))
        sampling = sampling_from_args(args)
        split = args.split or default_split(args.benchmark)
        kw = {"split": split} if split else {}
        problems = load(args.benchmark, **kw)
    except (ValueError, FileNotFoundError) as e:
        print(f"rl evaluate: error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        problems = problems[: args.limit]
    try:
        model, tok, dev = load_model(args.model, args.device, args.adapter)
    except (OSError, ValueError) as e:
        what = f"adapter {args.adapter!r}" if args.adapter and not isinstance(e, OSError) else f"model {args.model or args.adapter!r}"
        print(f"rl evaluate: error: cannot load {what}: {e}", file=sys.stderr)
        return 2
    limits = Limits(timeout_s=args.timeout, cpu_s=max(1, int(args.timeout * 2 + 1)))
    res = evaluate(model, tok, problems, args.n, sampling, workers=args.workers, limits=limits, ks=ks, progress=not args.no_progress)
    out = Path(args.out)
    atomic_write_jsonl(out / "samples.jsonl", res.samples, parents=True)
    atomic_write_jsonl(out / "problems.jsonl", res.problems)
    summary = {
        "model": str(args.model) if args.model else None,
        "adapter": str(args.adapter) if args.adapter else None,
        "benchmark": args.benchmark,
        "split": kw.get("split"),
        "n_problems": len(problems),
        "samples_per_problem": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "device": str(dev),
        "pass_at_k": res.pass_at_k,
        "status_counts": res.status_counts,
        "network_isolated": res.network_isolated,
        "timings": res.timings,
        "stop_sequences": list(STOP_SEQUENCES.get(args.benchmark, ())),
    }
    atomic_write_json(out / "summary.json", summary)
    pk = ", ".join(f"{k}={v:.4f}" for k, v in res.pass_at_k.items())
    print(f"{len(problems)} problems x {args.n} samples: {pk}; statuses {res.status_counts}; wrote {out}")
    return 0
