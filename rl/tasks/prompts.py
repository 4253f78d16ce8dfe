"""``rl prompts``: write the prompt file ``rl generate`` reads, from a benchmark split.

    rl prompts --benchmark synthetic --split train --n 16 --seed 0 --out prompts.jsonl

One JSON object a line: ``prompt_id`` (the task id), ``prompt`` and ``task_id``, so the rollouts
``rl generate`` writes carry the task id and ``rl annotate --programs`` finds each program's tests.
``--n N`` draws N problems of the split at random (seeded by ``--seed``; kept in the benchmark's
order), as ``rl loop`` draws its prompts of a round; without ``--n``, every problem of the split.
The file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from crowdstat.io.atomic import atomic_write_text
from rl.config.paths import check_output

__all__ = ["add_arguments", "run", "prompt_records"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rl.tasks.benchmarks import BENCHMARKS

    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument(
        "--split", default=None, help="MBPP: test (default), train, validation, prompt, all; synthetic: heldout (default), train, all"
    )
    p.add_argument("--n", type=int, default=None, metavar="N", help="draw N problems of the split at random (default: every problem)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--out", required=True, type=Path, help="prompt file to write (JSONL: prompt_id, prompt, task_id)")


def prompt_records(problems, n: int | None = None, seed: int = 0) -> list[dict]:
    """``{prompt_id, prompt, task_id}`` of ``n`` problems drawn with ``seed`` (all when ``n`` is None), in their order."""
    problems = list(problems)
    if n is not None:
        if not 1 <= n <= len(problems):
            raise ValueError(f"--n must be between 1 and the {len(problems)} problems of the split, got {n}")
        keep = set(random.Random(f"prompts/{seed}").sample(range(len(problems)), n))
        problems = [p for i, p in enumerate(problems) if i in keep]
    return [{"prompt_id": p.task_id, "prompt": p.prompt, "task_id": p.task_id} for p in problems]


def run(args: argparse.Namespace) -> int:
    from rl.tasks.benchmarks import default_split, load

    try:
        check_output(args.out, directory=False)
        split = args.split or default_split(args.benchmark)
        if args.benchmark == "humaneval" and args.split is not None:
            raise ValueError("--split: HumanEval has no splits")
        problems = load(args.benchmark, **({"split": split} if split else {}))
        records = prompt_records(problems, args.n, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"rl prompts: error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), parents=True)
    where = f"{args.benchmark}" + (f" {split}" if split else "")
    print(f"rl prompts: {len(records)} prompts of {where} ({len(problems)} problems) -> {args.out}")
    return 0
