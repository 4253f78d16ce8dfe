"""Result frames to files and Arrow columns: the CSV writer of every output table and the
per-program list columns of the reward table. Host only (NumPy, pandas, pyarrow; no JAX)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["write_csv", "ragged", "pylists"]


def pylists(col: pd.Series, kind) -> list[list]:
    """A column of lists (an Arrow list column as :func:`ragged` builds, or Python / NumPy
    sequences) as Python lists of ``kind`` (int / float), converted by Arrow in one pass."""
    import pyarrow as pa

    target = pa.int64() if kind is int else pa.float64()
    return pa.array(col.array, from_pandas=True).cast(pa.large_list(target)).to_pylist()


def write_csv(df: pd.DataFrame, path) -> None:
    """A frame as CSV through Arrow's C++ writer (much faster than pandas' ``to_csv`` with a float
    format; docs/performance.md): floats in their shortest round-trip form (read back bit-exact),
    missing values (NaN) as empty fields, and the same text as pandas otherwise: a plain header,
    fields unquoted unless one holds a comma, quote or newline (then every string field is quoted,
    as RFC 4180 allows)."""
    import csv
    import io

    import pyarrow as pa
    import pyarrow.csv as pcsv

    # float32 columns widened first: a float32's shortest form read back as float64 is another number.
    f32 = [c for c in df.columns if df[c].dtype == np.float32]
    table = pa.Table.from_pandas(df.astype({c: np.float64 for c in f32}) if f32 else df, preserve_index=False)  # NaN -> empty
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([str(c) for c in df.columns])
    with open(path, "wb") as fh:
        fh.write(header.getvalue().encode())
        start = fh.tell()
        try:
            pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        except pa.ArrowInvalid:  # a field needs quotes
            fh.seek(start)
            fh.truncate()
            pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style="needed"))


def ragged(offsets: np.ndarray, values: np.ndarray) -> pd.Series:
    """A column of per-program lists (``values[offsets[i]:offsets[i+1]]``) as one Arrow list
    array: no Python list per program is built (an element reads back as a Python list)."""
    import pyarrow as pa

    off = pa.array(offsets.astype(np.int64 if offsets[-1] >= 2**31 else np.int32))
    arr = (pa.LargeListArray if off.type == pa.int64() else pa.ListArray).from_arrays(off, pa.array(values))
    return pd.Series(pd.arrays.ArrowExtensionArray(arr), copy=False)
