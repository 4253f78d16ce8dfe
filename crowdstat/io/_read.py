"""Files to frames for :mod:`crowdstat.io.tables`: CSV, Parquet and JSONL, and the error they raise.

Every failure to read is a :class:`VoteTableError` naming the file (and, where there is one, the
row and column): a directory, an unreadable file, invalid UTF-8, malformed JSON. Host only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd

__all__ = ["VoteTableError", "Source", "read_frame", "source_name", "nested_problems", "scalars_only"]

Source: TypeAlias = str | os.PathLike | pd.DataFrame

_MAX_LISTED = 20
_SURROGATE = re.compile("[\udc80-\udcff]")


def _flat(text: str) -> str:
    """A message on one line (pandas' and pyarrow's messages may span several)."""
    return " ".join(str(text).split())


class VoteTableError(ValueError):
    """A vote, truth or program table is invalid. ``problems`` lists (row, column, message)."""

    def __init__(self, source: str, problems: Sequence[tuple[int | None, str | None, str]]):
        self.source = source
        self.problems = problems
        lines = []
        for row, col, msg in problems[:_MAX_LISTED]:
            where = []
            if row is not None:
                where.append(f"row {row}")
            if col is not None:
                where.append(f"column '{col}'")
            lines.append(f"  {source}: {', '.join(where)}: {msg}" if where else f"  {source}: {msg}")
        more = len(problems) - _MAX_LISTED
        if more > 0:
            lines.append(f"  ... and {more} more problem(s)")
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the table:\n" + "\n".join(lines))

    def located(self) -> list[str]:
        """One line per problem, ``FILE:ROW:COLUMN: message`` (ROW / COLUMN left out where unknown),
        at most 20, then a count of the others: the CLI's error lines."""
        out = []
        for row, col, msg in self.problems[:_MAX_LISTED]:
            where = self.source + (f":{row}" if row is not None else "") + (f":{col}" if col is not None else "")
            out.append(f"{where}: {_flat(msg)}")
        more = len(self.problems) - _MAX_LISTED
        if more > 0:
            out.append(f"{self.source}: ... and {more} more problem(s)")
        return out


def source_name(source: Source) -> str:
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    return os.fspath(source)


def _bad_byte(text: str) -> str:
    m = _SURROGATE.search(text)
    return f"0x{ord(m.group()) - 0xDC00:02x}" if m else "?"


def _csv_utf8_problems(path: Path, sep: str) -> list:
    """Where a CSV file is not UTF-8: (data row, column, message), in file order."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        text = fh.read().decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(reader, [])
    problems: list[tuple[int | None, str | None, str]] = []
    bad_header = [f for f in header if _SURROGATE.search(f)]
    if bad_header:
        problems.append((None, None, f"the header is not valid UTF-8 (byte {_bad_byte(bad_header[0])})"))
    for row, rec in enumerate(reader, start=1):
        for j, field in enumerate(rec):
            if _SURROGATE.search(field):
                col = header[j] if j < len(header) and not _SURROGATE.search(header[j]) else f"#{j + 1}"
                problems.append((row, col, f"not valid UTF-8 (byte {_bad_byte(field)})"))
        if len(problems) > _MAX_LISTED:
            break
    return problems or [(None, None, "not valid UTF-8")]


def _jsonl_utf8_problem(line_no: int, raw: bytes) -> tuple:
    """(line, key, message) for a JSONL line that is not UTF-8; the key whose value holds the bad byte."""
    text = raw.decode("utf-8", errors="surrogateescape")
    column = None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        column = next((str(k) for k, v in obj.items() if _SURROGATE.search(str(k)) or _SURROGATE.search(str(v))), None)
    return (line_no, column, f"not valid UTF-8 (byte {_bad_byte(text)})")


def _read_csv(path: Path, name: str, suffix: str) -> pd.DataFrame:
    sep = "\t" if suffix == ".tsv" else ","
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, sep=sep)
    except pd.errors.EmptyDataError:
        raise VoteTableError(name, [(None, None, "the file is empty (no header, no rows)")]) from None
    except pd.errors.ParserError as e:
        raise VoteTableError(name, [(None, None, f"not a valid CSV file: {_flat(e)}")]) from None
    except UnicodeDecodeError:
        raise VoteTableError(name, _csv_utf8_problems(path, sep)) from None


def _read_jsonl(path: Path, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    records, rows, problems = [], [], []
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(_jsonl_utf8_problem(i, raw))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append((i, None, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(obj, dict):
                problems.append((i, None, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            records.append(obj)
            rows.append(i)
    if problems:
        raise VoteTableError(name, problems)
    return pd.DataFrame.from_records(records), np.asarray(rows, dtype=np.int64)


CODED = ("program", "annotator", "label", "truth")  # read as dictionary (categorical) columns from Parquet


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    """Parquet with the id and label string columns read as dictionaries (pandas categoricals):
    Parquet stores them dictionary-encoded, so no string is materialised per row and the codes
    go straight to the factorised paths of :mod:`crowdstat.io.tables`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        coded = [
            f.name
            for f in schema
            if f.name in CODED and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type))
        ]
        return pq.read_table(path, read_dictionary=coded or None).to_pandas()
    except pa.ArrowException as e:
        raise VoteTableError(name, [(None, None, f"not a valid Parquet file: {_flat(e)}")]) from None


