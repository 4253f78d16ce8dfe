"""rl export / rl import: Label Studio and CSV round trips, and malformed results."""

import argparse
import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from rl.crowd import labelstudio as ls

PROMPT = 'def f(xs):\n    """Sum."""\n'
PROGRAMS = [
    {"program": "p1", "code": PROMPT + "    total = 0\n\n    for x in xs:\n        total += x\n    return total\n", "prompt": PROMPT},
    {"program": "p2", "code": "def g(a):\n    # note\n    return a * 2\n"},
    {"program": "p3", "code": "x = 1\ny = 2\nz = 3\n", "lines": [3, 1]},
]


def _run(kind, argv):
    p = argparse.ArgumentParser()
    getattr(ls, f"add_{kind}_arguments")(p)
    return getattr(ls, f"run_{kind}")(p.parse_args(argv))


def _programs(tmp_path):
    f = tmp_path / "programs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in PROGRAMS))
    return f


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_export_labelstudio_tasks_and_config(tmp_path):
    out = tmp_path / "tasks.json"
    assert _run("export", ["--programs", str(_programs(tmp_path)), "--format", "labelstudio", "--out", str(out)]) == 0
    tasks = json.loads(out.read_text())
    assert [(t["data"]["program"], t["data"]["line"]) for t in tasks] == [
        ("p1", 3),
        ("p1", 5),
        ("p1", 6),
        ("p1", 7),
        ("p2", 1),
        ("p2", 3),
        ("p3", 1),
        ("p3", 3),
    ]
    t = tasks[2]["data"]
    assert t["line_text"] == "        total += x" and t["lines"] == [3, 5, 6, 7]
    assert t["code"].split("\n")[0] == "  1 | def f(xs):" and t["code"].split("\n")[5] == ">>6 |         total += x"
    assert sum(row.startswith(">>") for row in t["code"].split("\n")) == 1
    cfg = ET.fromstring((tmp_path / "tasks.config.xml").read_text())
    choices = cfg.find(".//Choices")
    assert choices.get("name") == ls.CONTROL and choices.get("toName") == "line_text"
    assert [c.get("value") for c in choices.findall("Choice")] == ["correct", "wrong"]
    assert {x.get("value") for x in cfg.iter("Text")} == {"$code", "$line_text"}


def _ls_export(tasks, votes_by_task, rng):
    """What Label Studio's JSON export looks like after people labelled the tasks."""
    out = []
    for i, t in enumerate(tasks):
        anns = []
        for k, (user, choice) in enumerate(votes_by_task.get(i, [])):
            cb = {"id": user, "email": f"user{user}@lab.org", "first_name": "", "last_name": ""} if user % 2 else user
            anns.append(
                {
                    "id": 1000 * i + k,
                    "completed_by": cb,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-11-23T10:00:00.000000Z",
                    "lead_time": float(rng.uniform(1, 9)),
                    "result": [
                        {
                            "id": f"r{i}_{k}",
                            "type": "choices",
                            "value": {"choices": [choice]},
                            "origin": "manual",
                            "to_name": "line_text",
                            "from_name": "label",
                        }
                    ],
                    "task": i + 1,
                    "project": 3,
                }
            )
        # a skipped (cancelled) annotation carries no vote
        anns.append({"id": 999999 + i, "completed_by": 77, "was_cancelled": True, "result": [], "task": i + 1})
        out.append(
            {
                "id": i + 1,
                "data": t["data"],
                "annotations": anns,
                "predictions": [],
                "project": 3,
                "created_at": "2026-11-23T09:00:00.000000Z",
            }
        )
    return out


def test_labelstudio_round_trip(tmp_path):
    tasks = ls.export_labelstudio(ls.load_programs(_programs(tmp_path)))
    rng = np.random.default_rng(0)
    users = [4, 5, 8, 9]
    want, by_task = [], {}
    for i, t in enumerate(tasks):
        for u in rng.choice(users, size=int(rng.integers(1, 4)), replace=False):
            choice = "wrong" if rng.random() < 0.3 else "correct"
            by_task.setdefault(i, []).append((int(u), choice))
            who = f"user{u}@lab.org" if u % 2 else str(u)
            want.append((t["data"]["program"], t["data"]["line"], who, "+1" if choice == "correct" else "-1"))
    res = tmp_path / "export.json"
    res.write_text(json.dumps(_ls_export(tasks, by_task, rng)))
    out = tmp_path / "votes.csv"
    assert _run("import", ["--results", str(res), "--format", "labelstudio", "--out", str(out)]) == 0
    got = [(r["program"], int(r["line"]), r["annotator"], r["label"]) for r in _read(out)]
    assert got == want
    assert "77" not in {g[2] for g in got}
    assert out.read_text().splitlines()[0] == "program,line,annotator,label"


