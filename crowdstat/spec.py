"""The one annotator-population grammar (SPEC) of crowdstat and rl (standard library only).

``crowdstat simulate --population`` (:mod:`crowdstat.study.simulate`) and ``rl annotate
--population`` / the RL loop (:mod:`rl.crowd.population`) both parse their SPEC here, so a SPEC
means the same crowd in both tools. The grammar, every kind and its default are documented in
docs/formats.md ("Annotator populations (SPEC)"); in short, comma-separated entries
``kind[:count][@params][~decay]`` or a JSON list of objects (a string starting with ``[``, a
``.json`` path, or an already loaded list).

Every annotator is a pair of rates in the project's vote coding (+1 = "line correct" is the
positive class):

- ``sensitivity`` = P(vote +1 | line correct) (1 - P(flag a correct line));
- ``specificity`` = P(vote -1 | line wrong) (P(catch a bug)).

One-coin p -> (p, p); spammer q -> (q, 1 - q); lazy a -> (1, 1 - a); twocoin s/t -> (s, t);
examples p -> (p, p) on programs whose shown examples fail (program-dependent, see
:func:`rl.crowd.population.simulate`). ``decay`` is the fatigue rate per vote already cast:
both rates move towards 1/2 as ``1/2 + (rate - 1/2) exp(-decay n)``.

:func:`parse` returns the annotators' records in SPEC order (a group of ``count`` gives ``count``
equal records) and the canonical SPEC text (every count, parameter and non-zero decay written
out), with ``parse(parse(s).text) == parse(s)``. Errors are one-line ``ValueError`` messages that
name the entry, e.g. ``population spec entry 2 ('adversary:1@0.6'): an adversary has p < 0.5, ...``.
Annotator ids are not made here: each tool numbers its annotators itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["KINDS", "ONE_COIN", "Annotator", "Parsed", "parse", "annotator_ids", "ANNOTATOR_COLUMNS", "DEFAULT_HONEYPOT_FRACTION"]

#: The columns both simulators write first in their ``annotators.csv`` (the true annotators: ``crowdstat
#: simulate``, ``rl annotate``), the names ``crowdstat compare --true-annotators`` reads: reliability =
#: P(vote == truth) over the annotator's votes (the column ``crowdstat fit`` estimates under the same
#: name), sensitivity = P(vote +1 | line correct), specificity = P(vote -1 | line wrong).
ANNOTATOR_COLUMNS = ("annotator", "kind", "reliability", "sensitivity", "specificity")

#: The default fraction of programs that are honeypots, of ``crowdstat simulate``, ``rl annotate`` and ``rl loop``.
DEFAULT_HONEYPOT_FRACTION = 0.1


def annotator_ids(kinds) -> list[str]:
    """The annotator ids of a population, one scheme for both simulators: the kind and a two-digit
    count per kind from 01, in population order (``expert:2,novice`` -> expert01, expert02, novice01)."""
    seen: dict[str, int] = {}
    out = []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        out.append(f"{k}{seen[k]:02d}")
    return out


#: kind -> (parameter form, default); a default of None means the parameter is required
KINDS: dict[str, tuple[str, Any]] = {
    "expert": ("p", 0.95),
    "novice": ("p", 0.7),
    "reliable": ("p", 0.8),
    "spammer": ("q", 0.5),
    "adversary": ("p", 0.3),
    "twocoin": ("sens/spec", (0.9, 0.6)),
    "onecoin": ("p", None),
    "lazy": ("a", 0.5),
    "examples": ("p", 0.9),
}
#: kinds whose accuracy is one p whatever the truth
ONE_COIN = ("expert", "novice", "reliable", "onecoin", "adversary")

_ENTRY = re.compile(r"^\s*([a-z]+)\s*(?::\s*(\d+)\s*)?(?:@\s*([^,~]*?)\s*)?(?:~\s*([^,~]*?)\s*)?$")
_JSON_FIELDS = {"kind", "count", "p", "q", "a", "sensitivity", "specificity", "decay"}


@dataclass(frozen=True)
class Annotator:
    """One simulated annotator's parameters.

    ``sensitivity`` = P(vote +1 | line correct), ``specificity`` = P(vote -1 | line wrong) (at vote
    0 when ``decay`` > 0); ``p`` the one-coin accuracy P(vote = truth) when it does not depend on
    the truth (one-coin kinds, a spammer with q = 1/2), else None.
    """

    kind: str
    sensitivity: float
    specificity: float
    p: float | None
    decay: float = 0.0


class Parsed(NamedTuple):
    """What :func:`parse` returns: the annotators in SPEC order and the canonical SPEC text."""

    annotators: tuple[Annotator, ...]
    text: str


def _prob(x, where: str, name: str) -> float:
    if isinstance(x, bool):
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {x!r}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {x!r}") from None
    if not 0.0 <= v <= 1.0:  # also rejects nan
        raise ValueError(f"{where}: {name} must be in [0, 1], got {x!r}")
    return v


def _decay(x, where: str) -> float:
    try:
        d = float(x) if not isinstance(x, bool) else math.nan
    except (TypeError, ValueError):
        d = math.nan
    if not (math.isfinite(d) and d >= 0.0):
        raise ValueError(f"{where}: decay must be a finite number >= 0, got {x!r}")
    return d


def _num(v: float) -> str:
    """Shortest text that reads back as the same float (``repr``), without a redundant ``.0``."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _group(kind: str, count, params: dict, decay, where: str, supported, allow_decay: bool, tool: str):
    """Check one entry; returns (its annotator records, its canonical text)."""
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown annotator kind {kind!r}; expected one of {', '.join(KINDS)}")
    if supported is not None and kind not in supported:
        hint = " (its votes depend on the programs; use rl annotate)" if kind == "examples" else ""
        raise ValueError(f"{where}: kind {kind!r} is not supported by {tool or 'this simulator'}{hint}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{where}: count must be a positive integer, got {count!r}")
    d = _decay(decay, where) if decay is not None else 0.0
    if d > 0 and not allow_decay:
        raise ValueError(f"{where}: fatigue (~decay) is not supported by {tool or 'this simulator'}; only crowdstat simulate models it")
    form, default = KINDS[kind]
    if form == "sens/spec":
        if ("sensitivity" in params) != ("specificity" in params):
            raise ValueError(f"{where}: twocoin needs both sensitivity and specificity, e.g. twocoin:2@0.9/0.6")
        s, t = (params["sensitivity"], params["specificity"]) if "sensitivity" in params else default
        s, t = _prob(s, where, "sensitivity"), _prob(t, where, "specificity")
        rec, par = Annotator(kind, s, t, None, d), f"{_num(s)}/{_num(t)}"
    else:
        v = params.get(form, default)
        if v is None:
            raise ValueError(f"{where}: {kind} needs {form}, e.g. {kind}:2@0.8")
        v = _prob(v, where, form)
        if kind == "adversary" and v >= 0.5:
            raise ValueError(f"{where}: an adversary has p < 0.5, got {v} (use onecoin for p >= 0.5)")
        if form == "q":  # spammer: votes +1 with probability q whatever the truth
            rec = Annotator(kind, v, round(1.0 - v, 12), 0.5 if v == 0.5 else None, d)
        elif form == "a":  # lazy: accepts unseen with probability a, else votes the truth
            rec = Annotator(kind, 1.0, round(1.0 - v, 12), None, d)
        else:  # one-coin; examples is (p, p) only where the shown examples fail
            rec = Annotator(kind, v, v, v if kind in ONE_COIN else None, d)
        par = _num(v)
    text = f"{kind}:{count}@{par}" + (f"~{_num(d)}" if d > 0 else "")
    return [rec] * count, text


