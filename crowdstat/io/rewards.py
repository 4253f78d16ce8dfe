"""The reward file ``rewards.jsonl``: the documented seam between crowdstat and the RL side.

Standard library only (no JAX, no pandas; it uses :mod:`crowdstat.io.atomic` and
:mod:`crowdstat.io.jsonl`), so that ``rl`` reads crowdstat's output without loading the
estimators (docs/architecture.md). This module is the one home of the reward file: its schema
is in ``docs/formats.md``; :data:`SCHEMA_VERSION` is bumped on any incompatible change, and
readers reject other versions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable

from crowdstat.io.atomic import atomic_write_text
from crowdstat.io.jsonl import read_jsonl

__all__ = ["SCHEMA_VERSION", "FIELDS", "RewardFileError", "write_rewards", "read_rewards", "validate_record"]

SCHEMA_VERSION = 1

#: field -> (type(s), description)
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "schema_version": ((int,), "schema version, 1"),
    "program": ((str,), "program id"),
    "reward": ((float, int), "s = c / k, c = #{annotated lines with posterior > tau}"),
    "reward_soft": ((float, int), "mean posterior of the annotated lines"),
    "n_lines": ((int,), "lines of the program, annotated or not"),
    "n_annotated": ((int,), "k, lines with at least one vote"),
    "coverage": ((float, int), "n_annotated / n_lines"),
    "lines": ((list,), "annotated line numbers, ascending"),
    "posteriors": ((list,), "P(line correct | votes) for each entry of lines"),
    "tau": ((float, int), "threshold used for reward"),
    "method": ((str,), "estimator that produced the posteriors"),
}


class RewardFileError(ValueError):
    """The reward file does not follow the schema; the message names file, line and field."""


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_record(rec: dict, where: str = "record") -> dict:
    """Check one reward record against the schema; return it. Raises RewardFileError."""
    if not isinstance(rec, dict):
        raise RewardFileError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    v = rec.get("schema_version")
    if v != SCHEMA_VERSION:
        raise RewardFileError(f"{where}: field 'schema_version': expected {SCHEMA_VERSION}, got {v!r}")
    for name, (types, _) in FIELDS.items():
        if name not in rec:
            raise RewardFileError(f"{where}: missing field '{name}'")
        val = rec[name]
        ok = _is_num(val) if float in types else (isinstance(val, types) and not isinstance(val, bool))
        if not ok:
            raise RewardFileError(f"{where}: field '{name}': expected {'/'.join(t.__name__ for t in types)}, got {val!r}")
    for name in ("reward", "reward_soft", "coverage", "tau"):
        x = rec[name]
        if not math.isfinite(x) or not 0.0 <= x <= 1.0:
            raise RewardFileError(f"{where}: field '{name}': expected a finite number in [0, 1], got {x!r}")
    lines, post = rec["lines"], rec["posteriors"]
    if len(lines) != len(post):
        raise RewardFileError(f"{where}: 'lines' has {len(lines)} entries but 'posteriors' has {len(post)}")
    if len(lines) != rec["n_annotated"]:
        raise RewardFileError(f"{where}: 'lines' has {len(lines)} entries but n_annotated = {rec['n_annotated']}")
    if rec["n_annotated"] < 1 or rec["n_lines"] < rec["n_annotated"]:
        raise RewardFileError(f"{where}: need 1 <= n_annotated <= n_lines, got {rec['n_annotated']} and {rec['n_lines']}")
    for i, (ln, p) in enumerate(zip(lines, post)):
        if not isinstance(ln, int) or isinstance(ln, bool) or ln < 0:
            raise RewardFileError(f"{where}: 'lines'[{i}]: expected an integer >= 0, got {ln!r}")
        if i and ln <= lines[i - 1]:
            raise RewardFileError(f"{where}: 'lines' must be strictly ascending (entry {i}: {ln} after {lines[i - 1]})")
        if not _is_num(p) or not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise RewardFileError(f"{where}: 'posteriors'[{i}]: expected a finite number in [0, 1], got {p!r}")
    return rec


def write_rewards(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Validate and write records atomically, one JSON object per line."""
    out, seen = [], set()
    for i, rec in enumerate(records, start=1):
        rec = {"schema_version": SCHEMA_VERSION, **rec}
        validate_record(rec, f"record {i}")
        if rec["program"] in seen:
            raise RewardFileError(f"record {i}: duplicate program {rec['program']!r}")
        seen.add(rec["program"])
        out.append(json.dumps(rec, allow_nan=False))
    atomic_write_text(path, "\n".join(out) + ("\n" if out else ""))


def read_rewards(path: str | os.PathLike) -> list[dict]:
    """Read and validate a reward file. Raises RewardFileError naming file, line and field."""
    records: list[dict] = []
    seen: dict[str, int] = {}
    for i, where, rec in read_jsonl(path, RewardFileError):
        validate_record(rec, where)
        if rec["program"] in seen:
            raise RewardFileError(f"{where}: duplicate program {rec['program']!r} (first at line {seen[rec['program']]})")
        seen[rec["program"]] = i
        records.append(rec)
    if not records:
        raise RewardFileError(f"{path}: the reward file has no records")
    return records
