"""Baselines beside the paper's estimators (MATH.md): majority vote, Dawid-Skene EM, full Bayes.

Every baseline returns a :class:`BaselineFit`, which :func:`crowdstat.fit` maps back to the
original ids (``method="em1" | "em2" | "bayes"``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class BaselineFit(NamedTuple):
    posterior: np.ndarray  # shape=(n_lines,), P(line correct | votes)
    weight: np.ndarray  # shape=(m,), one-coin logit weight (for two-coin: a documented summary)
    reliability: np.ndarray  # shape=(m,), P(label == truth) (for two-coin: a documented summary)
    diagnostics: dict[str, Any]  # JSON-serialisable (iterations, log-likelihood, r-hat, divergences, ...)
    annotator_columns: dict[str, np.ndarray] = {}  # extra columns of annotators.csv (e.g. sensitivity, ci_low)
    line_columns: dict[str, np.ndarray] = {}  # extra columns of lines.csv (e.g. ci_low, ci_high)
