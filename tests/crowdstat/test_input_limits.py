"""Inputs that must never cost data (issue 15), written as attacks on the readers and the CLI.

- Numbers that do not fit (beyond int64, beyond 2**53, beyond int32 for program sizes) are errors
  naming file, row and column, in every format (CSV, JSONL, Parquet, DataFrame); never rewritten
  (``1e20 -> 0``, ``2**53 + 1 -> 2**53``) and merged with other votes.
- Large line numbers that do fit keep their exact value, whatever the number of programs.
- ``crowdstat fit`` on a directory, a JSON object as an id, invalid UTF-8, ``--pbar-honeypot 1``:
  one line ``crowdstat fit: error: FILE:ROW:COLUMN: ...`` per problem and exit 2, never a traceback
  (``--debug`` / ``CROWDSTAT_DEBUG=1`` shows it).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from crowdstat import VoteTableError

ROOT = Path(__file__).resolve().parents[2]
MAX_LINE = 2**53 - 1
GOOD = [["p", 1, "a", 1], ["p", 1, "b", -1], ["p", 2, "a", 1], ["q", 1, "b", 1]]
COLS = ["program", "line", "annotator", "label"]
ERROR_LINE = re.compile(r"^crowdstat (fit|simulate|compare): error: \S")


def _csv(path: Path, rows, cols=COLS) -> Path:
    path.write_text(",".join(cols) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return path


def _jsonl_text(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(s + "\n" for s in lines))
    return path


def _vote_json(line_text: str, program='"p"', annotator='"c"') -> str:
    return f'{{"program": {program}, "line": {line_text}, "annotator": {annotator}, "label": 1}}'


def _good_json() -> list[str]:
    return [json.dumps(dict(zip(COLS, r))) for r in GOOD]


# ---------------------------------------------------------------- numbers that do not fit

BIG_CSV = ["1e20", "100000000000000000000", "9007199254740993", "9007199254740992", "9223372036854775808", "4503599627370495.5", "1e400"]


@pytest.mark.parametrize("text", BIG_CSV)
def test_csv_line_numbers_that_do_not_fit_are_errors(tmp_path, text):
    src = _csv(tmp_path / "votes.csv", GOOD + [["p", text, "c", 1]])
    with pytest.raises(VoteTableError, match=r"votes\.csv: row 5, column 'line'.*" + re.escape(text)):
        cs.read_votes(src)


@pytest.mark.parametrize("text", ["1e20", "100000000000000000000", "9007199254740993", "18446744073709551616", "9.007199254740993e15"])
def test_jsonl_line_numbers_that_do_not_fit_are_errors(tmp_path, text):
    src = _jsonl_text(tmp_path / "votes.jsonl", _good_json() + [_vote_json(text)])
    with pytest.raises(VoteTableError, match=r"votes\.jsonl: row 5, column 'line'"):
        cs.read_votes(src)


@pytest.mark.parametrize(
    "values",
    [
        np.array([1, 1, 2, 1, 2**63 + 5], dtype=np.uint64),
        np.array([1, 1, 2, 1, 2**53 + 1], dtype=np.int64),
        np.array([1, 1, 2, 1, 1e20]),
        pd.array([1, 1, 2, 1, 2**53 + 1], dtype="Int64"),
    ],
    ids=["uint64", "int64_2p53", "float_1e20", "nullable_int"],
)
def test_parquet_and_frame_line_numbers_that_do_not_fit_are_errors(tmp_path, values):
    df = pd.DataFrame(GOOD + [["p", 0, "c", 1]], columns=COLS)
    df["line"] = values
    with pytest.raises(VoteTableError, match=r"<DataFrame>: row 5, column 'line'"):
        cs.read_votes(df)
    df.to_parquet(tmp_path / "votes.parquet")
    with pytest.raises(VoteTableError, match=r"votes\.parquet: row 5, column 'line'"):
        cs.read_votes(tmp_path / "votes.parquet")


def test_two_lines_beyond_2p53_are_never_merged(tmp_path):
    """Before: 2**53 and 2**53 + 1 were both read as 2**53 and their votes merged into one line."""
    src = _csv(tmp_path / "votes.csv", [["p", 2**53, "a", 1], ["p", 2**53 + 1, "a", -1]])
    with pytest.raises(VoteTableError, match=r"row 1, column 'line'"):
        cs.read_votes(src)


def test_the_largest_line_number_is_kept_exactly_with_many_programs(tmp_path):
    """2**53 - 1 fits; with 1100 programs the (program, line) key once overflowed int64."""
    rows = [[f"p{i}", ln, "a", 1 if i % 2 else -1] for i in range(1100) for ln in (0, MAX_LINE)]
    src = _csv(tmp_path / "votes.csv", rows)
    t = cs.read_votes(src)
    assert t.n_lines == 2200 and t.n_programs == 1100
    back = t.votes_frame()
    assert sorted(back["line"].unique().tolist()) == [0, MAX_LINE]
    assert len(back.drop_duplicates(["program", "line"])) == 2200
    want = pd.DataFrame(rows, columns=COLS).sort_values(["program", "line"]).reset_index(drop=True)
    got = back.sort_values(["program", "line"]).reset_index(drop=True)
    assert got["line"].tolist() == want["line"].tolist() and got["label"].tolist() == want["label"].tolist()
    truth = _csv(tmp_path / "truth.csv", [["p7", MAX_LINE, 1]], ["program", "line", "truth"])
    t2 = cs.read_votes(src, truth=truth)
    assert t2.n_honeypots == 1
    lines = t2.lines_frame()
    assert lines[t2.arrays.truth != 0][["program", "line"]].values.tolist() == [["p7", MAX_LINE]]


def test_truth_and_program_tables_reject_numbers_that_do_not_fit(tmp_path):
    votes = _csv(tmp_path / "votes.csv", GOOD)
    truth = _csv(tmp_path / "truth.csv", [["p", 1, 1], ["p", "1e20", -1]], ["program", "line", "truth"])
    with pytest.raises(VoteTableError, match=r"truth\.csv: row 2, column 'line': expected an integer.*<= 9007199254740991"):
        cs.read_votes(votes, truth=truth)
    progs = _csv(tmp_path / "programs.csv", [["p", 3], ["q", 2**31]], ["program", "n_lines"])
    with pytest.raises(VoteTableError, match=r"programs\.csv: row 2, column 'n_lines': expected an integer.*<= 2147483647"):
        cs.read_votes(votes, programs=progs)


def test_float_ids_beyond_2p53_are_errors(tmp_path):
    """A program id read as a float (a JSONL column mixing 9007199254740993 and 1.5) cannot be exact."""
    ids = ["9007199254740993", "9007199254740992", "1.5"]
    src = _jsonl_text(tmp_path / "votes.jsonl", [_vote_json("1", program=p) for p in ids])
    with pytest.raises(VoteTableError, match=r"(?s)votes\.jsonl: row 1, column 'program'.*row 2, column 'program'"):
        cs.read_votes(src)
    df = pd.DataFrame({"program": [2.0**53, 1.0], "line": [1, 1], "annotator": ["a", "a"], "label": [1, 1]})
    with pytest.raises(VoteTableError, match=r"<DataFrame>: row 1, column 'program'"):
        cs.read_votes(df)


# ---------------------------------------------------------------- bad values that once raised


def test_json_object_id_is_an_error_naming_row_and_column(tmp_path):
    src = _jsonl_text(tmp_path / "votes.jsonl", _good_json() + [_vote_json("1", annotator='{"name": "x"}')])
    with pytest.raises(VoteTableError, match=r"votes\.jsonl: row 5, column 'annotator'.*JSON object"):
        cs.read_votes(src)
    src = _jsonl_text(tmp_path / "v2.jsonl", _good_json() + [_vote_json("1", program="[1, 2]")])
    with pytest.raises(VoteTableError, match=r"v2\.jsonl: row 5, column 'program'.*(list|array)"):
        cs.read_votes(src)


def test_invalid_utf8_names_file_row_and_column(tmp_path):
    p = tmp_path / "votes.csv"
    p.write_bytes(b"program,line,annotator,label\np,1,a,1\np,2,\xff\xfe,1\n")
    with pytest.raises(VoteTableError, match=r"votes\.csv: row 2, column 'annotator'.*UTF-8"):
        cs.read_votes(p)
    j = tmp_path / "votes.jsonl"
    j.write_bytes(("\n".join(_good_json()) + "\n").encode() + b'{"program": "p", "line": 3, "annotator": "\xff", "label": 1}\n')
    with pytest.raises(VoteTableError, match=r"votes\.jsonl: row 5, column 'annotator'.*UTF-8"):
        cs.read_votes(j)


def test_a_directory_as_votes_is_an_error(tmp_path):
    (tmp_path / "votes.csv").mkdir()
    with pytest.raises(VoteTableError, match=r"votes\.csv.*directory"):
        cs.read_votes(tmp_path / "votes.csv")


# ---------------------------------------------------------------- the CLI: one line per problem, exit 2


def _cli(*args, env=None, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "crowdstat", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _assert_one_line_errors(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert errors, r.stderr
    assert all(ERROR_LINE.match(ln) for ln in errors), r.stderr
    for n in needles:
        assert any(n in ln for ln in errors), (n, r.stderr)


def test_cli_errors_are_one_line_and_name_file_row_column(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    j = _jsonl_text(tmp_path / "votes.jsonl", _good_json() + [_vote_json("1", annotator='{"name": "x"}')])
    big = _csv(tmp_path / "big.csv", GOOD + [["p", "1e20", "c", 1]])
    bad_utf8 = tmp_path / "u.csv"
    bad_utf8.write_bytes(b"program,line,annotator,label\np,1,\xff,1\n")
    for src, needle in ((d, f"{d}: "), (j, f"{j}:5:annotator: "), (big, f"{big}:5:line: "), (bad_utf8, f"{bad_utf8}:1:annotator: ")):
        r = _cli("fit", src, "--method", "majority", "--out", tmp_path / "o")
        _assert_one_line_errors(r, needle)
        assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    r = _cli("fit", d, "--method", "majority", "--out", tmp_path / "o", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = _cli("fit", d, "--method", "majority", "--out", tmp_path / "o", env={"CROWDSTAT_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_pbar_honeypot_1_is_rejected_by_the_cli(tmp_path, capsys):
    from crowdstat.cli import main

    votes = _csv(tmp_path / "votes.csv", GOOD)
    for bad in ("1", "1.0", "1.5", "nan"):
        rc = main(["fit", str(votes), "--method", "sequential", "--pbar-honeypot", bad, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and "--pbar-honeypot" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    assert main(["fit", str(votes), "--method", "sequential", "--pbar-honeypot", "0.95", "--out", str(tmp_path / "o")]) == 0


def test_simulate_rejects_out_of_range_settings_in_one_line(tmp_path, capsys):
    from crowdstat.cli import main

    for extra in (["--honeypots", "1.5"], ["--p-buggy", "-0.1"], ["--lines", "0"], ["--programs", "0"], ["--per-item", "9"]):
        rc = main(["simulate", "--population", "expert:3", *extra, "--out", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("crowdstat simulate: error: "), (extra, err)
        assert not (tmp_path / "s").exists()


def test_compare_true_lines_reject_numbers_that_do_not_fit(tmp_path):
    from crowdstat.study.compare import compare

    votes = _csv(tmp_path / "votes.csv", GOOD)
    tl = _csv(tmp_path / "tl.csv", [["p", 1, 1], ["p", 2, 1], ["q", 1, 1], ["p", "1e20", -1]], ["program", "line", "truth"])
    with pytest.raises(VoteTableError, match=r"tl\.csv: row 4, column 'line': expected an integer"):
        compare(votes, true_lines=tl, methods=["majority"])


@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_simulate_seeds_that_jax_would_truncate_are_errors(tmp_path, capsys, seed):
    """JAX keeps 32 bits of a seed: 2**32 was silently seed 0 (and -1 seed 2**32 - 1); 10**20 a traceback."""
    from crowdstat.cli import main

    rc = main(["simulate", "--population", "expert:2", "--programs", "2", "--seed", seed, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("crowdstat simulate: error: seed: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()
