"""Read and validate vote tables, honeypot truth and program sizes (host side, no JAX).

Formats are specified in ``docs/formats.md``. Every problem found is reported at once in a
:class:`VoteTableError` naming the source (file name or ``<DataFrame>``), the 1-based data row
(the header is not a row) and the column. Nothing is dropped silently.

The result is a :class:`VoteTable`: the integer-coded :class:`~crowdstat._typing.VoteArrays`
every estimator shares, plus the original ids to write results back.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from crowdstat._typing import VoteArrays
from crowdstat.io._read import Source, VoteTableError, read_frame, scalars_only

__all__ = ["VoteTableError", "VoteTable", "read_votes", "read_frame", "parse_labels"]

VOTE_COLUMNS = ("program", "line", "annotator", "label")
TRUTH_COLUMNS = ("program", "line", "truth")
PROGRAM_COLUMNS = ("program", "n_lines")

_POS = {"1", "+1", "1.0", "+1.0", "correct", "true"}
_NEG_PM = {"-1", "-1.0", "wrong"}  # the +1/-1 coding
_NEG_01 = {"0", "0.0", "false"}  # the 1/0 coding
MAX_LINE = 2**53 - 1  # the largest integer every reader of the outputs (float64, JSON) keeps exactly
MAX_SIZE = 2**31 - 1  # program sizes are int32
_INT = re.compile(r"[+-]?[0-9]+")
_TOO_BIG = 10**40  # stands for any integer with more digits than that


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise VoteTableError(
            name,
            [(None, c, f"missing column (the table has {list(map(str, df.columns))}; required: {list(required)})") for c in missing],
        )
    extra = [str(c) for c in df.columns if c not in required]
    if extra:
        warnings.warn(f"{name}: ignoring extra column(s) {extra}", stacklevel=3)


def _missing_mask(col: pd.Series) -> np.ndarray:
    """True where a field is absent: None, NaN, or an empty / blank string."""
    if isinstance(col.dtype, pd.CategoricalDtype):  # tested once per category, taken back by code
        return _factorized(col)[2]
    miss = col.isna().to_numpy()
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        s = col.astype("string")
        blank = s.str.strip().eq("").fillna(True).to_numpy(dtype=bool)
        miss = miss | blank
    return miss


def _value_dtype(col: pd.Series):
    """The dtype of the column's values: a categorical column's categories' dtype."""
    return col.dtype.categories.dtype if isinstance(col.dtype, pd.CategoricalDtype) else col.dtype


def _fast_dtype(col: pd.Series) -> bool:
    """Dtypes whose per-value ``str`` equals pandas' ``astype(str)`` (the factorised fast paths);
    a categorical column counts when its categories' dtype does."""
    d = _value_dtype(col)
    return (
        d == object
        or pd.api.types.is_string_dtype(d)
        or pd.api.types.is_bool_dtype(d)
        or pd.api.types.is_integer_dtype(d)
        or pd.api.types.is_float_dtype(d)
    )


def _factorized(col: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, uniques, missing mask): per-row work done once on the distinct values.

    ``missing`` is :func:`_missing_mask` computed on the distinct values (NA, or a blank string
    in an object / string column) and taken back to the rows by code.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        # Already integer-coded: factorise the category codes (no hashing of strings), keep the
        # categories that occur, in order of first appearance (as pd.factorize of the values).
        f, used = pd.factorize(col.cat.codes.to_numpy())
        keep = used >= 0  # code -1 is a missing value
        remap = np.full(len(used), -1, np.int64)
        remap[keep] = np.arange(int(keep.sum()))
        codes = remap[f]
        cats = col.cat.categories
        return _with_blanks(codes, cats[used[keep]], cats.dtype)
    codes, uniques = pd.factorize(col, sort=False, use_na_sentinel=True)
    return _with_blanks(codes, uniques, col.dtype)


