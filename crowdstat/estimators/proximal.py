"""The "proximal" method: the one-shot L1-logistic reliability estimate (docs/math.md, "One-shot L1-logistic").

:func:`fit` turns a vote table and the method's parameters into an :class:`EstimatorFit`:

- supervised (the default when there is honeypot truth): the L1-logistic regression of the
  honeypot lines' truth on their votes (:mod:`crowdstat.estimators.l1.solve`), certified by the
  relative duality gap;
- latent (``latent=True``, or automatic without truth): L1-penalised one-coin EM over all lines
  (:mod:`crowdstat.estimators.l1.latent`).

The weights w are the annotators' logits of eq. (7); the line posteriors follow from them with
the fitted intercept as prior logit when ``intercept=True``, else logit(prior).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat.estimators.l1 import latent as _latent
from crowdstat.estimators.l1 import problem as _problem
from crowdstat.estimators.l1 import solve as _solve
from crowdstat.estimators.posterior import line_posteriors
from crowdstat.estimators.registry import parse_gamma
from crowdstat.estimators.result import EstimatorFit

__all__ = ["fit"]

_SOLVER_NAMES = {"newton": "proximal Newton", "fista": "FISTA", "ista": "ISTA"}
# Jitted: one fused kernel. Run op by op, the prior-logit addition and the sigmoid can round
# differently in the last bit from the jitted posterior kernels crowdstat has always reported.
_line_posteriors = jax.jit(line_posteriors)


def fit(table, cfg, common, dtype) -> EstimatorFit:
    """Fit the proximal estimator to a vote table.

    Parameters
    ----------
    table : crowdstat.io.tables.VoteTable
    cfg : the method's parameters
        ``gamma`` (a number is absolute, ``"X%"`` is X percent of gamma_max), ``accelerated``,
        ``solver``, ``tol`` (None: :func:`~crowdstat.estimators.l1.solve.default_tol`), ``maxiter``,
        ``intercept``, ``latent`` (None: latent when the table has no honeypot truth),
        ``stepsize`` (None: 1/L), ``nu`` (the latent EM's starting reliability), ``max_outer``.
    common : the shared parameters
        ``prior``, ``delta`` are read here (``tau``, ``x64``, ``progress`` are the caller's).
    dtype : jnp.float32 or jnp.float64
        The compute dtype; float64 needs the caller to run under ``jax.enable_x64``.

    Returns
    -------
    EstimatorFit with the line posteriors, weights, reliabilities sigmoid(w) (float64) and the
    diagnostics (supervised: the certificate and the solver's figures; latent: the EM's).
    Warns (UserWarning) when the solver or the EM stopped before converging.
    """
    prior_logit = math.log(common.prior) - math.log1p(-common.prior)
    latent = cfg.latent if cfg.latent is not None else table.n_honeypots == 0
    tol = cfg.tol if cfg.tol is not None else _solve.default_tol(dtype)
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    if latent:
        w, prior_logit, diagnostics, warning = _fit_latent(arrays, table.n_annotators, cfg, common, dtype, prior_logit, tol)
    else:
        w, prior_logit, diagnostics, warning = _fit_supervised(table, cfg, common, dtype, prior_logit, tol)
    if warning is not None:
        # stacklevel: _fit_supervised / _fit_latent return the message; from here, the caller of crowdstat.fit.
        warnings.warn(warning, stacklevel=4)
    posterior = np.asarray(_line_posteriors(w, arrays, jnp.asarray(prior_logit, dtype)))
    w = np.asarray(w)
    reliability = 0.5 * (1.0 + np.tanh(0.5 * w.astype(np.float64)))  # stable sigmoid
    return EstimatorFit(posterior=posterior, weight=w, reliability=reliability, diagnostics=diagnostics, prior_logit=float(prior_logit))


def _fit_latent(arrays, m: int, cfg, common, dtype, prior_logit: float, tol: float):
    """The latent-truth variant: L1-penalised one-coin EM from w_i = logit(nu) (docs/math.md explains the choice).

    Returns (w, prior_logit, diagnostics, warning message or None).
    """
    delta = float(common.delta)
    gamma_val, rel = parse_gamma(cfg.gamma)
    logit_cap = math.log1p(-delta) - math.log(delta)
    nu = min(max(cfg.nu, delta), 1 - delta)
    w0 = jnp.full(m, math.log(nu) - math.log1p(-nu), dtype)
    gmax = float(_latent.latent_gamma_max(arrays, w0, prior_logit))
    gamma = gamma_val * gmax if rel else gamma_val
    stop = max(tol, 1e-12) ** 0.5
    w, _, it, change = _latent.latent_em(
        arrays,
        w0,
        jnp.asarray(gamma, dtype),
        jnp.asarray(prior_logit, dtype),
        jnp.asarray(logit_cap, dtype),
        jnp.asarray(stop, dtype),
        max_outer=int(cfg.max_outer),
    )
    diagnostics = {
        "variant": "latent (one-coin EM, L1-penalised M-step)",
        "gamma": gamma,
        "gamma_max": gmax,
        "iterations": int(it),
        "last_change": float(change),
        "converged": bool(float(change) <= stop),
    }
    warning = None
    if not diagnostics["converged"]:
        warning = f"proximal (latent): EM stopped after {int(it)} iterations with max weight change {float(change):.3g}"
    return w, prior_logit, diagnostics, warning


def _step(cfg, solver: str, data, m: int, intercept: bool):
    """(eta, L): no step size for Newton (its direction and a line search); else L by power iterations and
    eta = ``stepsize`` or 1/L, checked to lie in (0, 2/L) for ISTA."""
    if solver == "newton":
        return 1.0, None
    lip = float(_problem.lipschitz(data, m, intercept))
    eta = cfg.stepsize if cfg.stepsize is not None else 1.0 / lip
    if solver == "ista" and not 0 < eta < 2.0 / lip:
        raise ValueError(f"stepsize: ISTA needs eta in (0, 2/L) = (0, {2.0 / lip:.6g}), got {eta}")
    return eta, lip


def _fit_supervised(table, cfg, common, dtype, prior_logit: float, tol: float):
    """The L1-logistic on the honeypot lines, solved to the relative duality gap ``tol``.

    Returns (w, prior_logit, diagnostics, warning message or None); prior_logit is the fitted
    intercept when ``cfg.intercept``.
    """
    m = table.n_annotators
    gamma_val, rel = parse_gamma(cfg.gamma)
    data = _problem.training_data(table.arrays, dtype)
    intercept = bool(cfg.intercept)
    gmax = float(_problem.gamma_max(data, m, intercept))
    gamma = gamma_val * gmax if rel else gamma_val
    solver = _solve.resolve_solver(cfg.solver, data, m, bool(cfg.accelerated))
    eta, lip = _step(cfg, solver, data, m, intercept)
    b0 = _problem.b_at_zero(data, float(common.delta)) if intercept else jnp.asarray(0.0, dtype)
    st = _solve.solve(
        data,
        jnp.asarray(gamma, dtype),
        jnp.zeros(m, dtype),
        b0,
        jnp.asarray(eta, dtype),
        jnp.asarray(tol, dtype),
        accelerated=bool(cfg.accelerated),
        intercept=intercept,
        maxiter=int(cfg.maxiter),
        solver="fista" if solver == "ista" else solver,
    )
    converged = bool(float(st.rel_gap) <= tol)
    diagnostics = {
        "variant": "supervised (honeypot lines)",
        "solver": _SOLVER_NAMES[solver],
        "objective": float(st.objective),
        "dual_value": float(st.dual_value),
        "gap": float(st.gap),
        "rel_gap": float(st.rel_gap),
        "tol": tol,
        "iterations": int(st.iter_num),
        "converged": converged,
        "gamma": gamma,
        "gamma_max": gmax,
        "lipschitz": lip,
        "stepsize": float(eta) if lip is not None else None,
        "intercept": float(st.b) if intercept else 0.0,
        "n_training_lines": int(data.q.shape[0]),
        "n_filtered_out": int(np.sum(np.asarray(st.w) == 0)),
    }
    warning = None
    if not converged:
        warning = f"proximal: not converged after {int(st.iter_num)} iterations (relative gap {float(st.rel_gap):.3g} > tol {tol:.3g})"
    return st.w, (float(st.b) if intercept else prior_logit), diagnostics, warning