def test_csv_round_trip(tmp_path):
    out = tmp_path / "sheet.csv"
    assert _run("export", ["--programs", str(_programs(tmp_path)), "--format", "csv", "--out", str(out)]) == 0
    rows = _read(out)
    assert list(rows[0]) == ["program", "line", "code", "annotator", "label"] and len(rows) == 8
    assert (rows[1]["program"], rows[1]["line"], rows[1]["code"], rows[1]["label"]) == ("p1", "5", "    for x in xs:", "")
    # two annotators fill in copies of the sheet; one line left unlabelled
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        want = []
        for who, labels in (
            ("ann", ["correct", "wrong", "+1", "-1", "correct", "", "wrong", "correct"]),
            ("bob", ["1", "1", "1", "1", "-1", "-1", "+1", "+1"]),
        ):
            for r, lab in zip(rows, labels):
                w.writerow({**r, "annotator": who if lab else "", "label": lab})
                if lab:
                    want.append((r["program"], int(r["line"]), who, "+1" if lab in ("correct", "+1", "1") else "-1"))
    votes = tmp_path / "votes.csv"
    assert _run("import", ["--results", str(filled), "--format", "csv", "--out", str(votes)]) == 0
    got = [(r["program"], int(r["line"]), r["annotator"], r["label"]) for r in _read(votes)]
    assert got == want and len(got) == 15


def _task(**kw):
    base = {
        "id": 5,
        "data": {"program": "p1", "line": 3},
        "annotations": [
            {
                "completed_by": 1,
                "result": [{"from_name": "label", "to_name": "line_text", "type": "choices", "value": {"choices": ["wrong"]}}],
            }
        ],
    }
    base.update(kw)
    return base


def _ann(**kw):
    a = _task()["annotations"][0]
    a.update(kw)
    return a


@pytest.mark.parametrize(
    "payload,match",
    [
        ({"tasks": []}, r"r.json: expected a JSON list of tasks .* got dict"),
        ([_task(), {"id": 6}], r"r.json: task 1 \(id 6\): expected an object with a 'data' object"),
        ([_task(data={"line": 3})], r"r.json: task 0 \(id 5\): data has no 'program'"),
        ([_task(data={"program": "p", "line": "x"})], r"task 0 \(id 5\): data.line must be a non-negative integer"),
        ([_task(annotations=[_ann(completed_by=None)])], r"task 0 \(id 5\), annotation 0: missing or invalid completed_by"),
        ([_task(annotations=[_ann(completed_by={"first_name": "A"})])], r"annotation 0: completed_by has neither"),
        ([_task(annotations=[_ann(result=[])])], r"annotation 0: expected exactly one result from 'label', found 0"),
        (
            [_task(annotations=[_ann(result=[{"from_name": "label", "type": "choices", "value": {"choices": ["maybe"]}}])])],
            r"annotation 0: choices must be exactly one of \['correct', 'wrong'\], got \['maybe'\]",
        ),
        (
            [_task(annotations=[_ann(result=[{"from_name": "label", "type": "choices", "value": {"choices": ["wrong", "correct"]}}])])],
            r"choices must be exactly one",
        ),
        (
            [_task(annotations=[_ann(result=[{"from_name": "label", "type": "labels", "value": {}}])])],
            r"result type 'labels', expected 'choices'",
        ),
        ([_task(), _task(id=9)], r"task 1 \(id 9\), annotation 0: annotator '1' labelled program 'p1' line 3 again \(first in task 0\)"),
        ([_task(annotations=[_ann(was_cancelled=True)])], r"r.json: no \(non-cancelled\) annotations"),
        ([_task(annotations={"a": 1})], r"task 0 \(id 5\): 'annotations' must be a list"),
    ],
)
def test_bad_labelstudio_results(tmp_path, payload, match):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=match):
        ls.import_labelstudio(f)


@pytest.mark.parametrize(
    "text,match",
    [
        ("program,line,label\np,1,correct\n", r"s.csv: missing column\(s\) \['annotator'\]"),
        ("program,line,annotator,label\np,1,a,correct\np,2,a,maybe\n", r"s.csv: row 2, column label: unknown label 'maybe'"),
        ("program,line,annotator,label\np,one,a,correct\n", r"s.csv: row 1, column line: 'one' is not a non-negative integer"),
        ("program,line,annotator,label\np,1,,wrong\n", r"s.csv: row 1, column annotator: empty annotator"),
        (
            "program,line,annotator,label\np,1,a,wrong\np,1,a,correct\n",
            r"s.csv: row 2: annotator 'a' labelled program 'p' line 1 twice \(first at row 1\)",
        ),
        ("program,line,annotator,label\np,1,a,0\np,2,a,-1\n", r"s.csv: labels mix the 1/0 coding with -1"),
        ("program,line,annotator,label\np,1,,\n", r"s.csv: no labelled rows"),
    ],
)
def test_bad_csv_results(tmp_path, text, match):
    f = tmp_path / "s.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        ls.import_csv(f)


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text("[{")
    out = tmp_path / "votes.csv"
    assert _run("import", ["--results", str(bad), "--out", str(out)]) == 2
    assert "r.json: not valid JSON" in capsys.readouterr().err and not out.exists()
    progs = tmp_path / "p.jsonl"
    progs.write_text('{"program": "a", "code": "x = 1\\n", "lines": [4]}\n')
    assert _run("export", ["--programs", str(progs), "--out", str(tmp_path / "t.json")]) == 2
    assert "p.jsonl:1: lines must be a list of line numbers in 1..2, got [4]" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
