"""Eq. 7 and the rewards on an ELLPACK layout: the same numbers as :mod:`crowdstat.estimators.posterior`
(up to summation order), for many evaluations on one table.

:class:`EllLayout` (built once on the host by :func:`ell_layout`): slot ``(k, j)`` holds the k-th vote
on line j as one int32 index into the table ``[0, -w_0, +w_0, -w_1, +w_1, ...]`` (0 = padding). Eq. 7
is then ``sum_k table[slots[k]]``, k_max gathers that XLA fuses into one vectorised pass reading
2 bytes a vote (int16 slots below 16,384 annotators, else 4) instead of a scatter, which XLA:CPU runs
as a scalar loop. Lines sit in a (program, rank) grid of cells, so the per-program sums are a
reshape and a row sum (empty cells masked). It pays when the vote counts per line (and line counts
per program) are near-uniform, which is how annotation is run; the builder refuses (returns
``None``) when padding would more than double the work (for uneven programs only the grid is dropped).

Why :func:`crowdstat.fit` does not use it: a fit evaluates the posteriors once, and building the
layout on the host costs more than the faster kernel saves (at 10^6 votes about 60 ms against
about 2 ms; benchmark K1, docs/performance.md). The layout pays where one table is evaluated many
times: gamma grids, bootstrap replicates, repeated rounds of streaming weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators.posterior import Rewards

__all__ = ["EllLayout", "ell_layout", "line_logits_ell", "rewards_ell", "posteriors_and_rewards_ell"]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EllLayout:
    """Votes of each line in padded columns, lines in a (program, rank) grid; see the module docstring.

    ``slots[k, c] = 1 + 2 * annotator + (label > 0)`` for the k-th vote on the line in cell c, 0
    past that line's last vote and in empty cells. With ``grid_width`` m > 0 cell ``g * m + r``
    holds the r-th line of program g (cells past a program's last line are empty), so the
    per-program sums are a reshape and a row sum; ``grid_width == 0`` when the programs are too
    uneven: cells are the lines and the program sums are a segment-sum over ``line_program``.
    ``line_cell`` maps lines to cells, shape ``(0,)`` when every cell is a line in line order.
    """

    slots: jax.Array  # shape=(k_max, n_cells), int16 (< 16,384 annotators) or int32
    line_cell: jax.Array  # shape=(n_lines,) or (0,), int32
    line_program: jax.Array  # shape=(n_lines,), int32 (for the segment-sum fallback)
    n_annotated: jax.Array  # shape=(n_programs,), int32, k = annotated lines per program
    program_size: jax.Array  # shape=(n_programs,), int32
    coverage: jax.Array  # shape=(n_programs,), float32, k / program_size (does not depend on w)
    n_annotators: int = field(default=0, metadata=dict(static=True))  # max annotator id + 1
    grid_width: int = field(default=0, metadata=dict(static=True))  # lines per program in the grid, 0 = no grid

    @property
    def n_lines(self) -> int:
        return int(self.line_program.shape[0])


def _ell_columns(seg: np.ndarray, n_seg: int, values: np.ndarray, pad, max_width: int, max_fill: float):
    """Place ``values`` (sorted by ``seg``) in a (width, n_seg) array column by segment; None if too ragged."""
    counts = np.bincount(seg, minlength=n_seg)
    width = int(counts.max()) if counts.size else 0
    if width == 0 or width > max_width or width * n_seg > max_fill * max(len(values), 1):
        return None, counts
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(seg)) - starts[seg]
    out = np.full((width, n_seg), pad, dtype=np.int32)
    out[rank, seg] = values
    return out, counts


def _program_grid(line_program: np.ndarray, n_prog: int, max_width: int, max_fill: float):
    """(cell of each line, grid width) for the (program, rank) grid, or (None, counts) if too uneven."""
    counts = np.bincount(line_program, minlength=n_prog)
    width = int(counts.max()) if counts.size else 0
    n_lines = line_program.shape[0]
    if width == 0 or width > max_width or width * n_prog > max_fill * max(n_lines, 1):
        return None, 0, counts
    order = np.argsort(line_program, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n_lines, np.int64)
    rank[order] = np.arange(n_lines) - starts[line_program[order]]
    return line_program.astype(np.int64) * width + rank, width, counts


def ell_layout(votes: VoteArrays, max_width: int = 64, max_fill: float = 2.0) -> EllLayout | None:
    """Build the ELLPACK layout of ``votes`` once on the host (O(n_votes) NumPy).

    Returns ``None`` when some line has more than ``max_width`` votes or padding would make the
    layout larger than ``max_fill`` times the vote list: use the vote-list kernels then. The
    program grid is dropped (segment-sum program stage) under the same rule for lines per program.
    """
    line = np.asarray(votes.line)
    ann = np.asarray(votes.annotator).astype(np.int64)
    lab = np.asarray(votes.label)
    lp = np.asarray(votes.line_program).astype(np.int64)
    n_lines = int(lp.shape[0])
    n_prog = int(np.asarray(votes.program_size).shape[0])
    if line.size and np.any(np.diff(line) < 0):
        raise ValueError("ell_layout: votes.line must be sorted ascending (as crowdstat.io.tables builds it)")
    if ann.size and ann.max() >= 2**30:
        raise ValueError("ell_layout: more than 2**30 annotators do not fit an int32 slot index")
    slot_values = (1 + 2 * ann + (lab > 0)).astype(np.int32)
    slots, _ = _ell_columns(line, n_lines, slot_values, 0, max_width, max_fill)
    if slots is None:
        return None
    cell, width, k = _program_grid(lp, n_prog, max_width, max_fill)
    if cell is not None and slots.shape[0] * n_prog * width <= max_fill * max(line.size, 1):
        grid = np.zeros((slots.shape[0], n_prog * width), np.int32)
        grid[:, cell] = slots
        slots = grid
        identity = n_prog * width == n_lines and np.array_equal(cell, np.arange(n_lines))
        line_cell = np.zeros(0, np.int32) if identity else cell.astype(np.int32)
    else:
        width, line_cell = 0, np.zeros(0, np.int32)
    if slot_values.max(initial=0) < 2**15:
        slots = slots.astype(np.int16)  # < 16,384 annotators: 2 bytes a vote instead of 4
    return EllLayout(
        slots=jnp.asarray(slots),
        line_cell=jnp.asarray(line_cell),
        line_program=jnp.asarray(lp.astype(np.int32)),
        n_annotated=jnp.asarray(k.astype(np.int32)),
        program_size=jnp.asarray(np.asarray(votes.program_size, np.int32)),
        coverage=jnp.asarray((k / np.maximum(np.asarray(votes.program_size), 1)).astype(np.float32)),
        n_annotators=int(ann.max()) + 1 if ann.size else 0,
        grid_width=width,
    )


def _check_width(w, layout: EllLayout) -> None:
    if w.shape[0] < layout.n_annotators:
        raise ValueError(f"w has {w.shape[0]} entries but the votes name {layout.n_annotators} annotators")


def _cell_logits(w: jax.Array, layout: EllLayout, prior_logit) -> jax.Array:
    """``prior_logit + sum_k table[slots[k]]`` per cell (empty cells: the prior)."""
    _check_width(w, layout)
    table = jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.stack([-w, w], axis=1).reshape(-1)])
    acc = jnp.full((layout.slots.shape[1],), prior_logit, w.dtype)
    for k in range(layout.slots.shape[0]):  # k_max is static: one fused pass over the slots
        acc = acc + table.at[layout.slots[k]].get(mode="promise_in_bounds")
    return acc


def _to_lines(x_cells: jax.Array, layout: EllLayout) -> jax.Array:
    if layout.line_cell.shape[0] == 0:
        return x_cells
    return x_cells.at[layout.line_cell].get(mode="promise_in_bounds")


def line_logits_ell(w: jax.Array, layout: EllLayout, prior_logit=0.0) -> jax.Array:
    """Eq. (7) on the ELLPACK layout (same result as :func:`line_logits`)."""
    return _to_lines(_cell_logits(w, layout, prior_logit), layout)


def _program_sums(posterior_cells: jax.Array, layout: EllLayout, tau) -> tuple[jax.Array, jax.Array]:
    """(reward, reward_soft) per program from the posteriors of the cells."""
    dtype = posterior_cells.dtype
    hit = (posterior_cells > tau).astype(dtype)
    m = layout.grid_width
    if m == 0:  # cells are lines
        n_prog = layout.n_annotated.shape[0]

        def seg(x):
            return jax.ops.segment_sum(x, layout.line_program, num_segments=n_prog, indices_are_sorted=True, mode="promise_in_bounds")

        c, soft = seg(hit), seg(posterior_cells)
    else:
        # Column by column (m is static): XLA fuses the m strided reads into one pass per output,
        # faster than reshape(-1, m).sum(1), which XLA:CPU hands to a separate
        # reduction kernel after writing the hit array out.
        hits, post = hit.reshape(-1, m), posterior_cells.reshape(-1, m)
        masked = layout.line_cell.shape[0] != 0  # program g fills its first k_g cells; mask the rest
        c = jnp.zeros(layout.n_annotated.shape, dtype)
        soft = jnp.zeros(layout.n_annotated.shape, dtype)
        for r in range(m):
            h, q = hits[:, r], post[:, r]
            if masked:
                h, q = jnp.where(r < layout.n_annotated, h, 0), jnp.where(r < layout.n_annotated, q, 0)
            c, soft = c + h, soft + q
    kk = jnp.maximum(layout.n_annotated.astype(dtype), 1.0)
    return c / kk, soft / kk


def _rewards(sums, layout: EllLayout, dtype) -> Rewards:
    cov = layout.coverage if layout.coverage.dtype == dtype else layout.coverage.astype(dtype)
    return Rewards(reward=sums[0], reward_soft=sums[1], n_annotated=layout.n_annotated, coverage=cov)


def rewards_ell(posterior: jax.Array, layout: EllLayout, tau=0.5) -> Rewards:
    """:func:`rewards` on the ELLPACK layout (``posterior`` per line, in line order)."""
    cells = posterior
    if layout.line_cell.shape[0] != 0:
        cells = jnp.zeros((layout.slots.shape[1],), posterior.dtype).at[layout.line_cell].set(posterior, mode="promise_in_bounds")
    return _rewards(_program_sums(cells, layout, tau), layout, posterior.dtype)


@jax.jit
def _posteriors_and_sums(w, layout: EllLayout, prior_logit, tau):
    p_cells = jax.nn.sigmoid(_cell_logits(w, layout, prior_logit))
    return _to_lines(p_cells, layout), _program_sums(p_cells, layout, tau)


def posteriors_and_rewards_ell(w, layout: EllLayout, prior_logit, tau):
    """(P, Rewards) on the ELLPACK layout, equal to :func:`posteriors_and_rewards`; one jitted call.

    The logits stay inside the fused computation (writing them out would add 4 bytes a line of
    output traffic); :func:`line_logits_ell` gives them when needed. ``n_annotated`` and
    ``coverage`` do not depend on ``w``: they come from the layout, not from the compiled kernel.
    """
    p, sums = _posteriors_and_sums(w, layout, prior_logit, tau)
    return p, _rewards(sums, layout, p.dtype)
