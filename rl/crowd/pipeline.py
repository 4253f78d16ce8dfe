"""The crowd reward pipeline: programs -> sandbox -> line truth -> simulated votes -> ``crowdstat fit`` -> rewards.

One pipeline backs the PPO loop (:mod:`rl.loop`) and the GRPO reward function (:mod:`rl.train.grpo`):

1. every program runs in the sandbox; each annotated line gets its truth from
   :func:`rl.tasks.lines.line_truth` on ``prompt + completion`` with the prompt as the unannotated
   prefix (pass -> every line correct; else an AST-unit diff against the canonical program,
   renaming-aware, plus the line that raised);
2. a simulated population (:func:`rl.crowd.population.simulate`, a ``crowdstat.spec`` population,
   default :data:`DEFAULT_POPULATION` with biased raters: a lazy rater who accepts most lines
   unseen, an ``examples`` rater who approves every line of a program whose shown examples pass,
   adversaries, a spammer) votes on every annotated line, and a ``honeypot_fraction`` of the
   programs reveal their line truth; or human votes are given (pause mode of the loop);
3. ``python -m crowdstat fit`` in a subprocess (JAX never enters this process) aggregates the votes
   of all batches so far (``cumulative``: the sequential and proximal estimators keep learning the
   annotators' reliabilities) into ``rewards.jsonl``, read back through :mod:`crowdstat.io.rewards`.

The reward sources ``true_lines`` (the line truth as posteriors) and ``execution`` (the share of
tests passed, on every line) bypass the crowd and write the same reward file format.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crowdstat.io.atomic import atomic_write_csv, atomic_write_json
from rl.config import DEFAULT_POPULATION, NON_CROWD_SOURCES, reward_sources

__all__ = ["ALLOCATIONS", "CROWD_METHODS", "SOURCES", "DEFAULT_POPULATION", "Scored", "CrowdRewarder"]

#: how votes are asked for: ``fixed`` (``per_program`` annotators per program) or ``adaptive`` (``crowdstat next``)
ALLOCATIONS = ("fixed", "adaptive")

#: every reward source (``rl.config.reward_sources``)
SOURCES: tuple[str, ...] = reward_sources()
#: those through ``crowdstat fit``: ``auto`` (its default: a method chosen from the data, calibrated with
#: enough honeypots) and the crowdstat methods (its registry)
CROWD_METHODS: tuple[str, ...] = tuple(s for s in SOURCES if s not in NON_CROWD_SOURCES)

_VOTES_HEADER = ["program", "line", "annotator", "label"]
_TRUTH_HEADER = ["program", "line", "truth"]


def _population(spec):
    from rl.crowd.population import Population, parse_population

    return spec if isinstance(spec, Population) else parse_population(spec)


@dataclass
class Scored:
    """What the pipeline knows about one program (beyond its reward record)."""

    program: str
    task_id: str
    passed: bool
    pass_frac: float
    shown_pass: bool
    truths: list[tuple[int, bool]]


def _n_lines(code: str) -> int:
    return code.count("\n") + (0 if code.endswith("\n") else 1)


def _record(program: str, n_lines: int, lines: list[int], post: list[float], method: str, tau: float) -> dict:
    """A reward record (the reward-file schema) from line posteriors."""
    k = len(lines)
    return {
        "program": program,
        "reward": (sum(p > tau for p in post) / k) if k else 0.0,
        "reward_soft": (sum(post) / k) if k else 0.0,
        "n_lines": n_lines,
        "n_annotated": k,
        "coverage": k / n_lines if n_lines else 0.0,
        "lines": lines,
        "posteriors": post,
        "tau": tau,
        "method": method,
    }


class CrowdRewarder:
    """Programs -> reward records (the reward-file schema), through the sandbox and the crowd.

    ``source``: a crowdstat method (votes are simulated by ``population`` and aggregated by
    ``python -m crowdstat fit`` in a subprocess), ``true_lines`` or ``execution``.
    Votes accumulate in ``workdir/crowd`` across calls (``cumulative=True``), so the sequential
    and proximal estimators see every earlier batch; rewards are returned for this call's programs.
    """

    def __init__(
        self,
        source: str,
        workdir: str | Path,
        *,
        population=None,
        per_program: int | None = None,
        honeypot_fraction: float = 0.1,
        crowd_args: list | None = None,
        cumulative: bool = True,
        sandbox=None,
        seed: int = 0,
        tau: float = 0.5,
        allocation: str = "fixed",
        vote_budget: float = 3.0,
        confidence: float = 0.95,
    ):
        if source not in SOURCES:
            raise ValueError(f"reward source must be one of {SOURCES}, got {source!r}")
        if not 0.0 <= honeypot_fraction <= 1.0:
            raise ValueError(f"honeypot_fraction must be in [0, 1], got {honeypot_fraction}")
        self.source = source
        self.workdir = Path(workdir)
        self.population = _population(population if population is not None else DEFAULT_POPULATION)
        n = len(self.population)
        if per_program is not None and not 1 <= per_program <= n:
            raise ValueError(f"per_program must be between 1 and the population size {n}, got {per_program!r}")
        self.per_program = per_program
        self.honeypot_fraction = honeypot_fraction
        self.crowd_args = [str(a) for a in (crowd_args or [])]
        self.cumulative = cumulative
        self.sandbox = sandbox
        self.seed = seed
        self.tau = tau
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        if not (isinstance(vote_budget, (int, float)) and vote_budget >= 1):
            raise ValueError(f"vote_budget must be a number >= 1 (reviews per program), got {vote_budget!r}")
        if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1):
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
        self.allocation = allocation
        self.vote_budget = float(vote_budget)
        self.confidence = float(confidence)
        self.fit_seconds = 0.0

    # -- execution + truth
    def score(self, items: list[tuple[str, Any, str]]) -> list[Scored]:
        """``items``: ``(program id, Problem, completion)``. Runs every program in the sandbox."""
        from rl.execution.sandbox import Sandbox
        from rl.tasks.lines import line_truth

        own = self.sandbox is None
        sb = Sandbox(workers=2) if own else self.sandbox
        try:
            res = sb.map([p.job(c) for _, p, c in items])
        finally:
            if own:
                sb.close()
        out = []
        for (prog, p, c), r in zip(items, res):
            n = len(p.tests)
            if r.status == "passed":
                k = n
            elif r.status == "failed" and r.failing_test is not None:
                k = r.failing_test  # tests run in order; those before the failing one passed
            else:
                k = 0
            # the prompt (comment, examples, signature) is never annotated: pass it as the prefix
            truths = sorted((ln, v == 1) for ln, v in line_truth(p.program(c), p.canonical_program, r, prompt=p.prompt).items())
            out.append(Scored(prog, p.task_id, r.status == "passed", k / n if n else 0.0, k >= 2, truths))
        return out

    # -- rewards
    def rewards(
        self, items: list[tuple[str, Any, str]], tag: str, votes_file: Path | None = None, truth_file: Path | None = None
    ) -> tuple[dict[str, dict], list[Scored], dict]:
        """Reward records for ``items``; writes ``workdir/tag/rewards.jsonl``. Returns (records, scored, info).

        ``votes_file``/``truth_file``: human votes for this batch (pause mode) instead of the simulation.
        """
        from crowdstat.io.rewards import write_rewards

        d = self.workdir / tag
        d.mkdir(parents=True, exist_ok=True)
        scored = self.score(items)
        n_lines = {prog: _n_lines(p.program(c)) for prog, p, c in items}
        info: dict = {"source": self.source}
        if self.source in NON_CROWD_SOURCES:
            recs = {}
            for s in scored:
                lines = [ln for ln, _ in s.truths]
                post = [1.0 if t else 0.0 for _, t in s.truths] if self.source == "true_lines" else [s.pass_frac] * len(lines)
                recs[s.program] = _record(s.program, n_lines[s.program], lines, post, self.source, self.tau)
        else:
            recs = self._crowd_records(scored, n_lines, tag, d, votes_file, truth_file, info)
        write_rewards(d / "rewards.jsonl", [recs[prog] for prog, _, _ in items])
        return recs, scored, info

    def _simulate(self, scored: list[Scored], tag: str, d: Path) -> tuple[Path, Path]:
        """Simulated votes and honeypot truth of one batch (``d/votes.csv``, ``d/truth.csv``)."""
        import numpy as np

        from rl.crowd.population import simulate

        key = zlib.crc32(f"{self.seed}/{tag}".encode())
        votes, _ = simulate(
            [(s.program, [ln for ln, _ in s.truths], [1 if t else -1 for _, t in s.truths], s.shown_pass) for s in scored],
            self.population,
            np.random.default_rng([self.seed, key]),
            self.per_program,
        )
        rng = random.Random(f"{self.seed}/{tag}")
        truth = []
        for s in [s for s in scored if s.truths and rng.random() < self.honeypot_fraction]:
            truth.extend((s.program, ln, 1 if t else -1) for ln, t in s.truths)
        atomic_write_csv(d / "votes.csv", _VOTES_HEADER, votes)
        atomic_write_csv(d / "truth.csv", _TRUTH_HEADER, truth)
        return d / "votes.csv", d / "truth.csv"

    def _simulate_adaptive(self, scored: list[Scored], tag: str, d: Path, info: dict) -> tuple[Path, Path]:
        """Votes asked for adaptively: two random reviews per program, then rounds of ``crowdstat next``
        (a quarter of the programs per round) until ``vote_budget`` reviews per program on average or every
        program is decided at ``confidence`` (docs/allocation.md)."""
        import math

        import numpy as np

        from rl.crowd.population import simulate, simulate_reviews

        key = zlib.crc32(f"{self.seed}/{tag}".encode())
        rng = np.random.default_rng([self.seed, key])
        entries = [(s.program, [ln for ln, _ in s.truths], [1 if t else -1 for _, t in s.truths], s.shown_pass) for s in scored if s.truths]
        # two random reviews per program to start (one makes two-coin EM call every program decided at once)
        start = max(1, min(2, int(self.vote_budget), len(self.population)))
        votes, _ = simulate(entries, self.population, rng, start)
        hp_rng = random.Random(f"{self.seed}/{tag}")
        truth = []
        for s in [s for s in scored if s.truths and hp_rng.random() < self.honeypot_fraction]:
            truth.extend((s.program, ln, 1 if t else -1) for ln, t in s.truths)
        atomic_write_csv(d / "truth.csv", _TRUTH_HEADER, truth)
        by_id = {e[0]: e[1:] for e in entries}
        total, used, rounds = round(self.vote_budget * len(entries)), start * len(entries), 0
        batch = max(1, math.ceil(0.25 * len(entries)))
        while used < total and entries:
            atomic_write_csv(d / "votes.csv", _VOTES_HEADER, votes)
            nxt = d / "next" / f"round{rounds:02d}"
            cmd = ["next", str(d / "votes.csv"), "--budget", str(min(batch, total - used)), "--confidence", str(self.confidence)]
            cmd += ["--honeypot-fraction", str(self.honeypot_fraction), "--method", self._allocation_fit(), "--out", str(nxt)]
            if truth:
                cmd += ["--truth", str(d / "truth.csv")]
            self._crowdstat(cmd, d / "votes.csv")
            with open(nxt / "next.csv", newline="") as f:
                pairs = [(r["program"], r["annotator"]) for r in csv.DictReader(f)]
            if not pairs:
                break
            votes += simulate_reviews(by_id, pairs, self.population, rng)
            used += len(pairs)
            rounds += 1
        atomic_write_csv(d / "votes.csv", _VOTES_HEADER, votes)
        info["allocation"] = {"reviews": used, "programs": len(entries), "rounds": rounds, "budget": total}
        return d / "votes.csv", d / "truth.csv"

    def _allocation_fit(self) -> str:
        """The fit the allocation starts from: the reward source when it is a Dawid-Skene EM, else two-coin EM
        (fast, and calibrated where sequential's posteriors collapse to 0/1 and would stop every program at once)."""
        return self.source if self.source in ("em1", "em2") else "em2"

    def _crowd_records(
        self, scored: list[Scored], n_lines: dict[str, int], tag: str, d: Path, votes_file: Path | None, truth_file: Path | None, info: dict
    ) -> dict[str, dict]:
        from crowdstat.io.rewards import read_rewards

        if votes_file is None:
            if self.allocation == "adaptive":
                votes_file, truth_file = self._simulate_adaptive(scored, tag, d, info)
            else:
                votes_file, truth_file = self._simulate(scored, tag, d)
                with open(votes_file, newline="") as f:
                    reviews = len({(r["program"], r["annotator"]) for r in csv.DictReader(f)})
                info["allocation"] = {"reviews": reviews, "programs": sum(1 for s in scored if s.truths)}
        fit_votes, fit_truth = self._accumulate(votes_file, truth_file, tag)
        info.update(self._fit(fit_votes, fit_truth, d / "fit"))
        pre = f"{tag}:"
        by_prog = {
            r["program"][len(pre) :]: {**r, "program": r["program"][len(pre) :]}
            for r in read_rewards(d / "fit" / "rewards.jsonl")
            if r["program"].startswith(pre)
        }
        recs = {}
        for s in scored:
            r = by_prog.get(s.program)
            if r is None:  # nothing to vote on (empty completion): reward 0
                recs[s.program] = _record(s.program, n_lines[s.program], [], [], self.source, self.tau)
            else:
                r = {k: v for k, v in r.items() if k != "schema_version"}
                r["n_lines"] = n_lines[s.program]
                r["coverage"] = r["n_annotated"] / r["n_lines"]
                recs[s.program] = r
        # agreement of the crowd's line decisions with the truth (diagnostic only)
        agree = [(p > 0.5) == t for s in scored if s.program in by_prog for (ln, t), p in zip(s.truths, by_prog[s.program]["posteriors"])]
        info["line_accuracy"] = sum(agree) / len(agree) if agree else float("nan")
        return recs

    def _accumulate(self, votes_file: Path, truth_file: Path | None, tag: str) -> tuple[Path, Path | None]:
        crowd = self.workdir / ("crowd" if self.cumulative else f"crowd-{tag}")
        crowd.mkdir(parents=True, exist_ok=True)
        index = crowd / "batches.json"
        batches = json.loads(index.read_text()) if index.exists() and self.cumulative else []
        batches = [b for b in batches if b["tag"] != tag] + [
            {"tag": tag, "votes": str(votes_file), "truth": str(truth_file) if truth_file else None}
        ]
        rows_v, rows_t = [], []
        for b in batches:  # program ids get the batch tag: the same task recurs in later batches
            with open(b["votes"], newline="") as f:
                rows_v.extend([f"{b['tag']}:{r[0]}", *r[1:]] for r in list(csv.reader(f))[1:])
            if b["truth"] and Path(b["truth"]).exists():
                with open(b["truth"], newline="") as f:
                    rows_t.extend([f"{b['tag']}:{r[0]}", *r[1:]] for r in list(csv.reader(f))[1:])
        atomic_write_csv(crowd / "votes_all.csv", _VOTES_HEADER, rows_v)
        atomic_write_csv(crowd / "truth_all.csv", _TRUTH_HEADER, rows_t)
        atomic_write_json(index, batches)
        return crowd / "votes_all.csv", (crowd / "truth_all.csv") if rows_t else None

    def _fit(self, votes: Path, truth: Path | None, out: Path) -> dict:
        cmd = [
            sys.executable,
            "-m",
            "crowdstat",
            "fit",
            str(votes),
            "--method",
            self.source,
            "--out",
            str(out),
            "--tau",
            str(self.tau),
            *self.crowd_args,
        ]
        if truth is not None:
            cmd += ["--truth", str(truth)]
        t0 = time.time()
        self._crowdstat(cmd[3:], votes)
        info: dict = {"fit_seconds": time.time() - t0}
        fit_json = out / "fit.json"
        if fit_json.exists():  # what the fit said of itself: the method auto chose, its map, its warnings
            d = json.loads(fit_json.read_text(encoding="utf-8")).get("diagnostics", {})
            info["fit_method"] = (d.get("auto") or {}).get("chosen", self.source)
            info["fit_calibration"] = (d.get("calibration") or {}).get("kind")
            info["fit_warnings"] = [str(w) for w in d.get("warnings", [])]
        ann = out / "annotators.csv"
        if ann.exists():
            with open(ann, newline="") as f:
                info["reliability"] = {r["annotator"]: float(r["reliability"]) for r in csv.DictReader(f)}
        return info

    def _crowdstat(self, args: list[str], votes: Path) -> None:
        """``python -m crowdstat ARGS`` in a subprocess (JAX never enters this process); its time counts in ``fit_seconds``."""
        cmd = [sys.executable, "-m", "crowdstat", *args]
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            PYTHONWARNINGS="ignore",
        )
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        self.fit_seconds += time.time() - t0
        if p.returncode != 0:
            raise RuntimeError(
                f"crowdstat {args[0]} failed (exit {p.returncode}) on {votes}:\n{p.stderr.strip()[-2000:]}\ncommand: {' '.join(cmd)}"
            )
