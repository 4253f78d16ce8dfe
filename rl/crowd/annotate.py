"""``rl annotate``: simulated annotators vote on the lines of programs; vote table + honeypot truth.

Programs come from ``--programs FILE`` (JSONL) or, with ``--benchmark`` alone, from the
benchmark's canonical solutions plus ``--mutants-per-problem`` sandbox-verified mutants each
(:mod:`rl.tasks.mutants`). Every record of the programs file needs

* ``program``: the id (a string; integers are turned into strings), unique;
* ``code``: the full program text (line numbers are 1-based lines of it);

and one source of line truth:

* ``truth``: ``[[line, label], ...]`` or ``{"line": label}`` with labels ``+1``/``-1``,
  ``1``/``0`` or ``correct``/``wrong``. Its lines are the annotated lines; or
* ``task_id`` (``HumanEval/<n>``, ``Mbpp/<n>`` or ``synth/<split>/<template>/<idx>``; ``--benchmark``
  picks the benchmark, else the prefix does): the program runs in the sandbox on the problem's tests
  and :func:`rl.tasks.lines.line_truth` gives the truth of the lines of
  :func:`rl.tasks.lines.annotated_lines` (for HumanEval and the synthetic benchmark, ``code`` must
  start with the prompt, whose lines are not annotated, as in ``rl loop``). The rollout file of
  ``rl generate`` is such a file.

``truth`` wins when both are present. A ``--honeypots`` FRACTION of the programs (at least one
when FRACTION > 0; drawn with the seed) are honeypots: their line truth goes to ``truth.csv``,
and they come first in every output file. The population (``--population``, the SPEC grammar of
docs/formats.md, "Annotator populations (SPEC)"; simulated by :mod:`rl.crowd.population`) votes
on all annotated lines (``--per-program`` annotators per program).

Output directory (written to a temporary sibling, then renamed; a failed run leaves no DIR and
an existing DIR untouched): ``votes.csv`` (program,line,annotator,label), ``truth.csv``
(program,line,truth; honeypot lines), ``programs.csv`` (program,n_lines), ``true_lines.csv``
(program,line,truth; every annotated line), ``annotators.csv``
(annotator,kind,reliability,sensitivity,specificity,n_votes; sensitivity = P(vote +1 | line
correct), specificity = P(vote -1 | line wrong), reliability = P(vote == truth) on the lines the
annotator labelled), ``programs.jsonl`` (program, code, lines, honeypot, task_id, source, ...) and
``annotate.json`` (the arguments, the canonical population SPEC, and counts). Labels are written
``+1``/``-1``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from crowdstat.io.atomic import atomic_write_dir, check_output_dir
from crowdstat.io.jsonl import read_objects
from crowdstat.spec import DEFAULT_HONEYPOT_FRACTION
from rl.crowd import population as _pop
from rl.tasks import lines as _lines

__all__ = ["add_arguments", "run", "load_programs", "parse_label", "annotate", "write_outputs"]

DEFAULT_POPULATION = "expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3"
_LABELS = {"+1": 1, "1": 1, "1.0": 1, "correct": 1, "true": 1, "-1": -1, "-1.0": -1, "wrong": -1, "0": 0, "0.0": 0, "false": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--programs", type=Path, help="JSONL: program, code, and truth or task_id (see docs/annotation.md)")
    p.add_argument(
        "--population", default=DEFAULT_POPULATION, help=f"population SPEC (default {DEFAULT_POPULATION!r}; see docs/formats.md)"
    )
    p.add_argument(
        "--honeypots",
        type=float,
        default=DEFAULT_HONEYPOT_FRACTION,
        metavar="FRACTION",
        help=f"fraction of programs whose truth is revealed (default {DEFAULT_HONEYPOT_FRACTION}, as crowdstat simulate and rl loop)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory, replaced atomically (docs/cli.md, 'Output directories')")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty --out that is not an earlier output of rl annotate (never the current directory, a file, "
        "or a directory holding an input)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-program", type=int, default=None, metavar="R", help="annotators per program (default: all)")
    p.add_argument(
        "--benchmark",
        choices=("humaneval", "mbpp", "synthetic"),
        help="benchmark of the task_ids (default: told by their prefix); alone (no --programs): canonical solutions + mutants",
    )
    p.add_argument("--mutants-per-problem", type=int, default=2, metavar="K")
    p.add_argument(
        "--n-problems", type=int, default=None, metavar="N", help="with --benchmark and no --programs: the first N problems only"
    )
    p.add_argument("--mbpp-split", default="test", help="MBPP split (default test)")
    p.add_argument("--workers", type=int, default=2, help="sandbox workers")


def parse_label(raw, where: str) -> int:
    """+1 / -1 from any accepted coding; ``where`` names file and row in the error."""
    if isinstance(raw, bool):
        return 1 if raw else -1
    key = str(raw).strip().lower()
    if key not in _LABELS:
        raise ValueError(f"{where}: unknown label {raw!r} (expected +1/-1, 1/0 or correct/wrong)")
    return 1 if _LABELS[key] == 1 else -1


def _parse_truth(raw, where: str, n_lines: int) -> dict[int, int]:
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for k, it in enumerate(raw):
            if not isinstance(it, (list, tuple)) or len(it) != 2:
                raise ValueError(f"{where}: truth entry {k} must be [line, label], got {it!r}")
            items.append(tuple(it))
    else:
        raise ValueError(f"{where}: truth must be [[line, label], ...] or {{line: label}}, got {type(raw).__name__}")
    if not items:
        raise ValueError(f"{where}: truth is empty")
    out: dict[int, int] = {}
    codings = set()
    for ln, lab in items:
        try:
            line = int(ln)
            if isinstance(ln, float) and line != ln:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{where}: truth line {ln!r} is not an integer") from None
        if not 1 <= line <= n_lines:
            raise ValueError(f"{where}: truth line {line} outside the program's lines 1..{n_lines}")
        if line in out:
            raise ValueError(f"{where}: truth line {line} given twice")
        key = str(lab).strip().lower()
        if key in ("-1", "-1.0"):
            codings.add("pm")
        elif key in ("0", "0.0"):
            codings.add("01")
        out[line] = parse_label(lab, f"{where}: truth line {line}")
    if codings == {"pm", "01"}:
        raise ValueError(f"{where}: truth mixes the 1/0 coding with -1")
    return dict(sorted(out.items()))


def load_programs(path: Path) -> list[dict]:
    """Read and check a programs JSONL (no execution): list of dicts with program, code, and
    either ``truth`` ({line: +1/-1}) or ``task_id``; ``row`` is the 1-based file line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: programs file not found")
    out, seen = [], {}
    for row, where, rec in read_objects(path, ("program", "code")):
        pid = rec["program"]
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or (isinstance(pid, str) and not pid.strip()):
            raise ValueError(f"{where}: program id must be a non-empty string, got {pid!r}")
        pid = str(pid)
        if pid in seen:
            raise ValueError(f"{where}: duplicate program id {pid!r} (first at line {seen[pid]})")
        seen[pid] = row
        if not isinstance(rec["code"], str):
            raise ValueError(f"{where}: code must be a string")
        item = {"program": pid, "code": rec["code"], "row": row, "where": where}
        n_lines = max(1, len(rec["code"].splitlines()))
        if rec.get("truth") is not None:
            item["truth"] = _parse_truth(rec["truth"], where, n_lines)
        elif rec.get("task_id") is not None:
            if not isinstance(rec["task_id"], (str, int)) or isinstance(rec["task_id"], bool):
                raise ValueError(f"{where}: task_id must be a string, got {rec['task_id']!r}")
        else:
            raise ValueError(f"{where}: needs 'truth' (per-line labels) or 'task_id' (truth from execution)")
        if rec.get("task_id") is not None:
            item["task_id"] = rec["task_id"]
        out.append(item)
    if not out:
        raise ValueError(f"{path}: no programs")
    return out