def read_frame(source: Source, what: str = "table") -> tuple[pd.DataFrame, np.ndarray, str]:
    """Load a CSV / Parquet / JSONL file or copy a DataFrame.

    Returns the frame, the 1-based row number of each record as the user counts it (data
    rows for CSV/Parquet/DataFrame, file lines for JSONL) and the source name.
    """
    name = source_name(source)
    if isinstance(source, pd.DataFrame):
        df = source.reset_index(drop=True).copy()
        return df, np.arange(1, len(df) + 1), name
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such {what} file")
    if path.is_dir():
        raise VoteTableError(name, [(None, None, f"is a directory, not a {what} file")])
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz", ".tsv", ".txt"):
            df = _read_csv(path, name, suffix)
            return df, np.arange(1, len(df) + 1), name
        if suffix in (".parquet", ".pq"):
            df = _read_parquet(path, name)
            return df.reset_index(drop=True), np.arange(1, len(df) + 1), name
        if suffix in (".jsonl", ".ndjson", ".json"):
            df, rows = _read_jsonl(path, name)
            return df, rows, name
    except OSError as e:  # unreadable (permissions, I/O error), a corrupt .gz
        raise VoteTableError(name, [(None, None, f"cannot be read: {_flat(e.strerror or str(e))}")]) from None
    raise ValueError(f"{name}: unknown file type '{path.suffix}' (expected .csv, .tsv, .parquet or .jsonl)")


def _kind(v) -> str:
    return "a JSON object" if isinstance(v, dict) else "a list" if isinstance(v, (list, tuple, np.ndarray)) else ""


def nested_problems(df: pd.DataFrame, rows: np.ndarray, columns) -> list:
    """(row, column, message) for every JSON object / list (or Parquet struct / list) in ``columns``."""
    problems = []
    for c in columns:
        if df[c].dtype != object:
            continue
        kinds = df[c].map(_kind)
        for r, k in zip(rows, kinds):
            if k:
                problems.append((int(r), c, f"expected a string or a number, got {k}"))
    return problems


@contextmanager
def scalars_only(df: pd.DataFrame, rows: np.ndarray, name: str, columns):
    """Turn the TypeError that an unhashable field (a JSON object, a list) raises while parsing into
    a :class:`VoteTableError` naming its rows and column (no per-row test on the good path)."""
    try:
        yield
    except TypeError:
        problems = nested_problems(df, rows, columns)
        if problems:
            raise VoteTableError(name, problems) from None
        raise
