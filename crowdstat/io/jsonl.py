"""One reader for every JSONL file of the project (reward files; samples, programs, rollouts,
prompts and MBPP in ``rl``), so that every such file has the same rules and the same messages.
Standard library only, so ``rl`` may import it.

Blank lines are skipped; every other line must be a JSON object. Errors name the file and the
1-based line: ``{path}:{line}: ...``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["read_jsonl", "read_objects"]


def read_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, str, dict]]:
    """Yield ``(line_number, where, object)`` for each non-blank line of the JSONL file ``path``.

    ``where`` is ``"{path}:{line}"`` (1-based), the prefix of every message about that line. A line
    that is not JSON, or not a JSON object, raises ``error`` naming it.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)  # NaN / Infinity parse: validators name the field holding them
            except json.JSONDecodeError as e:
                raise error(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, where, obj


def read_objects(path: str | os.PathLike, required: tuple[str, ...] = ()) -> Iterator[tuple[int, str, dict]]:
    """:func:`read_jsonl` with required fields: a missing one raises ``ValueError`` naming the line."""
    for lineno, where, obj in read_jsonl(path, ValueError):
        for k in required:
            if k not in obj:
                raise ValueError(f"{where}: missing field {k!r}")
        yield lineno, where, obj