def _with_blanks(codes: np.ndarray, uniques, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, uniques as an object array, missing mask): a blank string id counts as missing."""
    if pd.api.types.is_string_dtype(dtype) and dtype != object:  # vectorised on Arrow strings
        blank_u = pd.Series(uniques).str.strip().eq("").to_numpy(dtype=bool)
    uniques = np.asarray(uniques, dtype=object)
    if dtype == object:
        blank_u = np.fromiter((str(u).strip() == "" for u in uniques), bool, uniques.shape[0])
    elif not pd.api.types.is_string_dtype(dtype):
        blank_u = np.zeros(uniques.shape[0], bool)
    miss = codes < 0
    if blank_u.any():
        miss |= blank_u[np.maximum(codes, 0)]
    return codes, uniques, miss


EMPTY_FIELD = "empty field (missing value / NaN)"


def _report(problems: list, rows: np.ndarray, mask: np.ndarray, column: str, message, col: pd.Series | None = None) -> None:
    """Append ``(row, column, message)`` for every row where ``mask`` is set; ``message`` is a
    string or a function of the raw value in ``col``. One vectorised test when no row is set."""
    if not mask.any():
        return
    raws = col[mask] if col is not None else [None] * int(np.count_nonzero(mask))
    for r, raw in zip(rows[mask], raws):
        problems.append((int(r), column, message(raw) if callable(message) else message))


def _id_str(v, is_float: bool) -> str:
    if is_float:
        return str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v)
    return str(v)


def _id_codes(col: pd.Series, rows: np.ndarray, column: str, problems: list) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast :func:`_ids` + ``pd.factorize``: (codes, string ids in order of first appearance).

    Distinct raw values with the same string (``1`` and ``"1"`` in an object column) share one
    id, exactly as when the strings are factorised. Returns None for other dtypes (the caller
    then uses :func:`_ids`). Missing fields are reported as :func:`_ids` does.
    """
    if not _fast_dtype(col):
        return None
    codes, uniques, miss = _factorized(col)
    _report(problems, rows, miss, column, EMPTY_FIELD)
    vdtype = _value_dtype(col)
    if pd.api.types.is_string_dtype(vdtype) and vdtype != object:
        # A string column's distinct values are distinct strings already: nothing to merge.
        return codes.astype(np.int64, copy=False), uniques
    is_float = pd.api.types.is_float_dtype(vdtype)
    if is_float:
        _inexact_ids(np.abs(np.asarray(uniques, float)) >= 2.0**53, codes, rows, column, problems, col)
    ustr = np.array([_id_str(u, is_float) for u in uniques], dtype=object)
    if ustr.shape[0] == 0:
        return codes.astype(np.int64, copy=False), ustr
    merged, ids = pd.factorize(ustr, sort=False)
    return np.where(codes >= 0, merged[np.maximum(codes, 0)], -1).astype(np.int64), np.asarray(ids, dtype=object)


_INEXACT = lambda raw: f"the id {raw!r} was read as a number >= 2**53, which cannot be exact: write ids as strings"


def _inexact_ids(big_u: np.ndarray, codes: np.ndarray, rows: np.ndarray, column: str, problems: list, col: pd.Series) -> None:
    """Report the rows of a float id column whose value is >= 2**53 (2**53 + 1 reads as 2**53)."""
    if big_u.any():
        _report(problems, rows, (codes >= 0) & big_u[np.maximum(codes, 0)], column, _INEXACT, col)


def _ids(col: pd.Series, rows: np.ndarray, column: str, problems: list) -> np.ndarray:
    """String ids; integral floats (1.0 from a numeric column) are written without '.0'."""
    miss = _missing_mask(col)
    _report(problems, rows, miss, column, EMPTY_FIELD)
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy()
        _report(problems, rows, np.abs(vals) >= 2.0**53, column, _INEXACT, col)
        out = np.array([str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v) for v in vals], dtype=object)
    else:
        out = col.astype(str).to_numpy(dtype=object)
    return out


def _numpy_int(col: pd.Series) -> bool:
    """A plain NumPy integer column (no missing values possible: pandas' nullable Int64 is not one)."""
    return isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu"


def _exact_int(v) -> int | None:
    """The integer a field holds, read exactly (``"9007199254740993"``, ``"1e20"``, ``"3.0"``), or
    None (not an integer). Beyond 40 digits: +-10**40 (too large for any use)."""
    s = str(v).strip()
    if not s.isascii() or "_" in s:
        return None
    if _INT.fullmatch(s):
        digits = s.lstrip("+-")
        return int(s) if len(digits) <= 40 else (-_TOO_BIG if s.startswith("-") else _TOO_BIG)
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite() or d != d.to_integral_value():
        return None
    return int(d) if d.adjusted() <= 40 else (-_TOO_BIG if d < 0 else _TOO_BIG)


