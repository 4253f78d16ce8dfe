"""The sequential (iterative) reliability update, docs/math.md eq. (8).

Tasks (programs) are processed in order. Within a task every update is computed from the
weights held *before* the task, then applied together:

    r_j  = t_j (honeypot)  |  sign(l_j) (else; no update when l_j = 0)
    logit(pbar) = logit(pbar_honeypot) (honeypot)  |  min(|l_j|, logit(1 - delta)) (else)
    w_i <- w_i + lam * eps_ij * r_j * logit(pbar)        for every vote (j, i) of the task
    w   <- clip(w, -w_max, w_max)

The scan runs over fixed-size padded task blocks (:func:`task_blocks`), so there is no Python
loop over tasks or votes (on the CPU the same loop runs as a native FFI kernel, see :func:`run`),
and one compiled program serves every table whose blocks have the same padded shape. ``lam``,
``pbar_honeypot``, ``w_max``, ``delta`` and the prior are runtime arguments (vmappable), not
compile-time constants.

:func:`fit` is the registry's entry point (``crowdstat.fit(method="sequential")``); the kernel
defaults come from :class:`~crowdstat.estimators.registry.SequentialConfig` and
:class:`~crowdstat.estimators.registry.CommonConfig`.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import TRAJECTORY_AUTO_LIMIT, CommonConfig, SequentialConfig
from crowdstat.estimators.result import EstimatorFit

__all__ = [
    "TaskBlocks",
    "SequentialParams",
    "SequentialState",
    "SequentialInfo",
    "task_blocks",
    "make_params",
    "init",
    "update",
    "step",
    "run",
    "fit",
]

_SEQ = SequentialConfig()
_COMMON = CommonConfig()


class TaskBlocks(NamedTuple):
    """Votes grouped by task and padded to a common block size B (lines per task padded to Lb)."""

    line_local: np.ndarray  # shape=(n_tasks, B), int32, line index inside the task block
    annotator: np.ndarray  # shape=(n_tasks, B), int32
    label: np.ndarray  # shape=(n_tasks, B), int8, 0 for padding
    truth: np.ndarray  # shape=(n_tasks, B), int8, honeypot truth of the vote's line, 0 if none
    n_lines_block: np.ndarray  # shape=(Lb,), dummy whose length carries the padded lines-per-task

    def task(self, t: int):
        """Task ``t``'s block, the ``block`` argument of :func:`update` and :func:`step`."""
        return (self.line_local[t], self.annotator[t], self.label[t], self.truth[t], self.n_lines_block)


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
    w: jax.Array | None  # shape=(n_annotators,) per task: weights after the task (None: trajectory not kept)
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


def make_params(
    lam=_SEQ.lam, pbar_honeypot=_SEQ.pbar_honeypot, w_max=_SEQ.w_max, delta=_COMMON.delta, prior=_COMMON.prior, dtype=jnp.float32
) -> SequentialParams:
    """Parameters in logit space. Probabilities are clipped to [delta, 1 - delta] (docs/math.md)."""
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    delta = f(delta)
    ph = jnp.clip(f(pbar_honeypot), 0.5, 1.0 - delta)
    p0 = jnp.clip(f(prior), delta, 1.0 - delta)
    lg = lambda p: jnp.log(p) - jnp.log1p(-p)  # noqa: E731
    return SequentialParams(lam=f(lam), logit_pbar_honeypot=lg(ph), w_max=f(w_max), logit_cap=lg(1.0 - delta), prior_logit=lg(p0))


def init(n_annotators: int, nu=_SEQ.nu, delta=_COMMON.delta, w_max=_SEQ.w_max, dtype=jnp.float32) -> SequentialState:
    """w_i = logit(nu) (nu scalar or per annotator), clipped to [delta, 1 - delta] and |w| <= w_max."""
    nu = jnp.clip(jnp.broadcast_to(jnp.asarray(nu, dtype), (n_annotators,)), delta, 1.0 - delta)
    w = jnp.clip(jnp.log(nu) - jnp.log1p(-nu), -w_max, w_max).astype(dtype)
    return SequentialState(w=w, n_tasks=jnp.zeros((), jnp.int32))


# Up to this many annotators the clip runs over the whole weight vector (one vectorised pass,
# cheaper than a second scatter); above it only the touched entries are clipped. Both equal
# docs/math.md's w <- clip(w) because untouched entries are already inside [-w_max, w_max] (w0 is
# clipped once in :func:`run`).
FULL_CLIP_MAX = 4096


