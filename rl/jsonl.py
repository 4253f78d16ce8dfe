"""The JSONL input files of the rl commands (samples, programs, MBPP): crowdstat.rewards_io.read_jsonl plus required fields.

Blank lines are skipped; every other line must be a JSON object with the required fields.
Errors name the file and the 1-based line: ``{path}:{line}: ...``.
"""

from __future__ import annotations

from typing import Iterator

from crowdstat.rewards_io import read_jsonl

__all__ = ["read_objects"]


def read_objects(path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, str, dict]]:
    """Yield ``(line_number, where, object)`` for each non-blank line of ``path``."""
    for lineno, where, obj in read_jsonl(path, ValueError):
        for k in required:
            if k not in obj:
                raise ValueError(f"{where}: missing field {k!r}")
        yield lineno, where, obj
