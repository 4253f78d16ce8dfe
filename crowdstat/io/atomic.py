"""Atomic output: a file or a whole directory appears complete or not at all.

Standard library only. Every tool of both packages writes its outputs through these functions.

Output directories (:func:`atomic_write_dir`, docs/cli.md "Output directories") never delete what
their tool did not write:

- Every output directory carries a manifest, :data:`MANIFEST` (``.crowdstat-output.json``: tool,
  version, time, file list). A non-empty directory without the manifest of the same tool is
  refused unless ``force=True``.
- Refused even with ``force``: an existing path that is not a directory (a file is never renamed
  away), the current directory or one that contains it, a directory that is or contains one of
  the ``inputs``, the file-system root.
- The new content is written into a temporary sibling ``.NAME.tmp-XXXX`` that carries this
  tool's marker (the manifest with ``complete: false``, the writing process and host) from its
  first moment; the complete manifest is written last.
- The swap keeps the old directory until the new one is in place (chosen over a symlink swap so
  that ``NAME`` stays a plain directory): holding an exclusive ``flock`` on the parent, the old
  directory is renamed into a marked backup ``.NAME.old-XXXX/NAME``, the new one to ``NAME``, then
  the backup is marked for removal and removed. A process killed between the two renames leaves
  no ``NAME`` but the complete old one in the backup: the next write of ``NAME`` (or
  :func:`recover_output_dir`) moves it back before anything else. Killed at any other point,
  ``NAME`` is the old or the new complete directory.
- Before writing, leftovers of earlier killed runs are removed: temporaries of the same ``NAME``
  whose marker names this tool and a process that is gone (on this host), backups marked by this
  tool. Nothing without the marker is touched.

Kill-safety is against killed processes (SIGKILL, OOM), not power loss: files are not fsynced
one by one, the parent directory is after each rename.

Permissions: ``tempfile`` creates files 0600 and directories 0700; the writers give them the modes
a plain ``open()`` / ``mkdir()`` would under the process umask (0644 / 0755 with umask 022), and a
file that is replaced keeps its mode, as ``open(path, "w")`` keeps it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_csv",
    "atomic_write_dir",
    "check_output_dir",
    "recover_output_dir",
    "OutputDirError",
    "MANIFEST",
]


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status; else set and restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _mkdtemp(prefix: str, parent: Path) -> Path:
    """``tempfile.mkdtemp`` with the mode ``mkdir`` would give (0777 less the umask), not 0700."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(d, 0o777 & ~_umask())
    return d


