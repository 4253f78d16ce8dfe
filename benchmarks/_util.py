"""Timing, memory and machine helpers shared by the benchmark modules.

Every timing is the median of repeated runs inside one process; for jitted code the first call
(trace + compile + run) is reported apart as ``compile_s`` = first call - steady-state median.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def block(x):
    """Wait for JAX results (no-op for NumPy / Python values)."""
    try:
        import jax

        return jax.block_until_ready(x)
    except Exception:  # noqa: BLE001 - not a JAX value
        return x


MAX_RUNS = 1000  # with min_time: fast calls repeat until min_time is spent, up to this many runs


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: bool = True, min_time: float = 0.0) -> dict:
    """Median wall time of ``fn()`` over ``repeat`` runs (after one warm-up call if ``warmup``),
    or more runs until ``min_time`` seconds are spent (at most MAX_RUNS): a median over a
    0.5 s window, not over the first 50 ms, where this VM's scheduling moves a 1 ms call by +-40 %.

    Returns ``{"first_s", "median_s", "min_s", "runs", "times_s", "result"}``; ``first_s`` is the
    warm-up call (for jitted code: trace + compile + one run).
    """
    first = None
    result = None
    if warmup:
        t = time.perf_counter()
        result = block(fn())
        first = time.perf_counter() - t
    # The convention of Python's timeit: collect once, then keep the collector off while the
    # runs repeat. (A gc.collect() before every run walks every live object: it evicts the
    # caches and parks XLA's worker threads, so each jitted run started cold, 1.5-1.9x slower
    # at 10^6 votes than back-to-back calls.)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    times = []
    try:
        t_start = time.perf_counter()
        while len(times) < repeat or (time.perf_counter() - t_start < min_time and len(times) < MAX_RUNS):
            t = time.perf_counter()
            result = block(fn())
            times.append(time.perf_counter() - t)
    finally:
        if was_enabled:
            gc.enable()
    med = statistics.median(times)
    return {"first_s": first, "median_s": med, "min_s": min(times), "runs": len(times), "times_s": times, "result": result}


def jit_timing(fn: Callable[[], Any], repeat: int = 5, min_time: float = 0.0) -> dict:
    """Like :func:`timeit`, plus ``compile_s`` = first call - median (trace + compile)."""
    r = timeit(fn, repeat=repeat, warmup=True, min_time=min_time)
    r["compile_s"] = max(r["first_s"] - r["median_s"], 0.0)
    return r


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM from /proc/self/status (the high-water mark of this address space). ``ru_maxrss`` is
    the fallback only: Linux carries it across ``execve``, so a child started by a big parent
    would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def copy_bandwidth(nbytes: int = 256 * 2**20, repeat: int = 7) -> float:
    """Measured memory copy bandwidth in bytes/s, counting read + write (np.copyto of ``nbytes``)."""
    import numpy as np

    a = np.ones(nbytes // 8, np.float64)
    b = np.empty_like(a)
    np.copyto(b, a)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    return 2.0 * a.nbytes / statistics.median(times)


def machine_info() -> dict:
    """Load, CPU, versions, env flags and the BLAS kernel NumPy uses (threadpoolctl)."""
    import numpy as np

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as e:  # noqa: BLE001
        info["jax"] = f"unavailable: {e}"
    try:
        import sklearn

        info["sklearn"] = sklearn.__version__
    except ImportError:
        info["sklearn"] = None
    try:
        from importlib.metadata import version

        import crowdkit  # noqa: F401

        info["crowd_kit"] = version("crowd-kit")
    except ImportError:
        info["crowd_kit"] = None
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def ns_per(seconds: float | None, n: int) -> float | None:
    return None if seconds is None else seconds / n * 1e9
