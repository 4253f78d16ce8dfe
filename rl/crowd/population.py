"""Simulated annotators voting on the lines of real programs.

Population spec
---------------
``parse_population`` reads the one SPEC grammar of :mod:`crowdstat.spec` (documented in
docs/formats.md, "Annotator populations (SPEC)"): comma-separated ``kind[:count][@params]``
entries, e.g. ``expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3,twocoin:2@0.9/0.6,lazy:1@0.8``,
or the same as JSON. A SPEC means the same crowd here and in ``crowdstat simulate``. Every
annotator is a pair (sensitivity, specificity) with

- sensitivity = P(vote +1 | line correct),
- specificity = P(vote -1 | line wrong);

a one-coin annotator has both equal to p. This simulator supports every kind, ``examples``
included, but not fatigue (``~decay``, only ``crowdstat simulate`` models it): a non-zero decay
is an error naming the entry. Annotator ids are ``<kind><k:02d>`` (k counts from 1 within a kind,
in spec order).

Votes
-----
:func:`simulate` gives each program ``per_program`` annotators (default: all), drawn without
replacement with the Generator, and each of them labels every annotated line of the program:
vote +1 with probability sensitivity on a correct line, -1 with probability specificity on a
wrong line, else the opposite label. Draws go program by program in input order, so a seed fixes
everything. An ``examples`` annotator is the one kind whose vote depends on the program, not only
on the line: a program may carry a fourth field ``shown_pass`` (its two prompt examples pass), and
then every ``examples`` annotator votes +1 on all its lines (the random draws are made all the
same, so the other annotators' votes do not depend on it). Its nominal sensitivity/specificity
(p, p) hold for programs whose shown examples fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crowdstat import spec as _spec

__all__ = ["simulate_reviews", "Annotator", "Population", "parse_population", "simulate", "realised_reliability", "KINDS"]

#: kind -> (parameter form, default); the kinds of :mod:`crowdstat.spec`
KINDS = _spec.KINDS


@dataclass(frozen=True)
class Annotator:
    """One simulated annotator: id, kind, sensitivity = P(vote +1 | line correct),
    specificity = P(vote -1 | line wrong), and p for one-coin kinds (else None).
    ``kind == "examples"``: (p, p) on programs whose shown examples fail; +1 on every line of a
    program whose shown examples pass (see :func:`simulate`)."""

    id: str
    kind: str
    sensitivity: float
    specificity: float
    p: float | None = None


@dataclass(frozen=True)
class Population:
    """A list of :class:`Annotator` (build with :func:`parse_population`); ``spec`` is the canonical SPEC text."""

    annotators: tuple[Annotator, ...]
    spec: str = ""

    def __len__(self) -> int:
        return len(self.annotators)

    @property
    def sensitivity(self) -> np.ndarray:
        return np.array([a.sensitivity for a in self.annotators])

    @property
    def specificity(self) -> np.ndarray:
        return np.array([a.specificity for a in self.annotators])


def parse_population(spec: str | list) -> Population:
    """A :class:`Population` from the compact string, a JSON string/list, or a ``.json`` path (:mod:`crowdstat.spec`)."""
    parsed = _spec.parse(spec, decay=False, tool="the rl simulator")
    ids = _spec.annotator_ids(r.kind for r in parsed.annotators)  # the ids crowdstat simulate gives too
    anns = [Annotator(i, r.kind, r.sensitivity, r.specificity, r.p) for i, r in zip(ids, parsed.annotators)]
    return Population(tuple(anns), parsed.text)


def simulate(programs, population: Population, rng: np.random.Generator, per_program: int | None = None):
    """Votes of ``population`` on ``programs``.

    Parameters
    ----------
    programs : iterable of ``(program_id, lines, truth)`` or ``(program_id, lines, truth,
        shown_pass)`` with ``truth[i]`` in {+1, -1} the true label of ``lines[i]`` and
        ``shown_pass`` (default False) whether the program passes the examples shown in its
        prompt (only ``examples`` annotators look at it).
    population : the annotators.
    rng : a numpy Generator (all draws come from it, program by program).
    per_program : annotators per program (None: all of them).

    Returns
    -------
    votes : list of ``(program, line, annotator_id, label)`` rows, in program order, then line,
        then annotator order.
    seen : dict annotator_id -> ``(n_wrong_lines, n_correct_lines)`` labelled.
    """
    n = len(population)
    if per_program is not None and (not isinstance(per_program, (int, np.integer)) or not 1 <= per_program <= n):
        raise ValueError(f"per_program must be between 1 and the population size {n}, got {per_program!r}")
    sens, spec = population.sensitivity, population.specificity
    ids = [a.id for a in population.annotators]
    shown_acceptor = np.array([a.kind == "examples" for a in population.annotators])
    rows = []
    seen = {a: [0, 0] for a in ids}
    for prog in programs:
        if len(prog) == 3:
            (pid, lines, truth), shown_pass = prog, False
        elif len(prog) == 4:
            pid, lines, truth, shown_pass = prog
        else:
            raise ValueError(f"program entries are (id, lines, truth[, shown_pass]), got {len(prog)} fields")
        if len(lines) != len(truth):
            raise ValueError(f"program {pid!r}: {len(lines)} lines but {len(truth)} truth labels")
        t = np.asarray(truth, dtype=np.int64)
        if t.size and not np.isin(t, (-1, 1)).all():
            raise ValueError(f"program {pid!r}: truth must be +1/-1, got {sorted(set(t.tolist()))}")
        who = np.arange(n) if per_program is None else np.sort(rng.choice(n, size=per_program, replace=False))
        u = rng.random((len(who), len(t)))
        p_true = np.where(t[None, :] == 1, sens[who][:, None], spec[who][:, None])  # P(vote == truth)
        votes = np.where(u < p_true, t[None, :], -t[None, :])
        if shown_pass:
            votes = np.where(shown_acceptor[who][:, None], 1, votes)
        for a in who:
            seen[ids[a]][0] += int((t == -1).sum())
            seen[ids[a]][1] += int((t == 1).sum())
        for i, ln in enumerate(lines):
            for j, a in enumerate(who):
                rows.append((pid, int(ln), ids[a], int(votes[j, i])))
    return rows, {k: tuple(v) for k, v in seen.items()}


def simulate_reviews(programs: dict, pairs, population: Population, rng: np.random.Generator) -> list[tuple[str, int, str, int]]:
    """Votes of chosen annotators on chosen programs (adaptive allocation: ``crowdstat next`` says who reviews what).

    ``programs``: program id -> ``(lines, truth[, shown_pass])`` as in :func:`simulate`; ``pairs``: ``(program id,
    annotator id)`` in the order to draw them. Returns ``(program, line, annotator, label)`` rows.
    """
    index = {a.id: i for i, a in enumerate(population.annotators)}
    sens, spec = population.sensitivity, population.specificity
    rows = []
    for pid, ann in pairs:
        if pid not in programs:
            raise ValueError(f"simulate_reviews: unknown program {pid!r}")
        if ann not in index:
            raise ValueError(f"simulate_reviews: unknown annotator {ann!r} (the population has {sorted(index)})")
        entry = programs[pid]
        lines, truth = entry[0], np.asarray(entry[1], dtype=np.int64)
        shown_pass = bool(entry[2]) if len(entry) > 2 else False
        a = index[ann]
        p_true = np.where(truth == 1, sens[a], spec[a])
        votes = np.where(rng.random(len(truth)) < p_true, truth, -truth)
        if shown_pass and population.annotators[a].kind == "examples":
            votes = np.ones_like(votes)
        rows.extend((pid, int(ln), ann, int(v)) for ln, v in zip(lines, votes))
    return rows


def realised_reliability(a: Annotator, n_wrong: int, n_correct: int) -> float:
    """P(vote == truth) over the lines the annotator labelled: p for one-coin annotators,
    (n_correct * sensitivity + n_wrong * specificity) / n otherwise ((sens + spec) / 2 if n = 0)."""
    if a.p is not None:
        return a.p
    n = n_wrong + n_correct
    if n == 0:
        return (a.sensitivity + a.specificity) / 2
    return (n_correct * a.sensitivity + n_wrong * a.specificity) / n