def atomic_write_text(path: str | os.PathLike, text: str, *, parents: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and os.replace.

    ``parents=True`` creates the missing parent directories first.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    mode = _plain_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
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


MANIFEST = ".crowdstat-output.json"


class OutputDirError(ValueError):
    """An output directory that must not be written (or cannot be): ``path`` and ``reason``."""

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _resolve(path) -> Path:
    return Path(os.path.abspath(os.fspath(path))).resolve()


def _read_marker(d: Path) -> dict | None:
    """The manifest / marker of ``d`` as a dict, or None (absent, unreadable, not an object)."""
    try:
        with open(d / MANIFEST, encoding="utf-8") as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _marker(tool: str, **extra) -> dict:
    return {
        "tool": tool,
        "version": getattr(sys.modules.get("crowdstat"), "__version__", None),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **extra,
    }


def _default_tool(writer) -> str:
    return getattr(writer, "__module__", None) or "crowdstat.io.atomic"


def _first_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_output_dir(out_dir: str | os.PathLike, *, tool: str, force: bool = False, inputs: Iterable = ()) -> Path:
    """Raise :class:`OutputDirError` if ``out_dir`` must not be (re)written by ``tool``; return it resolved.

    Refused always: the file-system root, the current directory or one containing it, a directory
    that is or contains one of ``inputs`` (paths; others are ignored), an existing non-directory,
    a parent that is a file or cannot be written. Refused unless ``force``: a non-empty directory
    without the manifest of ``tool``. Nothing is written.
    """
    out = _resolve(out_dir)
    if out.parent == out:
        raise OutputDirError(out, "is the file-system root; choose a new directory for --out")
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    if cwd is not None and (out == cwd or out in cwd.parents):
        what = "is the current directory" if out == cwd else f"contains the current directory {cwd}"
        raise OutputDirError(out, f"{what}; it would be replaced as a whole: choose a new directory for --out")
    for inp in inputs:
        if inp is None or not isinstance(inp, (str, os.PathLike)):
            continue
        p = _resolve(inp)
        if p == out or out in p.parents:
            raise OutputDirError(out, f"holds the input {os.fspath(inp)}; it would be replaced as a whole: choose another --out")
    if os.path.lexists(out) and not out.is_dir():
        raise OutputDirError(out, "exists and is not a directory; it is never replaced: choose a new directory for --out")
    top = _first_existing(out.parent)
    if not top.is_dir():
        raise OutputDirError(out, f"cannot be created: {top} is not a directory")
    if not os.access(top, os.W_OK | os.X_OK):
        raise OutputDirError(out, f"cannot be created: {top} is not writable (Permission denied)")
    if out.is_dir():
        try:
            entries = os.listdir(out)
        except OSError as e:
            raise OutputDirError(out, f"cannot be read ({e.strerror})") from None
        m = _read_marker(out) if entries else None
        if entries and not force and (m is None or m.get("tool") != tool):
            made = f" (it is an output of {m.get('tool')!r})" if m and m.get("tool") else f" (it has no {MANIFEST})"
            raise OutputDirError(
                out, f"is not empty and is not an earlier output of {tool!r}{made}: choose a new directory, or pass --force to replace it"
            )
    return out


@contextmanager
def _locked(parent: Path):
    """An exclusive ``flock`` on the parent directory (no lock file; none where flock is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - a file system without locks
            pass
        yield
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _remove_marked(d: Path) -> None:
    """Remove ``d`` with its marker last, so that a kill half-way leaves it recognisable. Links are
    removed, never followed (``shutil.rmtree`` does not follow them)."""
    with os.scandir(d) as it:
        entries = [e for e in it if e.name != MANIFEST]
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path)
        else:
            os.unlink(e.path)
    try:
        os.unlink(d / MANIFEST)
    except FileNotFoundError:
        pass
    os.rmdir(d)


def _gone(m: dict) -> bool:
    """Whether the process that wrote marker ``m`` has ended (only decidable on this host)."""
    if m.get("host") != socket.gethostname() or not isinstance(m.get("pid"), int):
        return False
    if m["pid"] == os.getpid():
        return False
    try:
        os.kill(m["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _leftovers(out: Path, kind: str) -> list[Path]:
    prefix = f".{out.name}.{kind}-"
    try:
        with os.scandir(out.parent) as it:
            return [Path(e.path) for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _debris_only(d: Path) -> bool:
    """``d`` holds nothing but half-written markers (a kill while :func:`atomic_write_text` wrote
    one): it was made by this module and has nothing else in it."""
    try:
        return all(n.startswith(f".{MANIFEST}.") and n.endswith(".tmp") for n in os.listdir(d))
    except OSError:
        return False


def _recover(out: Path, tool: str) -> None:
    """Restore a backup left by a kill between the two renames; remove this tool's leftovers.

    Runs with the parent locked: temporaries and backups are created and marked under the same
    lock, so one without its marker here is the debris of a kill during that step."""
    backups = []
    for b in _leftovers(out, "old"):
        m = _read_marker(b)
        if m is None:
            if _debris_only(b):
                _quietly(_remove_marked, b)
            continue
        backups.append((str(m.get("created", "")), b, m))
    if not os.path.lexists(out):
        whole = [x for x in backups if x[2].get("role") == "backup" and (x[1] / out.name).is_dir()]
        if whole:
            _, b, _ = max(whole, key=lambda x: x[0])
            os.rename(b / out.name, out)
            _fsync_dir(out.parent)
    for _, b, m in backups:
        if m.get("tool") == tool and os.path.lexists(out):
            _quietly(_remove_marked, b)
    for t in _leftovers(out, "tmp"):
        m = _read_marker(t)
        if (m is None and _debris_only(t)) or (m is not None and m.get("tool") == tool and _gone(m)):
            _quietly(_remove_marked, t)


def recover_output_dir(out_dir: str | os.PathLike, *, tool: str) -> Path:
    """After a killed :func:`atomic_write_dir` of ``tool``: put the complete old ``out_dir`` back
    if the kill fell between the two renames, and remove the killed runs' leftovers. Returns the
    resolved path (which may not exist: then nothing was ever written there)."""
    out = _resolve(out_dir)
    if out.parent.is_dir():
        with _locked(out.parent):
            _recover(out, tool)
    return out


def _files(d: Path) -> list[str]:
    out = []
    for root, _dirs, names in os.walk(d):
        rel = Path(root).relative_to(d)
        out += [(rel / n).as_posix() for n in names if not (root == os.fspath(d) and n == MANIFEST)]
    return sorted(out)


def _swap(tmp: Path, out: Path, tool: str) -> None:
    """``tmp`` becomes ``out``; an existing ``out`` waits in a marked backup until then. Parent locked."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        _fsync_dir(out.parent)
        return
    backup = _mkdtemp(f".{out.name}.old-", out.parent)
    atomic_write_json(backup / MANIFEST, _marker(tool, role="backup"))
    os.rename(out, backup / out.name)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup / out.name, out)
        _remove_marked(backup)
        raise
    _fsync_dir(out.parent)
    atomic_write_json(backup / MANIFEST, _marker(tool, role="discard"))  # never restored from now on
    _quietly(_remove_marked, backup)


def _os_error(out: Path, e: OSError) -> OutputDirError:
    where = e.filename or out.parent
    return OutputDirError(out, f"cannot be written: {where}: {e.strerror or e}")


def atomic_write_dir(out_dir: str | os.PathLike, writer, *, tool: str | None = None, force: bool = False, inputs: Iterable = ()) -> Path:
    """Run ``writer(tmp_dir)`` in a temporary sibling directory, then put it in place of ``out_dir``.

    ``tool`` names the writing command in the manifest (default: the writer's module); ``force``
    allows replacing a non-empty directory that is not an earlier output of ``tool``; ``inputs``
    are paths ``out_dir`` must not hold. Rules, manifest and kill-safety: the module docstring.
    Raises :class:`OutputDirError` (a ValueError) before ``writer`` runs if ``out_dir`` is refused.
    If ``writer`` fails, nothing is left behind and an existing ``out_dir`` is untouched. Returns
    the resolved path.
    """
    tool = tool or _default_tool(writer)
    out = check_output_dir(out_dir, tool=tool, force=force, inputs=inputs)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out.parent):
            _recover(out, tool)
            check_output_dir(out, tool=tool, force=force, inputs=inputs)  # a recovered directory is checked too
            tmp = _mkdtemp(f".{out.name}.tmp-", out.parent)
            atomic_write_json(tmp / MANIFEST, _marker(tool, complete=False))
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(out, e) from None
    try:
        writer(tmp)
        atomic_write_json(tmp / MANIFEST, _marker(tool, complete=True, files=_files(tmp)))
        with _locked(out.parent):
            _recover(out, tool)
            check_output_dir(out, tool=tool, force=force, inputs=inputs)
            _swap(tmp, out, tool)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
