"""Per-annotation-event streaming from Label Studio (rl.crowd.ls_stream), without a server (fast).

Webhook bodies shaped as Label Studio 1.23.2 sends them (``label_studio/webhooks``: the action, the
annotation and the task with all their fields, the project) are posted with urllib to a listener on a
free port. After the events, the listener's outputs equal ``crowdstat.fit`` on the same votes (em2,
float64, EM to a tight tolerance), the votes being the ones the simulated annotators gave, written
here independently of the listener's parser; an edit that changes a vote and a deletion equal the refit
on the changed votes; a forged secret, a malformed body, an unknown task and another project are
refused with one log line and change nothing; a restart continues from the saved state.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from rl.crowd import ls_events, ls_round, ls_stream

PID = 7
SECRET = "s3cret-for-tests-0123456789"
ANNOTATORS = ["a1", "a2", "a3", "a4", "a5"]
RELIABILITY = {"a1": 0.92, "a2": 0.85, "a3": 0.8, "a4": 0.75, "a5": 0.88, "guest@example.org": 0.8}
UIDS = {a: 10 + i for i, a in enumerate(ANNOTATORS)}
GUEST = 99  # signed up with the invite link: not one of the round's accounts
CHECKPOINTS = (30,)  # then after 40 events, each change and the last (with fewer votes em2 from a warm start can end on another maximum)
FIT = {"method": "em2", "params": {"x64": True, "tol": 1e-15, "maxiter": 100_000}}


def make_round(d: Path, n_programs: int = 16, n_lines: int = 4, n_honeypots: int = 6, seed: int = 0):
    """round.json, truth.csv, programs.csv of a pushed round; returns (round dir, true labels, honeypot programs)."""
    rng = np.random.default_rng(seed)
    tasks, task_ids, true = [], {}, {}
    for i in range(n_programs):
        prog, key = f"p{i:02d}", f"t{i + 1:04d}"
        lines = list(range(2, 2 + n_lines))
        tasks.append({"key": key, "program": prog, "lines": lines})
        task_ids[key] = 500 + i
        true[prog] = {ln: int(rng.choice([1, -1], p=[0.6, 0.4])) for ln in lines}
    honey = [t["program"] for t in tasks[:n_honeypots]]
    manifest = {
        "title": "t",
        "per_program": 3,
        "tasks": tasks,
        "honeypots": {p: {str(ln): v for ln, v in true[p].items()} for p in honey},
        "annotators": [{"annotator": a, "email": f"{a}@crowd.local", "password": "x"} for a in ANNOTATORS],
        "url": "http://127.0.0.1:1",
        "project_id": PID,
        "task_ids": task_ids,
        "invite_url": "http://127.0.0.1:1/user/signup/?token=x",
        "users": {f"{a}@crowd.local": UIDS[a] for a in ANNOTATORS},
    }
    rd = d / "round"
    rd.mkdir()
    (rd / "round.json").write_text(json.dumps(manifest))
    (rd / "truth.csv").write_text("program,line,truth\n" + "".join(f"{p},{ln},{v:+d}\n" for p in honey for ln, v in true[p].items()))
    (rd / "programs.csv").write_text("program,n_lines\n" + "".join(f"{t['program']},{10 + i}\n" for i, t in enumerate(tasks)))
    return rd, manifest, true, honey


def simulate(manifest: dict, true: dict, per_program: int = 5, seed: int = 1) -> list[tuple[str, str, dict[int, int]]]:
    """(program, annotator, {line: label}) per annotation, in a shuffled arrival order; a few lines unmarked."""
    rng = np.random.default_rng(seed)
    crowd = [*ANNOTATORS, "guest@example.org"]
    out = []
    for t in manifest["tasks"]:
        for who in rng.choice(crowd, size=per_program, replace=False):
            marks = {}
            for ln in t["lines"]:
                if rng.random() < 0.05:
                    continue  # left unmarked: no vote
                right = rng.random() < RELIABILITY[str(who)]
                marks[ln] = true[t["program"]][ln] * (1 if right else -1)
            out.append((t["program"], str(who), marks))
    return [out[i] for i in rng.permutation(len(out))]


class Events:
    """Webhook bodies as Label Studio 1.23.2 sends them (AnnotationWebhookSerializer: every field)."""

    def __init__(self, manifest: dict):
        self.m = manifest
        self.by_prog = {t["program"]: t for t in manifest["tasks"]}
        self.next_id, self.clock = 1000, 0
        self.ids: dict[tuple[str, str], int] = {}
        self.created: dict[int, str] = {}

    def _uid(self, who: str) -> int:
        return UIDS.get(who, GUEST)

    def annotation(self, prog: str, who: str, marks: dict[int, int], *, ann_id: int | None = None, cancelled: bool = False) -> dict:
        t = self.by_prog[prog]
        self.clock += 1
        stamp = f"2026-05-01T10:{self.clock // 60:02d}:{self.clock % 60:02d}.000000Z"
        result = []
        for i, ln in enumerate(t["lines"]):
            if ln in marks:
                value = {"choices": ["correct" if marks[ln] == 1 else "wrong"]}
                names = {"to_name": f"text_{i}", "from_name": f"line_{i}"}
                result.append({"id": f"r{i}", "type": "choices", "value": value, "origin": "manual", **names})
        if ann_id is None:
            self.next_id += 1
            ann_id = self.ids[(prog, who)] = self.next_id
        return {
            "id": ann_id,
            "result": result,
            "created_username": f"{who} {self._uid(who)}",
            "created_ago": "0 minutes",
            "completed_by": self._uid(who),
            "was_cancelled": cancelled,
            "ground_truth": False,
            "created_at": self.created.setdefault(ann_id, stamp),
            "updated_at": stamp,
            "draft_created_at": None,
            "lead_time": 5.0,
            "import_id": None,
            "last_action": None,
            "bulk_created": False,
            "task": self.m["task_ids"][t["key"]],
            "project": PID,
            "updated_by": self._uid(who),
            "parent_prediction": None,
            "parent_annotation": None,
            "last_created_by": None,
        }

    def body(self, action: str, ann: dict, *, project: int = PID) -> bytes:
        t = (
            next(x for x in self.m["tasks"] if self.m["task_ids"][x["key"]] == ann["task"])
            if ann["task"] in self.m["task_ids"].values()
            else None
        )
        task = {
            "id": ann["task"],
            "data": {
                "key": t["key"] if t else "t9999",
                "code": "1 | def f(x):",
                "lines": [{"n": ln, "text": "..."} for ln in (t["lines"] if t else [])],
            },
            "meta": {},
            "created_at": "2026-05-01T09:00:00.000000Z",
            "updated_at": ann["updated_at"],
            "is_labeled": False,
            "overlap": 3,
            "inner_id": 1,
            "total_annotations": 1,
            "cancelled_annotations": 0,
            "total_predictions": 0,
            "comment_count": 0,
            "unresolved_comment_count": 0,
            "last_comment_updated_at": None,
            "project": project,
            "updated_by": None,
            "file_upload": None,
            "comment_authors": [],
        }
        proj = {"id": project, "title": "rl line labels", "label_config": ls_round.LABEL_CONFIG, "maximum_annotations": 3}
        return json.dumps({"action": action, "annotation": ann, "task": task, "project": proj}).encode()

    def deleted(self, ids: list[int], project: int = PID) -> bytes:
        return json.dumps({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in ids], "project": {"id": project}}).encode()


def post(port: int, body: bytes, secret: str | None = SECRET, path: str = "/webhook") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[ls_events.SECRET_HEADER] = secret
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rows(arrivals: list[tuple[str, str, dict[int, int]]], order: dict[str, int]) -> list[tuple[str, int, str, int]]:
    """The vote rows of annotations in arrival order (each annotation's lines ascending)."""
    return [(p, ln, who, lab) for p, who, marks in arrivals for ln, lab in sorted(marks.items())]


def reference(votes: list[tuple], rd: Path) -> cs.FitResult:
    """crowdstat.fit on ``votes`` in this order, with the round's truth and sizes of the voted lines/programs."""
    v = pd.DataFrame(votes, columns=["program", "line", "annotator", "label"])
    truth = pd.read_csv(rd / "truth.csv").merge(v[["program", "line"]].drop_duplicates())
    sizes = pd.read_csv(rd / "programs.csv")
    sizes = sizes[sizes["program"].isin(v["program"])]
    return cs.fit(v, truth=truth if len(truth) else None, programs=sizes, method=FIT["method"], **FIT["params"])


def assert_equal_to_refit(out: Path, votes: list[tuple], rd: Path) -> float:
    ref = reference(votes, rd)
    got = pd.read_csv(out / "lines.csv")
    want = ref.lines.reset_index(drop=True)
    assert list(zip(got["program"].astype(str), got["line"])) == list(zip(want["program"].astype(str), want["line"]))
    gap = float(np.abs(got["posterior"].to_numpy() - want["posterior"].to_numpy()).max())
    assert gap < 1e-6, gap
    rec = {r["program"]: r for r in map(json.loads, (out / "rewards.jsonl").read_text().splitlines())}
    for r in ref.reward_records():
        assert rec[r["program"]]["reward"] == pytest.approx(r["reward"], abs=1e-12)
        assert rec[r["program"]]["n_lines"] == r["n_lines"]
    ann = pd.read_csv(out / "annotators.csv")
    assert list(ann["annotator"].astype(str)) == list(ref.annotators["annotator"].astype(str))
    assert np.abs(ann["reliability"].to_numpy() - ref.annotators["reliability"].to_numpy()).max() < 1e-5
    return gap


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture
def setup(tmp_path):
    rd, manifest, true, honey = make_round(tmp_path)
    logs: list[str] = []
    rnd = ls_events.StreamRound(rd)

    def users(uid):
        return "guest@example.org" if uid == GUEST else None

    def start(resume=False):
        lis = ls_stream.Listener(
            ls_events.StreamRound(rd),
            tmp_path / "out",
            FIT["method"],
            FIT["params"],
            secret=SECRET,
            resume=resume,
            users=users,
            log=logs.append,
        )
        _, port = lis.serve("127.0.0.1", 0)
        return lis, port

    return rd, manifest, true, rnd, start, logs, tmp_path / "out"


def test_events_one_by_one_equal_a_refit_then_edit_delete_and_restart(setup):
    rd, manifest, true, rnd, start, logs, out = setup
    arrivals = simulate(manifest, true)
    ev = Events(manifest)
    order = rnd.order
    lis, port = start()
    try:
        half = len(arrivals) // 2
        for i, (prog, who, marks) in enumerate(arrivals[:half]):
            assert post(port, ev.body("ANNOTATION_CREATED", ev.annotation(prog, who, marks))) == (
                200,
                {"ok": True, "queued": "ANNOTATION_CREATED"},
            )
            if i + 1 in CHECKPOINTS:  # the outputs after i + 1 events equal the refit on their votes
                assert lis.wait_idle(120)
                assert_equal_to_refit(out, rows(arrivals[: i + 1], order), rd)
        assert lis.wait_idle(300)
        votes = rows(arrivals[:half], order)
        assert_equal_to_refit(out, votes, rd)
        st = lis.status()
        assert st["online"] == half and st["refits"] == 0 and st["errors"] == 0 and st["votes"] == len(votes)
        # the vote log (annotators named as the pull names them: the account's id, else the e-mail)
        logged = pd.read_csv(out / "votes.csv")
        assert list(logged.itertuples(index=False, name=None)) == votes
        assert "guest@example.org" in set(logged["annotator"]) and set(logged["annotator"]) <= {*ANNOTATORS, "guest@example.org"}

        # an edit that flips one vote: a refit on the changed votes, said so in the log
        prog, who, marks = arrivals[0]
        ln = min(marks)
        flipped = {**marks, ln: -marks[ln]}
        assert post(port, ev.body("ANNOTATION_UPDATED", ev.annotation(prog, who, flipped, ann_id=ev.ids[(prog, who)])))[0] == 200
        assert lis.wait_idle(120)
        changed = [v for v in votes if v[:3] != (prog, ln, who)] + [(prog, ln, who, -marks[ln])]
        assert_equal_to_refit(out, changed, rd)
        assert lis.status()["refits"] == 1 and "refit on" in logs[-1] and "does not rewrite history" in logs[-1]
        # the same answer saved again: nothing to do
        before = digest(out)
        assert post(port, ev.body("ANNOTATION_UPDATED", ev.annotation(prog, who, flipped, ann_id=ev.ids[(prog, who)])))[0] == 200
        assert lis.wait_idle(60) and lis.status()["unchanged"] == 1 and "no change" in logs[-1]
        assert digest(out) == before
        # an edit that only marks a line left unmarked adds a vote: still an online update
        p2, w2, m2 = next(a for a in arrivals[1:half] if len(a[2]) < len(manifest["tasks"][0]["lines"]))
        gap_line = next(ln for ln in ev.by_prog[p2]["lines"] if ln not in m2)
        assert post(port, ev.body("ANNOTATION_UPDATED", ev.annotation(p2, w2, {**m2, gap_line: 1}, ann_id=ev.ids[(p2, w2)])))[0] == 200
        assert lis.wait_idle(60) and lis.status()["online"] == half + 1 and "online update (+1 votes)" in logs[-1]
        changed = changed + [(p2, gap_line, w2, 1)]
        assert_equal_to_refit(out, changed, rd)
        # a deletion: a refit without that annotation's votes
        p3, w3, _ = arrivals[2]
        assert post(port, ev.deleted([ev.ids[(p3, w3)], 123456]))[0] == 200
        assert lis.wait_idle(60)
        changed = [v for v in changed if v[0] != p3 or v[2] != w3]
        assert_equal_to_refit(out, changed, rd)
        assert lis.status()["refits"] == 2 and "never seen" in logs[-1]
        # a skip after an answer (the latest annotation is cancelled): its votes go, as in the pull
        p4, w4, _ = arrivals[3]
        assert post(port, ev.body("ANNOTATION_UPDATED", ev.annotation(p4, w4, {}, ann_id=ev.ids[(p4, w4)], cancelled=True)))[0] == 200
        assert lis.wait_idle(60)
        changed = [v for v in changed if v[0] != p4 or v[2] != w4]
        assert_equal_to_refit(out, changed, rd)
    finally:
        lis.stop()

    # a restart continues from the state in --out: the rest of the events, then the outputs equal the refit on all
    n_logs = len(logs)
    lis, port = start(resume=True)
    try:
        assert lis.status()["votes"] == len(changed) and lis.stream_status()["n_votes"] == len(changed)
        for prog, who, marks in arrivals[half:]:
            assert post(port, ev.body("ANNOTATION_CREATED", ev.annotation(prog, who, marks)))[0] == 200
        assert lis.wait_idle(300)
    finally:
        lis.stop()
    final = changed + rows(arrivals[half:], order)
    gap = assert_equal_to_refit(out, final, rd)
    assert all("error" not in line for line in logs[n_logs:]), logs[n_logs:]
    st = json.loads((out / ls_stream.LISTENER_FILE).read_text())["stats"]
    assert st["online"] == len(arrivals) + 1 and st["refits"] == 3 and st["errors"] == 0, (st, [x for x in logs if "online" not in x])
    print(f"{len(arrivals)} events, {len(final)} votes: largest |posterior - refit| {gap:.1e}")


def test_a_killed_fit_process_is_restarted_from_the_saved_state(setup):
    """SIGKILL to ``crowdstat stream`` between events: the next event starts a new one (--warm-start OUT) and is applied."""
    rd, manifest, true, rnd, start, logs, out = setup
    arrivals = simulate(manifest, true)[:36]
    ev = Events(manifest)
    lis, port = start()
    try:
        for prog, who, marks in arrivals[:30]:
            assert post(port, ev.body("ANNOTATION_CREATED", ev.annotation(prog, who, marks)))[0] == 200
        assert lis.wait_idle(300)
        first = lis.status()["stream_pid"]
        os.kill(first, signal.SIGKILL)
        lis.stream.proc.wait(timeout=30)
        for prog, who, marks in arrivals[30:]:
            assert post(port, ev.body("ANNOTATION_CREATED", ev.annotation(prog, who, marks)))[0] == 200
        assert lis.wait_idle(300)
        st = lis.status()
        assert st["stream_restarts"] == 1 and st["stream_pid"] not in (None, first), st
        assert st["online"] == len(arrivals) and st["errors"] == 0, (st, logs[-3:])
        assert sum("is gone" in line and "--warm-start" in line for line in logs) == 1
        assert_equal_to_refit(out, rows(arrivals, rnd.order), rd)
        work = lis.work
        assert work.is_dir()
    finally:
        lis.stop()
    assert lis.stream is None and not work.exists()


def test_the_listener_process_never_loads_jax_or_the_fit():
    """The seam: rl.crowd.ls_stream runs crowdstat as a subprocess (the import-linter contract checks the imports).

    Its parts too: the payload parsing (rl.crowd.ls_events) and the subprocess client (rl.crowd.ls_stream_proc).
    """
    code = (
        "import sys, rl.crowd.ls_events, rl.crowd.ls_stream_proc, rl.crowd.ls_stream, rl.crowd.labelstudio_cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'pandas') "
        "or m.startswith(('crowdstat.online', 'crowdstat.api', 'crowdstat.io.tables'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_forged_malformed_and_foreign_posts_are_refused_with_one_line(setup):
    rd, manifest, true, rnd, start, logs, out = setup
    ev = Events(manifest)
    lis, port = start()
    try:
        prog, who, marks = "p03", "a1", {2: 1, 3: -1, 4: 1, 5: 1}
        assert post(port, ev.body("ANNOTATION_CREATED", ev.annotation(prog, who, marks)))[0] == 200
        assert lis.wait_idle(120)
        before, st0 = digest(out), lis.status()
        forged = ev.body("ANNOTATION_CREATED", ev.annotation("p04", "a2", {2: -1}))
        n = len(logs)
        cases = [
            (post(port, forged, secret="wrong"), 403, "X-Crowdstat-Secret"),
            (post(port, forged, secret=None), 403, "X-Crowdstat-Secret"),
            (post(port, forged, secret=SECRET + "x"), 403, "X-Crowdstat-Secret"),
            (post(port, b'{"action": "ANNOTATION_CREATED", "annotation": {'), 400, "malformed JSON"),
            (post(port, b"[1, 2]"), 400, "expected a JSON object"),
            (post(port, b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": "x"}'), 400, "integer 'id' and 'task'"),
            (post(port, json.dumps({"action": "PROJECT_UPDATED", "project": {"id": PID}}).encode()), 422, "not handled"),
            (post(port, ev.body("ANNOTATION_CREATED", ev.annotation("p04", "a2", {2: -1}), project=8)), 422, "not the round's project 7"),
            (
                post(port, ev.body("ANNOTATION_CREATED", {**ev.annotation("p04", "a2", {2: -1}), "task": 4242})),
                422,
                "task 4242 is not a task of the round",
            ),
            (post(port, ev.deleted([1001], project=8)), 422, "not the round's project"),
            (post(port, forged, path="/other"), 404, "not found"),
        ]
        for (status, reply), want, text in cases:
            assert status == want and reply["ok"] is False and text in reply["error"] and "\n" not in reply["error"], (status, reply)
        # a task whose data key is not the round's (a round.json of another server whose ids coincide)
        body = json.loads(ev.body("ANNOTATION_CREATED", ev.annotation("p04", "a2", {2: -1})))
        body["task"]["data"]["key"] = "t0999"
        status, reply = post(port, json.dumps(body).encode())
        assert status == 422 and "has key 't0999'" in reply["error"]
        new = logs[n:]
        assert len(new) == len(cases) + 1 and all(line.startswith("refused (4") and "\n" not in line for line in new)
        assert not any("Traceback" in line for line in logs)
        assert lis.wait_idle(10) and digest(out) == before
        st = lis.status()
        assert st["refused"] == st0["refused"] + len(cases) + 1 and st["received"] == st0["received"] and st["votes"] == 4
        # /status needs the secret too
        req = urllib.request.Request(f"http://127.0.0.1:{port}/status")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
        req.add_header(ls_events.SECRET_HEADER, SECRET)
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["votes"] == 4
    finally:
        lis.stop()


def test_sequential_and_bad_options_are_refused_in_one_line(setup, tmp_path):
    rd = setup[0]
    rnd = ls_events.StreamRound(rd)
    with pytest.raises(ValueError, match="--method sequential: not per annotation event"):
        ls_stream.Listener(rnd, tmp_path / "o", "sequential", secret=SECRET)
    with pytest.raises(ValueError, match="unknown parameter"):
        ls_stream.Listener(rnd, tmp_path / "o", "em1", {"bogus": 1}, secret=SECRET)
    with pytest.raises(ValueError, match="calibrate"):
        ls_stream.Listener(rnd, tmp_path / "o", "em1", {"calibrate": "auto"}, secret=SECRET)
    with pytest.raises(ValueError, match="shared secret is empty"):
        ls_stream.Listener(rnd, tmp_path / "o", "em1", secret="")
    with pytest.raises(ValueError, match="no listener state to resume"):
        ls_stream.Listener(rnd, tmp_path / "o", secret=SECRET, resume=True)


def test_listen_cli_refuses_sequential_with_one_line(setup, tmp_path, capsys):
    from rl.cli import main as rl_main

    rd = setup[0]
    server = tmp_path / "server.json"
    server.write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "t"}))
    rc = rl_main(["labelstudio", "listen", "--server", str(server), "--round", str(rd), "--method", "sequential", "--secret", SECRET])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("rl labelstudio listen: error: --method sequential")


class Project:
    """The annotations Label Studio holds, and its JSON export (the ``pull`` action's reply, shaped as the
    recorded tests/data/labelstudio/pull_reply.json: every task, its annotations with ``completed_by`` a user id)."""

    def __init__(self, manifest: dict):
        self.m = manifest
        self.anns: dict[int, dict] = {}
        self.pulls = 0

    def save(self, ann: dict) -> dict:
        self.anns[ann["id"]] = ann
        return ann

    def export(self) -> tuple[list, list]:
        self.pulls += 1
        tasks = []
        for k, t in enumerate(self.m["tasks"]):
            tid = self.m["task_ids"][t["key"]]
            anns = []
            for a in self.anns.values():
                if a["task"] == tid:
                    anns.append(
                        {
                            **{f: v for f, v in a.items() if f not in ("created_username", "created_ago")},
                            **{"prediction": {}, "result_count": len(a["result"]), "unique_id": f"u-{a['id']}"},
                        }
                    )
            data = {"key": t["key"], "code": "1 | def f(x):", "lines": [{"n": ln, "text": "..."} for ln in t["lines"]]}
            tasks.append({"id": tid, "annotations": anns, "drafts": [], "predictions": [], "data": data, "meta": {}, "inner_id": k + 1})
        # a task of another round in the same project (another key prefix): left out, as by the pull
        other = {"id": 9000, "data": {"key": "r2-t0001"}, "drafts": [], "predictions": []}
        other["annotations"] = [{"id": 9001, "completed_by": UIDS["a1"], "result": [], "was_cancelled": False, "task": 9000}]
        users = [{"id": 1, "email": "admin@crowd.local"}, *({"id": u, "email": f"{a}@crowd.local"} for a, u in UIDS.items())]
        return [*tasks, other], [*users, {"id": GUEST, "email": "guest@example.org"}]


def pulled(project: Project, order: dict[str, int]) -> list[tuple[str, int, str, int]]:
    """The votes the pull reads from the project (ls_round.votes_from_export), in its order."""
    export, users = project.export()
    project.pulls -= 1
    rows_, _ = ls_round.votes_from_export(export, users, project.m)
    return [r[:4] for r in rows_]


def test_a_listener_started_after_20_annotations_catches_up_equal_to_a_refit(setup):
    """20 annotations saved before the listener: the sync applies them as one online update (the refit's
    posteriors within 1e-6); a webhook for one of them is then an unchanged save; a second sync writes nothing."""
    rd, manifest, true, rnd, start, logs, out = setup
    arrivals = simulate(manifest, true)
    ev, project = Events(manifest), Project(manifest)
    for prog, who, marks in arrivals[:20]:
        project.save(ev.annotation(prog, who, marks))
    # one batch in the pull's order (program as pushed, line, annotator)
    want = sorted(rows(arrivals[:20], rnd.order), key=lambda v: (rnd.order[v[0]], v[1], v[2]))
    assert pulled(project, rnd.order) == want  # the fake export holds what was annotated
    lis, port = start()
    try:
        line = lis.sync(project.export)
        assert project.pulls == 1
        assert line.startswith(f"sync: 20 annotations, 20 new, 0 changed, 0 removed: online update (+{len(want)} votes)"), line
        assert logs[-1] == line
        st = lis.status()
        assert st["votes"] == len(want) and st["syncs"] == 1 and st["events"] == 0 and st["errors"] == 0
        gap = assert_equal_to_refit(out, want, rd)
        logged = pd.read_csv(out / "votes.csv")
        assert sorted(logged.itertuples(index=False, name=None)) == sorted(want)
        # the webhook of an annotation the sync applied (registered before the sync, delivered after it): no change
        before = digest(out)
        prog, who, _ = arrivals[19]
        assert post(port, ev.body("ANNOTATION_CREATED", project.anns[ev.ids[(prog, who)]]))[0] == 200
        assert lis.wait_idle(60) and lis.status()["unchanged"] == 1 and "no change in the votes" in logs[-1]
        assert digest(out) == before
        # nothing new: the second sync makes no request and rewrites nothing
        line = lis.sync(project.export)
        assert line.startswith("sync: 20 annotations, 0 new, 0 changed, 0 removed: no change in the votes, no update"), line
        assert digest(out) == before and lis.status()["syncs"] == 2
        # later events go on from the synced fit
        for prog, who, marks in arrivals[20:40]:
            assert post(port, ev.body("ANNOTATION_CREATED", project.save(ev.annotation(prog, who, marks))))[0] == 200
        assert lis.wait_idle(300)
        assert_equal_to_refit(out, want + rows(arrivals[20:40], rnd.order), rd)
    finally:
        lis.stop()
    print(f"sync of 20 annotations ({len(want)} votes): largest |posterior - refit| {gap:.1e}")


def test_a_resume_catches_up_with_new_changed_and_deleted_annotations(setup):
    """Stopped after 30 events; meanwhile 6 annotations are saved, one is edited (a vote flipped) and one
    deleted: the sync at --resume sees 6 new, 1 changed, 1 removed and refits; the outputs equal the refit
    on the votes the pull reads from the project, and a sync with nothing new writes nothing."""
    rd, manifest, true, rnd, start, logs, out = setup
    arrivals = simulate(manifest, true)
    ev, project = Events(manifest), Project(manifest)
    lis, port = start()
    try:
        for prog, who, marks in arrivals[:30]:
            assert post(port, ev.body("ANNOTATION_CREATED", project.save(ev.annotation(prog, who, marks))))[0] == 200
        assert lis.wait_idle(300)
        before = digest(out)
        line = lis.sync(project.export)  # the export holds exactly what the events brought
        assert line.startswith("sync: 30 annotations, 0 new, 0 changed, 0 removed: no change"), line
        assert digest(out) == before
    finally:
        lis.stop()
    # while no listener runs
    for prog, who, marks in arrivals[30:36]:
        project.save(ev.annotation(prog, who, marks))
    prog, who, marks = arrivals[0]
    ln = min(marks)
    project.save(ev.annotation(prog, who, {**marks, ln: -marks[ln]}, ann_id=ev.ids[(prog, who)]))
    p2, w2, _ = arrivals[1]
    del project.anns[ev.ids[(p2, w2)]]
    # the refit's log: the votes kept in their order, then the changed and new ones in the pull's order
    kept = [v for v in rows(arrivals[:30], rnd.order) if v[:3] != (prog, ln, who) and (v[0], v[2]) != (p2, w2)]
    fresh = [(prog, ln, who, -marks[ln]), *rows(arrivals[30:36], rnd.order)]
    want = kept + sorted(fresh, key=lambda v: (rnd.order[v[0]], v[1], v[2]))
    assert sorted(want) == sorted(pulled(project, rnd.order))
    n = len(logs)
    lis, port = start(resume=True)
    try:
        line = lis.sync(project.export)
        assert line.startswith("sync: 35 annotations, 6 new, 1 changed, 1 removed: refit on"), line
        assert logs[n:] == [line]
        st = lis.status()
        # syncs and events count apart (a sync without a change is not saved: the first run's is not counted)
        assert st["votes"] == len(want) and st["syncs"] == 1 and st["refits"] == 0 and st["errors"] == 0, st
        assert_equal_to_refit(out, want, rd)
        assert sorted(pd.read_csv(out / "votes.csv").itertuples(index=False, name=None)) == sorted(want)
        before = digest(out)
        line = lis.sync(project.export)
        assert line.startswith("sync: 35 annotations, 0 new, 0 changed, 0 removed: no change"), line
        assert digest(out) == before
        # the edit's webhook, delivered late: no change
        assert post(port, ev.body("ANNOTATION_UPDATED", project.anns[ev.ids[(prog, who)]]))[0] == 200
        assert lis.wait_idle(60) and "no change in the votes" in logs[-1] and digest(out) == before
    finally:
        lis.stop()
    saved = json.loads((out / ls_stream.LISTENER_FILE).read_text())
    assert saved["stats"]["syncs"] == 1 and sorted(map(int, saved["annotations"])) == sorted(project.anns)


def test_a_stale_or_unreadable_export_changes_nothing(setup):
    """An edit applied from its webhook is newer than the export's copy (read before the save): it stays.
    An export that cannot be read, or is of another server, is one error line and no change."""
    rd, manifest, true, rnd, start, logs, out = setup
    ev, project = Events(manifest), Project(manifest)
    lis, port = start()
    try:
        ann = project.save(ev.annotation("p03", "a1", {2: 1, 3: -1}))
        assert post(port, ev.body("ANNOTATION_CREATED", ann))[0] == 200
        assert post(port, ev.body("ANNOTATION_UPDATED", ev.annotation("p03", "a1", {2: -1, 3: -1}, ann_id=ann["id"])))[0] == 200
        assert lis.wait_idle(120) and lis.status()["refits"] == 1
        before = digest(out)
        line = lis.sync(project.export)
        assert line.startswith("sync: 1 annotations, 0 new, 0 changed, 0 removed: no change"), line
        assert digest(out) == before

        def down():
            raise ValueError("http://127.0.0.1:1: Connection refused")

        def moved():  # the round's task under another id: another server
            export, users = project.export()
            export[0]["id"] = 4242
            return export, users

        assert lis.sync(down) == "sync: error, export not read (ValueError: http://127.0.0.1:1: Connection refused)"
        line = lis.sync(moved)
        assert line.startswith("sync: error, export not read (ValueError: export: task 't0001' has id 4242"), line
        assert digest(out) == before and lis.status()["errors"] == 2 and lis.status()["votes"] == 2
    finally:
        lis.stop()


def test_listen_cli_registers_the_webhook_before_the_sync(setup, tmp_path, monkeypatch, capsys):
    """``rl labelstudio listen``: webhook, then the pull (the sync), then Ctrl-C/SIGTERM removes the webhook;
    ``--no-sync`` pulls nothing."""
    import threading

    from rl.cli import main as rl_main
    from rl.crowd import ls_server

    rd, manifest, true, rnd, start, logs, out = setup
    ev, project = Events(manifest), Project(manifest)
    for prog, who, marks in simulate(manifest, true)[:5]:
        project.save(ev.annotation(prog, who, marks))
    server = tmp_path / "server.json"
    server.write_text(json.dumps({"url": manifest["url"], "token": "t"}))
    calls, stop_after = [], ["pull"]

    def fake(action, req, **_):  # SIGTERM (as Ctrl-C) once the listener's signal handler is in place
        calls.append(action)
        if action == stop_after[0] and "delete" not in req:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        if action == "webhook":
            return {"deleted": req["delete"]} if "delete" in req else {"id": 77}
        if action == "pull":
            export, users = project.export()
            return {"tasks": export, "users": users}
        raise AssertionError(action)

    monkeypatch.setattr(ls_server, "call_driver", fake)
    old = signal.getsignal(signal.SIGTERM)
    try:
        argv = ["labelstudio", "listen", "--server", str(server), "--round", str(rd), "--secret", SECRET, "--out", str(tmp_path / "o")]
        assert rl_main(argv) == 0
        assert calls == ["webhook", "pull", "webhook"]
        text = capsys.readouterr().out
        assert "sync: 5 annotations, 5 new, 0 changed, 0 removed: online update" in text and "1 syncs" in text
        calls.clear()
        stop_after[0] = "webhook"
        assert rl_main([*argv, "--resume", "--no-sync"]) == 0
        assert calls == ["webhook", "webhook"] and "sync:" not in capsys.readouterr().out
    finally:
        signal.signal(signal.SIGTERM, old)
