"""One reader for the JSONL input files of the rl commands (samples, programs).

Blank lines are skipped; every other line must be a JSON object with the required fields.
Errors name the file and the 1-based line: ``{path}:{line}: ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

__all__ = ["read_objects"]


def read_objects(path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, str, dict]]:
    """Yield ``(line_number, where, object)`` for each non-blank line of ``path``."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            for k in required:
                if k not in obj:
                    raise ValueError(f"{where}: missing field {k!r}")
            yield lineno, where, obj
