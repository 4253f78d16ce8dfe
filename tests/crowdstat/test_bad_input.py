"""Every bad-input case, for CSV, Parquet, JSONL and DataFrame: crowdstat.VoteTableError (a
ValueError) whose message names the file, the 1-based data row and the column (formats.md).
The CLI exits with status 2 and leaves no output directory."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import crowdstat as cs
from crowdstat import VoteTableError

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ["csv", "parquet", "jsonl", "frame"]
MISSING = object()  # a field absent from a JSONL object / NaN elsewhere
COLS = ["program", "line", "annotator", "label"]

GOOD = [["p", 1, "a", 1], ["p", 1, "b", -1], ["p", 2, "a", 1], ["q", 1, "b", 1]]


def _with(row_index, col, value, rows=GOOD):
    rows = [list(r) for r in rows]
    rows[row_index][COLS.index(col)] = value
    return rows


# name -> (rows, columns, expected data row (1-based) or None, column or None, words)
VOTE_CASES = {
    "unknown_label": (_with(2, "label", "maybe"), COLS, 3, "label", r"label"),
    "label_2": (_with(1, "label", 2), COLS, 2, "label", r"label"),
    "duplicate_vote": (GOOD + [["p", 2, "a", -1]], COLS, 5, None, r"duplicate"),
    "missing_column": ([r[:3] for r in GOOD], COLS[:3], None, "label", r"missing"),
    "empty_annotator": (_with(1, "annotator", ""), COLS, 2, "annotator", r""),
    "empty_program": (_with(3, "program", ""), COLS, 4, "program", r""),
    "missing_label": (_with(2, "label", MISSING), COLS, 3, "label", r""),
    "nan_line": (_with(1, "line", math.nan), COLS, 2, "line", r""),
    "non_integer_line": (_with(2, "line", 1.5), COLS, 3, "line", r""),
    "text_line": (_with(2, "line", "x"), COLS, 3, "line", r""),
    "negative_line": (_with(3, "line", -2), COLS, 4, "line", r""),
    "mixed_coding": (_with(3, "label", 0), COLS, None, "label", r"mix"),
    "empty_table": ([], COLS, None, None, r"empty|no votes"),
}


def _column_values(rows, j):
    return [r[j] for r in rows]


def _write(rows, columns, fmt, path: Path):
    """Write rows in one format; returns what to pass to crowdstat (path or DataFrame)."""
    if fmt == "csv":

        def cell(v):
            if v is MISSING or (isinstance(v, float) and math.isnan(v)):
                return ""
            return str(v)

        text = ",".join(columns) + "\n" + "".join(",".join(cell(v) for v in r) + "\n" for r in rows)
        path.write_text(text)
        return path
    if fmt == "jsonl":
        lines = []
        for r in rows:
            obj = {}
            for c, v in zip(columns, r):
                if v is MISSING:
                    continue
                obj[c] = None if isinstance(v, float) and math.isnan(v) else v
            lines.append(json.dumps(obj))
        path.write_text("".join(line + "\n" for line in lines))
        return path
    data = {}
    for j, c in enumerate(columns):
        vals = [None if v is MISSING else v for v in _column_values(rows, j)]
        kinds = {type(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if fmt == "parquet" and len(kinds) > 1:  # Arrow needs one type per column
            vals = [None if v is None else str(v) for v in vals]
        data[c] = pd.Series(vals, dtype=object if len(kinds) > 1 or fmt == "frame" else None)
    df = pd.DataFrame(data, columns=columns)
    if fmt == "frame":
        return df
    df.to_parquet(path)
    return path


def _pattern(name: str | None, row: int | None, column: str | None, words: str) -> str:
    parts = []
    if name:
        parts.append(re.escape(name))
    if row is not None:
        parts.append(rf"\brow {row}\b")
    if column:
        parts.append(rf"\b{column}\b")
    if words:
        parts.append(words)
    return "(?si)" + "".join(f"(?=.*{p})" for p in parts)


def _ext(fmt):
    return {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "frame": ""}[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(VOTE_CASES))
def test_bad_vote_table(tmp_path, fmt, case):
    rows, columns, row, column, words = VOTE_CASES[case]
    if fmt in ("parquet", "frame") and case == "missing_label":
        rows = _with(2, "label", math.nan)
    fname = f"votes_{case}{_ext(fmt)}"
    src = _write(rows, columns, fmt, tmp_path / fname)
    name = None if fmt == "frame" else fname
    if case == "empty_table" and fmt == "jsonl":
        column = None  # an empty JSONL file has no header to name columns
    with pytest.raises(VoteTableError, match=_pattern(name, row, column, words)):
        cs.fit(src, method="majority")
    assert issubclass(VoteTableError, ValueError)


def test_mixed_coding_names_a_row(tmp_path):
    # the -1 comes first, the 0 at data row 4: either row may be named, but some row must be
    src = _write(_with(3, "label", 0), COLS, "csv", tmp_path / "votes.csv")
    with pytest.raises(VoteTableError, match=r"(?s)(?=.*votes\.csv)(?=.*\brow [24]\b)(?=.*label)"):
        cs.fit(src, method="majority")


def test_duplicate_vote_names_both_rows_or_the_second(tmp_path):
    src = _write(GOOD + [["p", 2, "a", -1]], COLS, "csv", tmp_path / "votes.csv")
    with pytest.raises(VoteTableError, match=r"(?s)(?=.*votes\.csv)(?=.*\brow 5\b)(?=.*(program|line|annotator))"):
        cs.fit(src, method="sequential")


# ---------------------------------------------------------------- truth and programs tables

TCOLS = ["program", "line", "truth"]
TRUTH_CASES = {
    "line_without_votes": ([["p", 1, 1], ["q", 9, -1]], 2, None, r"vote"),
    "unknown_program": ([["zz", 1, 1]], 1, None, r""),
    "duplicate_truth": ([["p", 1, 1], ["p", 2, 1], ["p", 1, -1]], 3, None, r"duplicate"),
    "bad_truth_label": ([["p", 1, "maybe"]], 1, "truth", r""),
    "empty_truth_field": ([["p", 1, 1], ["p", 2, ""]], 2, "truth", r""),
    "missing_truth_column": ([["p", 1]], None, "truth", r"missing"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(TRUTH_CASES))
def test_bad_truth_table(tmp_path, fmt, case):
    rows, row, column, words = TRUTH_CASES[case]
    columns = TCOLS if case != "missing_truth_column" else TCOLS[:2]
    votes = _write(GOOD, COLS, "csv", tmp_path / "votes.csv")
    fname = f"truth_{case}{_ext(fmt)}"
    truth = _write(rows, columns, fmt, tmp_path / fname)
    name = None if fmt == "frame" else fname
    with pytest.raises(VoteTableError, match=_pattern(name, row, column, words)):
        cs.fit(votes, truth=truth, method="proximal")


@pytest.mark.parametrize(
    "case,rows,row",
    [
        ("program_missing", [["p", 3]], None),  # q is not listed
        ("fewer_lines_than_annotated", [["p", 1], ["q", 5]], 1),  # p has 2 annotated lines
        ("zero_lines", [["p", 2], ["q", 0]], 2),
        ("empty", [], None),  # a header and no rows: every program is missing (was an IndexError)
    ],
)
def test_bad_programs_table(tmp_path, case, rows, row):
    votes = _write(GOOD, COLS, "csv", tmp_path / "votes.csv")
    progs = _write(rows, ["program", "n_lines"], "csv", tmp_path / f"programs_{case}.csv")
    with pytest.raises(VoteTableError, match=_pattern(f"programs_{case}.csv", row, None, r"")):
        cs.fit(votes, programs=progs, method="majority")


# ---------------------------------------------------------------- CLI: exit 2, no output dir


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "crowdstat", "fit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_cli_bad_votes_exit_2_and_no_output(tmp_path):
    src = _write(_with(2, "label", "maybe"), COLS, "csv", tmp_path / "votes_bad.csv")
    out = tmp_path / "out"
    r = _cli(src, "--method", "majority", "--out", out)
    assert r.returncode == 2, (r.returncode, r.stderr)
    msg = r.stderr + r.stdout
    assert re.search(r"^crowdstat fit: error: \S*votes_bad\.csv:3:label: ", msg, re.M), msg  # FILE:ROW:COLUMN, one line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary sibling left behind either


def test_cli_bad_truth_leaves_existing_dir_untouched(tmp_path):
    votes = _write(GOOD, COLS, "csv", tmp_path / "votes.csv")
    truth = _write([["p", 1, 1], ["p", 1, -1]], TCOLS, "csv", tmp_path / "truth.csv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    r = _cli(votes, "--truth", truth, "--method", "proximal", "--out", out, "--force")  # --force: out is not a fit's
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert re.search(r"^crowdstat fit: error: \S*truth\.csv:2\b", r.stderr + r.stdout, re.M), r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "truth.csv", "votes.csv"]


def test_not_a_parquet_file_names_the_file(tmp_path):
    bad = tmp_path / "votes.parquet"
    bad.write_text("program,line,annotator,label\np,1,a,1\n")
    with pytest.raises(VoteTableError, match=r"votes\.parquet.*not a valid Parquet file"):
        cs.read_votes(bad)


def test_parquet_string_columns_read_as_dictionaries(tmp_path):
    """Parquet id / label strings come back categorical (no string per row) and give the same table."""
    df = pd.DataFrame(GOOD, columns=COLS).assign(label=["correct", "wrong", "correct", "correct"])
    df.to_parquet(tmp_path / "v.parquet")
    from crowdstat.io.tables import read_frame

    back, _, _ = read_frame(tmp_path / "v.parquet", "vote")
    assert all(isinstance(back[c].dtype, pd.CategoricalDtype) for c in ("program", "annotator", "label"))
    a, b = cs.read_votes(df), cs.read_votes(tmp_path / "v.parquet")
    pd.testing.assert_frame_equal(a.votes_frame(), b.votes_frame())


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_program_in_a_parquet_truth_table_is_an_empty_field(tmp_path, blank):
    """Parquet strings come back categorical: a blank id must still read as an empty field."""
    votes = _write(GOOD, COLS, "csv", tmp_path / "votes.csv")
    pd.DataFrame({"program": ["p", blank], "line": [1, 2], "truth": [1, -1]}).to_parquet(tmp_path / "truth.parquet")
    with pytest.raises(VoteTableError, match=r"truth\.parquet.*row 2, column 'program': empty field"):
        cs.read_votes(votes, truth=tmp_path / "truth.parquet")