def _from_string(spec: str, opts) -> tuple[list, list]:
    recs, texts = [], []
    for i, raw in enumerate(spec.split(","), 1):
        where = f"population spec entry {i} ({raw.strip()!r})"
        m = _ENTRY.match(raw.lower())
        if not m:
            raise ValueError(f"{where}: cannot parse; expected kind[:count][@params][~decay], e.g. expert:3@0.95")
        kind, count, par, dec = m.group(1), int(m.group(2)) if m.group(2) else 1, m.group(3), m.group(4)
        params: dict = {}
        if par:
            form = KINDS.get(kind, ("p", None))[0]
            parts = par.split("/")
            if form == "sens/spec":
                if len(parts) != 2:
                    raise ValueError(f"{where}: twocoin params are sensitivity/specificity, e.g. twocoin:2@0.9/0.6, got {par!r}")
                params = {"sensitivity": parts[0], "specificity": parts[1]}
            elif len(parts) != 1:
                raise ValueError(f"{where}: {kind} takes one number {form}, got {par!r}")
            else:
                params = {form: par}
        elif par is not None:
            raise ValueError(f"{where}: '@' without parameters")
        if dec is not None and not dec:
            raise ValueError(f"{where}: '~' without a decay")
        r, t = _group(kind, count, params, dec, where, *opts)
        recs += r
        texts.append(t)
    return recs, texts


