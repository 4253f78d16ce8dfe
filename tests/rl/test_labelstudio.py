"""rl export / rl import: Label Studio (one task per program, pre-annotations, the older per-line tasks) and CSV
round trips, JSON-MIN/CSV exports refused, and malformed results. File level: no server."""

import argparse
import csv
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdstat.io.rewards import write_rewards
from rl.cli import main as rl_main
from rl.crowd import labelstudio as ls
from rl.crowd import ls_round
from rl.crowd.population import parse_population, simulate

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


def _export(tmp_path, *extra):
    out = tmp_path / "tasks.json"
    assert _run("export", ["--programs", str(_programs(tmp_path)), "--format", "labelstudio", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text()), json.loads((tmp_path / "tasks.manifest.json").read_text())


LINES = {"p1": [3, 5, 6, 7], "p2": [1, 3], "p3": [1, 3]}  # p1: after the prompt, blank and comment lines skipped


def test_export_is_one_task_per_program_with_the_server_config(tmp_path):
    tasks, man = _export(tmp_path)
    assert len(tasks) == 3  # one per program, not one per annotated line (8)
    assert all(set(t) == {"data"} and set(t["data"]) == {"key", "code", "lines"} for t in tasks)
    by_key = {r["key"]: r for r in man["tasks"]}
    assert [t["data"]["key"] for t in tasks] == [r["key"] for r in man["tasks"]] and len(by_key) == 3
    src = {r["program"]: r["code"].rstrip("\n").split("\n") for r in PROGRAMS}
    for t in tasks:
        prog = by_key[t["data"]["key"]]["program"]
        assert [e["n"] for e in t["data"]["lines"]] == LINES[prog] == by_key[t["data"]["key"]]["lines"]
        listing = t["data"]["code"].split("\n")
        assert [re.sub(r"^\s*\d+ \| ", "", x, count=1) for x in listing] == src[prog]
        for e in t["data"]["lines"]:  # each line entry shows its number and its text
            assert e["text"].split(" | ", 1)[1] == src[prog][e["n"] - 1] and int(e["text"].split(" | ")[0]) == e["n"]
    # the program ids stay in the local manifest, out of the tasks
    assert not any(p["program"] in json.dumps(tasks) for p in PROGRAMS)
    assert (tmp_path / "tasks.config.xml").read_text() == ls_round.LABEL_CONFIG == ls.LABEL_CONFIG
    rep = ET.fromstring(ls.LABEL_CONFIG).find(".//Repeater")
    assert rep.get("on") == "$lines" and rep.find(".//Choices").get("name") == "line_{{idx}}"
    # the task order is shuffled with the seed, the same as the server path's
    req, push_man = ls_round.build_push(ls.load_programs(_programs(tmp_path)), annotators=["a"], per_program=None, seed=0)
    assert req["tasks"] == tasks and push_man["tasks"] == [{k: v for k, v in r.items() if k != "code_sha1"} for r in man["tasks"]]
    assert [r["code_sha1"] for r in man["tasks"]] == [hashlib.sha1(t["data"]["code"].encode()).hexdigest() for t in tasks]
    orders = {tuple(r["program"] for r in _export(tmp_path, "--seed", str(s))[1]["tasks"]) for s in range(6)}
    assert len(orders) > 1


def _annotation(ann_id, who, marks, updated, cancelled=False):
    """A Label Studio annotation of a per-program task: one line_<i> choice per marked line index."""
    result = [
        {
            "id": f"r{ann_id}_{i}",
            "type": "choices",
            "value": {"choices": [choice]},
            "origin": "manual",
            "to_name": f"text_{i}",
            "from_name": f"line_{i}",
        }
        for i, choice in marks
    ]
    return {
        "id": ann_id,
        "completed_by": who,
        "result": [] if cancelled else result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": updated,
        "updated_at": updated,
        "lead_time": 3.5,
        "task": None,
        "project": 3,
    }


def _label(tasks, man, votes, rng, who_of):
    """What Label Studio's JSON export holds after annotators cast ``votes`` on the exported tasks: one
    annotation per annotator and task (an earlier, edited version with flipped choices before some), and a
    skipped task by an extra user. Returns (export, expected votes with the annotator ids import gives)."""
    key_of = {r["program"]: r["key"] for r in man["tasks"]}
    idx = {r["key"]: {ln: i for i, ln in enumerate(r["lines"])} for r in man["tasks"]}
    per: dict = {}
    for prog, ln, a, lab in votes:
        per.setdefault(key_of[prog], {}).setdefault(a, []).append((idx[key_of[prog]][ln], "correct" if lab == 1 else "wrong"))
    out, n = [], 0
    for tid, t in enumerate(tasks, 1):
        anns = []
        for a, marks in per.get(t["data"]["key"], {}).items():
            n += 1
            if rng.random() < 0.3:  # an older version of the same annotator's answer: replaced by the edit
                flipped = [(i, "wrong" if c == "correct" else "correct") for i, c in marks]
                anns.append(_annotation(10_000 + n, who_of(a), flipped, "2026-11-23T10:00:00.000000Z"))
            anns.append(_annotation(n, who_of(a), marks, "2026-11-23T11:00:00.000000Z"))
        anns.append(_annotation(99_000 + tid, 77, [(0, "wrong")], "2026-11-23T12:00:00.000000Z", cancelled=True))
        rng.shuffle(anns)
        out.append({"id": tid, "data": t["data"], "annotations": anns, "predictions": t.get("predictions", []), "project": 3})
    want = [(p, ln, str(who_of(a)["email"]) if isinstance(who_of(a), dict) else str(who_of(a)), lab) for p, ln, a, lab in votes]
    return out, want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_labelstudio_round_trip_per_program(tmp_path, seed):
    """export -> a simulated crowd labels the tasks (some lines left unmarked, edits, a skip) -> import == the votes."""
    tasks, man = _export(tmp_path, "--seed", str(seed % 1000))
    rng = np.random.default_rng(seed)
    truth = {"p1": [1, -1, 1, 1], "p2": [1, 1], "p3": [-1, 1]}
    pop = parse_population("expert:2@0.95,novice:2@0.7,spammer:1")
    votes, _ = simulate([(p, LINES[p], truth[p]) for p in LINES], pop, rng, per_program=3)
    votes = [v for v in votes if rng.random() > 0.2]  # lines left unmarked: no vote
    uid = {a.id: k for k, a in enumerate(pop.annotators, 2)}

    def who_of(a):  # the export expands completed_by (with the e-mail) for some users only
        return {"id": uid[a], "email": f"{a}@lab.org", "first_name": ""} if uid[a] % 2 else uid[a]

    export, want = _label(tasks, man, votes, rng, who_of)
    res = tmp_path / "export.json"
    res.write_text(json.dumps(export))
    out = tmp_path / "votes.csv"
    argv = ["--results", str(res), "--manifest", str(tmp_path / "tasks.manifest.json"), "--out", str(out)]
    assert _run("import", argv) == 0
    got = [(r["program"], int(r["line"]), r["annotator"], 1 if r["label"] == "+1" else -1) for r in _read(out)]
    assert sorted(got) == sorted(want) and len(got) == len(want)
    order = [r["program"] for r in man["tasks"]]  # rows in task order, then line, then annotator
    assert got == sorted(got, key=lambda v: (order.index(v[0]), v[1], v[2]))
    assert "77" not in {g[2] for g in got}


def _rewards(path, rows):
    recs = []
    for prog, lines, post in rows:
        recs.append(
            {
                "program": prog,
                "reward": sum(p > 0.5 for p in post) / len(lines),
                "reward_soft": float(np.mean(post)),
                "n_lines": 9,
                "n_annotated": len(lines),
                "coverage": len(lines) / 9,
                "lines": lines,
                "posteriors": post,
                "tau": 0.5,
                "method": "em1",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rewards(path, recs)
    return path


def test_predictions_put_the_posteriors_on_each_task(tmp_path):
    post = {"p1": ([3, 5, 6, 7], [0.91, 0.12, 0.5, 0.73]), "p2": ([3], [0.2])}  # p2: line 1 has no posterior; p3: none
    rew = _rewards(tmp_path / "fit" / "rewards.jsonl", [(p, ls_, ps) for p, (ls_, ps) in post.items()])
    tasks, man = _export(tmp_path, "--predictions", str(rew))
    prog = {r["key"]: r["program"] for r in man["tasks"]}
    assert man["no_prediction"] == ["p3"] and man["predictions"] == "crowdstat em1 (fit/rewards.jsonl)"
    ids = []
    for t in tasks:
        p = prog[t["data"]["key"]]
        if p == "p3":
            assert "predictions" not in t
            continue
        (pred,) = t["predictions"]
        assert set(pred) == {"model_version", "score", "result"} and pred["model_version"] == man["predictions"]
        lines = [e["n"] for e in t["data"]["lines"]]
        want = dict(zip(*post[p]))
        assert len(pred["result"]) == len(want)
        scores = []
        for r in pred["result"]:
            i = int(r["from_name"].removeprefix("line_"))
            ln = lines[i]
            assert r["to_name"] == f"text_{i}" and r["type"] == "choices"  # the config's names, expanded over the lines
            (choice,) = r["value"]["choices"]
            assert choice == ("correct" if want[ln] > 0.5 else "wrong")
            assert r["score"] == pytest.approx(want[ln] if choice == "correct" else 1 - want[ln])
            scores.append(r["score"])
            ids.append(r["id"])
        assert pred["score"] == pytest.approx(min(scores))
    assert len(ids) == len(set(ids)) == 5  # result ids unique across the file
    # an annotator who accepts the pre-annotation as it is votes the aggregate's choices
    export = [
        {"id": k, "data": t["data"], "annotations": [{"id": k, "completed_by": 5, "result": t["predictions"][0]["result"]}]}
        for k, t in enumerate(tasks)
        if "predictions" in t
    ]
    res = tmp_path / "accepted.json"
    res.write_text(json.dumps(export))
    votes = ls.import_labelstudio(res, tmp_path / "tasks.manifest.json")
    assert sorted(votes) == sorted((p, ln, "5", 1 if x > 0.5 else -1) for p, (ls_, ps) in post.items() for ln, x in zip(ls_, ps))


@pytest.mark.parametrize(
    "rows,extra,match",
    [
        ([("zz", [1], [0.9])], [], r"r.jsonl: no exported program has posteriors in this reward file"),
        (None, [], r"missing.jsonl: predictions file not found"),
        ([("p1", [3], [0.9])], ["--format", "csv"], r"--predictions needs --format labelstudio"),
        ('{"program": "p1", "lines": [3]}', [], r"r.jsonl:1: field 'schema_version'"),  # not a reward file
    ],
)
def test_bad_predictions(tmp_path, capsys, rows, extra, match):
    if isinstance(rows, str):
        rew = tmp_path / "r.jsonl"
        rew.write_text(rows + "\n")
    else:
        rew = tmp_path / "missing.jsonl" if rows is None else _rewards(tmp_path / "r.jsonl", rows)
    out = tmp_path / "t.json"
    argv = ["--programs", str(_programs(tmp_path)), "--out", str(out), "--predictions", str(rew), *extra]
    assert _run("export", argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1 and not out.exists()


def _json_min(export):
    """Label Studio's JSON-MIN export of ``export`` (label_studio_sdk Converter.convert_to_json_min)."""
    rows = []
    for t in export:
        for a in t["annotations"]:
            if a.get("was_cancelled"):
                continue
            row = {**t["data"], "id": t["id"]}
            row.update({r["from_name"]: r["value"]["choices"][0] for r in a["result"]})
            row.update(annotator=a["completed_by"], annotation_id=a["id"], created_at="", updated_at="", lead_time=1.0)
            rows.append(row)
    return rows


@pytest.mark.parametrize("tasks_of", ["per-program", "per-line"])
def test_json_min_and_csv_exports_are_refused_with_export_as_json(tmp_path, capsys, tasks_of):
    if tasks_of == "per-program":
        tasks, man = _export(tmp_path)
        export, _ = _label(tasks, man, [("p1", 3, "a", 1), ("p2", 1, "a", -1)], np.random.default_rng(0), lambda a: 4)
        lscsv_head = "annotation_id,annotator,code,created_at,id,key,lead_time,line_0,lines,updated_at"
    else:
        export = _ls_export(
            _old_tasks(ls.load_programs(_programs(tmp_path))), {0: [(4, "wrong")], 3: [(5, "correct")]}, np.random.default_rng(0)
        )
        lscsv_head = "annotation_id,annotator,code,created_at,id,label,lead_time,line,line_text,lines,program,updated_at"
    jmin = tmp_path / "project-3-at-2026-11-23.json"
    jmin.write_text(json.dumps(_json_min(export)))
    lscsv = tmp_path / "project-3.csv"
    lscsv.write_text(lscsv_head + "\n" + ",".join("1" for _ in lscsv_head.split(",")) + "\n")
    out = tmp_path / "votes.csv"
    for f, fmt in ((jmin, "labelstudio"), (jmin, "csv"), (lscsv, "labelstudio"), (lscsv, "csv")):
        argv = ["--results", str(f), "--format", fmt, "--out", str(out)]
        assert _run("import", argv + (["--manifest", str(tmp_path / "tasks.manifest.json")] if tasks_of == "per-program" else [])) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(f) in err and "Export -> JSON" in err and not out.exists(), err


def _per_program_export(tmp_path, **task_kw):
    tasks, man = _export(tmp_path)
    t = {"id": 5, "data": tasks[0]["data"], "annotations": [_annotation(1, 3, [(0, "wrong")], "2026-11-23T11:00:00Z")]}
    t.update(task_kw)
    return t, tasks, man


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda t, tasks: [t], None),
        (lambda t, tasks: [{**t, "data": {**t["data"], "key": "zz"}}], r"r.json: no task of this export is in the manifest"),
        (
            lambda t, tasks: [{**t, "data": {**t["data"], "lines": t["data"]["lines"][:1]}}],
            r"r.json: task 0 \(id 5\): data.lines \[\d+\] differ from the manifest's lines",
        ),
        (
            lambda t, tasks: [{**t, "data": {**t["data"], "code": t["data"]["code"] + " "}}],
            r"task 0 \(id 5\): data.code is not the program of key 't0001' in the manifest",
        ),
        (
            lambda t, tasks: [{**t, "annotations": [_annotation(1, 3, [(0, "maybe")], "x")]}],
            r"task 0 \(id 5\), annotation 0: result from 'line_0': choices must be exactly one of \['correct', 'wrong'\], got \['maybe'\]",
        ),
        (
            lambda t, tasks: [{**t, "annotations": [_annotation(1, 3, [(9, "wrong")], "x")]}],
            r"annotation 0: result from 'line_9': the task has",
        ),
        (lambda t, tasks: [{**t, "annotations": [_annotation(1, 3, [(0, "wrong"), (0, "correct")], "x")]}], r"has two results"),
        (
            lambda t, tasks: [{**t, "annotations": [_annotation(1, None, [(0, "wrong")], "x")]}],
            r"annotation 0: missing or invalid completed_by",
        ),
        (lambda t, tasks: [{**t, "annotations": {"a": 1}}], r"task 0 \(id 5\): 'annotations' must be a list of objects"),
        (lambda t, tasks: [{**t, "annotations": [_annotation(1, 3, [], "x", cancelled=True)]}], r"r.json: no votes"),
        (
            lambda t, tasks: [t, {"id": 6, "data": {"program": "p1", "line": 3}, "annotations": []}],
            r"task 1 \(id 6\): a one-task-per-line task among per-program ones",
        ),
    ],
)
def test_bad_per_program_results(tmp_path, change, match):
    t, tasks, man = _per_program_export(tmp_path)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(change(t, tasks)))
    if match is None:  # the unchanged task is read: one vote on the task's first line
        (vote,) = ls.import_labelstudio(f, tmp_path / "tasks.manifest.json")
        row = man["tasks"][0]
        assert vote == (row["program"], row["lines"][0], "3", -1)
        return
    with pytest.raises(ValueError, match=match):
        ls.import_labelstudio(f, tmp_path / "tasks.manifest.json")


