"""Atomic output: a file or a whole directory appears complete or not at all.

Standard library only. Every tool of both packages writes its outputs through these two functions.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_jsonl", "atomic_write_csv", "atomic_write_dir"]


def atomic_write_text(path: str | os.PathLike, text: str, *, parents: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and os.replace.

    ``parents=True`` creates the missing parent directories first.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_dir(out_dir: str | os.PathLike, writer) -> Path:
    """Run ``writer(tmp_dir)`` in a temporary sibling directory, then rename it to ``out_dir``.

    An existing ``out_dir`` is replaced only after the new one is complete; if ``writer`` fails,
    nothing is left behind and an existing ``out_dir`` is untouched. Returns the resolved path.
    """
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        writer(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def atomic_write_json(path: str | os.PathLike, obj, *, parents: bool = False, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON (UTF-8) with a final newline, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=allow_nan) + "\n", parents=parents)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable, *, parents: bool = False) -> None:
    """One JSON object per line (UTF-8), atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), parents=parents)


def atomic_write_csv(path: str | os.PathLike, header: list[str], rows: Iterable, *, parents: bool = False) -> None:
    """A small CSV table (standard-library writer, ``\\n`` line ends), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue(), parents=parents)
