"""The project side of the Label Studio server path, without a server (fast; in `make test`).

The recorded reply ``tests/data/labelstudio/pull_reply.json`` is what ``ls_driver.py pull`` returned from
a real Label Studio 1.23.2 after annotator a1 labelled program p1 and then edited its answer, a2 marked
one of p1's two lines (the other left unmarked), and a2 labelled p2 and then skipped it (its annotation
turned cancelled). ``round.json`` is the manifest of that push.
"""

from __future__ import annotations

import copy
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rl.crowd import ls_round
from rl.crowd.ls_events import read_truth
from rl.crowd.ls_server import LabelStudioError, check_venv, read_server_json

DATA = Path(__file__).resolve().parents[1] / "data" / "labelstudio"
PROGS = [
    {"program": "p1", "code": "def f(x):\n    y = x + 1\n    return y\n", "lines": [2, 3]},
    {"program": "p2", "code": "def g(a):\n    if a:\n        return 1\n    return 0\n", "lines": [2, 3, 4]},
]


def _recorded():
    reply = json.loads((DATA / "pull_reply.json").read_text())
    return reply["tasks"], reply["users"], json.loads((DATA / "round.json").read_text())


def test_label_config_has_one_choice_control_per_line_through_the_repeater():
    root = ET.fromstring(ls_round.LABEL_CONFIG)
    rep = root.find(".//Repeater")
    assert rep is not None and rep.get("on") == "$lines" and rep.get("indexFlag") == "{{idx}}"
    choices = rep.findall(".//Choices")
    assert len(choices) == 1 and choices[0].get("name") == "line_{{idx}}" and choices[0].get("toName") == "text_{{idx}}"
    assert [c.get("value") for c in choices[0]] == list(ls_round.CHOICES)
    assert rep.find(".//Text").get("value") == "$lines[{{idx}}].text"
    assert ls_round.control_name(3) == "line_3"


@pytest.mark.parametrize("n", [1, 3, 12])
def test_task_data_for_n_lines(n):
    code = "".join(f"x{i} = {i}\n" for i in range(1, 15))
    lines = list(range(2, 2 + n))
    d = ls_round.task_data("t0007", code, lines)
    assert d["key"] == "t0007" and [e["n"] for e in d["lines"]] == lines
    assert len(d["code"].splitlines()) == 14 and d["code"].splitlines()[0] == " 1 | x1 = 1"
    assert d["lines"][0]["text"] == f"{2:>2} | x2 = 2"


def test_build_push_hides_honeypots_and_their_truth():
    progs = PROGS + [{"program": f"HumanEval/{i}#m1", "code": f"def h():\n    return {i}\n", "lines": [2]} for i in range(8)]
    honey = {f"HumanEval/{i}#m1": {2: -1} for i in range(8)}
    req, man = ls_round.build_push(progs, honeypots=honey, annotators=["a", "b", "c"], per_program=2, passwords={"a": "x" * 12})
    assert req["maximum_annotations"] == 2 and req["label_config"] == ls_round.LABEL_CONFIG
    sent = json.dumps(req["tasks"])
    assert "HumanEval" not in sent and "#m1" not in sent and "honeypot" not in sent and "truth" not in sent
    assert all(set(t["data"]) == {"key", "code", "lines"} for t in req["tasks"])
    order = [t["program"] for t in man["tasks"]]
    assert sorted(order) == sorted(p["program"] for p in progs) and order[:8] != [f"HumanEval/{i}#m1" for i in range(8)]
    assert man["honeypots"]["HumanEval/3#m1"] == {"2": -1}
    assert req["annotators"] == [{"email": "a@crowd.local", "password": "x" * 12}]  # only accounts with a password sign up
    assert [t["key"] for t in man["tasks"]] == [t["data"]["key"] for t in req["tasks"]]
    _, m2 = ls_round.build_push(PROGS, annotators=["a"], per_program=None, key_prefix="r002-")
    assert m2["tasks"][0]["key"].startswith("r002-t")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(annotators=[], per_program=None), "annotators"),
        (dict(annotators=["a", "a"], per_program=None), "distinct"),
        (dict(annotators=["a", "b"], per_program=3), "per_program"),
        (dict(annotators=["a"], per_program=None, honeypots={"zz": {1: 1}}), "not in the round"),
    ],
)
def test_build_push_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        ls_round.build_push(PROGS, **kw)


def test_votes_from_recorded_export_edits_skips_unmarked():
    tasks, users, man = _recorded()
    rows, rep = ls_round.votes_from_export(tasks, users, man)
    # a1's edit (both lines wrong) replaced its first answer (+1, -1); a2 left line 3 unmarked; a2 skipped p2
    assert [r[:4] for r in rows] == [("p1", 2, "a1", -1), ("p1", 2, "a2", -1), ("p1", 3, "a1", -1)]
    assert rows[0][4] == 2 and rows[0][6] > rows[0][5] and rows[0][7] == 5.0  # user id, edited later, seconds
    assert rep["cancelled"] == [{"program": "p2", "annotator": "a2"}] and rep["unmarked"] == 1 and rep["annotations"] == 2
    assert rep["replaced"] == 0 and rep["foreign_tasks"] == 0 and rep["bad_results"] == []


