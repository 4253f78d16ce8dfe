"""rl annotate: programs file (truth given / truth by execution), benchmark mode, outputs, errors."""

import argparse
import csv
import json

import pytest

from rl.crowd import annotate
from rl.tasks import benchmarks


def rl_main(argv):
    """``rl annotate ...`` through the module's own parser (rl.cli imports every subcommand, torch
    included; the real CLI is exercised once in test_rl_cli_registers_annotate)."""
    assert argv[0] == "annotate"
    p = argparse.ArgumentParser(prog="rl annotate")
    annotate.add_arguments(p)
    return annotate.run(p.parse_args(argv[1:]))


POP = "expert:2@0.95,novice:2@0.7,adversary:1@0.3"


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _given(n=10):
    return [
        {
            "program": f"prog{i}",
            "code": "def f(x):\n\n    y = x + 1\n    return y\n",
            "truth": [[1, 1], [3, "wrong" if i % 3 == 0 else "correct"], [4, 1]],
        }
        for i in range(n)
    ]


def test_outputs_from_given_truth(tmp_path):
    progs = _write_jsonl(tmp_path / "p.jsonl", _given())
    out = tmp_path / "ann"
    rc = rl_main(["annotate", "--programs", str(progs), "--population", POP, "--honeypots", "0.3", "--out", str(out), "--seed", "5"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".crowdstat-output.json",  # the manifest of every output directory (docs/cli.md)
        "annotate.json",
        "annotators.csv",
        "programs.csv",
        "programs.jsonl",
        "true_lines.csv",
        "truth.csv",
        "votes.csv",
    ]
    votes, truth, sizes = _read(out / "votes.csv"), _read(out / "truth.csv"), _read(out / "programs.csv")
    true_lines, anns = _read(out / "true_lines.csv"), _read(out / "annotators.csv")
    assert list(votes[0]) == ["program", "line", "annotator", "label"]
    assert len(votes) == 10 * 3 * 5 and {v["label"] for v in votes} == {"+1", "-1"}
    hp = [r["program"] for r in sizes[:3]]
    assert len({t["program"] for t in truth}) == 3 and {t["program"] for t in truth} == set(hp)
    # honeypots first in the vote table, same order in every file
    first_seen = list(dict.fromkeys(v["program"] for v in votes))
    assert first_seen[:3] == hp and first_seen == [r["program"] for r in sizes]
    assert [r["program"] for r in sizes] == list(dict.fromkeys(r["program"] for r in true_lines))
    assert all(r["n_lines"] == "4" for r in sizes)
    assert len(true_lines) == 30 and len(truth) == 9
    want = {(f"prog{i}", "3"): ("-1" if i % 3 == 0 else "+1") for i in range(10)}
    assert all(want.get((r["program"], r["line"]), "+1") == r["truth"] for r in true_lines)
    assert [a["annotator"] for a in anns] == ["expert01", "expert02", "novice01", "novice02", "adversary01"]
    assert anns[4]["reliability"] == "0.3" and anns[0]["n_votes"] == "30"
    recs = [json.loads(t) for t in (out / "programs.jsonl").read_text().splitlines()]
    assert [r["program"] for r in recs] == [r["program"] for r in sizes]
    assert recs[0]["lines"] == [1, 3, 4] and recs[0]["honeypot"] and not recs[3]["honeypot"]
    meta = json.loads((out / "annotate.json").read_text())
    assert (meta["n_programs"], meta["n_honeypots"], meta["n_wrong_lines"], meta["n_votes"]) == (10, 3, 4, 150)
    # deterministic in the seed; another seed changes the votes
    out2, out3 = tmp_path / "again", tmp_path / "other"
    rl_main(["annotate", "--programs", str(progs), "--population", POP, "--honeypots", "0.3", "--out", str(out2), "--seed", "5"])
    rl_main(["annotate", "--programs", str(progs), "--population", POP, "--honeypots", "0.3", "--out", str(out3), "--seed", "6"])
    assert (out2 / "votes.csv").read_bytes() == (out / "votes.csv").read_bytes()
    assert (out3 / "votes.csv").read_bytes() != (out / "votes.csv").read_bytes()


def test_per_program_and_no_honeypots(tmp_path):
    progs = _write_jsonl(tmp_path / "p.jsonl", _given(4))
    out = tmp_path / "ann"
    assert (
        rl_main(["annotate", "--programs", str(progs), "--population", POP, "--honeypots", "0", "--per-program", "2", "--out", str(out)])
        == 0
    )
    votes = _read(out / "votes.csv")
    assert len(votes) == 4 * 3 * 2 and _read(out / "truth.csv") == []
    for p in {v["program"] for v in votes}:
        assert len({v["annotator"] for v in votes if v["program"] == p}) == 2


def test_truth_by_execution(tmp_path):
    he = {p.task_id: p for p in benchmarks.load_humaneval()[:4]}
    p3 = he["HumanEval/3"]
    bad = p3.canonical_solution.replace("balance < 0", "balance <= 0")
    mb = benchmarks.load_mbpp()[0]  # Mbpp/11
    recs = [
        {"program": "ok", "code": p3.canonical_program, "task_id": "HumanEval/3"},
        {"program": "bad", "code": p3.prompt + bad, "task_id": "HumanEval/3"},
        {"program": 7, "code": mb.canonical_program, "task_id": 11},
    ]
    progs = _write_jsonl(tmp_path / "p.jsonl", recs)
    out = tmp_path / "ann"
    # task_id 11 has no prefix: --benchmark would be needed, so the error names the row
    rc = rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out)])
    assert rc == 2 and not out.exists()
    recs[2]["task_id"] = "Mbpp/11"
    _write_jsonl(progs, recs)
    assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out), "--honeypots", "0"]) == 0
    tl = _read(out / "true_lines.csv")
    wrong = {(r["program"], int(r["line"])) for r in tl if r["truth"] == "-1"}
    line = 1 + next(i for i, t in enumerate((p3.prompt + bad).split("\n")) if "balance <= 0" in t)
    assert wrong == {("bad", line)}
    assert {r["program"] for r in tl} == {"ok", "bad", "7"}
    recs_out = {json.loads(t)["program"]: json.loads(t) for t in (out / "programs.jsonl").read_text().splitlines()}
    assert recs_out["bad"]["status"] == "failed" and recs_out["ok"]["status"] == "passed"
    assert recs_out["7"]["task_id"] == "Mbpp/11"
    assert min(recs_out["ok"]["lines"]) == p3.prompt.count("\n") + 1  # the prompt is not annotated