def update(state: SequentialState, block, params: SequentialParams) -> tuple[SequentialState, SequentialInfo]:
    """One task of eq. (8). ``block`` is one row of :class:`TaskBlocks` (line_local, annotator, label, truth).

    ``w`` must already lie in [-w_max, w_max] (as :func:`init` and :func:`run` make it).
    """
    line_local, ann, label, truth, n_lines_block = block
    w = state.w
    dtype = w.dtype
    lab = label.astype(dtype)  # 0 on padding, so padded votes contribute nothing below
    lb = n_lines_block.shape[0]
    # Indices come from task_blocks (annotator < len(w), line_local < Lb): no bounds checks.
    w_v = w.at[ann].get(mode="promise_in_bounds")
    l_line = jax.ops.segment_sum(lab * w_v, line_local, num_segments=lb, mode="promise_in_bounds") + params.prior_logit
    lv = l_line.at[line_local].get(mode="promise_in_bounds")  # pre-task logit of each vote's line
    is_hp = truth != 0
    r = jnp.where(is_hp, truth.astype(dtype), jnp.sign(lv))
    logit_pbar = jnp.where(is_hp, params.logit_pbar_honeypot, jnp.minimum(jnp.abs(lv), params.logit_cap))
    step = params.lam * lab * r * logit_pbar
    w = w.at[ann].add(step, mode="promise_in_bounds")
    if w.shape[0] <= FULL_CLIP_MAX:
        w = jnp.clip(w, -params.w_max, params.w_max)
    else:  # clip only the touched entries: O(B) per task, not O(n_annotators)
        w = w.at[ann].set(jnp.clip(w.at[ann].get(mode="promise_in_bounds"), -params.w_max, params.w_max), mode="promise_in_bounds")
    n_upd = jnp.sum((step != 0).astype(jnp.int32))
    return SequentialState(w=w, n_tasks=state.n_tasks + 1), SequentialInfo(w=w, n_updates=n_upd)


@partial(jax.jit, donate_argnums=0)
def step(state: SequentialState, block, params: SequentialParams) -> tuple[SequentialState, jax.Array]:
    """One task of eq. (8) as its own compiled call: the streaming form, for votes that arrive
    task by task (annotation rounds of an RL run). ``block`` is ``blocks.task(t)``; every task
    of one :class:`TaskBlocks` has the same shapes, so this compiles once.

    The state is donated: its weight buffer is updated in place, and the ``state`` passed in
    must not be used again (JAX raises if its arrays are read). Without the donation every call
    would copy the whole weight vector, O(n_annotators) per task (docs/performance.md, K2
    streaming). Returns the new state and the number of votes that moved a weight. For a whole table at once,
    :func:`run` is faster still.
    """
    new, info = update(state, block, params)
    return new, info.n_updates


def _use_native(backend: str) -> str | None:
    if backend not in ("auto", "native", "xla"):
        raise ValueError(f"backend must be 'auto', 'native' or 'xla', got {backend!r}")
    if backend == "xla" or jax.default_backend() != "cpu":
        if backend == "native":
            raise ValueError("backend='native' runs on the CPU only; the default backend is " + jax.default_backend())
        return None
    from crowdstat import _native

    name = _native.sequential_target()
    if name is None and backend == "native":
        raise RuntimeError("backend='native': the native kernel could not be built or is disabled (CROWDSTAT_NATIVE=0)")
    return name


def _run_native(name: str, blocks: TaskBlocks, w0: jax.Array, params: SequentialParams, keep_trajectory: bool):
    dtype = w0.dtype
    suffix = {jnp.dtype(jnp.float32): "f32", jnp.dtype(jnp.float64): "f64"}.get(jnp.dtype(dtype))
    if suffix is None:
        raise TypeError(f"the native sequential kernel takes float32 or float64 weights, got {dtype}")
    n_tasks, n_ann = blocks.label.shape[0], w0.shape[0]
    p = jnp.stack([params.lam, params.logit_pbar_honeypot, params.w_max, params.logit_cap, params.prior_logit]).astype(dtype)
    out = (
        jax.ShapeDtypeStruct((n_ann,), dtype),
        jax.ShapeDtypeStruct((n_tasks,), jnp.int32),
        jax.ShapeDtypeStruct((n_tasks if keep_trajectory else 0, n_ann), dtype),
    )
    call = jax.ffi.ffi_call(f"{name}_{suffix}", out, vmap_method="sequential")
    w, n_upd, traj = call(
        jnp.asarray(blocks.line_local, jnp.int32),
        jnp.asarray(blocks.annotator, jnp.int32),
        jnp.asarray(blocks.label, jnp.int8),
        jnp.asarray(blocks.truth, jnp.int8),
        w0,
        p,
        n_lines_block=np.int64(blocks.n_lines_block.shape[0]),
    )
    state = SequentialState(w=w, n_tasks=jnp.asarray(n_tasks, jnp.int32))
    return state, SequentialInfo(w=traj if keep_trajectory else None, n_updates=n_upd)


