"""crowdstat: calibrated crowd feedback on lines of code (cRLHF), as compiled JAX estimators.

Layers (each a subpackage; lower layers never import higher ones):

- :mod:`crowdstat.io` (host only, no JAX): vote tables, the reward file, atomic writes, JSONL,
  data sets.
- :mod:`crowdstat.spec`: the one annotator-population grammar.
- :mod:`crowdstat.estimators`: one module per method behind one result contract and one registry
  (``METHODS``); the one-shot L1 estimator in :mod:`crowdstat.estimators.l1`.
- :mod:`crowdstat.study`: simulation, metrics, method comparison, plots.
- :mod:`crowdstat.aggregation`: crowd-kit style classes (``DawidSkene().fit_predict_proba(df)``).
- :mod:`crowdstat.online`: streaming fits that take new votes as they arrive (docs/streaming.md).
- :mod:`crowdstat.allocate`: which items get the next votes, and when to stop asking (docs/allocation.md).
- :mod:`crowdstat.api` (:func:`fit`), :mod:`crowdstat.cli`, :mod:`crowdstat.demo` on top.

Names are loaded lazily, so ``import crowdstat.io.rewards`` loads no JAX. crowdstat never changes
``jax.config`` at import; use ``x64=True`` (or ``--x64``) for float64.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "fit": "crowdstat.api",
    "FitResult": "crowdstat.api",
    "METHODS": "crowdstat.estimators.registry",
    "parse_gamma": "crowdstat.estimators.registry",
    "read_votes": "crowdstat.io.tables",
    "VoteTable": "crowdstat.io.tables",
    "VoteTableError": "crowdstat.io.tables",
    "VoteArrays": "crowdstat._typing",
    "read_rewards": "crowdstat.io.rewards",
    "write_rewards": "crowdstat.io.rewards",
    "RewardFileError": "crowdstat.io.rewards",
    "SCHEMA_VERSION": "crowdstat.io.rewards",
}
_MODULES = {"io", "estimators", "study", "aggregation", "online", "allocate", "spec", "api", "cli", "demo"}

__all__ = sorted([*_ATTRS, *_MODULES, "__version__"])


def __getattr__(name: str):
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"crowdstat.{name}")
    raise AttributeError(f"module 'crowdstat' has no attribute {name!r}")


def __dir__():
    return __all__
