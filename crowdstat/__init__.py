"""crowdstat: calibrated crowd feedback on lines of code (cRLHF), as compiled JAX estimators.

Public API (loaded lazily, so ``import crowdstat.rewards_io`` loads no JAX):

- :func:`fit` / :class:`FitResult`: votes in, posteriors, reliabilities and rewards out.
- :func:`read_votes` / :class:`VoteTable` / :class:`VoteTableError`: validated, integer-coded tables.
- :func:`read_rewards` / :func:`write_rewards`: the reward file (the seam to the RL side).
- Modules with the kernels: ``posterior``, ``sequential``, ``proximal``, ``dual``, ``prox``,
  ``baselines``.

crowdstat never changes ``jax.config`` at import; use ``x64=True`` (or ``--x64``) for float64.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "fit": "crowdstat.api",
    "FitResult": "crowdstat.api",
    "METHODS": "crowdstat.api",
    "parse_gamma": "crowdstat.api",
    "read_votes": "crowdstat.tables",
    "VoteTable": "crowdstat.tables",
    "VoteTableError": "crowdstat.tables",
    "VoteArrays": "crowdstat._typing",
    "read_rewards": "crowdstat.rewards_io",
    "write_rewards": "crowdstat.rewards_io",
    "RewardFileError": "crowdstat.rewards_io",
    "SCHEMA_VERSION": "crowdstat.rewards_io",
}
_MODULES = {"posterior", "sequential", "proximal", "dual", "prox", "baselines", "tables", "rewards_io", "api", "plotting", "cli"}

__all__ = sorted([*_ATTRS, *_MODULES, "__version__"])


def __getattr__(name: str):
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"crowdstat.{name}")
    raise AttributeError(f"module 'crowdstat' has no attribute {name!r}")


def __dir__():
    return __all__
