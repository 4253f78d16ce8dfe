"""Study tools on top of the estimators: simulated crowds (:mod:`~crowdstat.study.simulate`),
metrics with intervals (:mod:`~crowdstat.study.metrics`), method comparison
(:mod:`~crowdstat.study.compare`) and plots (:mod:`~crowdstat.study.plotting`)."""

from __future__ import annotations

import importlib

__all__ = ["simulate", "metrics", "compare", "plotting"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"crowdstat.study.{name}")
    raise AttributeError(f"module 'crowdstat.study' has no attribute {name!r}")
