"""ISTA / FISTA for the L1-logistic of :mod:`crowdstat.estimators.l1.problem` (docs/math.md, "Iterations").

ISTA takes w <- S(w - eta grad, eta gamma) with eta in (0, 2/L); FISTA uses eta = 1/L with
Nesterov momentum and the adaptive gradient restart of O'Donoghue & Candes (2015). The
intercept takes a plain gradient step (it is not penalised). The iteration stops when the
relative duality gap of :mod:`crowdstat.estimators.l1.dual` falls below ``tol``, checked every
``check_every`` steps, or after ``maxiter`` steps.

Everything runs in one ``while_loop`` with ``gamma``, the warm start, the step and ``tol`` as
runtime values, so one compiled solve vmaps over gamma grids and replicates. Call it through
:func:`crowdstat.estimators.l1.solve.solve`, which also picks between this and proximal Newton.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from crowdstat.estimators.l1 import dual as _dual
from crowdstat.estimators.l1.problem import L1Data, gradient, loss_rows, predictor, residual, rmatvec, soft_threshold

__all__ = ["ProxState", "certificate", "run"]


class ProxState(NamedTuple):
    """A solver's state and its last certificate (the FISTA fields y_w, y_b, t are w, b, 1 for Newton)."""

    w: jax.Array  # shape=(m,)
    b: jax.Array  # shape=(), intercept (0 and fixed without one)
    y_w: jax.Array  # shape=(m,), FISTA extrapolation point
    y_b: jax.Array  # shape=()
    t: jax.Array  # shape=(), FISTA momentum parameter
    iter_num: jax.Array  # shape=(), int32
    objective: jax.Array  # shape=(), f(w, b) at the last check
    dual_value: jax.Array  # shape=(), D at the last check
    gap: jax.Array  # shape=()
    rel_gap: jax.Array  # shape=()


def certificate(w, b, data: L1Data, gamma, intercept: bool) -> _dual.DualInfo:
    """f(w, b), the dual value of the feasible point built from sigmoid(z) - q, and the gap."""
    z = predictor(w, b, data)
    obj = jnp.sum(loss_rows(z, data.q, data.row_mask)) + gamma * jnp.sum(jnp.abs(w))
    alpha = jnp.where(data.row_mask, residual(z, data.q), 0.0)
    m = w.shape[0]
    return _dual.gap(obj, alpha, data.q, lambda a: rmatvec(a, data, m), gamma, intercept, data.row_mask, data.offset)


def _prox_step(data: L1Data, gamma, eta, accelerated: bool, intercept: bool):
    """One ISTA / FISTA step on the carry (w, b, y_w, y_b, t)."""

    def step(_, c):
        w, b, yw, yb, t = c
        gw, gb = gradient(yw, yb, data)
        w_new = soft_threshold(yw - eta * gw, eta * gamma)
        b_new = yb - eta * gb if intercept else b
        if not accelerated:
            return w_new, b_new, w_new, b_new, t
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_new
        yw_new = w_new + mom * (w_new - w)
        yb_new = b_new + mom * (b_new - b)
        # Adaptive restart: drop the momentum when it points uphill.
        restart = jnp.vdot(yw - w_new, w_new - w) + (yb - b_new) * (b_new - b) > 0
        t_new = jnp.where(restart, jnp.ones_like(t), t_new)
        yw_new = jnp.where(restart, w_new, yw_new)
        yb_new = jnp.where(restart, b_new, yb_new)
        return w_new, b_new, yw_new, yb_new, t_new

    return step


def run(data: L1Data, gamma, w0, b0, eta, tol, *, accelerated: bool, intercept: bool, maxiter: int, check_every: int) -> ProxState:
    """FISTA (ISTA with ``accelerated=False``) from (w0, b0) with step ``eta``, un-jitted.

    ``gamma``, ``b0`` and ``eta`` must already be arrays of ``w0``'s dtype (as
    :func:`crowdstat.estimators.l1.solve.solve` passes them).
    """
    dtype = w0.dtype
    prox_step = _prox_step(data, gamma, eta, accelerated, intercept)

    def cond(s: ProxState):
        return (s.iter_num < maxiter) & (s.rel_gap > tol)

    def body(s: ProxState):
        c = jax.lax.fori_loop(0, check_every, prox_step, (s.w, s.b, s.y_w, s.y_b, s.t))
        w, b, yw, yb, t = c
        info = certificate(w, b, data, gamma, intercept)
        return ProxState(w, b, yw, yb, t, s.iter_num + check_every, info.objective, info.dual_value, info.gap, info.rel_gap)

    info0 = certificate(w0, b0, data, gamma, intercept)
    s0 = ProxState(
        w0, b0, w0, b0, jnp.ones((), dtype), jnp.zeros((), jnp.int32), info0.objective, info0.dual_value, info0.gap, info0.rel_gap
    )
    return jax.lax.while_loop(cond, body, s0)
