"""Integration: ``rl export`` / ``rl import`` (the file round trip) on a real Label Studio server (slow; skipped
without the Label Studio venv; its own server, from the prepared data directory of the server tests).

The task file with pre-annotations is imported into a project as the UI imports it, the predictions must arrive
as exported, two accounts annotate (one accepts every pre-annotation, one marks a line and skips a task), and the
server's own JSON export must import to exactly those votes while its JSON_MIN and CSV exports are refused with a
message that says to export as JSON.
"""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest

from crowdstat.io.rewards import write_rewards
from rl.cli import main as rl_main
from rl.crowd import ls_server
from tests.rl_helpers import labelstudio_prepared

pytestmark = pytest.mark.slow

VENV = ls_server.default_venv()
if not (VENV / "bin" / "label-studio").exists():
    pytest.skip(f"no Label Studio venv at {VENV} (build it with `make labelstudio-venv`)", allow_module_level=True)

PROGS = [
    {
        "program": "sum#canonical",
        "code": "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n",
        "lines": [2, 3, 4, 5],
    },
    {"program": "sum#m1", "code": "def total(xs):\n    s = 1\n    for x in xs:\n        s += x\n    return s\n", "lines": [2, 3, 4, 5]},
    {
        "program": "max#m1",
        "code": "def big(xs):\n    m = xs[0]\n    for x in xs:\n        if x < m:\n            m = x\n    return m\n",
        "lines": [2, 3, 4, 5, 6],
    },
    {"program": "id", "code": "def ident(x):\n    return x\n", "lines": [2]},
]
POST = {"sum#canonical": [0.97, 0.9, 0.88, 0.95], "sum#m1": [0.2, 0.9, 0.7, 0.6], "max#m1": [0.9, 0.95, 0.3, 0.8, 0.85]}


@pytest.fixture(scope="module")
def server():
    srv = ls_server.Server(VENV, prepared=labelstudio_prepared(VENV), timeout=600)
    try:
        yield srv.start()
    finally:
        srv.stop()


def _export_files(d: Path) -> tuple[list, dict]:
    (d / "programs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROGS))
    recs = []
    for p in PROGS:
        if p["program"] in POST:
            ps, n = POST[p["program"]], len(p["lines"])
            recs.append(
                dict(program=p["program"], reward=sum(x > 0.5 for x in ps) / n, reward_soft=sum(ps) / n, n_lines=9, n_annotated=n)
                | dict(coverage=n / 9, lines=p["lines"], posteriors=ps, tau=0.5, method="em1")
            )
    (d / "fit").mkdir()
    write_rewards(d / "fit" / "rewards.jsonl", recs)
    argv = [
        "export",
        "--programs",
        str(d / "programs.jsonl"),
        "--predictions",
        str(d / "fit" / "rewards.jsonl"),
        "--out",
        str(d / "tasks.json"),
    ]
    assert rl_main(argv) == 0
    return json.loads((d / "tasks.json").read_text()), json.loads((d / "tasks.manifest.json").read_text())


def test_file_export_import_on_a_real_server(server, tmp_path, capsys):
    tasks, man = _export_files(tmp_path)
    url, token = server["url"], server["token"]

    def get(path: str) -> bytes:
        rq = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(rq, timeout=120) as r:
            return r.read()

    acc = [{"email": "f1@crowd.local", "password": "pw-f1-0123456789"}, {"email": "f2@crowd.local", "password": "pw-f2-0123456789"}]
    req = {"url": url, "token": token, "title": "rl export check", "label_config": (tmp_path / "tasks.config.xml").read_text()}
    rep = ls_server.call_driver("push", {**req, "maximum_annotations": 2, "tasks": tasks, "annotators": acc})
    tid = dict(zip([t["data"]["key"] for t in tasks], rep["task_ids"]))
    for t in tasks:  # the predictions arrive as exported
        got = json.loads(get(f"/api/predictions/?task={tid[t['data']['key']]}"))
        got = got["results"] if isinstance(got, dict) else got
        if "predictions" not in t:
            assert got == []
            continue
        ((gp,), (wp,)) = got, t["predictions"]
        assert (gp["model_version"], gp["result"]) == (wp["model_version"], wp["result"]) and gp["score"] == pytest.approx(wp["score"])

    # f1 accepts each pre-annotation (marks line 0 correct where there is none); f2 marks line 0 wrong, skips the last task
    line0 = [{"from_name": "line_0", "to_name": "text_0", "type": "choices", "value": {"choices": ["correct"]}}]
    a1 = [{"task": tid[t["data"]["key"]], "result": t["predictions"][0]["result"] if "predictions" in t else line0} for t in tasks]
    a2 = [
        {"task": tid[t["data"]["key"]], "was_cancelled": k == len(tasks) - 1, "result": [] if k == len(tasks) - 1 else
         [{**line0[0], "value": {"choices": ["wrong"]}}]}
        for k, t in enumerate(tasks)
    ]  # fmt: skip
    ls_server.call_driver("annotate", {"url": url, "annotators": [{**acc[0], "annotations": a1}, {**acc[1], "annotations": a2}]})
    uid = {e: str(i) for e, i in rep["users"].items()}
    want = []
    for k, row in enumerate(man["tasks"]):
        want += [
            (row["program"], row["lines"][int(r["from_name"][5:])], uid[acc[0]["email"]], r["value"]["choices"][0]) for r in a1[k]["result"]
        ]
        want += [(row["program"], row["lines"][0], uid[acc[1]["email"]], "wrong")] if k != len(tasks) - 1 else []

    files = {}
    for typ in ("JSON", "JSON_MIN", "CSV"):
        files[typ] = tmp_path / f"export_{typ}.{'csv' if typ == 'CSV' else 'json'}"
        files[typ].write_bytes(get(f"/api/projects/{rep['project_id']}/export?exportType={typ}&download_all_tasks=true"))
    m = ["--manifest", str(tmp_path / "tasks.manifest.json")]
    assert rl_main(["import", "--results", str(files["JSON"]), *m, "--out", str(tmp_path / "votes.csv")]) == 0
    with open(tmp_path / "votes.csv", newline="") as f:
        got = [(r["program"], int(r["line"]), r["annotator"], "correct" if r["label"] == "+1" else "wrong") for r in csv.DictReader(f)]
    assert sorted(got) == sorted(want) and len(got) == 17
    capsys.readouterr()
    for typ in ("JSON_MIN", "CSV"):
        for fmt in ("labelstudio", "csv"):
            out = tmp_path / f"v_{typ}_{fmt}.csv"
            assert rl_main(["import", "--results", str(files[typ]), "--format", fmt, *m, "--out", str(out)]) == 2 and not out.exists()
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and str(files[typ]) in err and "Export -> JSON" in err, err
