"""The latent-truth variant of the L1 estimate: L1-penalised one-coin EM (docs/math.md, "Latent-truth variant").

With few or no honeypots the truth of most lines is unknown. Refitting the L1-logistic on the
pseudo-labels q = P_j of eq. (7) cannot learn (its smooth gradient is 0 at the current w), so the
variant is the EM algorithm of the one-coin model whose posterior is eq. (7):

- E-step: q_j = sigmoid(l_j) with the current w, honeypot lines clamped to their truth;
- M-step: per annotator, the L1-logistic regression of "the vote agrees with the truth" on an
  intercept w_i, with expected agreements a_i and disagreements d_i, in closed form
  (:func:`m_step`).

With gamma = 0 this is one-coin Dawid-Skene (:func:`crowdstat.estimators.dawid_skene.em_one_coin`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from crowdstat._typing import VoteArrays
from crowdstat.estimators.posterior import line_logits

__all__ = ["e_step", "agreements", "m_step", "latent_gamma_max", "latent_em"]


def e_step(w, votes: VoteArrays, prior_logit):
    """q_j = P(line j correct | votes, w) from eq. (7); honeypot lines clamped to their truth."""
    q = jax.nn.sigmoid(line_logits(w, votes, prior_logit))
    return jnp.where(votes.truth != 0, (1.0 + votes.truth.astype(w.dtype)) / 2.0, q)


def agreements(q, votes: VoteArrays, m: int):
    """(a, n): per annotator the expected number of votes that agree with the truth, and of votes."""
    qv = q[votes.line]
    agree = jnp.where(votes.label > 0, qv, 1.0 - qv)
    a = jax.ops.segment_sum(agree, votes.annotator, num_segments=m)
    n = jax.ops.segment_sum(jnp.ones_like(agree), votes.annotator, num_segments=m)
    return a, n


def m_step(a, d, gamma, logit_cap):
    """argmin_w a softplus(-w) + d softplus(w) + gamma |w| (the single-annotator L1 logistic).

    w* = logit((a - gamma) / (a + d)) if (a - d)/2 > gamma; logit((a + gamma) / (a + d)) if
    (d - a)/2 > gamma; else 0. Clipped to |w| <= logit_cap (= logit(1 - delta)).
    """
    n = jnp.maximum(a + d, jnp.finfo(a.dtype).tiny)
    pos = (a - d) / 2 > gamma
    neg = (d - a) / 2 > gamma
    p = jnp.where(pos, (a - gamma) / n, jnp.where(neg, (a + gamma) / n, 0.5))
    p = jnp.clip(p, 0.0, 1.0)
    w = jnp.log(p) - jnp.log1p(-p)
    return jnp.clip(jnp.where(pos | neg, w, 0.0), -logit_cap, logit_cap)


def latent_gamma_max(arrays: VoteArrays, w0, prior_logit):
    """gamma_max of the first M-step: max_i |a_i - d_i| / 2 at the E-step from ``w0``.

    The M-step sets every w_i to 0 for gamma >= this value, so it is what a gamma given as a
    percentage refers to in the latent variant. Returns a scalar array of ``w0``'s dtype.
    """
    a, n = agreements(e_step(w0, arrays, prior_logit), arrays, w0.shape[0])
    return jnp.max(jnp.abs(2 * a - n)) / 2


@partial(jax.jit, static_argnames=("max_outer",))
def latent_em(votes: VoteArrays, w0, gamma, prior_logit, logit_cap, tol, max_outer: int = 100):
    """L1-penalised one-coin EM from ``w0``; stops when max |w_new - w| <= tol or after ``max_outer`` rounds.

    Parameters
    ----------
    votes : VoteArrays
        All votes (honeypot lines carry their truth, the others 0).
    w0 : (m,) array
        Starting weights; its dtype is the compute dtype.
    gamma, prior_logit, logit_cap, tol : scalars
        L1 weight of the M-step, logit(p0) of eq. (7), the clip |w| <= logit_cap, the stop.

    Returns
    -------
    (w, q_line, n_iter, last_change): the weights, the line posteriors of the last E-step, the
    rounds run and the last max |w_new - w|.
    """
    dtype = w0.dtype
    m = w0.shape[0]

    def cond(c):
        _, it, change = c
        return (it < max_outer) & (change > tol)

    def body(c):
        w, it, _ = c
        a, n = agreements(e_step(w, votes, prior_logit), votes, m)
        w_new = m_step(a, n - a, gamma, logit_cap)
        return w_new, it + 1, jnp.max(jnp.abs(w_new - w), initial=0.0)

    w, it, change = jax.lax.while_loop(cond, body, (w0, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype)))
    return w, e_step(w, votes, prior_logit), it, change
