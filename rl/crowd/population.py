"""Simulated annotators voting on the lines of real programs.

Population spec
---------------
A compact string, comma-separated entries ``kind[:count][@params]``::

    expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3,twocoin:2@0.9/0.6,lazy:1@0.8

=============  ==========================  ==========================================================
kind           params (default)            model
=============  ==========================  ==========================================================
``expert``     ``p`` (0.95)                one-coin: P(vote == truth) = p
``novice``     ``p`` (0.7)                 one-coin
``onecoin``    ``p`` (required)            one-coin
``adversary``  ``p`` (0.3; must be < 0.5)  one-coin with p < 1/2
``spammer``    ``q`` (0.5)                 votes "correct" with probability q, whatever the truth
``twocoin``    ``sens/spec`` (required)    sensitivity = P(vote wrong | line wrong),
                                           specificity = P(vote correct | line correct)
``lazy``       ``a`` (0.5)                 accepts a line unseen with probability a, else votes the
                                           truth: sensitivity 1 - a, specificity 1 (a biased rater)
``examples``   ``p`` (0.9)                 checks only the examples shown in the prompt: votes
                                           "correct" on every line of a program whose shown examples
                                           pass (the plausible-bug acceptor); otherwise one-coin p
=============  ==========================  ==========================================================

``count`` defaults to 1. The same population as JSON (a string starting with ``[`` or a path to a
``.json`` file): a list of objects ``{"kind": ..., "count": n, "p" | "q" | "a" | "sensitivity" +
"specificity": ...}``.

Every annotator is a pair (sensitivity, specificity); a one-coin annotator has both equal to p.
Annotator ids are ``<kind><k:02d>`` (k counts from 1 within a kind, in spec order).

Votes
-----
:func:`simulate` gives each program ``per_program`` annotators (default: all), drawn without
replacement with the Generator, and each of them labels every annotated line of the program:
vote = truth with probability specificity (truth correct) or sensitivity (truth wrong), else the
opposite label. Draws go program by program in input order, so a seed fixes everything.
An ``examples`` annotator is the one kind whose vote depends on the program, not only on the
line: a program may carry a fourth field ``shown_pass`` (its two prompt examples pass), and then
every ``examples`` annotator votes +1 on all its lines (the random draws are made all the same,
so the other annotators' votes do not depend on it). Its nominal sensitivity/specificity (p, p)
hold for programs whose shown examples fail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Annotator", "Population", "parse_population", "simulate", "realised_reliability", "KINDS"]

# kind -> (parameter form, default)
KINDS = {
    "expert": ("p", 0.95),
    "novice": ("p", 0.7),
    "onecoin": ("p", None),
    "adversary": ("p", 0.3),
    "spammer": ("q", 0.5),
    "twocoin": ("sens/spec", None),
    "lazy": ("a", 0.5),
    "examples": ("p", 0.9),
}

_ENTRY = re.compile(r"^\s*([a-z]+)\s*(?::\s*(\d+)\s*)?(?:@\s*([^,]*?)\s*)?$")


@dataclass(frozen=True)
class Annotator:
    """One simulated annotator: id, kind, sensitivity = P(vote wrong | wrong),
    specificity = P(vote correct | correct), and p for one-coin kinds (else None).
    ``kind == "examples"``: (p, p) on programs whose shown examples fail; +1 on every line of a
    program whose shown examples pass (see :func:`simulate`)."""

    id: str
    kind: str
    sensitivity: float
    specificity: float
    p: float | None = None


def _prob(x, where: str, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {x!r}") from None
    if not 0.0 <= v <= 1.0 or v != v:
        raise ValueError(f"{where}: {name} must be in [0, 1], got {x!r}")
    return v


def _make(kind: str, count: int, params: dict, where: str) -> list[tuple[str, float, float, float | None]]:
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown annotator kind {kind!r}; expected one of {sorted(KINDS)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{where}: count must be a positive integer, got {count!r}")
    form, default = KINDS[kind]
    if form == "sens/spec":
        if "sensitivity" not in params or "specificity" not in params:
            raise ValueError(f"{where}: twocoin needs sensitivity/specificity, e.g. twocoin:2@0.9/0.6")
        sens = _prob(params["sensitivity"], where, "sensitivity")
        spec = _prob(params["specificity"], where, "specificity")
        return [(kind, sens, spec, None)] * count
    v = params.get(form, default)
    if v is None:
        raise ValueError(f"{where}: {kind} needs {form}, e.g. {kind}:2@0.8")
    v = _prob(v, where, form)
    if form == "p":
        if kind == "adversary" and v >= 0.5:
            raise ValueError(f"{where}: an adversary has p < 0.5, got {v} (use onecoin for p >= 0.5)")
        if kind == "examples":  # not one-coin overall: its accuracy depends on the programs
            return [(kind, v, v, None)] * count
        return [(kind, v, v, v)] * count
    if form == "q":  # spammer: says correct with probability q
        return [(kind, round(1.0 - v, 12), v, 0.5 if v == 0.5 else None)] * count
    return [(kind, round(1.0 - v, 12), 1.0, None)] * count  # lazy


def _from_string(spec: str) -> list[tuple[str, float, float, float | None]]:
    out = []
    for i, raw in enumerate(spec.split(","), 1):
        where = f"population spec entry {i} ({raw.strip()!r})"
        m = _ENTRY.match(raw.lower())
        if not m:
            raise ValueError(f"{where}: expected kind[:count][@params], e.g. expert:3@0.95")
        kind, count, par = m.group(1), int(m.group(2)) if m.group(2) else 1, m.group(3)
        params: dict = {}
        if par:
            form = KINDS.get(kind, ("p", None))[0]
            if form == "sens/spec":
                parts = par.split("/")
                if len(parts) != 2:
                    raise ValueError(f"{where}: twocoin params are sensitivity/specificity, got {par!r}")
                params = {"sensitivity": parts[0], "specificity": parts[1]}
            else:
                params = {form: par}
        out += _make(kind, count, params, where)
    return out


def _from_json(items, source: str) -> list[tuple[str, float, float, float | None]]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"{source}: a JSON population is a non-empty list of objects")
    out = []
    for i, it in enumerate(items):
        where = f"{source}: entry {i}"
        if not isinstance(it, dict) or "kind" not in it:
            raise ValueError(f"{where}: expected an object with a 'kind'")
        unknown = set(it) - {"kind", "count", "p", "q", "a", "sensitivity", "specificity"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        out += _make(str(it["kind"]).lower(), it.get("count", 1), it, where)
    return out


@dataclass(frozen=True)
class Population:
    """A list of :class:`Annotator` (build with :func:`parse_population`)."""

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
    """A :class:`Population` from the compact string, a JSON string/list, or a ``.json`` path."""
    if isinstance(spec, list):
        rows, text = _from_json(spec, "population"), json.dumps(spec)
    elif not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty population spec {spec!r}")
    elif spec.strip().startswith("["):
        try:
            items = json.loads(spec)
        except ValueError as e:
            raise ValueError(f"population JSON does not parse: {e}") from None
        rows, text = _from_json(items, "population JSON"), spec
    elif spec.strip().endswith(".json"):
        path = Path(spec.strip())
        if not path.is_file():
            raise ValueError(f"population file {path} not found")
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        rows, text = _from_json(items, str(path)), spec
    else:
        rows, text = _from_string(spec), spec
    seen: dict[str, int] = {}
    anns = []
    for kind, sens, spec_, p in rows:
        seen[kind] = seen.get(kind, 0) + 1
        anns.append(Annotator(f"{kind}{seen[kind]:02d}", kind, sens, spec_, p))
    return Population(tuple(anns), text)


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
        p_true = np.where(t[None, :] == 1, spec[who][:, None], sens[who][:, None])
        votes = np.where(u < p_true, t[None, :], -t[None, :])
        if shown_pass:
            votes = np.where(shown_acceptor[who][:, None], 1, votes)
        for j, a in enumerate(who):
            seen[ids[a]][0] += int((t == -1).sum())
            seen[ids[a]][1] += int((t == 1).sum())
        for i, ln in enumerate(lines):
            for j, a in enumerate(who):
                rows.append((pid, int(ln), ids[a], int(votes[j, i])))
    return rows, {k: tuple(v) for k, v in seen.items()}


def realised_reliability(a: Annotator, n_wrong: int, n_correct: int) -> float:
    """P(vote == truth) over the lines the annotator labelled: p for one-coin annotators,
    (n_wrong * sensitivity + n_correct * specificity) / n otherwise ((sens + spec) / 2 if n = 0)."""
    if a.p is not None:
        return a.p
    n = n_wrong + n_correct
    if n == 0:
        return (a.sensitivity + a.specificity) / 2
    return (n_wrong * a.sensitivity + n_correct * a.specificity) / n