def _problems(name: str, split: str) -> dict:
    from rl.tasks import benchmarks

    if name == "humaneval":
        probs = benchmarks.load_humaneval()
    else:
        probs = benchmarks.load(name, split="all")
    return {p.task_id: p for p in probs}


def _truth_by_execution(items: list[dict], benchmark: str | None, workers: int) -> None:
    """Fill item["truth"] for items that only have a task_id (runs them in the sandbox)."""
    from rl.execution import sandbox
    from rl.tasks import benchmarks

    todo = [it for it in items if "truth" not in it]
    if not todo:
        return
    cache: dict[str, dict] = {}
    jobs = []
    for it in todo:
        bench = benchmark or benchmarks.benchmark_of(it["task_id"])
        if bench is None:
            raise ValueError(f"{it['where']}: cannot tell the benchmark of task_id {it['task_id']!r}; pass --benchmark")
        try:
            tid = benchmarks.parse_task_id(it["task_id"], bench)
        except ValueError as e:
            raise ValueError(f"{it['where']}: {e}") from None
        if bench not in cache:
            cache[bench] = _problems(bench, "all")
        p = cache[bench].get(tid)
        if p is None:
            raise ValueError(f"{it['where']}: unknown {bench} task_id {it['task_id']!r}")
        if p.source in ("humaneval", "synthetic") and not it["code"].startswith(p.prompt):
            raise ValueError(f"{it['where']}: code does not start with the prompt of {tid}")
        it["task_id"], it["_problem"] = tid, p
        jobs.append(sandbox.Job(program=it["code"], tests=p.tests, setup=p.setup, entry_point=p.entry_point))
    with sandbox.Sandbox(workers=workers) as sb:
        results = sb.map(jobs, progress=len(jobs) > 20)
    for it, res in zip(todo, results):
        p = it.pop("_problem")
        it["status"] = res.status
        prompt = p.prompt if p.source in ("humaneval", "synthetic") else ""  # the prompt's lines are not annotated
        it["truth"] = _lines.line_truth(it["code"], p.canonical_program, res, prompt)
        if not it["truth"]:
            print(f"warning: {it['where']}: program {it['program']!r} has no annotated lines; skipped", file=sys.stderr)