def test_per_program_results_need_the_manifest(tmp_path, capsys):
    t, _, _ = _per_program_export(tmp_path)
    f = tmp_path / "r.json"
    f.write_text(json.dumps([t]))
    assert _run("import", ["--results", str(f), "--out", str(tmp_path / "v.csv")]) == 2
    err = capsys.readouterr().err
    assert "r.json: per-program tasks" in err and "--manifest" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"nope.json: manifest not found"):
        ls.import_labelstudio(f, tmp_path / "nope.json")


def test_rl_cli_runs_export_and_import(tmp_path, capsys):
    """``rl export`` / ``rl import`` through the command line of rl/cli.py."""
    out = tmp_path / "t.json"
    assert rl_main(["export", "--programs", str(_programs(tmp_path)), "--out", str(out)]) == 0
    assert "3 tasks (one per program)" in capsys.readouterr().out
    tasks = json.loads(out.read_text())
    export = [{"id": 1, "data": tasks[0]["data"], "annotations": [_annotation(1, 3, [(0, "correct")], "x")]}]
    (tmp_path / "e.json").write_text(json.dumps(export))
    argv = [
        "import",
        "--results",
        str(tmp_path / "e.json"),
        "--manifest",
        str(tmp_path / "t.manifest.json"),
        "--out",
        str(tmp_path / "v.csv"),
    ]
    assert rl_main(argv) == 0
    assert len(_read(tmp_path / "v.csv")) == 1


