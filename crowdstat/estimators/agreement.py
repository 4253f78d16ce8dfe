"""Inter-annotator agreement of the votes: Krippendorff's alpha, nominal (docs/baselines.md, "Agreement").

Every fit reports it in ``fit.json`` (``diagnostics["agreement"]``): how much the annotators agree
beyond chance, whatever the model. Units are the lines, values the labels; a line with a single vote
is not pairable and does not count. With n_uc the votes of value c on unit u, m_u = sum_c n_uc,
and only units with m_u >= 2:

    D_o   = sum_u (m_u^2 - sum_c n_uc^2) / (m_u - 1)         (observed disagreeing pairs, coincidence-weighted)
    n_c   = sum_u n_uc,   n = sum_c n_c
    alpha = 1 - (n - 1) D_o / (n^2 - sum_c n_c^2)

(Krippendorff 2011, "Computing Krippendorff's alpha-reliability", nominal metric). alpha = 1 is perfect
agreement, 0 agreement at chance, < 0 systematic disagreement; it is undefined (None) when fewer
than two pairable votes exist or every pairable vote has the same value.

NumPy only (host side); one bincount per quantity, no loop over units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["krippendorff_alpha_nominal", "summary"]


def _alpha_parts(unit: np.ndarray, value: np.ndarray) -> tuple[float | None, int, int]:
    """(alpha or None, pairable values n, pairable units)."""
    unit = np.asarray(unit)
    value = np.asarray(value)
    if unit.shape != value.shape or unit.ndim != 1:
        raise ValueError(f"agreement: unit and value must be 1-d arrays of one length, got shapes {unit.shape} and {value.shape}")
    if unit.size == 0:
        return None, 0, 0
    _, u = np.unique(unit, return_inverse=True)
    _, c = np.unique(value, return_inverse=True)
    n_units, n_vals = int(u.max()) + 1, int(c.max()) + 1
    m_u = np.bincount(u, minlength=n_units).astype(np.float64)
    keep = m_u[u] >= 2
    n_uc = np.bincount(u[keep] * n_vals + c[keep], minlength=n_units * n_vals).reshape(n_units, n_vals).astype(np.float64)
    pair = m_u >= 2
    mu = m_u[pair]
    d_o = float(np.sum((mu**2 - np.sum(n_uc[pair] ** 2, axis=1)) / (mu - 1.0)))
    n_c = n_uc.sum(axis=0)
    n = float(n_c.sum())
    denom = n * n - float(np.sum(n_c**2))
    n_units_pairable = int(np.count_nonzero(pair))
    if n < 2 or denom <= 0:
        return None, int(n), n_units_pairable
    return 1.0 - (n - 1.0) * d_o / denom, int(n), n_units_pairable


def krippendorff_alpha_nominal(unit, value) -> float | None:
    """Krippendorff's alpha (nominal) of the values ``value[k]`` given to unit ``unit[k]`` (one entry per rating).

    Returns None where alpha is undefined (fewer than two pairable values, or a single value used).
    """
    return _alpha_parts(unit, value)[0]


def summary(arrays) -> dict:
    """``diagnostics["agreement"]`` of a fit: alpha of the votes of a :class:`~crowdstat._typing.VoteArrays` (lines = units)."""
    alpha, n, units = _alpha_parts(np.asarray(arrays.line), np.asarray(arrays.label))
    return {
        "krippendorff_alpha_nominal": alpha,
        "pairable_votes": n,
        "pairable_lines": units,
        "n_lines": int(np.asarray(arrays.line_program).shape[0]),
    }