def _from_benchmark(name: str, split: str, k: int, n_problems: int | None, seed: int, workers: int) -> list[dict]:
    from rl.execution import sandbox
    from rl.tasks import benchmarks, mutants

    if name == "humaneval":
        probs = benchmarks.load_humaneval()
    else:
        probs = benchmarks.load(name, split=split if name == "mbpp" else benchmarks.default_split(name))
    probs = probs[:n_problems] if n_problems is not None else probs
    with sandbox.Sandbox(workers=workers, limits=sandbox.Limits(timeout_s=2.0, cpu_s=4)) as sb:
        run = mutants.generate(probs, per_problem=k, seed=seed, sandbox=sb, progress=True) if k > 0 else None
    by_task: dict[str, list] = {}
    for m in run.mutants if run else []:
        by_task.setdefault(m.task_id, []).append(m)
    skipped = set(run.skipped_problems) if run else set()
    items = []
    for p in probs:
        if p.task_id in skipped:
            continue
        prompt = p.prompt if p.source in ("humaneval", "synthetic") else ""
        code = p.canonical_program
        ann = _lines.annotated_lines(code, prompt)
        items.append(
            {
                "program": f"{p.task_id}#canonical",
                "code": code,
                "task_id": p.task_id,
                "truth": {ln: 1 for ln in ann},
                "source": "canonical",
                "where": f"{name}:{p.task_id}",
            }
        )
        for j, m in enumerate(by_task.get(p.task_id, []), 1):
            ann = _lines.annotated_lines(m.program, prompt)
            items.append(
                {
                    "program": f"{p.task_id}#m{j}",
                    "code": m.program,
                    "task_id": p.task_id,
                    "truth": {ln: (-1 if ln in m.wrong_lines else 1) for ln in ann},
                    "source": "mutant",
                    "operator": m.operator,
                    "description": m.description,
                    "where": f"{name}:{p.task_id}#m{j}",
                }
            )
    return items


def annotate(items: list[dict], population: _pop.Population, honeypots: float, seed: int, per_program: int | None):
    """Choose honeypots and draw votes. Returns (ordered items with a "honeypot" flag, votes, seen)."""
    if not 0.0 <= honeypots <= 1.0:
        raise ValueError(f"--honeypots must be a fraction in [0, 1], got {honeypots}")
    items = [it for it in items if it["truth"]]
    if not items:
        raise ValueError("no program has annotated lines")
    hp_rng, vote_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    n_h = 0 if honeypots == 0 else max(1, int(round(honeypots * len(items))))
    chosen = set(hp_rng.permutation(len(items))[:n_h].tolist())
    ordered = [dict(it, honeypot=True) for i, it in enumerate(items) if i in chosen]
    ordered += [dict(it, honeypot=False) for i, it in enumerate(items) if i not in chosen]
    progs = [(it["program"], list(it["truth"]), list(it["truth"].values())) for it in ordered]
    votes, seen = _pop.simulate(progs, population, vote_rng, per_program)
    return ordered, votes, seen


def _csv(rows, header) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _pm(v: int) -> str:
    return "+1" if v == 1 else "-1"


_TOOL = "rl annotate"  # the tool named in the output directory's manifest


