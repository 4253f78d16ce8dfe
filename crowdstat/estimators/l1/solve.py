"""Solving the one-shot L1-logistic: solver choice, :func:`solve` and the gamma :func:`path` (docs/math.md).

Two solvers minimise f(w, b) of :mod:`crowdstat.estimators.l1.problem` and stop on the same
certificate, the relative duality gap of :mod:`crowdstat.estimators.l1.dual`:

- proximal Newton (:mod:`crowdstat.estimators.l1.newton`), the default where it applies;
- FISTA, or ISTA with ``accelerated=False`` (:mod:`crowdstat.estimators.l1.fista`).

The choice (:func:`resolve_solver`) depends on shapes only, so it is static under ``jit``.
``gamma``, the warm start, the step and ``tol`` are runtime arguments, so one compiled solve vmaps
over gamma grids and replicates, and :func:`path` scans a warm-started regularisation path.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from crowdstat.estimators.l1 import fista as _fista
from crowdstat.estimators.l1 import newton as _newton
from crowdstat.estimators.l1.fista import ProxState
from crowdstat.estimators.l1.problem import L1Data
from crowdstat.estimators.registry import SOLVERS

__all__ = ["ProxState", "SOLVERS", "AUTO_NEWTON_RATIO", "default_tol", "resolve_solver", "solve", "path"]

AUTO_NEWTON_RATIO = 8  # 'auto' picks Newton only if (m + 1)^2 <= this * n_votes


def default_tol(dtype) -> float:
    """Relative duality gap at which :func:`solve` stops, by dtype (see docs/math.md, "Precision")."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def resolve_solver(solver: str, data: L1Data, m: int, accelerated: bool = True) -> str:
    """The solver :func:`solve` runs: 'newton', 'fista' or 'ista' (static, from shapes only).

    'auto' (the default) is proximal Newton when ``accelerated`` is set and Newton applies
    (:func:`crowdstat.estimators.l1.newton.hessian_mode`): always with the native CPU kernel (matrix-free
    coordinate descent, any m); with the dense Hessian (no native kernel: m + 1 <= newton.DENSE_MAX
    and ``data.pairs`` or few annotators) only if (m + 1)^2 <= AUTO_NEWTON_RATIO * n_votes (an
    iteration then costs O(m^2), a FISTA step O(n_votes)). Otherwise FISTA (ISTA when
    ``accelerated=False``). 'newton' where it does not apply is an error.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    mode = _newton.hessian_mode(data, m)
    if solver == "newton":
        if mode is None:
            raise ValueError(
                f"solver='newton' needs the native kernel (CPU), or m + 1 <= {_newton.DENSE_MAX} annotators (got m = {m}) "
                "and L1Data.pairs (built by training_data unless there are too many vote pairs); use solver='fista'"
            )
        return "newton"
    few = mode is not None and (mode == "native" or (m + 1) ** 2 <= AUTO_NEWTON_RATIO * data.label.shape[0])
    if solver == "auto" and accelerated and few:
        return "newton"
    return "fista" if accelerated else "ista"


@partial(jax.jit, static_argnames=("accelerated", "intercept", "maxiter", "check_every", "solver"))
def solve(
    data: L1Data,
    gamma,
    w0,
    b0,
    stepsize,
    tol,
    *,
    accelerated: bool = True,
    intercept: bool = False,
    maxiter: int = 10000,
    check_every: int = 10,
    solver: str = "auto",
) -> ProxState:
    """Minimise f(w, b) until the relative duality gap is <= tol (or maxiter).

    Parameters
    ----------
    data : L1Data
    gamma : scalar
        L1 weight (runtime: vmappable).
    w0, b0 : warm start (b0 ignored and kept fixed at its value without intercept).
    stepsize : scalar
        eta; 1/L for FISTA, any value in (0, 2/L) for ISTA (unused by Newton).
    tol : scalar
        Relative duality gap to stop at.
    solver : {"auto", "newton", "fista"}
        "newton": proximal Newton (:mod:`crowdstat.estimators.l1.newton`; ``iter_num`` counts outer Newton
        steps); "fista": FISTA, or ISTA with ``accelerated=False``; "auto" (default): Newton when
        it applies (see :func:`resolve_solver`), else FISTA / ISTA.

    Returns
    -------
    ProxState with the solution, ``iter_num`` and the last certificate (objective, dual, gap).
    """
    return _solve(data, gamma, w0, b0, stepsize, tol, accelerated, intercept, maxiter, check_every, solver)


def _solve(data, gamma, w0, b0, stepsize, tol, accelerated, intercept, maxiter, check_every, solver, prep=None) -> ProxState:
    """:func:`solve` un-jitted; ``prep`` is Newton's loop-invariant part when a path shares it."""
    dtype = w0.dtype
    gamma = jnp.asarray(gamma, dtype)
    m = w0.shape[0]
    b0 = jnp.asarray(b0, dtype)
    if resolve_solver(solver, data, m, accelerated) == "newton":
        w, b, it, info, _ = _newton.solve(data, gamma, w0, b0, jnp.asarray(tol, dtype), intercept=intercept, maxiter=maxiter, prep=prep)
        return ProxState(w, b, w, b, jnp.ones((), dtype), it, info.objective, info.dual_value, info.gap, info.rel_gap)
    eta = jnp.asarray(stepsize, dtype)
    return _fista.run(data, gamma, w0, b0, eta, tol, accelerated=accelerated, intercept=intercept, maxiter=maxiter, check_every=check_every)


@partial(jax.jit, static_argnames=("accelerated", "intercept", "maxiter", "check_every", "solver"))
def path(data: L1Data, gammas, w0, b0, stepsize, tol, *, accelerated=True, intercept=False, maxiter=10000, check_every=10, solver="auto"):
    """Warm-started regularisation path over ``gammas`` (give them from gamma_max down).

    Returns a ProxState whose fields have a leading axis len(gammas). ``solver`` as in :func:`solve`.
    """
    prep = None
    if resolve_solver(solver, data, w0.shape[0], accelerated) == "newton":
        prep = _newton.prepare(data, w0.shape[0], intercept)  # once for the whole path (CSC or pair indices)

    def step(carry, g):
        w, b = carry
        s = _solve(data, g, w, b, stepsize, tol, accelerated, intercept, maxiter, check_every, solver, prep)
        return (s.w, s.b), s

    _, states = jax.lax.scan(step, (w0, jnp.asarray(b0, w0.dtype)), gammas)
    return states
