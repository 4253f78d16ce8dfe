"""The reward file: schema, validation errors, atomic writes (crowdstat.io.rewards, no JAX)."""

import json
import math
import subprocess
import sys

import pytest

from crowdstat.io.rewards import SCHEMA_VERSION, RewardFileError, read_rewards, write_rewards


def _rec(**kw):
    r = {
        "program": "p1",
        "reward": 0.5,
        "reward_soft": 0.6,
        "n_lines": 3,
        "n_annotated": 2,
        "coverage": 2 / 3,
        "lines": [1, 3],
        "posteriors": [0.9, 0.3],
        "tau": 0.5,
        "method": "proximal",
    }
    r.update(kw)
    return r


def test_round_trip(tmp_path):
    p = tmp_path / "rewards.jsonl"
    write_rewards(p, [_rec(), _rec(program="p2", lines=[2, 5], n_lines=5, coverage=0.4)])
    back = read_rewards(p)
    assert [r["program"] for r in back] == ["p1", "p2"]
    assert back[0]["schema_version"] == SCHEMA_VERSION
    assert back[1]["lines"] == [2, 5]
    assert back[0]["posteriors"] == [0.9, 0.3]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"schema_version": 2}, "schema_version"),
        ({"reward": float("nan")}, "'reward'"),
        ({"reward": 1.5}, "'reward'"),
        ({"posteriors": [0.9]}, "'posteriors' has 1"),
        ({"posteriors": [0.9, float("nan")]}, r"'posteriors'\[1\]"),
        ({"lines": [3, 1]}, "ascending"),
        ({"n_annotated": 3}, "n_annotated"),
        ({"program": 7}, "'program'"),
    ],
)
def test_bad_records_are_rejected_with_file_line_and_field(tmp_path, change, match):
    p = tmp_path / "rewards.jsonl"
    good = json.dumps({"schema_version": SCHEMA_VERSION, **_rec(program="p0")})
    bad = {"schema_version": SCHEMA_VERSION, **_rec()}
    bad.update(change)
    p.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RewardFileError, match=match) as e:
        read_rewards(p)
    assert str(e.value).startswith(f"{p}:2: ")


def test_missing_field_and_duplicate_program(tmp_path):
    p = tmp_path / "r.jsonl"
    rec = {"schema_version": SCHEMA_VERSION, **_rec()}
    del rec["coverage"]
    p.write_text(json.dumps(rec) + "\n")
    with pytest.raises(RewardFileError, match="missing field 'coverage'"):
        read_rewards(p)
    full = json.dumps({"schema_version": SCHEMA_VERSION, **_rec()})
    p.write_text(full + "\n" + full + "\n")
    with pytest.raises(RewardFileError, match="duplicate program 'p1' \\(first at line 1\\)"):
        read_rewards(p)


def test_write_refuses_invalid_and_leaves_old_file(tmp_path):
    p = tmp_path / "rewards.jsonl"
    write_rewards(p, [_rec()])
    before = p.read_text()
    with pytest.raises(RewardFileError):
        write_rewards(p, [_rec(program="x"), _rec(program="y", reward=math.inf)])
    assert p.read_text() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["rewards.jsonl"]  # no temp file left


def test_rewards_io_loads_no_jax():
    code = "import sys, crowdstat.io.rewards; assert 'jax' not in sys.modules, 'jax'; assert 'pandas' not in sys.modules, 'pandas'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_read_jsonl_names_file_and_line(tmp_path):
    """The one JSONL reader (reward files here; rl's samples, programs, rollouts, prompts)."""
    from crowdstat.io.jsonl import read_jsonl

    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n  \n{"b": NaN}\n{"c": ]}\n')
    rows = read_jsonl(p)
    assert [next(rows)[:2], next(rows)[:2]] == [(1, f"{p}:1"), (4, f"{p}:4")]  # blank lines skipped
    with pytest.raises(ValueError, match=r"x\.jsonl:5: malformed JSON \(Expecting value at column 7\)"):
        next(rows)
    p.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(RewardFileError, match=r"x\.jsonl:2: expected a JSON object, got list"):
        list(read_jsonl(p, RewardFileError))


def test_read_jsonl_names_file_line_and_byte_of_invalid_utf8(tmp_path):
    """Before: ``rl annotate`` / ``rl export`` on such a file said only "'utf-8' codec can't decode byte 0xff"."""
    from crowdstat.io.jsonl import read_jsonl

    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"program": "a"}\n\n{"program": "x\xff"}\r\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: not valid UTF-8 \(byte 0xff at column 15\)$"):
        list(read_jsonl(p))
    p.write_bytes(b'{"program": "a"}\r\n{"program": "b"}\n')
    assert [o["program"] for _, _, o in read_jsonl(p)] == ["a", "b"]
