"""The one result contract of the estimators: :class:`EstimatorFit`.

Every method module exposes ``fit(table, cfg, common, dtype) -> EstimatorFit`` (the registry,
:mod:`crowdstat.estimators.registry`, names it); :func:`crowdstat.fit` computes the rewards from
``posterior`` and maps everything back to the original ids. Arrays are indexed like the
:class:`~crowdstat.io.tables.VoteTable` the method was given: lines in table order, annotators in
order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EstimatorFit", "check_inputs"]


@dataclass(frozen=True)
class EstimatorFit:
    """What a method returns.

    Attributes
    ----------
    posterior : ndarray, shape (n_lines,)
        P(line correct | votes).
    weight : ndarray, shape (m,)
        One-coin logit weight of each annotator (two-coin: the logit of the reliability summary).
    reliability : ndarray, shape (m,)
        P(label == truth) (two-coin: balanced accuracy).
    diagnostics : dict
        JSON-serialisable (iterations, log-likelihood, duality gap, r-hat, ...).
    annotator_columns, line_columns : dict of name -> ndarray
        Extra columns of annotators.csv / lines.csv (e.g. sensitivity, credible intervals).
    trajectory : ndarray, shape (n_tasks, m), or None
        Weights after each task (sequential).
    prior_logit : float
        The prior logit the posteriors were computed with (logit(p0), or a fitted intercept).
    """

    posterior: np.ndarray
    weight: np.ndarray
    reliability: np.ndarray
    diagnostics: dict[str, Any]
    annotator_columns: dict[str, np.ndarray] = field(default_factory=dict)
    line_columns: dict[str, np.ndarray] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    prior_logit: float = 0.0


def check_inputs(arrays, dtype, prior, delta, name: str) -> None:
    """Host-side validation shared by the likelihood methods (what their configs do not hold): ``prior`` in
    (0, 1), ``delta`` in [eps of ``dtype``, 0.5), and at least one vote; each message names the method."""
    if not (isinstance(prior, (int, float)) and 0 < prior < 1):
        raise ValueError(f"{name}: prior: expected a number in (0, 1), got {prior!r}")
    eps = float(np.finfo(dtype).eps)
    if not (isinstance(delta, (int, float)) and eps <= delta < 0.5):
        raise ValueError(f"{name}: delta: expected a number in [finfo({np.dtype(dtype).name}).eps = {eps:.3g}, 0.5), got {delta!r}")
    if np.asarray(arrays.line).shape[0] == 0:
        raise ValueError(f"{name}: the vote arrays are empty (no votes)")
