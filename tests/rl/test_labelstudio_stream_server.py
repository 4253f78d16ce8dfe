"""Integration: ``rl labelstudio listen`` against a real Label Studio 1.23.2 (``make test-labelstudio``; slow).

A round is pushed, and the real command runs as a subprocess (``python -m rl labelstudio listen``): it
registers its webhook on the project through the SDK (``ls_driver.py webhook``) and fits through its own
``crowdstat stream`` subprocess. Annotations are created through the API one by one, each by its
annotator's own account; after each, the listener's outputs equal ``crowdstat.fit`` on the votes posted
so far (em1, float64, EM to a tight tolerance), the votes written here from what was posted, not read
back from the listener. An edit that flips a vote (Label Studio sends ANNOTATION_UPDATED) gives the
refit on the changed votes. SIGINT stops it: exit status 0, the webhook gone from the server, the fit
process gone. The honeypot programs are annotated first: with a few votes and no truth yet, EM from a
warm start and EM from scratch can end on different maxima (docs/streaming.md).

Label Studio refuses webhooks to 127.0.0.1 unless its SSRF protection is off: the server of this test is
started with ``Server(allow_local_webhooks=True)`` (``rl labelstudio serve --allow-local-webhooks``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from rl.crowd import ls_events, ls_ops, ls_server, ls_stream
from tests.rl_helpers import labelstudio_server_json

pytestmark = pytest.mark.slow

VENV = ls_server.default_venv()
if not (VENV / "bin" / "label-studio").exists():
    pytest.skip(f"no Label Studio venv at {VENV} (build it with `make labelstudio-venv`)", allow_module_level=True)

ANNOTATORS = ["a1", "a2", "a3", "a4", "a5"]
RELIABILITY = {"a1": 0.92, "a2": 0.85, "a3": 0.8, "a4": 0.75, "a5": 0.88}
PARAMS = {"x64": True, "tol": 1e-15, "maxiter": 100_000}
SECRET = "real-server-secret-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from labelstudio_server_json(tmp_path_factory, VENV, allow_local_webhooks=True)


def _round(tmp_path, n: int = 8, n_honeypots: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    programs, true = [], {}
    for i in range(n):
        pid = f"p{i:02d}"
        code = f"def f{i}(x):\n    y = x + {i}\n    if y > {i}:\n        y -= 1\n    return y\n"
        programs.append({"program": pid, "code": code, "lines": [2, 3, 4, 5]})
        true[pid] = {ln: int(rng.choice([1, -1], p=[0.6, 0.4])) for ln in (2, 3, 4, 5)}
    honey = {f"p{i:02d}": true[f"p{i:02d}"] for i in range(n_honeypots)}
    return programs, true, honey


def _reference(votes: list[tuple], rd) -> cs.FitResult:
    v = pd.DataFrame(votes, columns=["program", "line", "annotator", "label"])
    truth = pd.read_csv(rd / "truth.csv").merge(v[["program", "line"]].drop_duplicates())
    sizes = pd.read_csv(rd / "programs.csv")
    return cs.fit(v, truth=truth if len(truth) else None, programs=sizes[sizes["program"].isin(v["program"])], method="em1", **PARAMS)


def _check(out, votes, rd) -> float:
    ref = _reference(votes, rd)
    got = pd.read_csv(out / "lines.csv")
    assert list(zip(got["program"], got["line"])) == list(zip(ref.lines["program"], ref.lines["line"]))
    gap = float(np.abs(got["posterior"].to_numpy() - ref.lines["posterior"].to_numpy()).max())
    assert gap < 1e-6, gap
    rec = {r["program"]: r["reward"] for r in map(json.loads, (out / "rewards.jsonl").read_text().splitlines())}
    assert rec == pytest.approx({r["program"]: r["reward"] for r in ref.reward_records()}, abs=1e-12)
    return gap


def _webhooks(srv: dict, project_id: int) -> list[dict]:
    """The project's webhooks, read with the REST API (``GET /api/webhooks/``), not through the listener."""
    req = urllib.request.Request(f"{srv['url']}/api/webhooks/?project={project_id}", headers={"Authorization": f"Token {srv['token']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return [h for h in json.loads(r.read()) if h.get("project") == project_id]


class Lines:
    """The stdout lines of a process, read by a thread; :meth:`wait` for one that matches."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pattern: str, timeout: float = 300) -> re.Match:
        with self.cond:
            found = None

            def hit():
                nonlocal found
                found = next((m for m in map(re.compile(pattern).search, self.lines) if m), None)
                return found is not None

            assert self.cond.wait_for(hit, timeout), self.lines[-5:]
        return found


def _status(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/status", headers={ls_events.SECRET_HEADER: SECRET})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _wait_applied(port: int, n: int, timeout: float = 120) -> dict:
    t0 = time.time()
    while True:
        st = _status(port)
        if st["applied"] >= n and st["pending"] == 0:
            return st
        assert time.time() - t0 < timeout, st
        time.sleep(0.1)


def test_the_listen_command_keeps_the_fit_equal_to_a_refit_and_stops_on_sigint(server, tmp_path):
    programs, true, honey = _round(tmp_path)
    rd, out = tmp_path / "round", tmp_path / "round" / "stream"
    m = ls_ops.push_round(server, rd, programs, honeypots=honey, annotators=ANNOTATORS, per_program=3, seed=0)
    srv = ls_server.read_server_json(server)
    cmd = [sys.executable, "-m", "rl", "labelstudio", "listen", "--server", str(server), "--round", str(rd), "--method", "em1"]
    cmd += ["--x64", "--tol", str(PARAMS["tol"]), "--maxiter", str(PARAMS["maxiter"])]
    env = {**os.environ, ls_stream.SECRET_ENV: SECRET}
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = Lines(proc)
    rng = np.random.default_rng(3)
    arrivals = []  # (program, annotator, {line: label}); honeypot programs first
    for t in sorted(m["tasks"], key=lambda t: (t["program"] not in honey, t["key"])):
        for who in rng.choice(ANNOTATORS, size=3, replace=False):
            who = str(who)
            right = {ln: rng.random() < RELIABILITY[who] for ln in t["lines"] if rng.random() > 0.05}
            marks = {ln: true[t["program"]][ln] * (1 if ok else -1) for ln, ok in right.items()}
            arrivals.append((t["program"], who, marks))
    votes: list[tuple] = []
    gaps, t0 = [], time.time()
    try:
        up = log.wait(r"listen: (http://127\.0\.0\.1:(\d+)/webhook) \(webhook (\d+) on project (\d+)\)")
        target, port, hook = up.group(1), int(up.group(2)), int(up.group(3))
        assert int(up.group(4)) == m["project_id"]
        # the start-up sync (after the webhook is registered) finds nothing; the events below come after it
        assert log.wait(r"sync: 0 annotations, 0 new, 0 changed, 0 removed: no change")
        # registered through the SDK: the server holds it, with the secret header and the four actions
        (wh,) = [h for h in _webhooks(srv, m["project_id"]) if h["id"] == hook]
        assert wh["url"] == target and sorted(wh["actions"]) == sorted(ls_events.ACTIONS) and wh["send_payload"]
        assert wh["headers"] == {ls_events.SECRET_HEADER: SECRET}
        stream_pid = _status(port)["stream_pid"]
        assert stream_pid is not None
        for k, (prog, who, marks) in enumerate(arrivals, 1):
            mine = [(prog, ln, who, lab) for ln, lab in sorted(marks.items())]
            assert ls_ops.post_votes(rd, mine) == {"posted": 1, "edited": 0}
            st = _wait_applied(port, k)
            votes += mine
            assert st["online"] == k and st["errors"] == 0 and st["refused"] == 0 and st["votes"] == len(votes), (st, log.lines[-3:])
            gaps.append(_check(out, votes, rd))
        # an edit through the API (Label Studio: ANNOTATION_UPDATED) that flips one vote: the refit on the changed votes
        prog, who, marks = arrivals[-1]
        ln = min(marks)
        edited = [(prog, x, who, -lab if x == ln else lab) for x, lab in sorted(marks.items())]
        assert ls_ops.post_votes(rd, edited) == {"posted": 0, "edited": 1}
        st = _wait_applied(port, len(arrivals) + 1)
        votes = [v for v in votes if v[:3] != (prog, ln, who)] + [(prog, ln, who, -marks[ln])]
        gaps.append(_check(out, votes, rd))
        assert st["refits"] == 1 and st["stream_restarts"] == 0 and st["stream_pid"] == stream_pid
        log.wait(r"ANNOTATION_UPDATED .*refit on \d+ votes")
        # the votes the listener logged are the pull's votes (same annotator names, same labels)
        rows, _ = ls_ops.pull_round(server, rd, tmp_path / "pulled.csv")
        assert sorted((p, ln, w, lab) for p, ln, w, lab, *_ in rows) == sorted(votes)
        logged = pd.read_csv(out / "votes.csv")
        assert sorted((p, int(ln), w, int(lab)) for p, ln, w, lab in logged.itertuples(index=False, name=None)) == sorted(votes)
        # SIGINT (Ctrl-C): the events received are applied, the webhook is removed, the fit process ends
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.lines[-5:]
        log.t.join(timeout=10)
        stopped = log.wait(r"listen: stopped; (\d+) events \((\d+) online updates, (\d+) refits, 0 without change, 0 errors\)")
        assert stopped.groups() == (str(len(arrivals) + 1), str(len(arrivals)), "1")
        assert hook not in [h["id"] for h in _webhooks(srv, m["project_id"])]
        with pytest.raises(ProcessLookupError):
            os.kill(stream_pid, 0)
        assert not any("Traceback" in line or ": error" in line or "warning" in line for line in log.lines), log.lines
        assert not (out.parent / f".{out.name}.crowdstat-stream").exists()
        gaps.append(_check(out, votes, rd))  # the outputs stay

        # while no listener runs: 3 new annotations, an edit that flips a vote, a deletion (Label Studio resends none)
        order = ls_events.StreamRound(rd).order
        done = {(p, w) for p, w, _ in arrivals}
        new = []
        for t in sorted(m["tasks"], key=lambda t: t["key"])[:3]:
            who = next(a for a in ANNOTATORS if (t["program"], a) not in done)
            new += [(t["program"], ln, who, true[t["program"]][ln]) for ln in t["lines"]]
        assert ls_ops.post_votes(rd, new) == {"posted": 3, "edited": 0}
        p1, w1, marks1 = arrivals[0]
        ln1 = min(marks1)
        assert ls_ops.post_votes(rd, [(p1, x, w1, -lab if x == ln1 else lab) for x, lab in sorted(marks1.items())]) == {
            "posted": 0,
            "edited": 1,
        }
        p2, w2, _ = arrivals[1]
        reply = ls_server.call_driver("pull", {"url": srv["url"], "token": srv["token"], "project_id": m["project_id"]})
        uid2 = next(u["id"] for u in reply["users"] if u["email"] == f"{w2}@crowd.local")
        key2 = next(t["key"] for t in m["tasks"] if t["program"] == p2)
        (aid,) = [a["id"] for t in reply["tasks"] if t["data"]["key"] == key2 for a in t["annotations"] if a["completed_by"] == uid2]
        req = urllib.request.Request(
            f"{srv['url']}/api/annotations/{aid}/", method="DELETE", headers={"Authorization": f"Token {srv['token']}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204
        # --resume: the webhook first, then the sync: 3 new, 1 changed, 1 removed -> one refit; outputs = the refit on all votes
        kept = [v for v in votes if v[:3] != (p1, ln1, w1) and (v[0], v[2]) != (p2, w2)]
        votes = kept + sorted([(p1, ln1, w1, -marks1[ln1]), *new], key=lambda v: (order[v[0]], v[1], v[2]))
        proc = subprocess.Popen([*cmd, "--resume"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = Lines(proc)
        up = log.wait(r"listen: (http://127\.0\.0\.1:(\d+)/webhook) \(webhook (\d+) on project")
        port = int(up.group(2))
        synced = log.wait(r"sync: (\d+) annotations, (\d+) new, (\d+) changed, (\d+) removed: refit on (\d+) votes")
        assert synced.groups() == (str(len(arrivals) + 2), "3", "1", "1", str(len(votes))), synced.group(0)
        gaps.append(_check(out, votes, rd))
        rows, _ = ls_ops.pull_round(server, rd, tmp_path / "pulled.csv")
        assert sorted((p, ln, w, lab) for p, ln, w, lab, *_ in rows) == sorted(votes)
        st = _status(port)
        # the first run's start-up sync (counted in listener.json with its later events) and this one
        assert st["syncs"] == 2 and st["errors"] == 0 and st["votes"] == len(votes), st
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.lines[-5:]
        log.t.join(timeout=10)
        assert int(up.group(3)) not in [h["id"] for h in _webhooks(srv, m["project_id"])]
        assert not any("Traceback" in line or ": error" in line or "warning" in line for line in log.lines), log.lines
        gaps.append(_check(out, votes, rd))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
            for h in _webhooks(srv, m["project_id"]):
                ls_server.call_driver("webhook", {"url": srv["url"], "token": srv["token"], "delete": h["id"]})
    print(
        f"rl labelstudio listen: {len(arrivals)} annotation events + 1 edit from Label Studio, then a --resume catching up "
        f"3 new, 1 changed, 1 removed in {time.time() - t0:.0f} s; largest |posterior - refit| {max(gaps):.1e}",
        file=sys.stderr,
    )
