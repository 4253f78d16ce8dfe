"""`rl check`: results + summary from a samples file, and bad input named by file and line."""

from __future__ import annotations

import json

import pytest

from rl.cli import main as rl_main
from rl.execution.check import add_arguments, run


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def he_samples(n_per=2):
    from rl.tasks.benchmarks import load_humaneval

    ps = load_humaneval()[:3]
    rows = []
    for p in ps:
        rows.append({"task_id": p.task_id, "completion": p.canonical_solution, "extra": "kept"})
        for _ in range(n_per - 1):
            rows.append({"task_id": p.task_id, "completion": "    return None\n"})
    return rows


def test_check_humaneval_end_to_end(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", he_samples(n_per=2))
    out = tmp_path / "out" / "nested"
    code = rl_main(
        [
            "check",
            "--benchmark",
            "humaneval",
            "--samples",
            str(samples),
            "--out",
            str(out),
            "--workers",
            "2",
            "--timeout",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [r["status"] for r in rows] == ["passed", "failed"] * 3
    assert rows[0]["extra"] == "kept" and rows[0]["failing_test"] is None
    assert rows[1]["failing_test"] == 0 and rows[1]["exception_type"] in ("AssertionError", "TypeError")
    for k in ("status", "failing_test", "exception_type", "line", "message"):
        assert k in rows[1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 3 and summary["samples_per_problem"] == 2
    assert summary["pass_at_k"] == {"pass@1": pytest.approx(0.5)}  # k=10, 100 > 2 samples: skipped
    assert summary["status_counts"] == {"passed": 3, "failed": 3}
    assert isinstance(summary["network_isolated"], bool)
    # HumanEval's asserts are judged from returned values (rl.execution.verdict), recorded per sample
    assert {r["verdict"] for r in rows} <= {"io", "mixed", "in_process"} and sum(summary["verdict_counts"].values()) == 6
    assert summary["isolation"] == sorted({r["isolation"] for r in rows}) and set(summary["isolation"]) <= {"bwrap", "process"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files


def test_check_mbpp_accepts_int_and_string_ids(tmp_path):
    from rl.tasks.benchmarks import load_mbpp

    p = {q.task_id: q for q in load_mbpp("test")}["Mbpp/11"]
    rows = [
        {"task_id": 11, "completion": p.canonical_solution},
        {"task_id": "Mbpp/11", "completion": "def remove_Occ(s, ch):\n    return s\n"},
        {"task_id": "11", "completion": "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n"},
    ]
    samples = write_jsonl(tmp_path / "s.jsonl", rows)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--benchmark", "mbpp", "--samples", str(samples), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress"]
    )
    assert run(args) == 0
    got = [json.loads(l) for l in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert [g["task_id"] for g in got] == [11, "Mbpp/11", "11"]  # written back unchanged
    assert [g["status"] for g in got] == ["passed", "failed", "failed"]
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["n_problems"] == 1 and s["samples_per_problem"] == 3
    assert s["pass_at_k"]["pass@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"task_id": "HumanEval/0", "completion": "x"}', '{"task_id": "HumanEval/1", '], r"s\.jsonl:2: malformed JSON"),
        (['{"task_id": "HumanEval/0"}'], r"s\.jsonl:1: missing field 'completion'"),
        (['{"completion": "x"}'], r"s\.jsonl:1: missing field 'task_id'"),
        (
            ['{"task_id": "HumanEval/0", "completion": "x"}', "", '{"task_id": "HumanEval/999", "completion": "x"}'],
            r"s\.jsonl:3: unknown task_id 'HumanEval/999'",
        ),
        (['{"task_id": "HumanEval/0", "completion": 5}'], r"s\.jsonl:1: field 'completion' must be a string"),
        (["[1, 2]"], r"s\.jsonl:1: expected a JSON object"),
        ([], r"s\.jsonl: no samples"),
    ],
)
def test_bad_samples_are_rejected_before_running(tmp_path, capsys, lines, match):
    samples = write_jsonl(tmp_path / "s.jsonl", lines)
    out = tmp_path / "out"
    code = rl_main(["check", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(out), "--no-progress"])
    assert code == 2
    import re

    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()  # nothing ran, nothing written


def test_bad_mbpp_id_and_missing_file(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", ['{"task_id": "HumanEval/3", "completion": "x"}'])
    assert rl_main(["check", "--benchmark", "mbpp", "--samples", str(samples), "--out", str(tmp_path / "o")]) == 2
    assert "s.jsonl:1: bad MBPP task_id 'HumanEval/3'" in capsys.readouterr().err
    assert rl_main(["check", "--benchmark", "mbpp", "--samples", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "samples file not found" in capsys.readouterr().err