def test_benchmark_mode_canonical_plus_mutants(tmp_path):
    out = tmp_path / "he"
    assert (
        rl_main(
            [
                "annotate",
                "--benchmark",
                "humaneval",
                "--n-problems",
                "3",
                "--mutants-per-problem",
                "2",
                "--population",
                POP,
                "--honeypots",
                "0.5",
                "--out",
                str(out),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    recs = [json.loads(t) for t in (out / "programs.jsonl").read_text().splitlines()]
    kinds = sorted(r["source"] for r in recs)
    assert kinds.count("canonical") == 3 and kinds.count("mutant") == 6
    tl = _read(out / "true_lines.csv")
    for r in recs:
        wrong = [int(x["line"]) for x in tl if x["program"] == r["program"] and x["truth"] == "-1"]
        assert (len(wrong) == 1) == (r["source"] == "mutant"), r
    assert sum(r["honeypot"] for r in recs) == 4 + 1 - 1  # round(0.5 * 9) = 4 honeypots (banker's rounding)


def test_annotators_csv_uses_the_common_meaning(tmp_path):
    """sensitivity = P(vote +1 | correct line), specificity = P(vote -1 | wrong line), in the file and in the votes."""
    progs = _write_jsonl(tmp_path / "p.jsonl", _given(600))  # 200 wrong lines (line 3 of every third program), 1600 correct
    out = tmp_path / "ann"
    spec = "twocoin@0.9/0.6, lazy@0.8,spammer@0.7"
    assert rl_main(["annotate", "--programs", str(progs), "--population", spec, "--honeypots", "0", "--out", str(out)]) == 0
    anns = {a["annotator"]: a for a in _read(out / "annotators.csv")}
    want = {"twocoin01": (0.9, 0.6), "lazy01": (1.0, 0.2), "spammer01": (0.7, 0.3)}
    assert {k: (float(a["sensitivity"]), float(a["specificity"])) for k, a in anns.items()} == want
    for k, (sens, spec_) in want.items():  # reliability on 1600 correct and 200 wrong lines
        assert float(anns[k]["reliability"]) == pytest.approx((1600 * sens + 200 * spec_) / 1800, rel=1e-5)
    assert json.loads((out / "annotate.json").read_text())["population"] == "twocoin:1@0.9/0.6,lazy:1@0.8,spammer:1@0.7"
    tl = {(r["program"], r["line"]): r["truth"] for r in _read(out / "true_lines.csv")}
    votes = _read(out / "votes.csv")
    for k, (sens, spec_) in want.items():
        mine = [(v["label"], tl[(v["program"], v["line"])]) for v in votes if v["annotator"] == k]
        on_correct = [lab == "+1" for lab, t in mine if t == "+1"]
        on_wrong = [lab == "-1" for lab, t in mine if t == "-1"]
        assert len(on_correct) == 1600 and len(on_wrong) == 200
        assert abs(sum(on_correct) / 1600 - sens) <= 4 * (sens * (1 - sens) / 1600) ** 0.5 + 1e-12, k
        assert abs(sum(on_wrong) / 200 - spec_) <= 4 * (spec_ * (1 - spec_) / 200) ** 0.5 + 1e-12, k


def test_crowdstat_reads_the_outputs(tmp_path):
    cs = pytest.importorskip("crowdstat")
    if not hasattr(cs, "fit"):
        pytest.skip("crowdstat.fit not available")
    progs = _write_jsonl(tmp_path / "p.jsonl", _given(12))
    out = tmp_path / "ann"
    assert rl_main(["annotate", "--programs", str(progs), "--population", "expert:5@0.95", "--honeypots", "0.25", "--out", str(out)]) == 0
    res = cs.fit(out / "votes.csv", truth=out / "truth.csv", method="majority", programs=out / "programs.csv")
    assert len(res.lines) == 36 and len(res.rewards) == 12
    # five experts at 0.95: the majority recovers (almost) every true label
    tl = {(r["program"], int(r["line"])): r["truth"] == "+1" for r in _read(out / "true_lines.csv")}
    got = {(str(r.program), int(r.line)): r.posterior > 0.5 for r in res.lines.itertuples()}
    assert set(got) == set(tl)
    assert sum(got[k] == tl[k] for k in tl) >= 34


@pytest.mark.parametrize(
    "recs,match",
    [
        ([{"program": "a"}], r"p.jsonl:1: missing field 'code'"),
        (
            [{"program": "a", "code": "x = 1\n", "truth": [[1, 1]]}, {"program": "a", "code": "x = 1\n", "truth": [[1, 1]]}],
            r"p.jsonl:2: duplicate program id 'a' \(first at line 1\)",
        ),
        ([{"program": "a", "code": "x = 1\n"}], r"p.jsonl:1: needs 'truth' .* or 'task_id'"),
        ([{"program": "a", "code": "x = 1\n", "truth": [[1, "maybe"]]}], r"p.jsonl:1: truth line 1: unknown label 'maybe'"),
        ([{"program": "a", "code": "x = 1\n", "truth": [[3, 1]]}], r"p.jsonl:1: truth line 3 outside the program's lines 1..1"),
        ([{"program": "a", "code": "x = 1\ny = 2\n", "truth": [[1, -1], [2, 0]]}], r"p.jsonl:1: truth mixes the 1/0 coding"),
        ([{"program": "a", "code": "x = 1\n", "truth": [[1, 1], [1, 1]]}], r"p.jsonl:1: truth line 1 given twice"),
        ([{"program": "", "code": "x = 1\n", "truth": [[1, 1]]}], r"p.jsonl:1: program id must be a non-empty string"),
        ([{"program": "a", "code": "x = 1\n", "truth": []}], r"p.jsonl:1: truth is empty"),
    ],
)
def test_bad_programs_file(tmp_path, recs, match):
    progs = _write_jsonl(tmp_path / "p.jsonl", recs)
    with pytest.raises(ValueError, match=match):
        annotate.load_programs(progs)


def test_bad_input_exits_2_and_keeps_existing_dir(tmp_path, capsys):
    progs = tmp_path / "p.jsonl"
    progs.write_text('{"program": "a", "code": "x = 1\\n", "truth": [[1, 1]]}\nnot json\n')
    out = tmp_path / "ann"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    # --force: the bad inputs, not the foreign --out, are what stops these runs
    assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out), "--force"]) == 2
    assert "p.jsonl:2: malformed JSON" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    _write_jsonl(progs, _given(2))
    for extra, msg in (
        (["--population", "wizard:2"], "unknown annotator kind"),
        (["--honeypots", "1.5"], "--honeypots must be a fraction in [0, 1], got 1.5"),
        (["--per-program", "9"], "--per-program must be between 1 and the population size 5"),
    ):
        args = ["annotate", "--programs", str(progs), "--population", POP, "--out", str(out), "--force"] + extra
        if extra[0] == "--population":
            args = ["annotate", "--programs", str(progs), "--out", str(out), "--force"] + extra
        assert rl_main(args) == 2
        assert msg in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert rl_main(["annotate", "--population", POP, "--out", str(out), "--force"]) == 2
    assert "give --programs FILE, or --benchmark" in capsys.readouterr().err
    # a directory rl annotate did not write is replaced only with --force; its own output without
    assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["keep.txt"]
    assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "votes.csv").exists()
    assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(out)]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ann.")]  # no temporary leftovers


def test_out_never_deletes_what_annotate_did_not_write(tmp_path, monkeypatch, capsys):
    """Issue 15: --out ., the programs file's directory, a file: refused even with --force, nothing touched."""
    data = tmp_path / "data"
    data.mkdir()
    progs = _write_jsonl(data / "p.jsonl", _given(2))
    (data / "notes.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("precious")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(data)
    for out in (".", str(data), str(tmp_path), str(tmp_path / "file.txt"), str(progs)):
        for force in ([], ["--force"]):
            assert rl_main(["annotate", "--programs", str(progs), "--population", POP, "--out", out, *force]) == 2, out
            err = capsys.readouterr().err.strip()
            assert err.startswith("rl annotate: error: ") and len(err.splitlines()) == 1, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file.txt"]


@pytest.mark.slow
def test_rl_cli_registers_annotate(tmp_path):
    from rl.cli import main

    progs = _write_jsonl(tmp_path / "p.jsonl", _given(3))
    assert main(["annotate", "--programs", str(progs), "--population", POP, "--out", str(tmp_path / "o")]) == 0
    assert len(_read(tmp_path / "o" / "votes.csv")) == 3 * 3 * 5
