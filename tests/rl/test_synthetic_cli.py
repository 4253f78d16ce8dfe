"""The synthetic benchmark in every command that chooses a benchmark, and ``rl prompts`` (issue 20):
the one-iteration pipeline of docs/rl.md on the tiny CPU model."""

from __future__ import annotations

import csv
import json

import pytest

from rl.cli import main
from rl.tasks.benchmarks import benchmark_of, load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_benchmark_of_prefixes():
    assert benchmark_of("synth/train/add_const/0003") == "synthetic"
    assert benchmark_of("HumanEval/3") == "humaneval" and benchmark_of("Mbpp/11") == "mbpp"
    assert benchmark_of("other/1") is None


def test_rl_prompts_writes_what_rl_generate_reads(tmp_path, capsys):
    from rl.policy.rollouts import read_prompts

    out = tmp_path / "prompts.jsonl"
    assert main(["prompts", "--benchmark", "synthetic", "--split", "train", "--n", "16", "--out", str(out)]) == 0
    prompts, task_ids = read_prompts(out)
    assert len(prompts) == 16 and task_ids is not None
    assert all(t.startswith("synth/train/") for t in task_ids)
    assert len({t.split("/")[2] for t in task_ids}) > 3  # a random draw, not the first template's problems
    by_id = {p.task_id: p for p in load("synthetic", split="train")}
    assert all(by_id[t].prompt == p for t, (_, p) in zip(task_ids, prompts))
    # the same seed draws the same prompts
    again = tmp_path / "again.jsonl"
    assert main(["prompts", "--benchmark", "synthetic", "--split", "train", "--n", "16", "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()


def test_rl_prompts_rejects_more_than_the_split_has(tmp_path, capsys):
    rc = main(["prompts", "--benchmark", "synthetic", "--split", "heldout", "--n", "100000", "--out", str(tmp_path / "p.jsonl")])
    assert rc == 2 and "--n" in capsys.readouterr().err


def test_rl_annotate_recognises_synthetic_task_ids(tmp_path, capsys):
    probs = load("synthetic", split="train")[:6]
    rows = [{"program": f"p{i}", "code": p.prompt + p.canonical_solution, "task_id": p.task_id} for i, p in enumerate(probs)]
    rows.append({"program": "bad", "code": probs[0].prompt + "    return None\n", "task_id": probs[0].task_id})
    src = tmp_path / "rollouts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["annotate", "--programs", str(src), "--out", str(tmp_path / "crowd"), "--workers", "1"]) == 0
    true_lines = list(csv.DictReader(open(tmp_path / "crowd" / "true_lines.csv")))
    n_prompt = {r["program"]: len(p.prompt.splitlines()) for r, p in zip(rows, probs + [probs[0]])}
    # only completion lines are annotated (the prompt is the unannotated prefix, as in rl loop)
    assert true_lines and all(int(t["line"]) > n_prompt[t["program"]] for t in true_lines)
    assert {t["truth"] for t in true_lines if t["program"] != "bad"} == {"+1"}
    assert {t["truth"] for t in true_lines if t["program"] == "bad"} == {"-1"}
    # and --benchmark synthetic is accepted too
    assert main(["annotate", "--programs", str(src), "--benchmark", "synthetic", "--out", str(tmp_path / "c2"), "--workers", "1"]) == 0


def test_rl_check_synthetic_with_k(tmp_path, capsys):
    probs = load("synthetic")[:3]
    rows = [{"task_id": p.task_id, "completion": c} for p in probs for c in (p.canonical_solution, "    return 0\n", p.canonical_solution)]
    src = tmp_path / "samples.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["check", "--benchmark", "synthetic", "--samples", str(src), "--out", str(out), "--workers", "1", "--k", "1", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "heldout"
    assert set(summary["pass_at_k"]) == {"pass@1", "pass@2"}
    assert summary["pass_at_k"]["pass@2"] >= summary["pass_at_k"]["pass@1"] > 0
    assert "pass@2=" in capsys.readouterr().out


def test_rl_check_k_larger_than_n_is_an_error(tmp_path, capsys):
    p = load("synthetic")[0]
    src = tmp_path / "samples.jsonl"
    src.write_text(json.dumps({"task_id": p.task_id, "completion": p.canonical_solution}) + "\n")
    rc = main(["check", "--benchmark", "synthetic", "--samples", str(src), "--out", str(tmp_path / "o"), "--workers", "1", "--k", "5"])
    assert rc == 2 and "--k" in capsys.readouterr().err