def _from_json(items, source: str, opts) -> tuple[list, list]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"{source}: a JSON population is a non-empty list of objects")
    recs, texts = [], []
    for i, it in enumerate(items):
        where = f"{source}: entry {i}"
        if not isinstance(it, dict) or "kind" not in it:
            raise ValueError(f"{where}: expected an object with a 'kind'")
        unknown = set(it) - _JSON_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        kind = str(it["kind"]).lower()
        form = KINDS.get(kind, ("", None))[0]
        allowed = {"sensitivity", "specificity"} if form == "sens/spec" else {form}
        stray = sorted(set(it) & {"p", "q", "a", "sensitivity", "specificity"} - allowed)
        if kind in KINDS and stray:
            raise ValueError(f"{where}: {kind} takes {form}, not {', '.join(stray)}")
        r, t = _group(kind, it.get("count", 1), it, it.get("decay"), where, *opts)
        recs += r
        texts.append(t)
    return recs, texts


def parse(spec: str | list, *, supported: Collection[str] | None = None, decay: bool = True, tool: str = "") -> Parsed:
    """Parse a population SPEC (module docstring; docs/formats.md).

    Parameters
    ----------
    spec : str or list
        The compact form ``kind[:count][@params][~decay],...``, a JSON string (starting with
        ``[``), a path ending in ``.json``, or a JSON list already loaded.
    supported : collection of kinds, optional
        The kinds the calling simulator can simulate (default: all of :data:`KINDS`); another
        kind is an error naming the entry and ``tool``.
    decay : bool
        Whether the calling simulator models fatigue; if not, a non-zero ``~decay`` is an error.
    tool : str
        The caller's name in those errors, e.g. ``"crowdstat simulate"``.

    Returns
    -------
    Parsed(annotators, text)
        One :class:`Annotator` per annotator in SPEC order, and the canonical SPEC text.
    """
    opts = (None if supported is None else frozenset(supported), decay, tool)
    if isinstance(spec, list):
        recs, texts = _from_json(spec, "population", opts)
    elif not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty population spec {spec!r}; expected a SPEC like 'expert:3@0.95,spammer:2'")
    elif spec.strip().startswith("["):
        try:
            items = json.loads(spec)
        except ValueError as e:
            raise ValueError(f"population JSON does not parse: {e}") from None
        recs, texts = _from_json(items, "population JSON", opts)
    elif spec.strip().lower().endswith(".json"):
        path = Path(spec.strip())
        if not path.is_file():
            raise ValueError(f"population file {path} not found")
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        recs, texts = _from_json(items, str(path), opts)
    else:
        recs, texts = _from_string(spec, opts)
    return Parsed(tuple(recs), ",".join(texts))
