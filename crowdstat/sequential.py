"""The sequential (iterative) reliability update, MATH.md eq. (8).

Tasks (programs) are processed in order. Within a task every update is computed from the
weights held *before* the task, then applied together:

    r_j  = t_j (honeypot)  |  sign(l_j) (else; no update when l_j = 0)
    logit(pbar) = logit(pbar_honeypot) (honeypot)  |  min(|l_j|, logit(1 - delta)) (else)
    w_i <- w_i + lam * eps_ij * r_j * logit(pbar)        for every vote (j, i) of the task
    w   <- clip(w, -w_max, w_max)

The scan runs over fixed-size padded task blocks (:func:`task_blocks`), so there is no Python
loop over tasks or votes, and one compiled program serves every table whose blocks have the
same padded shape. ``lam``, ``pbar_honeypot``, ``w_max``, ``delta`` and the prior are runtime
arguments (vmappable), not compile-time constants.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays

__all__ = ["TaskBlocks", "SequentialParams", "SequentialState", "SequentialInfo", "task_blocks", "init", "update", "run"]


class TaskBlocks(NamedTuple):
    """Votes grouped by task and padded to a common block size B (lines per task padded to Lb)."""

    line_local: np.ndarray  # shape=(n_tasks, B), int32, line index inside the task block
    annotator: np.ndarray  # shape=(n_tasks, B), int32
    label: np.ndarray  # shape=(n_tasks, B), int8, 0 for padding
    truth: np.ndarray  # shape=(n_tasks, B), int8, honeypot truth of the vote's line, 0 if none
    n_lines_block: np.ndarray  # shape=(Lb,), dummy whose length carries the padded lines-per-task


class SequentialParams(NamedTuple):
    lam: jax.Array  # shape=(), step size (1 in the paper)
    logit_pbar_honeypot: jax.Array  # shape=(), logit(pbar_honeypot)
    w_max: jax.Array  # shape=(), clip bound (inf = no clipping)
    logit_cap: jax.Array  # shape=(), logit(1 - delta): cap of logit(pbar) on non-honeypot lines
    prior_logit: jax.Array  # shape=(), logit(p0)


class SequentialState(NamedTuple):
    w: jax.Array  # shape=(n_annotators,)
    n_tasks: jax.Array  # shape=(), int32, tasks processed


class SequentialInfo(NamedTuple):
    w: jax.Array  # shape=(n_annotators,), weights after the task (the trajectory)
    n_updates: jax.Array  # shape=(), int32, votes that moved a weight in this task


def _bucket(n: int) -> int:
    """Round up to the next power of two (>= 1) so that similar tables share a compiled scan."""
    return 1 << max(0, int(n - 1).bit_length())


def task_blocks(votes: VoteArrays, bucket: bool = True) -> TaskBlocks:
    """Group the (line-sorted) votes by task into padded blocks (host side, vectorised numpy)."""
    line = np.asarray(votes.line)
    line_program = np.asarray(votes.line_program)
    n_prog = int(np.asarray(votes.program_size).shape[0])
    v_task = line_program[line]
    votes_per_task = np.bincount(v_task, minlength=n_prog)
    lines_per_task = np.bincount(line_program, minlength=n_prog)
    v_start = np.concatenate([[0], np.cumsum(votes_per_task)[:-1]])
    l_start = np.concatenate([[0], np.cumsum(lines_per_task)[:-1]])
    b = int(votes_per_task.max()) if n_prog else 1
    lb = int(lines_per_task.max()) if n_prog else 1
    if bucket:
        b, lb = _bucket(b), _bucket(lb)
    pos = np.arange(line.shape[0]) - v_start[v_task]
    shape = (n_prog, b)
    line_local = np.zeros(shape, np.int32)
    ann = np.zeros(shape, np.int32)
    lab = np.zeros(shape, np.int8)
    tru = np.zeros(shape, np.int8)
    line_local[v_task, pos] = line - l_start[v_task]
    ann[v_task, pos] = np.asarray(votes.annotator)
    lab[v_task, pos] = np.asarray(votes.label)
    tru[v_task, pos] = np.asarray(votes.truth)[line]
    return TaskBlocks(line_local, ann, lab, tru, np.zeros(lb, np.int8))


def make_params(lam=1.0, pbar_honeypot=0.99, w_max=np.inf, delta=1e-6, prior=0.5, dtype=jnp.float32) -> SequentialParams:
    """Parameters in logit space. Probabilities are clipped to [delta, 1 - delta] (MATH.md)."""
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    delta = f(delta)
    ph = jnp.clip(f(pbar_honeypot), 0.5, 1.0 - delta)
    p0 = jnp.clip(f(prior), delta, 1.0 - delta)
    lg = lambda p: jnp.log(p) - jnp.log1p(-p)  # noqa: E731
    return SequentialParams(
        lam=f(lam), logit_pbar_honeypot=lg(ph), w_max=f(w_max), logit_cap=lg(1.0 - delta), prior_logit=lg(p0)
    )


def init(n_annotators: int, nu=0.7, delta=1e-6, w_max=np.inf, dtype=jnp.float32) -> SequentialState:
    """w_i = logit(nu) (nu scalar or per annotator), clipped to [delta, 1 - delta] and |w| <= w_max."""
    nu = jnp.clip(jnp.broadcast_to(jnp.asarray(nu, dtype), (n_annotators,)), delta, 1.0 - delta)
    w = jnp.clip(jnp.log(nu) - jnp.log1p(-nu), -w_max, w_max).astype(dtype)
    return SequentialState(w=w, n_tasks=jnp.zeros((), jnp.int32))


def update(state: SequentialState, block, params: SequentialParams) -> tuple[SequentialState, SequentialInfo]:
    """One task of eq. (8). ``block`` is one row of :class:`TaskBlocks` (line_local, annotator, label, truth)."""
    line_local, ann, label, truth, n_lines_block = block
    w = state.w
    dtype = w.dtype
    lab = label.astype(dtype)  # 0 on padding, so padded votes contribute nothing below
    lb = n_lines_block.shape[0]
    l_line = jax.ops.segment_sum(lab * w[ann], line_local, num_segments=lb) + params.prior_logit
    lv = l_line[line_local]  # pre-task logit of each vote's line
    is_hp = truth != 0
    r = jnp.where(is_hp, truth.astype(dtype), jnp.sign(lv))
    logit_pbar = jnp.where(is_hp, params.logit_pbar_honeypot, jnp.minimum(jnp.abs(lv), params.logit_cap))
    step = params.lam * lab * r * logit_pbar
    w = w.at[ann].add(step)
    # Clip only the touched entries: O(B) per task, not O(n_annotators).
    w = w.at[ann].set(jnp.clip(w[ann], -params.w_max, params.w_max))
    n_upd = jnp.sum((step != 0).astype(jnp.int32))
    return SequentialState(w=w, n_tasks=state.n_tasks + 1), SequentialInfo(w=w, n_updates=n_upd)


@partial(jax.jit, static_argnames=("keep_trajectory",))
def run(blocks: TaskBlocks, w0: jax.Array, params: SequentialParams, keep_trajectory: bool = True):
    """Eq. (8) over all tasks as one compiled ``lax.scan``.

    Returns
    -------
    state : SequentialState
        Final weights.
    info : SequentialInfo
        Per task (leading axis n_tasks): the weights after the task (if ``keep_trajectory``,
        else ``None``) and the number of votes that moved a weight.
    """
    nlb = blocks.n_lines_block

    def body(state, xs):
        st, info = update(state, (*xs, nlb), params)
        return st, SequentialInfo(w=info.w if keep_trajectory else None, n_updates=info.n_updates)

    state0 = SequentialState(w=w0, n_tasks=jnp.zeros((), jnp.int32))
    xs = (blocks.line_local, blocks.annotator, blocks.label, blocks.truth)
    return jax.lax.scan(body, state0, xs)