def test_import_reads_a_recorded_label_studio_export(tmp_path):
    """The export of a real Label Studio 1.23.2 (tests/data/labelstudio: an edit, a skip, an unmarked line) read
    as a file with the round's manifest gives the votes of the server path's reader."""
    data = Path(__file__).resolve().parents[1] / "data" / "labelstudio"
    reply = json.loads((data / "pull_reply.json").read_text())
    man = json.loads((data / "round.json").read_text())
    f = tmp_path / "export.json"  # what Export -> JSON gives: the list of tasks
    f.write_text(json.dumps(reply["tasks"]))
    votes, rep = ls.import_labelstudio_report(f, data / "round.json")
    rows, _ = ls_round.votes_from_export(reply["tasks"], reply["users"], man)
    name = {u["id"]: next(a["annotator"] for a in man["annotators"] if a["email"] == u["email"]) for u in reply["users"][1:]}
    assert (
        [(p, ln, name[int(a)], lab) for p, ln, a, lab in votes]
        == [r[:4] for r in rows]
        == [
            ("p1", 2, "a1", -1),
            ("p1", 2, "a2", -1),
            ("p1", 3, "a1", -1),
        ]
    )
    assert rep == {"tasks": 2, "foreign_tasks": 0, "cancelled": 1, "replaced": 0, "unmarked": 1}


def _old_tasks(programs):
    """The tasks of the older rl export: one per annotated line (data.program, data.line)."""
    return [
        {"data": {"program": p["program"], "line": ln, "line_text": p["code"].split("\n")[ln - 1], "code": "", "lines": p["lines"]}}
        for p in programs
        for ln in p["lines"]
    ]


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


def test_old_one_task_per_line_exports_are_still_read(tmp_path):
    tasks = _old_tasks(ls.load_programs(_programs(tmp_path)))
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
        ('[{"id": 1, "data": {"key": "t0001"}, "annotations": []}]', r"s.csv: this is JSON, not the CSV sheet: .* --format labelstudio"),
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