def _integers(col: pd.Series, rows: np.ndarray, column: str, problems: list, minimum: int, maximum: int = MAX_LINE) -> np.ndarray:
    """Integers in [minimum, maximum], never rounded or wrapped: a value outside (1e20, 2**53 + 1 for
    a line, 2**31 for a program size) is a problem naming its row, as is anything not an integer."""
    limit = f"{maximum} (2**53 - 1)" if maximum == MAX_LINE else f"{maximum} (2**31 - 1)" if maximum == MAX_SIZE else str(maximum)
    message = lambda raw: f"expected an integer >= {minimum} and <= {limit}, got {raw!r}"
    if _numpy_int(col):  # nothing to parse: only the range is checked
        vals = col.to_numpy()
        _report(problems, rows, (vals < minimum) | (vals > maximum), column, message, col)
        return vals.astype(np.int64)
    miss = _missing_mask(col)
    _report(problems, rows, miss, column, EMPTY_FIELD)
    if pd.api.types.is_bool_dtype(col.dtype):
        ok, out = np.zeros(len(col), bool), np.full(len(col), -1, np.int64)
    elif pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
        # floats, nullable and Arrow integers: exact up to 2**53, and every value above reads >= 2**53
        vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(vals) & (np.floor(vals) == vals) & (vals >= minimum) & (vals <= maximum)
        out = np.where(ok, vals, -1).astype(np.int64)
    else:  # strings / objects: parsed exactly, once per distinct value
        codes, uniques = pd.factorize(col.astype(str) if isinstance(col.dtype, pd.CategoricalDtype) else col, use_na_sentinel=True)
        parsed = [_exact_int(u) for u in uniques]
        ok_u = np.array([p is not None and minimum <= p <= maximum for p in parsed] + [False], bool)
        val_u = np.array([p if ok else -1 for p, ok in zip(parsed, ok_u)] + [-1], np.int64)
        ok, out = ok_u[codes], val_u[codes]  # code -1 (missing) takes the appended False / -1
    _report(problems, rows, ~miss & ~ok, column, message, col)
    return out


def parse_labels(col: pd.Series, rows: np.ndarray, column: str, problems: list) -> np.ndarray:
    """Map a label column to int8 +1/-1.

    Accepted: ``+1``/``-1``, ``1``/``0``, ``correct``/``wrong`` (case-insensitive), booleans.
    One table uses one coding: ``-1`` together with ``0`` is an error (is ``0`` "wrong" or
    "no vote"?), reported at every row of the less frequent of the two.
    """
    if _numpy_int(col):  # the usual case: compare the integers (no strings, no hashing)
        vals = col.to_numpy()
        miss = np.zeros(len(vals), bool)
        pos, neg_pm, neg_01 = vals == 1, vals == -1, vals == 0
    elif _fast_dtype(col):
        # The string tests run on the distinct values only (a label column has a handful).
        codes, uniques, miss = _factorized(col)
        su = np.array([str(u).strip().lower() for u in uniques], dtype=object)
        known = codes >= 0
        ci = np.maximum(codes, 0)
        pos = known & np.isin(su, list(_POS))[ci] if su.shape[0] else np.zeros(len(col), bool)
        neg_pm = known & np.isin(su, list(_NEG_PM))[ci] if su.shape[0] else np.zeros(len(col), bool)
        neg_01 = known & np.isin(su, list(_NEG_01))[ci] if su.shape[0] else np.zeros(len(col), bool)
    else:
        miss = _missing_mask(col)
        s = col.astype(str).str.strip().str.lower().to_numpy(dtype=object)
        pos = np.isin(s, list(_POS))
        neg_pm = np.isin(s, list(_NEG_PM))
        neg_01 = np.isin(s, list(_NEG_01))
    _report(problems, rows, miss, column, EMPTY_FIELD)
    bad = ~miss & ~(pos | neg_pm | neg_01)
    _report(problems, rows, bad, column, lambda raw: f"unknown label {raw!r} (expected +1/-1, 1/0 or correct/wrong)", col)
    if neg_pm.any() and neg_01.any():
        minority = neg_01 if neg_01.sum() <= neg_pm.sum() else neg_pm
        other = "-1" if minority is neg_01 else "0"
        _report(
            problems,
            rows,
            minority,
            column,
            lambda raw: f"label {raw!r} mixes the 1/0 coding with the +1/-1 coding used elsewhere (e.g. {other!r})",
            col,
        )
    return pos.view(np.int8) * np.int8(2) - np.int8(1)  # +1 / -1, without np.where's scalar broadcasting


