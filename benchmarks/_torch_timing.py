"""Timing helpers for the PyTorch benchmarks (benchmarks/gpu_check.py, benchmarks/rl_throughput.py)."""

from __future__ import annotations

import contextlib
import time

__all__ = ["sync", "wrapped"]


def sync() -> None:
    """Wait for queued GPU work (a no-op without CUDA), so that wall-clock times mean something."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def wrapped(owner, name: str, after):
    """Replace ``owner.name`` by a synchronised, timed wrapper calling ``after(result, seconds)``; restored on exit."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        sync()
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        sync()
        after(out, time.perf_counter() - t0)
        return out

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)
