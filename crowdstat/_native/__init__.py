"""Native CPU kernels, called from jitted code through the XLA FFI.

XLA:CPU runs a ``lax.scan`` whose body is a dozen small gathers and scatters as a dozen
separate thunks per step, a fixed cost per step whatever the work inside (measured in
docs/performance.md). The sequential update (eq. 8 of docs/math.md) is such a scan over tasks,
so on the CPU it runs here instead: a plain C++ loop (``sequential.cc``) registered as an FFI
target and called with ``jax.ffi.ffi_call`` inside the same jitted function, so there is no host
round trip. ``newton_cd.cc`` holds the inner coordinate descent of the proximal Newton solver
(:mod:`crowdstat.estimators.l1.newton`), registered the same way through :func:`register`.

The shared library is compiled once, on first use, with the system C++ compiler
(``-O3 -march=native``) against the headers jaxlib ships (``jax.ffi.include_dir()``), into a
per-user cache keyed by the source, the jaxlib version and the CPU's feature flags
(``$CROWDSTAT_NATIVE_CACHE``, default ``~/.cache/crowdstat/native``); the build goes to a
temporary file that is renamed into place. Without a compiler, or with ``CROWDSTAT_NATIVE=0``,
the kernels report ``None`` and callers use the pure-JAX version (the same numbers: the tests
compare both).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["register", "sequential_target", "enabled", "library_path"]

_DIR = Path(__file__).parent
_SRC = _DIR / "sequential.cc"
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    """False when ``CROWDSTAT_NATIVE`` is 0/false/no/off."""
    return os.environ.get("CROWDSTAT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_root() -> Path:
    from crowdstat._cache import user_cache_dir

    return user_cache_dir("native", "CROWDSTAT_NATIVE_CACHE")


def _cpu_signature() -> bytes:
    """The CPU's feature flags: the library is built with -march=native, so a cache shared by
    machines with different CPUs must not hand one machine another's build."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.encode()
    except OSError:
        pass
    import platform

    return (platform.machine() + platform.processor()).encode()


def library_path(source: str = "sequential.cc") -> Path:
    """Where the compiled library of ``source`` (in this folder) for this jaxlib and CPU lives (built or not)."""
    import jax
    import jaxlib

    src = _DIR / source
    key = hashlib.sha256(
        src.read_bytes() + jaxlib.__version__.encode() + " ".join(_FLAGS).encode() + jax.ffi.include_dir().encode() + _cpu_signature()
    ).hexdigest()[:16]
    return _cache_root() / key / f"libcrowdstat_{Path(source).stem}.so"


def _build(source: str) -> Path:
    import jax

    out = library_path(source)
    if out.exists():
        return out
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cxx, *_FLAGS, "-I", jax.ffi.include_dir(), str(_DIR / source), "-o", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        os.replace(tmp, out)  # atomic: a concurrent build renames an identical file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def register(source: str, targets: dict[str, str], what: str) -> bool:
    """Build ``source`` once, register each FFI target name -> exported symbol on the CPU.

    Returns False (after one RuntimeWarning naming ``what``) when the kernels are disabled
    (``CROWDSTAT_NATIVE=0``), the default backend is not the CPU, or the build fails.
    """
    with _lock:
        if source not in _state:
            _state[source] = False
            import jax

            if enabled() and jax.default_backend() == "cpu":
                try:
                    lib = ctypes.cdll.LoadLibrary(str(_build(source)))
                    for name, sym in targets.items():
                        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, sym)), platform="cpu")
                    _state[source] = True
                except Exception as e:  # noqa: BLE001 - any failure means: use the pure-JAX version
                    warnings.warn(
                        f"crowdstat: native {what} kernel unavailable ({e}); using the pure-JAX version", RuntimeWarning, stacklevel=3
                    )
        return _state[source]


def sequential_target() -> str | None:
    """Name prefix of the registered eq. 8 FFI targets (``<name>_f32`` / ``<name>_f64``), or None if unavailable."""
    targets = {"crowdstat_sequential_f32": "CrowdstatSequentialF32", "crowdstat_sequential_f64": "CrowdstatSequentialF64"}
    ok = register("sequential.cc", targets, "sequential")
    return "crowdstat_sequential" if ok else None