def _duplicates(keys: pd.DataFrame, rows: np.ndarray, what: str, problems: list, column: str) -> None:
    dup = keys.duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    first = np.full(group.max() + 1, -1, dtype=np.int64)
    first_pos = np.flatnonzero(~dup)
    first[group[first_pos]] = first_pos
    for i in np.flatnonzero(dup):
        key = tuple(v.item() if hasattr(v, "item") else v for v in keys.iloc[i])
        problems.append((int(rows[i]), column, f"duplicate {what} {key} (first given at row {int(rows[first[group[i]]])})"))


@dataclass(frozen=True)
class VoteTable:
    """Validated, integer-coded votes plus the original ids.

    Attributes
    ----------
    arrays : VoteArrays
        The shared pytree (numpy arrays; kernels move them to the device).
    programs : np.ndarray
        Program ids (str) by program index (order of first appearance).
    annotators : np.ndarray
        Annotator ids (str) by annotator index (order of first appearance).
    line_numbers : np.ndarray
        The original line number of each line index.
    n_votes_per_line : np.ndarray
        Votes on each line.
    source : str
        Name of the vote source, for messages.
    """

    arrays: VoteArrays
    programs: np.ndarray
    annotators: np.ndarray
    line_numbers: np.ndarray
    n_votes_per_line: np.ndarray
    source: str
    has_program_sizes: bool = False

    @property
    def n_annotators(self) -> int:
        return int(self.annotators.shape[0])

    @property
    def n_programs(self) -> int:
        return int(self.programs.shape[0])

    @property
    def n_lines(self) -> int:
        return int(self.line_numbers.shape[0])

    @property
    def n_votes(self) -> int:
        return self.arrays.n_votes

    @property
    def n_honeypots(self) -> int:
        return int(np.count_nonzero(self.arrays.truth))

    def lines_frame(self) -> pd.DataFrame:
        """``program, line`` of every line index, in line-index order."""
        return pd.DataFrame({"program": self.programs[self.arrays.line_program], "line": self.line_numbers})

    def votes_frame(self) -> pd.DataFrame:
        """The votes back as a table ``program, line, annotator, label`` (line-sorted)."""
        a = self.arrays
        return pd.DataFrame(
            {
                "program": self.programs[a.line_program[a.line]],
                "line": self.line_numbers[a.line],
                "annotator": self.annotators[a.annotator],
                "label": a.label.astype(np.int64),
            }
        )


def _code_votes(df: pd.DataFrame, rows: np.ndarray, problems: list):
    """Parse and integer-code the four vote columns, appending every problem found.

    Returns ``(prog_code, prog_ids, line_no, ann_code, ann_ids, label)``: program and annotator
    codes with their string ids (object arrays, order of first appearance), line numbers and the
    +1/-1 labels. Id columns of a common dtype take the factorised path (:func:`_id_codes`).
    """
    fast_prog = _id_codes(df["program"], rows, "program", problems)
    prog = _ids(df["program"], rows, "program", problems) if fast_prog is None else None
    line_no = _integers(df["line"], rows, "line", problems, minimum=0)
    fast_ann = _id_codes(df["annotator"], rows, "annotator", problems)
    ann = _ids(df["annotator"], rows, "annotator", problems) if fast_ann is None else None
    label = parse_labels(df["label"], rows, "label", problems)
    if fast_prog is not None:
        prog_code, prog_ids = fast_prog
    else:
        prog_code, prog_ids = pd.factorize(prog, sort=False)
    if fast_ann is not None:
        ann_code, ann_ids = fast_ann
    else:
        ann_code, ann_ids = pd.factorize(ann, sort=False)
    return prog_code, np.asarray(prog_ids, dtype=object), line_no, ann_code, np.asarray(ann_ids, dtype=object), label


