"""Timing helpers for the PyTorch benchmarks (benchmarks/gpu_check.py, benchmarks/rl_throughput.py)."""

from __future__ import annotations

import contextlib
import time

__all__ = ["sync", "wrapped", "step_prompts", "timed"]


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


def step_prompts(train: list, step: int, n_prompts: int) -> list[tuple[str, str]]:
    """The (prompt_id, prompt) pairs of benchmark step ``step``: the next ``n_prompts`` problems, cycling."""
    probs = [train[(step * n_prompts + i) % len(train)] for i in range(n_prompts)]
    return [(f"s{step}-{i}-{p.task_id}", p.prompt) for i, p in enumerate(probs)]


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``, with queued GPU work finished before and after."""
    sync()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t0
