"""Adaptive vote allocation in a Label Studio round (``annotate = "labelstudio"``, ``allocation = "adaptive"``).

The round's tasks are pushed with a small overlap (:func:`start_overlap`: :data:`START_OVERLAP` = 2
annotations wanted per task, fewer when ``vote_budget`` or the crowd is smaller). Two, not the simulated
path's one: with a single review per program the fit cannot see annotators disagree, and two-coin EM
then calls nearly every program decided at once (measured on the real-server test's round: all 16
programs decided at confidence >= 0.99999 after one review each).
Once every task has its annotations, a **step** runs:

1. the votes so far are pulled (``adaptive/stepNN/votes.csv``) and ``python -m crowdstat next`` (a
   subprocess, through the rewarder's ``_crowdstat``: JAX never enters this process) proposes the next
   reviews (``adaptive/stepNN/next/next.csv``) and says which programs are decided (its ``programs.csv``);
2. :func:`plan_raise` turns the proposal into overlaps: each proposed review of an undecided program
   (or a honeypot review) raises that task's overlap by one, up to the number of annotators and the
   round's budget (``vote_budget`` annotations per program on average, :func:`round_budget`);
3. the new overlaps go to the server (``ls_ops.set_overlaps``: Label Studio then hands those tasks
   out again in its label stream), and with ``local_crowd`` the proposed annotators answer.

The steps stop when the budget is used up, when every program is decided, or when the proposal
raises nothing; the round's votes then go to the fit as in a fixed round.

**From whom is advisory.** Label Studio Community cannot assign a task to a chosen annotator: its
label stream gives an open task to whoever asks next. The proposal's annotator column is kept
(``adaptive.json``, each step's ``next.csv``); only the local crowd follows it.

State (``adaptive.json`` in the round's ``labelstudio/`` directory) makes every step resumable: a
step is recorded before the server is changed, and a half-done step is completed on resume.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from pathlib import Path

from crowdstat.io.atomic import atomic_write_csv, atomic_write_json
from rl.crowd import ls_ops, ls_round

__all__ = [
    "START_OVERLAP",
    "STEP_SHARE",
    "start_overlap",
    "round_budget",
    "read_proposal",
    "plan_raise",
    "all_decided",
    "start",
    "complete_step",
    "next_step",
]

#: annotations wanted per task when the round is pushed (see the module's docstring)
START_OVERLAP = 2
#: share of the round's programs whose reviews one step asks for (as the simulated path)
STEP_SHARE = 0.25


def start_overlap(vote_budget: float, n_annotators: int) -> int:
    """Annotations wanted per task at the push: :data:`START_OVERLAP`, at most ``vote_budget`` and the crowd."""
    return max(1, min(START_OVERLAP, math.floor(vote_budget), n_annotators))


def round_budget(n_programs: int, vote_budget: float) -> int:
    """Annotations the round may ask for in all: ``vote_budget`` per program on average."""
    if n_programs < 0 or not vote_budget >= 1:
        raise ValueError(f"round_budget: need n_programs >= 0 and vote_budget >= 1, got {n_programs}, {vote_budget}")
    return round(vote_budget * n_programs)


def _bad(path: Path, row: int, col: str, msg: str) -> ValueError:
    return ValueError(f"{path}: row {row}, column {col!r}: {msg}")


def read_proposal(next_dir: str | Path) -> tuple[list[tuple[str, str, str]], dict[str, bool]]:
    """``(proposals, decided)`` from ``crowdstat next``'s output: ``next.csv`` rows ``(program, annotator, kind)``
    in the order chosen, and ``programs.csv``'s ``decided`` column (program -> bool)."""
    d = Path(next_dir)
    props, decided = [], {}
    for name, cols in (("next.csv", ("program", "annotator", "kind")), ("programs.csv", ("program", "decided"))):
        path = d / name
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in cols if c not in (reader.fieldnames or [])]
            if missing:
                raise _bad(path, 1, missing[0], "column missing")
            for i, r in enumerate(reader, 2):
                if name == "next.csv":
                    props.append((r["program"], r["annotator"], r["kind"]))
                elif r["decided"] in ("True", "False"):
                    decided[r["program"]] = r["decided"] == "True"
                else:
                    raise _bad(path, i, "decided", f"expected True or False, got {r['decided']!r}")
    return props, decided


def plan_raise(
    proposals: list[tuple[str, str, str]], decided: dict[str, bool], wanted: dict[str, int], max_overlap: int, left: int
) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """``(new wanted overlaps, proposals taken)``.

    Each proposal ``(program, annotator, kind)`` in order raises its program's overlap by one, while
    annotations are ``left`` in the budget, the program is one of ``wanted`` (the round's programs), is not
    decided (honeypot reviews excepted: they teach about annotators) and has fewer than ``max_overlap``
    (the number of annotators) wanted. The annotator is advisory (Label Studio cannot assign).
    """
    new, taken = dict(wanted), []
    for prog, ann, kind in proposals:
        if left <= 0:
            break
        if prog not in new or new[prog] >= max_overlap or (decided.get(prog, False) and kind != "honeypot"):
            continue
        new[prog] += 1
        left -= 1
        taken.append((prog, ann, kind))
    return new, taken


def all_decided(decided: dict[str, bool], programs: list[str]) -> bool:
    """Whether every one of ``programs`` is decided (a program the fit has not seen is not)."""
    return all(decided.get(p, False) for p in programs)