@partial(jax.jit, static_argnames=("keep_trajectory", "backend"))
def run(blocks: TaskBlocks, w0: jax.Array, params: SequentialParams, keep_trajectory: bool = True, backend: str = "auto"):
    """Eq. (8) over all tasks as one compiled program.

    ``backend="auto"`` runs the native CPU kernel (:mod:`crowdstat._native`, a C++ loop called
    through the XLA FFI inside this jitted function) when the default backend is the CPU and the
    kernel is available, else the pure-JAX ``lax.scan`` over task blocks (``backend="xla"``, also
    the path on GPU/TPU). Both give the same weights (float32 rounding aside).

    Returns
    -------
    state : SequentialState
        Final weights.
    info : SequentialInfo
        Per task (leading axis n_tasks): the weights after the task (if ``keep_trajectory``,
        else ``None``) and the number of votes that moved a weight.
    """
    w0 = jnp.clip(w0, -params.w_max, params.w_max)  # docs/math.md: weights live in [-w_max, w_max]
    name = _use_native(backend)
    if name is not None:
        return _run_native(name, blocks, w0, params, keep_trajectory)
    nlb = blocks.n_lines_block

    def body(state, xs):
        st, info = update(state, (*xs, nlb), params)
        return st, SequentialInfo(w=info.w if keep_trajectory else None, n_updates=info.n_updates)

    state0 = SequentialState(w=w0, n_tasks=jnp.zeros((), jnp.int32))
    xs = (blocks.line_local, blocks.annotator, blocks.label, blocks.truth)
    return jax.lax.scan(body, state0, xs)


# ---------------------------------------------------------------------------------------------
# the registry's entry point

_SEQ_CHUNK = 4096  # tasks per compiled scan call when showing progress


