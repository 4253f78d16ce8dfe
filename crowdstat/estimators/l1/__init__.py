"""The one-shot L1-logistic reliability estimate (docs/math.md).

- :mod:`~crowdstat.estimators.l1.problem`: the problem (training rows, E w and E^T v, loss,
  gradient, gamma_max, the Lipschitz constant, the soft threshold).
- :mod:`~crowdstat.estimators.l1.dual`: the binary-entropy dual and the duality-gap certificate.
- :mod:`~crowdstat.estimators.l1.fista`: ISTA / FISTA with adaptive restart.
- :mod:`~crowdstat.estimators.l1.newton`: proximal Newton with coordinate descent.
- :mod:`~crowdstat.estimators.l1.solve`: solver choice, :func:`solve` and the gamma path.
- :mod:`~crowdstat.estimators.l1.latent`: the latent-truth variant (L1-penalised one-coin EM).
"""
