"""The growing vote table of :class:`crowdstat.online.OnlineFit` (host side, NumPy).

The table is kept in the order :func:`crowdstat.io.tables.read_votes` gives the whole history:
programs and annotators numbered by first appearance, lines program-major then by line number,
votes sorted by line (a line's votes in order of arrival). A batch of new votes is merged in:

- new programs, annotators and the lines and votes of new programs are appended (amortised O(new):
  the buffers double their capacity when full);
- a new line of an earlier program, or a new vote on an earlier line, is inserted at its place, which
  moves the entries after it (one O(history) memory move for the batch, no sort of the history).

The capacities are also the padded shapes the estimators compile for (:meth:`VoteStore.padded`):
slots past the real entries are padding, so a jitted kernel compiles once per doubling, not once
per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crowdstat._typing import VoteArrays
from crowdstat.io.tables import VoteTable, VoteTableError, read_frame

__all__ = ["Buffer", "Merge", "VoteStore", "capacity"]

MIN_CAPACITY = 64


def capacity(n: int) -> int:
    """The power of two >= max(n, MIN_CAPACITY)."""
    return max(MIN_CAPACITY, 1 << max(0, int(n) - 1).bit_length())


class Buffer:
    """A 1-D array with spare capacity: ``view()`` is the real part, ``data`` the padded whole."""

    def __init__(self, dtype, data: np.ndarray | None = None, fill=0):
        self.fill = fill
        vals = np.zeros(0, dtype) if data is None else np.asarray(data, dtype)
        self.data = np.full(capacity(vals.shape[0] + 1), fill, dtype)
        self.data[: vals.shape[0]] = vals
        self.n = int(vals.shape[0])

    def view(self) -> np.ndarray:
        return self.data[: self.n]

    def reserve(self, n: int) -> None:
        """Room for ``n`` entries (and the spare padding slot) without another reallocation."""
        self._reserve(n)

    def _reserve(self, n: int) -> None:
        if n + 1 > self.data.shape[0]:  # always one spare slot: the padding entry
            new = np.full(capacity(n + 1), self.fill, self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def append(self, values) -> None:
        values = np.asarray(values, self.data.dtype)
        self._reserve(self.n + values.shape[0])
        self.data[self.n : self.n + values.shape[0]] = values
        self.n += values.shape[0]

    def insert(self, positions: np.ndarray, values) -> None:
        """``np.insert`` semantics (positions in the current real part; equal positions keep the order of ``values``)."""
        if positions.shape[0] and int(positions.min()) >= self.n:
            self.append(values)
            return
        merged = np.insert(self.view(), positions, np.asarray(values, self.data.dtype))
        self.data = np.full(max(self.data.shape[0], capacity(merged.shape[0] + 1)), self.fill, self.data.dtype)
        self.data[: merged.shape[0]] = merged
        self.n = merged.shape[0]


@dataclass
class Merge:
    """What :meth:`VoteStore.add` changed: where the earlier lines went, which lines and votes are new."""

    old_to_new: np.ndarray  # shape=(n_lines_before,), the new index of every earlier line
    new_lines: np.ndarray  # indices (after the merge) of the lines this batch created
    batch_line: np.ndarray  # shape=(batch lines,), the index after the merge of every line of the batch
    batch_annotator: np.ndarray  # shape=(batch annotators,), global code of every annotator of the batch
    batch_program: np.ndarray  # shape=(batch programs,), global code of every program of the batch
    touched_old_lines: bool  # some vote of the batch is on a line that existed before
    vote_line: np.ndarray  # shape=(batch votes,), line index (after the merge) of every vote of the batch
    vote_label: np.ndarray  # shape=(batch votes,), its label


def _keys(table: VoteTable) -> list[tuple]:
    """Every vote's (program, line, annotator), in the table's vote order."""
    f = table.votes_frame()
    return list(zip(f["program"].tolist(), f["line"].tolist(), f["annotator"].tolist()))


def _id_text(col: pd.Series) -> list[str]:
    """Ids as :func:`~crowdstat.io.tables.read_votes` writes them (an integral float without '.0')."""
    if pd.api.types.is_float_dtype(col.dtype):
        return [str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v) for v in col]
    return [str(v) for v in col]


def source_rows(source, keys: list[tuple]) -> list[int | None]:
    """The 1-based rows of ``source`` (path or DataFrame) that hold the votes ``keys`` (None where not found)."""
    df, rows, _ = read_frame(source, "vote")
    lines = pd.to_numeric(df["line"], errors="coerce").tolist()
    index: dict = {}
    for r, k in zip(rows, zip(_id_text(df["program"]), lines, _id_text(df["annotator"]))):
        index.setdefault(k, int(r))
    return [index.get((str(p), float(ln), str(a))) for p, ln, a in keys]


class VoteStore:
    """Programs, annotators, lines and votes of every batch so far (module docstring)."""

    def __init__(self):
        self._source = None
        self.annotator_room = 0  # reserve(): annotator slots to pad to at least
        self.programs: list = []
        self.program_index: dict = {}
        self.annotators: list = []
        self.annotator_index: dict = {}
        self.program_lines = Buffer(np.int64)  # lines of each program so far
        self.program_size = Buffer(np.int64, fill=-1)  # given size (-1: none; the annotated lines count)
        self.line_program = Buffer(np.int32)
        self.line_number = Buffer(np.int64)
        self.truth = Buffer(np.int8)
        self.n_votes_line = Buffer(np.int64)
        self.v_line = Buffer(np.int32)
        self.v_ann = Buffer(np.int32)
        self.v_label = Buffer(np.int8)

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def n_votes(self) -> int:
        return self.v_line.n

    @property
    def n_lines(self) -> int:
        return self.line_program.n

    @property
    def n_programs(self) -> int:
        return len(self.programs)

    @property
    def n_annotators(self) -> int:
        return len(self.annotators)

    def caps(self) -> tuple[int, int, int, int]:
        """(votes, lines, programs, annotators) of the padded arrays; each > the real count."""
        m = max(capacity(self.n_annotators + 1), self.annotator_room)
        return self.v_line.data.shape[0], self.line_program.data.shape[0], self.program_lines.data.shape[0], m

    def reserve(self, votes: int = 0, lines: int = 0, programs: int = 0, annotators: int = 0) -> None:
        """Make room for this many votes, lines, programs and annotators in all (not more): the padded
        shapes then stay fixed, and nothing compiles again, until the table outgrows them."""
        for bufs, n in (
            ((self.v_line, self.v_ann, self.v_label), votes),
            ((self.line_program, self.line_number, self.truth, self.n_votes_line), lines),
        ):
            for b in bufs:
                b.reserve(n)
        self.program_lines.reserve(programs)
        self.program_size.reserve(programs)
        self.annotator_room = max(self.annotator_room, capacity(annotators + 1))

    # -- ids ----------------------------------------------------------------------------------------
    def _codes(self, ids: np.ndarray, names: list, index: dict, on_new=None) -> np.ndarray:
        out = np.empty(ids.shape[0], np.int64)
        for k, x in enumerate(ids):
            c = index.get(x)
            if c is None:
                c = index[x] = len(names)
                names.append(x)
                if on_new is not None:
                    on_new()
            out[k] = c
        return out

    def _new_program(self) -> None:
        self.program_lines.append([0])
        self.program_size.append([-1])

    # -- merging a batch ------------------------------------------------------------------------------
    def add(self, batch: VoteTable, source=None) -> Merge:
        """Merge a batch (read and validated by :func:`~crowdstat.io.tables.read_votes`) into the table.

        Raises VoteTableError (nothing changed) for a vote on a (program, line, annotator) of an
        earlier batch (naming its row of ``source``, the batch's file or frame, when given), for a
        truth that contradicts an earlier one and for a program size that differs from an earlier one.
        """
        self._source = source
        n_prog_before, n_ann_before = self.n_programs, self.n_annotators
        prog = self._codes(batch.programs, self.programs, self.program_index, self._new_program)
        ann = self._codes(batch.annotators, self.annotators, self.annotator_index)
        try:
            return self._merge(batch, prog, ann, n_prog_before)
        except VoteTableError:
            self._forget(n_prog_before, n_ann_before)
            raise

    def _forget(self, n_prog: int, n_ann: int) -> None:
        """Undo the ids a refused batch added."""
        for x in self.programs[n_prog:]:
            del self.program_index[x]
        for x in self.annotators[n_ann:]:
            del self.annotator_index[x]
        del self.programs[n_prog:], self.annotators[n_ann:]
        self.program_lines.n = self.program_size.n = n_prog

    def _locate_lines(self, batch: VoteTable, prog: np.ndarray, n_prog_before: int):
        """(existing index or -1, insertion position) of every line of the batch."""
        a = batch.arrays
        g_prog = prog[a.line_program]
        ln = np.asarray(batch.line_numbers, np.int64)
        found = np.full(ln.shape[0], -1, np.int64)
        pos = np.full(ln.shape[0], self.n_lines, np.int64)
        starts = np.concatenate([[0], np.cumsum(self.program_lines.view()[:n_prog_before])])
        numbers = self.line_number.view()
        for p in np.unique(g_prog[g_prog < n_prog_before]):
            sel = np.flatnonzero(g_prog == p)
            lo, hi = int(starts[p]), int(starts[p + 1])
            k = np.searchsorted(numbers[lo:hi], ln[sel])
            hit = (k < hi - lo) & (numbers[lo + np.minimum(k, hi - lo - 1)] == ln[sel]) if hi > lo else np.zeros(sel.shape[0], bool)
            found[sel[hit]] = lo + k[hit]
            pos[sel] = lo + k
        return g_prog, ln, found, pos

    def _merge(self, batch: VoteTable, prog: np.ndarray, ann: np.ndarray, n_prog_before: int) -> Merge:
        a = batch.arrays
        g_prog, ln, found, pos = self._locate_lines(batch, prog, n_prog_before)
        bt = np.asarray(a.truth)
        old = found >= 0
        st = self.truth.view()[found[old]]
        clash = (bt[old] != 0) & (st != 0) & (bt[old] != st)
        if clash.any():
            bad = [(batch.programs[a.line_program[j]], int(ln[j])) for j in np.flatnonzero(old)[clash]]
            raise VoteTableError(
                batch.source, [(None, "truth", f"truth for (program, line) {k} contradicts the truth an earlier update gave") for k in bad]
            )
        self._check_repeats(batch, found, ann)
        self._check_sizes(batch, prog)
        # lines: insert the new ones (by place, then program, then line number), then map every index
        new = np.flatnonzero(~old)
        new = new[np.lexsort((ln[new], g_prog[new], pos[new]))]
        ins = pos[new]
        n_before = self.n_lines
        old_to_new = np.arange(n_before) + np.searchsorted(ins, np.arange(n_before), side="right")
        new_index = ins + np.arange(new.shape[0])
        self.line_program.insert(ins, g_prog[new])
        self.line_number.insert(ins, ln[new])
        self.truth.insert(ins, bt[new])
        self.n_votes_line.insert(ins, np.zeros(new.shape[0], np.int64))
        batch_line = np.empty(ln.shape[0], np.int64)
        batch_line[old] = old_to_new[found[old]]
        batch_line[new] = new_index
        if old.any():  # truth given now for an earlier line without one
            t = self.truth.view()
            t[batch_line[old]] = np.where(bt[old] != 0, bt[old], t[batch_line[old]])
        np.add.at(self.program_lines.view(), g_prog[new], 1)
        # votes: earlier votes follow their lines; the batch's go after the votes of their line
        if new.shape[0] and int(ins.min()) < n_before:
            self.v_line.view()[:] = old_to_new[self.v_line.view()]
        vl = batch_line[np.asarray(a.line)]
        at = np.searchsorted(self.v_line.view(), vl, side="right")
        o = np.argsort(vl, kind="stable")
        self.v_line.insert(at[o], vl[o])
        self.v_ann.insert(at[o], ann[np.asarray(a.annotator)][o])
        self.v_label.insert(at[o], np.asarray(a.label)[o])
        np.add.at(self.n_votes_line.view(), vl, 1)
        self._set_sizes(batch, prog)
        return Merge(old_to_new, new_index, batch_line, ann, prog, bool(old.any()), vl, np.asarray(a.label))

    def _check_repeats(self, batch: VoteTable, found: np.ndarray, ann: np.ndarray) -> None:
        """A vote on (program, line, annotator) already in the table is an error, as a duplicate in one table."""
        a = batch.arrays
        vfound = found[np.asarray(a.line)]
        idx = np.flatnonzero(vfound >= 0)
        if idx.shape[0] == 0:
            return
        vline, vann = self.v_line.view(), self.v_ann.view()
        lo = np.searchsorted(vline, vfound[idx], side="left")
        hi = np.searchsorted(vline, vfound[idx], side="right")
        g = ann[np.asarray(a.annotator)[idx]]
        rep = [k for k, (s, e, x) in enumerate(zip(lo, hi, g)) if np.any(vann[s:e] == x)]
        if rep:
            keys = [_keys(batch)[i] for i in idx[rep]]
            rows = source_rows(self._source, keys) if self._source is not None else [None] * len(keys)
            msg = "vote (program, line, annotator) {} repeats a vote of an earlier update"
            problems = sorted(((r, "annotator", msg.format(k)) for r, k in zip(rows, keys)), key=lambda p: p[0] or 0)
            raise VoteTableError(batch.source, problems)

    def _check_sizes(self, batch: VoteTable, prog: np.ndarray) -> None:
        """A program size that differs from an earlier one is an error."""
        if not batch.has_program_sizes:
            return
        prev = self.program_size.view()[prog]
        clash = (prev >= 0) & (prev != np.asarray(batch.arrays.program_size, np.int64))
        if clash.any():
            bad = [str(batch.programs[i]) for i in np.flatnonzero(clash)]
            raise VoteTableError(
                batch.source, [(None, "n_lines", f"program {p!r}: n_lines differs from the size an earlier update gave") for p in bad]
            )

    def _set_sizes(self, batch: VoteTable, prog: np.ndarray) -> None:
        if batch.has_program_sizes:
            self.program_size.view()[prog] = np.asarray(batch.arrays.program_size, np.int64)

    # -- views --------------------------------------------------------------------------------------
    def program_sizes(self) -> np.ndarray:
        size = self.program_size.view()
        return np.where(size >= 0, size, self.program_lines.view()).astype(np.int32)

    def arrays(self) -> VoteArrays:
        """The real (unpadded) arrays: those :func:`~crowdstat.io.tables.read_votes` gives on the whole history."""
        return VoteArrays(
            line=self.v_line.view(),
            annotator=self.v_ann.view(),
            label=self.v_label.view(),
            line_program=self.line_program.view(),
            truth=self.truth.view(),
            program_size=self.program_sizes(),
        )

    def padded(self) -> tuple[VoteArrays, int]:
        """(arrays padded to the capacities, annotator slots): padding votes are label-0 votes on the last
        (padding) line by the last (padding) annotator slot; padding lines belong to the last (padding) program."""
        nv, nl, npg, m = self.caps()
        self.v_line.data[self.v_line.n :] = nl - 1
        self.v_ann.data[self.v_ann.n :] = m - 1
        self.v_label.data[self.v_label.n :] = 0
        self.line_program.data[self.line_program.n :] = npg - 1
        self.truth.data[self.truth.n :] = 0
        size = np.zeros(npg, np.int32)
        size[: self.n_programs] = self.program_sizes()
        arrays = VoteArrays(self.v_line.data, self.v_ann.data, self.v_label.data, self.line_program.data, self.truth.data, size)
        return arrays, m

    def table(self, source: str = "<online>") -> VoteTable:
        """The history as the :class:`~crowdstat.io.tables.VoteTable` a full read of all batches gives."""
        return VoteTable(
            arrays=self.arrays(),
            programs=np.asarray(self.programs, dtype=object),
            annotators=np.asarray(self.annotators, dtype=object),
            line_numbers=self.line_number.view(),
            n_votes_per_line=self.n_votes_line.view(),
            source=source,
            has_program_sizes=bool(np.any(self.program_size.view() >= 0)),
        )