def write_outputs(out: Path, ordered, votes, seen, population: _pop.Population, meta: dict, *, force: bool = False, inputs=()) -> Path:
    """Write the output directory atomically (temporary sibling, then rename; crowdstat.io.atomic):
    a non-empty ``out`` that is not an earlier output of rl annotate is refused unless ``force``, the
    current directory, a file and a directory holding one of ``inputs`` always (OutputDirError)."""

    def write(tmp: Path) -> None:
        files = {
            "votes.csv": _csv([(p, ln, a, _pm(lab)) for p, ln, a, lab in votes], ("program", "line", "annotator", "label")),
            "truth.csv": _csv(
                [(it["program"], ln, _pm(t)) for it in ordered if it["honeypot"] for ln, t in it["truth"].items()],
                ("program", "line", "truth"),
            ),
            "programs.csv": _csv(
                [(it["program"], max(len(it["code"].splitlines()), max(it["truth"]))) for it in ordered], ("program", "n_lines")
            ),
            "true_lines.csv": _csv(
                [(it["program"], ln, _pm(t)) for it in ordered for ln, t in it["truth"].items()], ("program", "line", "truth")
            ),
            "annotators.csv": _csv(
                [
                    (
                        a.id,
                        a.kind,
                        f"{_pop.realised_reliability(a, *seen[a.id]):.6g}",
                        f"{a.sensitivity:.6g}",
                        f"{a.specificity:.6g}",
                        sum(seen[a.id]),
                    )
                    for a in population.annotators
                ],
                ("annotator", "kind", "reliability", "sensitivity", "specificity", "n_votes"),
            ),
        }
        recs = []
        for it in ordered:
            r = {"program": it["program"], "code": it["code"], "lines": list(it["truth"]), "honeypot": it["honeypot"]}
            for k in ("task_id", "source", "operator", "description", "status"):
                if k in it:
                    r[k] = it[k]
            recs.append(json.dumps(r, ensure_ascii=False))
        files["programs.jsonl"] = "".join(r + "\n" for r in recs)
        files["annotate.json"] = json.dumps(meta, indent=2) + "\n"
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    return atomic_write_dir(out, write, tool=_TOOL, force=force, inputs=inputs)


def run(args: argparse.Namespace) -> int:
    inputs = [args.programs] + ([args.population] if str(args.population).endswith(".json") else [])
    try:
        check_output_dir(args.out, tool=_TOOL, force=args.force, inputs=inputs)  # before any work
        population = _pop.parse_population(args.population)
        if args.per_program is not None and not 1 <= args.per_program <= len(population):
            raise ValueError(f"--per-program must be between 1 and the population size {len(population)}, got {args.per_program}")
        if not 0.0 <= args.honeypots <= 1.0:
            raise ValueError(f"--honeypots must be a fraction in [0, 1], got {args.honeypots}")
        if args.mutants_per_problem < 0:
            raise ValueError(f"--mutants-per-problem must be >= 0, got {args.mutants_per_problem}")
        if args.programs is not None:
            items = load_programs(args.programs)
            _truth_by_execution(items, args.benchmark, args.workers)
            for it in items:
                it.setdefault("source", "file")
        elif args.benchmark is not None:
            items = _from_benchmark(args.benchmark, args.mbpp_split, args.mutants_per_problem, args.n_problems, args.seed, args.workers)
        else:
            raise ValueError("give --programs FILE, or --benchmark to annotate canonical solutions + mutants")
        ordered, votes, seen = annotate(items, population, args.honeypots, args.seed, args.per_program)
    except ValueError as e:
        print(f"rl annotate: error: {e}", file=sys.stderr)
        return 2
    meta = {
        "programs": str(args.programs) if args.programs else None,
        "benchmark": args.benchmark,
        "population": population.spec,
        "honeypots": args.honeypots,
        "seed": args.seed,
        "per_program": args.per_program,
        "mutants_per_problem": args.mutants_per_problem,
        "n_programs": len(ordered),
        "n_honeypots": sum(it["honeypot"] for it in ordered),
        "n_lines": sum(len(it["truth"]) for it in ordered),
        "n_wrong_lines": sum(v == -1 for it in ordered for v in it["truth"].values()),
        "n_votes": len(votes),
        "n_annotators": len(population),
    }
    try:
        write_outputs(args.out, ordered, votes, seen, population, meta, force=args.force, inputs=inputs)
    except ValueError as e:  # OutputDirError: --out changed since the check, or cannot be written
        print(f"rl annotate: error: {e}", file=sys.stderr)
        return 2
    print(
        f"rl annotate: {meta['n_programs']} programs ({meta['n_honeypots']} honeypots), {meta['n_lines']} lines "
        f"({meta['n_wrong_lines']} wrong), {meta['n_votes']} votes from {meta['n_annotators']} annotators -> {args.out}"
    )
    return 0
