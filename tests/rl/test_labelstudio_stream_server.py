"""Integration: per-annotation-event streaming from a real Label Studio 1.23.2 (``make test-labelstudio``; slow).

A round is pushed, the listener (rl.crowd.ls_stream) runs on a free port, its webhook is registered on
the project through the SDK (``ls_driver.py webhook``), and annotations are created through the API one
by one, each by its annotator's own account. After each, the listener's outputs equal ``crowdstat.fit``
on the votes posted so far (em1, float64, EM to a tight tolerance), the votes written here from what was
posted, not read back from the listener. An edit that flips a vote (Label Studio sends
ANNOTATION_UPDATED) gives the refit on the changed votes. The honeypot programs are annotated first: with
a few votes and no truth yet, EM from a warm start and EM from scratch can end on different maxima
(docs/streaming.md).

Label Studio refuses webhooks to 127.0.0.1 unless its SSRF protection is off (``SSRF_PROTECTION_ENABLED``,
on by default in 1.23): the server of this test is started with it off.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from rl.crowd import ls_ops, ls_server, ls_stream
from tests.rl_helpers import labelstudio_prepared

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
    prepared = labelstudio_prepared(VENV)
    old = os.environ.get("SSRF_PROTECTION_ENABLED")
    os.environ["SSRF_PROTECTION_ENABLED"] = "false"  # the listener is on 127.0.0.1
    srv = ls_server.Server(VENV, prepared=prepared, timeout=600)
    try:
        info = srv.start()
        f = tmp_path_factory.mktemp("ls") / "server.json"
        f.write_text(json.dumps(info))
        yield f
    finally:
        srv.stop()
        if old is None:
            os.environ.pop("SSRF_PROTECTION_ENABLED", None)
        else:
            os.environ["SSRF_PROTECTION_ENABLED"] = old


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


def test_webhook_events_from_a_real_server_keep_the_fit_equal_to_a_refit(server, tmp_path):
    programs, true, honey = _round(tmp_path)
    rd = tmp_path / "round"
    m = ls_ops.push_round(server, rd, programs, honeypots=honey, annotators=ANNOTATORS, per_program=3, seed=0)
    srv = ls_server.read_server_json(server)
    rnd = ls_stream.StreamRound(rd)
    logs: list[str] = []

    def users(uid):
        reply = ls_server.call_driver("users", {"url": srv["url"], "token": srv["token"]})
        return {u["id"]: u["email"] for u in reply["users"]}.get(uid)

    lis = ls_stream.Listener(rnd, tmp_path / "out", "em1", PARAMS, secret=SECRET, users=users, log=logs.append)
    _, port = lis.serve("127.0.0.1", 0)
    req = {"url": srv["url"], "token": srv["token"], "project_id": m["project_id"], "target": f"http://127.0.0.1:{port}/webhook"}
    hook = ls_server.call_driver("webhook", {**req, "headers": {ls_stream.SECRET_HEADER: SECRET}, "actions": list(ls_stream.ACTIONS)})
    assert hook["actions"] == sorted(ls_stream.ACTIONS)
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
        for k, (prog, who, marks) in enumerate(arrivals, 1):
            mine = [(prog, ln, who, lab) for ln, lab in sorted(marks.items())]
            assert ls_ops.post_votes(rd, mine) == {"posted": 1, "edited": 0}
            assert lis.wait_idle(120)
            votes += mine
            st = lis.status()
            assert st["applied"] == k and st["online"] == k and st["errors"] == 0 and st["refused"] == 0, (st, logs[-3:])
            gaps.append(_check(tmp_path / "out", votes, rd))
        # an edit through the API (Label Studio: ANNOTATION_UPDATED) that flips one vote: the refit on the changed votes
        prog, who, marks = arrivals[-1]
        ln = min(marks)
        edited = [(prog, x, who, -lab if x == ln else lab) for x, lab in sorted(marks.items())]
        assert ls_ops.post_votes(rd, edited) == {"posted": 0, "edited": 1}
        assert lis.wait_idle(120)
        votes = [v for v in votes if v[:3] != (prog, ln, who)] + [(prog, ln, who, -marks[ln])]
        gaps.append(_check(tmp_path / "out", votes, rd))
        assert lis.status()["refits"] == 1 and "refit on" in logs[-1]
        # the votes the listener logged are the pull's votes (same annotator names, same labels)
        rows, _ = ls_ops.pull_round(server, rd, tmp_path / "pulled.csv")
        assert sorted((p, ln, w, lab) for p, ln, w, lab, *_ in rows) == sorted(votes)
    finally:
        lis.stop()
        ls_server.call_driver("webhook", {"url": srv["url"], "token": srv["token"], "delete": hook["id"]})
    print(
        f"{len(arrivals)} annotation events + 1 edit from Label Studio in {time.time() - t0:.0f} s; "
        f"largest |posterior - refit| {max(gaps):.1e}",
        file=sys.stderr,
    )
