"""Checks on the files ``rl`` reads and the places it writes, made before any work (standard library only).

Every message is one line naming the path, so that a command fails in its first second with
``rl CMD: error: ...`` rather than after hours of sampling, or with a traceback:

- :func:`utf8_error`: a file that is not UTF-8 text, named with the line and column of the first bad
  byte (``{path}:{line}: invalid UTF-8 (byte 0xff at column 7)``); :func:`reading` turns a
  ``UnicodeDecodeError`` met while reading a file into that message.
- :func:`check_output`: an output directory (or file) that cannot be written: an existing path of the
  other kind, a path below a file, or a directory that is not writable.
- :func:`check_model`: a model given as a local path that does not exist (rather than the hub
  loader's ``Repo id must be in the form ...`` after the inputs were read).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PathError", "utf8_error", "reading", "check_output", "check_model"]


class PathError(ValueError):
    """An input or output path that cannot be used; the message is one line naming it."""


def utf8_error(path: str | os.PathLike, exc: UnicodeDecodeError | None = None) -> str:
    """The one-line message for ``path`` not being UTF-8: file, line and column of the first bad byte."""
    data = b""
    try:
        data = Path(path).read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); the file must be UTF-8 text"
    except OSError:
        pass
    reason = f" ({exc.reason})" if exc is not None else ""
    return f"{path}: invalid UTF-8{reason}; the file must be UTF-8 text"


@contextlib.contextmanager
def reading(path: str | os.PathLike, error: type[Exception] = PathError) -> Iterator[None]:
    """Within the block, a ``UnicodeDecodeError`` becomes ``error`` with :func:`utf8_error`'s message."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise error(utf8_error(path, e)) from None


def check_output(path: str | os.PathLike, *, directory: bool = True, option: str = "--out") -> Path:
    """``path`` as a :class:`~pathlib.Path` when an output can be written there, else :class:`PathError`.

    Refused: for a directory (``directory=True``), an existing path that is not a directory; for a
    file, an existing directory; for both, a path below a file, or a nearest existing directory that
    is not writable. Nothing is created. ``option`` names the command-line option in the message.
    """
    p = Path(path)
    name = f"{option} {p}" if option else str(p)
    if directory and p.exists() and not p.is_dir():
        raise PathError(f"{name}: exists and is not a directory")
    if not directory and p.is_dir():
        raise PathError(f"{name}: is a directory (a file is expected)")
    anc = p if directory else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise PathError(f"{name}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise PathError(f"{name}: {anc} is not writable")
    return p


def check_model(name: str | os.PathLike, *, option: str = "--model") -> None:
    """Refuse a model that is clearly a local path (absolute, ``.``/``~``-relative, or with more than one
    ``/``) but no directory; anything else (``org/name`` on the Hugging Face hub) is left to the loader."""
    s = str(name)
    local = Path(s).is_absolute() or s.startswith((".", "~")) or s.count("/") > 1
    if local and not Path(s).expanduser().is_dir():
        what = "not a directory" if Path(s).expanduser().exists() else "no such directory"
        raise PathError(f"{option} {s}: cannot load model: {what} (a model directory, as save_pretrained writes)")