@dataclass(frozen=True)
class _LineCoding:
    """Line numbers as small codes for the one-integer (program, line) key ``program * base + code``.

    The code is the line number itself while ``n_programs * (max line + 1) < 2**62``; beyond (line
    numbers up to 2**53 - 1, many programs), its rank among the distinct line numbers, so that the
    key never overflows int64. Codes keep the order of the line numbers.
    """

    base: int
    numbers: np.ndarray | None = None  # the sorted distinct line numbers, when coded by rank

    @staticmethod
    def of(line_no: np.ndarray, n_programs: int) -> _LineCoding:
        lmax = int(line_no.max()) + 1
        if max(n_programs, 1) * lmax < 2**62:
            return _LineCoding(lmax)
        numbers = np.unique(line_no)
        return _LineCoding(len(numbers), numbers)

    def codes(self, line_no: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(code, known): ``known`` is False for a line number no vote has (its code is meaningless)."""
        if self.numbers is None:
            return line_no, line_no < self.base
        pos = np.minimum(np.searchsorted(self.numbers, line_no), len(self.numbers) - 1)
        return pos.astype(np.int64), self.numbers[pos] == line_no

    def number(self, code: np.ndarray) -> np.ndarray:
        return (code if self.numbers is None else self.numbers[code]).astype(np.int64)


def _check_duplicate_votes(prog_code, prog_ids, line_no, coding: _LineCoding, ann_code, ann_ids, rows, problems) -> np.ndarray:
    """Report every repeated (program, line, annotator) vote; return ``line_key``.

    ``line_key = prog_code * base + line code`` (:class:`_LineCoding`) is one integer per line,
    reused to group the votes by line. Duplicates are found on one integer key per vote, sorted
    once; the row-by-row report (pandas) runs only if there is one.
    """
    n_a = max(len(ann_ids), 1)
    line_key = prog_code.astype(np.int64, copy=False) * coding.base + coding.codes(line_no)[0]
    if max(len(prog_ids), 1) * coding.base * n_a < 2**62:
        packed = np.sort(line_key * n_a + ann_code)
        dup = len(packed) > 1 and bool(np.any(packed[1:] == packed[:-1]))
    else:  # the packed key could overflow int64
        o = np.lexsort((ann_code, line_no, prog_code))
        same = (np.diff(prog_code[o]) == 0) & (np.diff(line_no[o]) == 0) & (np.diff(ann_code[o]) == 0)
        dup = bool(np.any(same))
    if dup:
        _duplicates(
            pd.DataFrame({"program": prog_ids[prog_code], "line": line_no, "annotator": ann_ids[ann_code]}),
            rows,
            "vote (program, line, annotator)",
            problems,
            "annotator",
        )
    return line_key


def _group_lines(line_key: np.ndarray, ann_code: np.ndarray, label: np.ndarray):
    """Lines: unique (program index, line number), program-major then by line number.

    Returns ``(ukey, v_line, v_ann, v_label)``: the sorted line keys and the votes sorted by line
    (line index int32, annotator int32, label).
    """
    if len(line_key) < 2 or bool(np.all(line_key[1:] >= line_key[:-1])):
        # Already grouped by line (a file written program by program, line by line): no sort.
        new_line = np.empty(len(line_key), bool)
        new_line[0] = True
        np.not_equal(line_key[1:], line_key[:-1], out=new_line[1:])
        ukey = line_key[new_line]
        v_line = np.cumsum(new_line, dtype=np.int32) - 1
        return ukey, v_line, ann_code.astype(np.int32), label
    ukey, line_idx = np.unique(line_key, return_inverse=True)
    order = np.argsort(line_idx, kind="stable")
    return ukey, line_idx[order].astype(np.int32), ann_code[order].astype(np.int32), label[order]


def read_votes(votes: Source, truth: Source | None = None, programs: Source | None = None) -> VoteTable:
    """Read, validate and integer-code a vote table (and optional honeypot truth, program sizes).

    Parameters
    ----------
    votes
        Path (``.csv``, ``.parquet``, ``.jsonl``) or DataFrame with columns
        ``program, line, annotator, label``.
    truth
        Optional honeypot truth ``program, line, truth``.
    programs
        Optional program sizes ``program, n_lines`` (for coverage).

    Raises
    ------
    VoteTableError
        Naming the source, row and column of every problem.
    """
    df, rows, name = read_frame(votes, "vote")
    _check_columns(df, VOTE_COLUMNS, name)
    if len(df) == 0:
        raise VoteTableError(name, [(None, None, "the table has no votes (empty table)")])
    problems: list = []
    with scalars_only(df, rows, name, VOTE_COLUMNS):
        prog_code, prog_ids, line_no, ann_code, ann_ids, label = _code_votes(df, rows, problems)
    if not problems:
        coding = _LineCoding.of(line_no, len(prog_ids))
        line_key = _check_duplicate_votes(prog_code, prog_ids, line_no, coding, ann_code, ann_ids, rows, problems)
    if problems:
        problems.sort(key=lambda p: p[0] or 0)
        raise VoteTableError(name, problems)
    n_prog = len(prog_ids)
    ukey, v_line, v_ann, v_label = _group_lines(line_key, ann_code, label)
    line_program = (ukey // coding.base).astype(np.int32)
    line_numbers = coding.number(ukey % coding.base)
    n_lines = len(ukey)
    n_votes_per_line = np.bincount(v_line, minlength=n_lines).astype(np.int64, copy=False)
    annotated = np.bincount(line_program, minlength=n_prog).astype(np.int32)

    truth_arr = np.zeros(n_lines, dtype=np.int8)
    if truth is not None:
        truth_arr = _read_truth(truth, prog_ids, ukey, coding)

    program_size = annotated.copy()
    has_sizes = False
    if programs is not None:
        program_size = _read_programs(programs, prog_ids, annotated)
        has_sizes = True

    arrays = VoteArrays(line=v_line, annotator=v_ann, label=v_label, line_program=line_program, truth=truth_arr, program_size=program_size)
    return VoteTable(
        arrays=arrays,
        programs=prog_ids,
        annotators=ann_ids,
        line_numbers=line_numbers,
        n_votes_per_line=n_votes_per_line,
        source=name,
        has_program_sizes=has_sizes,
    )


def _read_truth(truth: Source, prog_ids: np.ndarray, ukey: np.ndarray, coding: _LineCoding) -> np.ndarray:
    df, rows, name = read_frame(truth, "truth")
    _check_columns(df, TRUTH_COLUMNS, name)
    out = np.zeros(len(ukey), dtype=np.int8)
    if len(df) == 0:
        warnings.warn(f"{name}: the truth table is empty (no honeypot lines)", stacklevel=3)
        return out
    problems: list = []
    with scalars_only(df, rows, name, TRUTH_COLUMNS):
        prog = _ids(df["program"], rows, "program", problems)
        line_no = _integers(df["line"], rows, "line", problems, minimum=0)
        t = parse_labels(df["truth"], rows, "truth", problems)
    if not problems:
        _duplicates(pd.DataFrame({"program": prog, "line": line_no}), rows, "truth for (program, line)", problems, "line")
    if not problems:
        pidx = pd.Index(prog_ids).get_indexer(prog)
        unknown = pidx < 0
        for r, p in zip(rows[unknown], prog[unknown]):
            problems.append((int(r), "program", f"truth for program {p!r}, which has no vote in the vote table"))
        known = ~unknown
        code, voted = coding.codes(line_no)
        key = pidx.astype(np.int64) * coding.base + code
        pos = np.searchsorted(ukey, key)
        pos_c = np.minimum(pos, len(ukey) - 1)
        hit = known & voted & (ukey[pos_c] == key)
        for r, p, ln in zip(rows[known & ~hit], prog[known & ~hit], line_no[known & ~hit]):
            problems.append((int(r), "line", f"truth for line {int(ln)} of program {p!r}, which nobody voted on"))
        if not problems:
            out[pos_c[hit]] = t[hit]
    if problems:
        problems.sort(key=lambda p: p[0] or 0)
        raise VoteTableError(name, problems)
    return out


def _read_programs(programs: Source, prog_ids: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    df, rows, name = read_frame(programs, "program")
    _check_columns(df, PROGRAM_COLUMNS, name)
    problems: list = []
    with scalars_only(df, rows, name, PROGRAM_COLUMNS):
        prog = _ids(df["program"], rows, "program", problems)
        n = _integers(df["n_lines"], rows, "n_lines", problems, minimum=1, maximum=MAX_SIZE)
    if not problems:
        _duplicates(pd.DataFrame({"program": prog}), rows, "program", problems, "program")
    if problems:
        raise VoteTableError(name, problems)
    idx = pd.Index(prog).get_indexer(prog_ids)
    missing = prog_ids[idx < 0]
    for p in missing:
        problems.append((None, "program", f"program {p!r} of the vote table has no size here"))
    size = np.where(idx >= 0, n[np.maximum(idx, 0)] if len(n) else 0, 0).astype(np.int32)
    short = (idx >= 0) & (size < annotated)
    for i in np.flatnonzero(short):
        problems.append((int(rows[idx[i]]), "n_lines", f"program {prog_ids[i]!r} has {annotated[i]} annotated lines but n_lines={size[i]}"))
    if problems:
        raise VoteTableError(name, problems)
    extra = sorted(set(prog) - set(prog_ids))
    if extra:
        warnings.warn(f"{name}: {len(extra)} program(s) have no vote and get no reward: {extra[:10]}", stacklevel=3)
    return size