def _run_chunked(blocks: TaskBlocks, w0, params: SequentialParams, keep: bool, progress: bool):
    """Run eq. (8); with ``progress`` and many tasks, scan fixed-size chunks and tick a tqdm bar.

    Chunks have one padded size (the last is padded with empty tasks, which are no-ops), so the
    scan compiles once whatever the number of tasks. Returns (final weights, trajectory or None,
    votes that moved a weight per task).
    """
    n_tasks = blocks.label.shape[0]
    if not progress or n_tasks <= _SEQ_CHUNK:
        state, info = run(blocks, w0, params, keep_trajectory=keep)
        return state.w, (np.asarray(info.w) if keep else None), np.asarray(info.n_updates)
    from tqdm.auto import tqdm

    w, trajs, upds = w0, [], []
    with tqdm(total=n_tasks, desc="sequential (eq. 8)", unit="task") as bar:
        for start in range(0, n_tasks, _SEQ_CHUNK):
            stop = min(start + _SEQ_CHUNK, n_tasks)
            pad = _SEQ_CHUNK - (stop - start)

            def cut(x, start=start, stop=stop, pad=pad):
                if x.ndim < 2:  # n_lines_block: not per task
                    return x
                part = x[start:stop]
                return jnp.concatenate([part, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else part

            state, info = run(jax.tree.map(cut, blocks), w, params, keep_trajectory=keep)
            w = state.w
            if keep:
                trajs.append(np.asarray(info.w)[: stop - start])
            upds.append(np.asarray(info.n_updates)[: stop - start])
            bar.update(stop - start)
    return w, (np.concatenate(trajs) if keep else None), np.concatenate(upds)


def fit(table, cfg: SequentialConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """Eq. (8) over the tasks of ``table`` (a :class:`~crowdstat.io.tables.VoteTable`) in program order.

    The line posteriors use the final weights and logit(p0) (eq. 7). Warns when there is no
    honeypot truth, when the trajectory is dropped (``keep_trajectory=None`` and more than
    ``TRAJECTORY_AUTO_LIMIT`` floats) and when the weights overflow.
    """
    from crowdstat.estimators import posterior

    m = table.n_annotators
    delta = float(common.delta)
    blocks = jax.tree.map(jnp.asarray, task_blocks(table.arrays))
    sp = make_params(cfg.lam, cfg.pbar_honeypot, cfg.w_max, delta, common.prior, dtype)
    st0 = init(m, cfg.nu, delta, cfg.w_max, dtype)
    keep = cfg.keep_trajectory
    if keep is None:  # auto: keep the (n_tasks x n_annotators) trajectory while it stays small
        keep = table.n_programs * m <= TRAJECTORY_AUTO_LIMIT
        if not keep:
            warnings.warn(
                f"sequential: not keeping the weight trajectory ({table.n_programs} tasks x {m} annotators); "
                "pass keep_trajectory=True to force it",
                stacklevel=4,
            )
    w, traj, n_upd = _run_chunked(blocks, st0.w, sp, bool(keep), bool(common.progress))
    diagnostics = {
        "tasks": int(table.n_programs),
        "votes_that_moved_a_weight": int(n_upd.sum()),
        "max_abs_weight": float(jnp.max(jnp.abs(w))),
    }
    if not np.all(np.isfinite(np.asarray(w))):
        warnings.warn("sequential: weights overflowed to inf/nan (lam too large without w_max?)", stacklevel=4)
    prior_logit = math.log(common.prior) - math.log1p(-common.prior)
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    post = posterior.posteriors(w, arrays, jnp.asarray(prior_logit, dtype))
    if table.n_honeypots == 0:
        _check_unsupervised(table, np.asarray(post), diagnostics, bool(cfg.flip_check))
    w = np.asarray(w)
    return EstimatorFit(
        posterior=np.asarray(post),
        weight=w,
        reliability=posterior.reliability(w),
        diagnostics=diagnostics,
        trajectory=traj if keep else None,
        prior_logit=prior_logit,
    )


#: the flip check needs at least this many lines that majority vote decides (no tie). On random-label
#: tables of 20-48 decided lines eq. 8 is significantly anti-majority about once in 60: a judgement on
#: fewer lines is mostly noise (and the property tests run eq. 8 without truth on up to 48 lines).
FLIP_MIN_LINES = 50
#: ... and refuses when so few agreements have at most this probability under Binomial(n, 1/2)
FLIP_P_VALUE = 0.01


def binomial_lower_tail(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k), summed in log space (exact for any n)."""
    if k < 0:
        return 0.0
    i = np.arange(min(k, n) + 1, dtype=np.float64)
    logs = math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i]) - n * math.log(2.0)
    top = float(logs.max())
    return float(min(1.0, math.exp(top) * np.sum(np.exp(logs - top))))


def majority_agreement(table, post: np.ndarray) -> tuple[float, int]:
    """(fraction of the lines majority vote decides on which ``post`` > 1/2 gives the majority label, their number).

    A line whose posterior is exactly 1/2 counts as a disagreement; NaN when majority decides no line.
    """
    label = np.asarray(table.arrays.label, np.float64)
    net = np.bincount(np.asarray(table.arrays.line), weights=label, minlength=table.n_lines)
    decided = net != 0
    n = int(decided.sum())
    if n == 0:
        return math.nan, 0
    agree = np.where(net[decided] > 0, post[decided] > 0.5, post[decided] < 0.5)
    return float(agree.mean()), n


def _check_unsupervised(table, post: np.ndarray, diagnostics: dict, flip_check: bool) -> None:
    """Eq. 8 without honeypot truth: record its agreement with majority vote, warn, and refuse the flipped solution.

    Without honeypots r_j = sign(l_j) is the model's own label, so the update can settle on the
    label-switched mode (most annotators with negative weights, the lines' labels inverted): on the
    shared real sets plain eq. 8 agrees with majority vote on 12-28% of the lines of bluebirds,
    welinder_ducks, jn_product and sp (docs/real_data.md, "Acceptance"). With ``flip_check`` a run whose
    agreement with majority vote on at least :data:`FLIP_MIN_LINES` decided lines is significantly below
    one half (one-sided binomial p-value <= :data:`FLIP_P_VALUE`) raises ValueError.
    """
    agreement, n = majority_agreement(table, post)
    diagnostics["majority_agreement"] = agreement
    diagnostics["majority_decided_lines"] = n
    p_value = binomial_lower_tail(int(round(agreement * n)), n) if n else 1.0
    diagnostics["majority_agreement_p_value"] = p_value
    if flip_check and n >= FLIP_MIN_LINES and p_value <= FLIP_P_VALUE:
        raise ValueError(
            f"sequential: without honeypot truth eq. 8 converged to the flipped solution (its labels agree with majority vote "
            f"on {agreement:.0%} of the {n} lines majority decides, binomial p = {p_value:.2g}); give honeypot truth (--truth) "
            "or use another method "
            "(auto, em2, majority); flip_check=False keeps the flipped fit"
        )
    warnings.warn(
        f"sequential: no honeypot truth given; reliabilities are learned from the crowd's own labels only "
        f"(agreement with majority vote: {agreement:.0%} of {n} lines)",
        stacklevel=5,
    )
