"""Majority vote.

posterior_j = (#correct votes on j) / (#votes on j); an exact tie gives 1/2. An annotator's
reliability is the fraction of their votes that agree with the majority label of the line,
counting only lines without a tie (1/2 if they have none); weight = logit(clip(reliability)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crowdstat._typing import VoteArrays

__all__ = ["majority"]


@jax.jit
def majority(votes: VoteArrays, n_annotators_like, delta):
    """Returns (posterior per line, reliability per annotator, weight per annotator)."""
    dtype = n_annotators_like.dtype
    m = n_annotators_like.shape[0]
    n_lines = votes.line_program.shape[0]
    lab = votes.label.astype(dtype)
    seg = lambda x: jax.ops.segment_sum(x, votes.line, num_segments=n_lines, indices_are_sorted=True)  # noqa: E731
    n = seg(jnp.ones_like(lab))
    pos = seg((lab > 0).astype(dtype))
    post = pos / jnp.maximum(n, 1.0)
    maj = jnp.sign(2.0 * pos - n)  # +1, -1, 0 on a tie
    mv = maj[votes.line]
    counted = (mv != 0).astype(dtype)
    agree = (lab * mv > 0).astype(dtype)
    a = jax.ops.segment_sum(agree, votes.annotator, num_segments=m)
    c = jax.ops.segment_sum(counted, votes.annotator, num_segments=m)
    rel = jnp.where(c > 0, a / jnp.maximum(c, 1.0), 0.5)
    rc = jnp.clip(rel, delta, 1.0 - delta)
    return post, rel, jnp.log(rc) - jnp.log1p(-rc)
