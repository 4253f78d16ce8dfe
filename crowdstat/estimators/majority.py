"""Majority vote.

posterior_j = (#correct votes on j) / (#votes on j); an exact tie gives 1/2. An annotator's
reliability is the fraction of their votes that agree with the majority label of the line,
counting only lines without a tie (1/2 if they have none); weight = logit(clip(reliability)).

:func:`majority` is the jitted kernel; :func:`fit` is the registry's entry point
(``crowdstat.fit(method="majority")``). Honeypot truth is not used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import CommonConfig, MajorityConfig
from crowdstat.estimators.result import EstimatorFit

__all__ = ["majority", "fit"]


@jax.jit
def majority(votes: VoteArrays, n_annotators_like, delta):
    """Returns (posterior per line, reliability per annotator, weight per annotator)."""
    dtype = n_annotators_like.dtype
    m = n_annotators_like.shape[0]
    n_lines = votes.line_program.shape[0]
    # One scatter per side instead of two: (line, vote is positive) and (annotator, agrees)
    # are packed into one index, and the pairs read back as two columns.
    # A padding vote (label 0) has weight 0 on both sides.
    positive = (votes.label > 0).astype(jnp.int32)
    voted = (votes.label != 0).astype(dtype)
    cnt = jax.ops.segment_sum(voted, 2 * votes.line + positive, num_segments=2 * n_lines)
    neg, pos = cnt.reshape(n_lines, 2).T
    post = pos / jnp.maximum(neg + pos, 1.0)
    mv = jnp.sign(pos - neg)[votes.line]  # the line's majority label: +1, -1, 0 on a tie
    agree = (votes.label.astype(dtype) * mv > 0).astype(jnp.int32)
    s = jax.ops.segment_sum(voted * (mv != 0), 2 * votes.annotator + agree, num_segments=2 * m).reshape(m, 2)
    a, c = s[:, 1], s[:, 0] + s[:, 1]  # agreeing votes, votes counted (lines without a tie)
    rel = jnp.where(c > 0, a / jnp.maximum(c, 1.0), 0.5)
    rc = jnp.clip(rel, delta, 1.0 - delta)
    return post, rel, jnp.log(rc) - jnp.log1p(-rc)


def fit(table, cfg: MajorityConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """Majority vote on ``table`` (a :class:`~crowdstat.io.tables.VoteTable`); only ``delta`` is read."""
    del cfg  # no parameters of its own
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    post, rel, w = majority(arrays, jnp.zeros(table.n_annotators, dtype), jnp.asarray(float(common.delta), dtype))
    return EstimatorFit(posterior=np.asarray(post), weight=np.asarray(w), reliability=np.asarray(rel), diagnostics={})
