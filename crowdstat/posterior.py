"""Line posteriors (MATH.md, eq. 7) and the aligned rewards.

    l_j = logit(p0) + sum_i label_ij * w_i ,   P_j = sigmoid(l_j)
    s = c / k (c = #{j : P_j > tau}),   s_soft = mean_j P_j,   coverage = k / n_lines

Kernels are pure and un-jitted so they compose under jit / vmap / scan; :func:`posteriors_and_rewards`
is the jitted driver.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from crowdstat._typing import VoteArrays

__all__ = ["Rewards", "line_logits", "line_posteriors", "rewards", "posteriors_and_rewards", "logit", "clip_prob"]


class Rewards(NamedTuple):
    reward: jax.Array  # shape=(n_programs,), s = c / k
    reward_soft: jax.Array  # shape=(n_programs,), mean posterior of the annotated lines
    n_annotated: jax.Array  # shape=(n_programs,), int32, k
    coverage: jax.Array  # shape=(n_programs,), k / n_lines


def clip_prob(p, delta):
    """Clip a probability to [delta, 1 - delta] (MATH.md: before any logit)."""
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
    contrib = votes.label.astype(w.dtype) * w[votes.annotator]
    n_lines = votes.line_program.shape[0]
    s = jax.ops.segment_sum(contrib, votes.line, num_segments=n_lines, indices_are_sorted=True)
    return s + jnp.asarray(prior_logit, w.dtype)


def line_posteriors(w: jax.Array, votes: VoteArrays, prior_logit=0.0) -> jax.Array:
    """P_j = sigmoid(l_j) (stable)."""
    return jax.nn.sigmoid(line_logits(w, votes, prior_logit))


def rewards(posterior: jax.Array, votes: VoteArrays, tau=0.5) -> Rewards:
    """Per-program rewards from line posteriors.

    Every line in ``votes`` has at least one vote by construction, so k = lines per program.
    """
    n_prog = votes.program_size.shape[0]
    dtype = posterior.dtype
    seg = lambda x: jax.ops.segment_sum(x, votes.line_program, num_segments=n_prog, indices_are_sorted=True)  # noqa: E731
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
def posteriors_and_rewards(w, votes: VoteArrays, prior_logit, tau):
    """Jitted driver: (l, P, Rewards) for weights ``w``."""
    l = line_logits(w, votes, prior_logit)
    p = jax.nn.sigmoid(l)
    return l, p, rewards(p, votes, tau)