def test_votes_from_export_keeps_the_latest_of_duplicates_and_ignores_foreign_tasks():
    tasks, users, man = _recorded()
    tasks = copy.deepcopy(tasks)
    p1 = next(t for t in tasks if t["data"]["key"] == "t0002")
    old = copy.deepcopy(next(a for a in p1["annotations"] if a["completed_by"] == 2))
    old.update(
        id=99, updated_at="2000-01-01T00:00:00Z", result=[{"from_name": "line_0", "type": "choices", "value": {"choices": ["correct"]}}]
    )
    p1["annotations"].append(old)
    p1["annotations"].append({"id": 100, "completed_by": 1, "result": [{"from_name": "nope", "value": {"choices": ["x"]}}]})
    tasks.append({"id": 50, "data": {"key": "other"}, "annotations": []})
    rows, rep = ls_round.votes_from_export(tasks, users, man)
    assert [r[:4] for r in rows if r[2] == "a1"] == [("p1", 2, "a1", -1), ("p1", 3, "a1", -1)]
    assert rep["replaced"] == 1 and rep["foreign_tasks"] == 1
    assert rep["bad_results"][0]["annotator"] == "admin@crowd.local"  # no manifest id: the e-mail


def test_crowd_annotations_round_trip_through_the_export_shape():
    _, man = ls_round.build_push(PROGS, annotators=["a1", "a2"], per_program=None, passwords={"a1": "p" * 12, "a2": "q" * 12})
    ids = {t["key"]: i for i, t in enumerate(man["tasks"], 10)}
    votes = [("p1", 2, "a1", 1), ("p1", 3, "a1", -1), ("p2", 4, "a2", -1)]
    anns = ls_round.crowd_annotations(man, ids, votes)
    assert [a["email"] for a in anns] == ["a1@crowd.local", "a2@crowd.local"]
    # fake the export Label Studio would give for these annotations
    users = [{"id": 7, "email": "a1@crowd.local"}, {"id": 8, "email": "a2@crowd.local"}]
    uid = {"a1@crowd.local": 7, "a2@crowd.local": 8}
    by_task = {}
    for a in anns:
        for k, x in enumerate(a["annotations"]):
            by_task.setdefault(x["task"], []).append({"id": k, "completed_by": uid[a["email"]], "result": x["result"], "updated_at": "t"})
    export = [{"id": i, "data": {"key": key}, "annotations": by_task.get(i, [])} for key, i in ids.items()]
    rows, _ = ls_round.votes_from_export(export, users, man)
    assert sorted(r[:4] for r in rows) == sorted(votes)
    with pytest.raises(ValueError, match="not a pushed line"):
        ls_round.crowd_annotations(man, ids, [("p1", 1, "a1", 1)])
    with pytest.raises(ValueError, match="no account"):
        ls_round.crowd_annotations(man, ids, [("p1", 2, "zz", 1)])


def test_write_votes_detail_and_plain(tmp_path):
    rows = [("p1", 2, "a1", -1, 2, "c", "u", 5.0), ("p1", 3, "a1", 1, 2, "c", "u", 5.0)]
    ls_round.write_votes(tmp_path / "d.csv", rows)
    ls_round.write_votes(tmp_path / "v.csv", rows, detail=False)
    d = list(csv.reader(open(tmp_path / "d.csv")))
    assert d[0] == ls_round.DETAIL_COLUMNS and d[1] == ["p1", "2", "a1", "-1", "2", "c", "u", "5.0"]
    assert list(csv.reader(open(tmp_path / "v.csv"))) == [ls_round.VOTE_COLUMNS, ["p1", "2", "a1", "-1"], ["p1", "3", "a1", "+1"]]


def test_server_file_and_venv_errors_are_one_line(tmp_path):
    with pytest.raises(LabelStudioError, match="no server file"):
        read_server_json(tmp_path / "server.json")
    (tmp_path / "server.json").write_text('{"url": "http://127.0.0.1:1"}')
    with pytest.raises(LabelStudioError, match="field 'token' missing"):
        read_server_json(tmp_path / "server.json")
    with pytest.raises(LabelStudioError, match="make labelstudio-venv"):
        check_venv(tmp_path / "nope")


def test_read_truth(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("program,line,truth\np,2,+1\np,3,-1\nq,1,wrong\n")
    assert read_truth(f) == {"p": {2: 1, 3: -1}, "q": {1: -1}}
    f.write_text("program,line,truth\np,x,+1\n")
    with pytest.raises(ValueError, match=r"t.csv:2: bad line"):
        read_truth(f)


def test_cli_errors_name_the_file(tmp_path, capsys):
    from rl.cli import main

    assert main(["labelstudio", "status", "--round", str(tmp_path), "--server", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rl labelstudio status: error: ") and "round.json" in err and "\n" not in err


def test_loop_config_labelstudio_section(tmp_path):
    from rl.config import ConfigError, LabelStudioSpec, LoopConfig, from_dict

    cfg = from_dict(
        LoopConfig, {"annotate": "labelstudio", "labelstudio": {"server": "s.json", "timeout": 60, "wait": "exit"}}, where="c.json"
    )
    assert cfg.labelstudio == LabelStudioSpec(server="s.json", timeout=60, wait="exit")
    assert from_dict(LoopConfig, cfg.to_dict(), where="c.json") == cfg
    with pytest.raises(ValueError, match="LabelStudioSpec.wait"):
        from_dict(LoopConfig, {"labelstudio": {"wait": "later"}}, where="c.json")
    with pytest.raises(ConfigError, match="labelstudio.tiemout"):
        from_dict(LoopConfig, {"labelstudio": {"tiemout": 5}}, where="c.json")
    with pytest.raises(ValueError, match="annotate must be"):
        LoopConfig(annotate="studio")