def _state_file(ls_dir: Path) -> Path:
    return ls_dir / "adaptive.json"


def _wanted(ls_dir: Path, m: dict) -> dict[str, int]:
    """Program -> annotations wanted now (``overlap.json`` by task key; the push's overlap before any step)."""
    f = ls_dir / "overlap.json"
    by_key = json.loads(f.read_text()) if f.exists() else {}
    return {t["program"]: int(by_key.get(t["key"], m["per_program"])) for t in m["tasks"]}


def start(cfg, ls_dir: Path) -> dict:
    """The round's adaptive state (created after the push: budget, step size, the cap on overlaps)."""
    f = _state_file(ls_dir)
    if f.exists():
        return json.loads(f.read_text())
    m = ls_ops.read_round(ls_dir)
    n = len(m["tasks"])
    st = {
        "start_overlap": m["per_program"],
        "budget": round_budget(n, cfg.vote_budget),
        "step_size": max(1, math.ceil(STEP_SHARE * n)),
        "max_overlap": len(m["annotators"]),
        "confidence": cfg.allocation_confidence,
        "steps": [],
        "finished": None,
    }
    atomic_write_json(f, st)
    return st


def complete_step(cfg, rewarder, tag: str, ls_dir: Path) -> None:
    """Finish the last step if it stopped half-way: its overlaps to the server, then the local crowd's answers."""
    st = start(cfg, ls_dir)
    if not st["steps"]:
        return
    step = st["steps"][-1]
    m = ls_ops.read_round(ls_dir)
    if not step["patched"]:
        key = {t["program"]: t["key"] for t in m["tasks"]}
        ls_ops.set_overlaps(cfg.labelstudio.server, ls_dir, {key[p]: n for p, n in step["wanted"].items()})
        step["patched"] = True
        atomic_write_json(_state_file(ls_dir), st)
    if cfg.labelstudio.local_crowd and not step["posted"]:
        _local_answers(cfg, rewarder, tag, ls_dir, len(st["steps"]), step)
        step["posted"] = True
        atomic_write_json(_state_file(ls_dir), st)


def _local_answers(cfg, rewarder, tag: str, ls_dir: Path, k: int, step: dict) -> None:
    """The local crowd follows the proposal: each proposed annotator reviews its program (as the simulated path)."""
    import numpy as np

    from rl.crowd.population import simulate_reviews

    by_id = {p: (lines, truth, shown) for p, lines, truth, shown in json.loads((ls_dir / "local_truth.json").read_text()) if lines}
    rng = np.random.default_rng([cfg.seed, zlib.crc32(f"{cfg.seed}/{tag}".encode()), k])
    votes = simulate_reviews(by_id, [(p, a) for p, a, _ in step["taken"]], rewarder.population, rng)
    atomic_write_csv(ls_dir / step["dir"] / "crowd_votes.csv", ls_round.VOTE_COLUMNS, votes, parents=True)
    ls_ops.post_votes(ls_dir, votes)
    f = ls_dir / "crowd_votes.csv"
    with open(f, newline="") as fh:
        before = [tuple(r) for r in list(csv.reader(fh))[1:]]
    atomic_write_csv(f, ls_round.VOTE_COLUMNS, before + [(p, ln, a, lab) for p, ln, a, lab in votes])


def next_step(cfg, rewarder, tag: str, ls_dir: Path) -> bool:
    """With every task's annotations in: pull, ``crowdstat next``, raise the overlaps. False when the round is finished."""
    st = start(cfg, ls_dir)
    if st["finished"]:
        return False
    m = ls_ops.read_round(ls_dir)
    wanted = _wanted(ls_dir, m)
    left = st["budget"] - sum(wanted.values())
    k = len(st["steps"])
    sdir = Path("adaptive") / f"step{k:02d}"
    reason = None
    if left <= 0:
        reason = "budget"
    else:
        rows, _ = ls_ops.pull_round(cfg.labelstudio.server, ls_dir, ls_dir / sdir / "votes_labelstudio.csv")
        votes = ls_dir / sdir / "votes.csv"
        ls_round.write_votes(votes, rows, detail=False)
        cmd = ["next", str(votes), "--budget", str(min(st["step_size"], left)), "--confidence", str(st["confidence"])]
        cmd += ["--honeypot-fraction", str(cfg.honeypot_fraction), "--method", rewarder._allocation_fit()]
        cmd += ["--annotators", ",".join(a["annotator"] for a in m["annotators"]), "--out", str(ls_dir / sdir / "next")]
        truth = ls_dir / "truth.csv"
        if truth.stat().st_size > len("program,line,truth\n"):
            cmd += ["--truth", str(truth)]
        rewarder._crowdstat(cmd, votes)
        props, decided = read_proposal(ls_dir / sdir / "next")
        new, taken = plan_raise(props, decided, wanted, st["max_overlap"], left)
        if all_decided(decided, list(wanted)):
            reason = "all decided"
        elif not taken:
            reason = "nothing to ask"
        else:
            st["steps"].append({"dir": str(sdir), "wanted": new, "taken": [list(t) for t in taken], "patched": False, "posted": False})
    if reason:
        st["finished"] = reason
    st["annotations_wanted"] = sum((st["steps"][-1]["wanted"] if st["steps"] else wanted).values())
    atomic_write_json(_state_file(ls_dir), st)
    if reason:
        return False
    complete_step(cfg, rewarder, tag, ls_dir)
    return True
