"""Line posteriors (docs/math.md, eq. 7) and the aligned rewards.

    l_j = logit(p0) + sum_i label_ij * w_i ,   P_j = sigmoid(l_j)
    s = c / k (c = #{j : P_j > tau}),   s_soft = mean_j P_j,   coverage = k / n_lines

Kernels are pure and un-jitted so they compose under jit / vmap / scan; :func:`posteriors`,
:func:`rewards` and :func:`posteriors_and_rewards` are the jitted drivers (:func:`crowdstat.fit`
computes every method's rewards with :func:`rewards`). They read the vote list (``VoteArrays``,
sorted by line): eq. 7 is one sorted segment-sum. :mod:`crowdstat.estimators.ell` holds the same
computation on an ELLPACK layout, for repeated evaluations on one table.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays

__all__ = [
    "Rewards",
    "line_logits",
    "line_posteriors",
    "rewards",
    "posteriors",
    "posteriors_and_rewards",
    "logit",
    "clip_prob",
    "reliability",
]


class Rewards(NamedTuple):
    reward: jax.Array  # shape=(n_programs,), s = c / k
    reward_soft: jax.Array  # shape=(n_programs,), mean posterior of the annotated lines
    n_annotated: jax.Array  # shape=(n_programs,), int32, k
    coverage: jax.Array  # shape=(n_programs,), k / n_lines


def clip_prob(p, delta):
    """Clip a probability to [delta, 1 - delta] (docs/math.md: before any logit)."""
    return jnp.clip(p, delta, 1.0 - delta)


def logit(p):
    return jnp.log(p) - jnp.log1p(-p)


def line_logits(w: jax.Array, votes: VoteArrays, prior_logit=0.0) -> jax.Array:
    """Eq. (7): l_j = prior_logit + sum_i label_ij w_i, as one segment-sum over the vote list.

    Parameters
    ----------
    w : Float[Array, "n_annotators"]
        Annotator logits w_i = logit(p_i).
    votes : VoteArrays
        Votes sorted by line.
    prior_logit : scalar
        logit(p0); 0 for the paper's p0 = 1/2.

    Returns
    -------
    Float[Array, "n_lines"]
    """
    # Indices come from crowdstat.io.tables (0 <= annotator < len(w), line < n_lines, checked when the
    # table is read), so the bounds checks of the default gather / scatter modes are dropped.
    contrib = votes.label.astype(w.dtype) * w.at[votes.annotator].get(mode="promise_in_bounds")
    n_lines = votes.line_program.shape[0]
    s = jax.ops.segment_sum(contrib, votes.line, num_segments=n_lines, indices_are_sorted=True, mode="promise_in_bounds")
    return s + jnp.asarray(prior_logit, w.dtype)


def line_posteriors(w: jax.Array, votes: VoteArrays, prior_logit=0.0) -> jax.Array:
    """P_j = sigmoid(l_j) (stable)."""
    return jax.nn.sigmoid(line_logits(w, votes, prior_logit))


@jax.jit
def rewards(posterior: jax.Array, votes: VoteArrays, tau=0.5) -> Rewards:
    """Per-program rewards from line posteriors.

    Every line in ``votes`` has at least one vote by construction, so k = lines per program.
    """
    n_prog = votes.program_size.shape[0]
    dtype = posterior.dtype

    def seg(x):
        return jax.ops.segment_sum(x, votes.line_program, num_segments=n_prog, indices_are_sorted=True, mode="promise_in_bounds")

    k = seg(jnp.ones_like(posterior))
    c = seg((posterior > tau).astype(dtype))
    soft = seg(posterior)
    kk = jnp.maximum(k, 1.0)
    return Rewards(
        reward=c / kk,
        reward_soft=soft / kk,
        n_annotated=k.astype(jnp.int32),
        coverage=k / jnp.maximum(votes.program_size.astype(dtype), 1.0),
    )


@jax.jit
def posteriors(w, votes: VoteArrays, prior_logit):
    """Jitted driver: P_j = sigmoid(l_j) for weights ``w`` (the posteriors of sequential and proximal)."""
    return line_posteriors(w, votes, prior_logit)


def reliability(w) -> np.ndarray:
    """p_i = sigmoid(w_i) on the host, in float64 (stable for any |w|)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(w).astype(np.float64)))


@jax.jit
def posteriors_and_rewards(w, votes: VoteArrays, prior_logit, tau):
    """Jitted driver: (l, P, Rewards) for weights ``w``."""
    l = line_logits(w, votes, prior_logit)
    p = jax.nn.sigmoid(l)
    return l, p, rewards(p, votes, tau)
