"""The binary-entropy dual of the L1-logistic problem and its duality-gap certificate (docs/math.md, "The dual and the gap").

Implemented for soft labels q in [0, 1] (hard truths t = +-1 are q = (1 + t) / 2), with the
loss  l_q(z) = -q log sigmoid(z) - (1 - q) log sigmoid(-z)  (= log(1 + exp(-t z)) for hard q).
Its convex conjugate is  l_q*(u) = -H(q + u)  on u in [-q, 1 - q], so the dual of

    f(w, b) = sum_j l_{q_j}((E w)_j + b) + gamma ||w||_1

is   D(alpha) = sum_j H(q_j + alpha_j)   s.t.  ||E^T alpha||_inf <= gamma,  alpha_j in [-q_j, 1 - q_j]
(and sum_j alpha_j = 0 when the intercept b is fitted). For hard labels alpha_j = -t_j nu_j, which
is the paper's form  max sum_j H(nu_j)  s.t.  ||E^T (t * nu)||_inf <= gamma.

From any (w, b), alpha = sigmoid(E w + b) - q is made feasible by (i) with an intercept, shrinking
the side (positive or negative entries) whose sum is larger so that sum alpha = 0, then
(ii) scaling by min(1, gamma / ||E^T alpha||_inf). Both steps shrink towards 0, which stays in
the box. Then gap = f(w, b) - D(alpha_feasible) >= 0 bounds the suboptimality of (w, b).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = ["binary_entropy", "dual_value", "feasible_point", "DualInfo", "gap", "scalar_bound"]


def binary_entropy(v):
    """H(v) = -v log v - (1 - v) log(1 - v), with 0 log 0 = 0 (xlogy)."""
    return -xlogy(v, v) - xlogy(1.0 - v, 1.0 - v)


def dual_value(alpha, q, mask=None):
    """D(alpha) = sum_j H(q_j + alpha_j) (masked rows contribute 0).

    For hard labels H(q + alpha) is evaluated as H(|alpha|) (H(1 - u) = H(u)): 1 + alpha would round
    a small alpha away in float32, and with it the whole dual value of a near-separable fit.
    """
    v = jnp.where(q >= 1.0, -alpha, jnp.where(q <= 0.0, alpha, q + alpha))
    h = binary_entropy(jnp.clip(v, 0.0, 1.0))
    if mask is not None:
        h = jnp.where(mask, h, 0.0)
    return jnp.sum(h)


def feasible_point(alpha, et_alpha_fn, gamma, intercept: bool, mask=None):
    """Scale alpha into the dual feasible set. Returns (alpha_feasible, scale, ||E^T alpha||_inf)."""
    if mask is not None:
        alpha = jnp.where(mask, alpha, 0.0)
    if intercept:
        pos = jnp.sum(jnp.maximum(alpha, 0.0))
        neg = jnp.sum(jnp.maximum(-alpha, 0.0))
        tiny = jnp.finfo(alpha.dtype).tiny
        shrink_pos = jnp.where(pos > neg, neg / jnp.maximum(pos, tiny), 1.0)
        shrink_neg = jnp.where(neg > pos, pos / jnp.maximum(neg, tiny), 1.0)
        alpha = jnp.where(alpha > 0, alpha * shrink_pos, alpha * shrink_neg)
    norm = jnp.max(jnp.abs(et_alpha_fn(alpha)), initial=0.0)
    scale = jnp.where(norm > gamma, gamma / jnp.maximum(norm, jnp.finfo(alpha.dtype).tiny), 1.0)
    return alpha * scale, scale, norm


class DualInfo(NamedTuple):
    objective: jax.Array  # f(w, b)
    dual_value: jax.Array  # D(alpha_feasible)
    gap: jax.Array  # objective - dual_value (>= 0 up to rounding)
    rel_gap: jax.Array  # gap / max(objective, tiny)


def gap(primal_objective, alpha, q, et_alpha_fn, gamma, intercept: bool, mask=None, offset=None) -> DualInfo:
    """Duality gap at a primal point whose objective and dual candidate alpha are given.

    With a row offset o (the problem in d = w - w_c, o = E w_c) the dual gains the linear term
    alpha . o: D(alpha) = sum_j H(q_j + alpha_j) + alpha . o (docs/math.md, "Centred fit").
    """
    a, _, _ = feasible_point(alpha, et_alpha_fn, gamma, intercept, mask)
    d = dual_value(a, q, mask)
    if offset is not None:
        d = d + jnp.sum(a * (offset if mask is None else jnp.where(mask, offset, 0.0)))
    # Weak duality makes f - D >= 0 exactly; in floating point it can come out a few ulps below 0
    # when the point is optimal (f and D agree to rounding). Report the certificate as >= 0.
    g = jnp.maximum(primal_objective - d, 0.0)
    rel = g / jnp.maximum(primal_objective, jnp.finfo(primal_objective.dtype).tiny)
    return DualInfo(primal_objective, d, g, rel)


def scalar_bound(eps_inf_norm, gamma):
    """The paper's single-observation (n = 1) bound.

    max H(nu) s.t. ||eps||_inf nu <= gamma, 0 <= nu <= 1: nu* = min(1/2, gamma / ||eps||_inf),
    and D(nu*) = H(nu*) is a lower bound on the achievable loss. Returns (nu*, H(nu*)).
    """
    eps_inf_norm = jnp.asarray(eps_inf_norm)
    nu = jnp.minimum(0.5, gamma / eps_inf_norm)
    return nu, binary_entropy(nu)
