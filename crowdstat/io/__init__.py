"""Host-only input and output (NumPy, pandas, pyarrow and the standard library; never JAX).

The file layer of crowdstat (docs/architecture.md): formats are read, validated and written
here, once, so the estimators above it receive validated arrays only.

- :mod:`crowdstat.io.tables`: validated, integer-coded vote tables (:func:`read_votes`).
- :mod:`crowdstat.io.rewards`: the reward file, the seam to the RL side (standard library only).
- :mod:`crowdstat.io.atomic`: atomic file and directory writes (standard library only).
- :mod:`crowdstat.io.jsonl`: the one JSONL reader (standard library only).
- :mod:`crowdstat.io.frames`: output tables to CSV and Arrow list columns.
- :mod:`crowdstat.io.datasets`: the public crowdsourcing sets, and the lookup of data folders
  (``$CROWDSTAT_DATASETS``, then ``../shared/datasets``) for other lookups to reuse (MBPP).
  Imports only the standard library until a set is read.

Submodules load on first use, so ``import crowdstat.io.rewards`` loads neither pandas nor JAX.
"""

from __future__ import annotations

import importlib

__all__ = ["tables", "rewards", "atomic", "jsonl", "frames", "datasets"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"crowdstat.io.{name}")
    raise AttributeError(f"module 'crowdstat.io' has no attribute {name!r}")
