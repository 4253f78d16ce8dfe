"""Array containers shared by every estimator.

``VoteArrays`` is the immutable pytree that :mod:`crowdstat.io.tables` builds once from a vote
table; every kernel reads it. Sizes are carried by array shapes (no static ints); the number of
annotators is the length of the weight vector ``w`` that kernels receive.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: An array on the host (``np.ndarray``, as :func:`crowdstat.io.tables.read_votes` builds it) or on
#: the device (``jax.Array``, once the estimators have moved it); this module imports no JAX.
Array = Any


class VoteArrays(NamedTuple):
    """Integer-coded votes (one entry per vote, sorted by line) and per-line / per-program data.

    Lines are numbered 0..n_lines-1 in program order (first appearance in the table), then by
    line number; annotators 0..n_annotators-1 in order of first appearance.
    """

    line: Array  # shape=(n_votes,), int32, sorted ascending
    annotator: Array  # shape=(n_votes,), int32
    label: Array  # shape=(n_votes,), int8, +1 correct / -1 wrong
    line_program: Array  # shape=(n_lines,), int32, program index of each line (ascending)
    truth: Array  # shape=(n_lines,), int8, honeypot truth +1/-1, 0 = unknown
    program_size: Array  # shape=(n_programs,), int32, lines of the program (annotated or not)

    @property
    def n_votes(self) -> int:
        return int(self.line.shape[0])

    @property
    def n_lines(self) -> int:
        return int(self.line_program.shape[0])

    @property
    def n_programs(self) -> int:
        return int(self.program_size.shape[0])
