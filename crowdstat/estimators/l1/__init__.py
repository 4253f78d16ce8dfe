"""The one-shot L1-logistic reliability estimate (docs/math.md).

- :mod:`~crowdstat.estimators.l1.problem`: the problem (training rows, E w and E^T v, loss,
  gradient, gamma_max, the intercept at w = 0, the Lipschitz constant, the soft threshold).
- :mod:`~crowdstat.estimators.l1.dual`: the binary-entropy dual and the duality-gap certificate.
- :mod:`~crowdstat.estimators.l1.fista`: ISTA / FISTA with adaptive restart.
- :mod:`~crowdstat.estimators.l1.newton`: proximal Newton with coordinate descent.
- :mod:`~crowdstat.estimators.l1.solve`: solver choice, :func:`solve` and the gamma path.
- :mod:`~crowdstat.estimators.l1.latent`: the latent-truth variant (L1-penalised one-coin EM).

Imports run one way: problem and dual at the bottom, then fista and newton, then solve; latent
stands apart. The "proximal" method (:mod:`crowdstat.estimators.proximal`) uses them.
"""

from __future__ import annotations

import importlib

__all__ = ["problem", "dual", "fista", "newton", "solve", "latent"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"crowdstat.estimators.l1.{name}")
    raise AttributeError(f"module 'crowdstat.estimators.l1' has no attribute {name!r}")
