"""``crowdstat stream``: JSON requests on stdin keep a streaming fit, written to --out after each, equal to a refit.

The process runs as ``rl labelstudio listen`` runs it (``python -m crowdstat stream``, a pipe each
way). The reference is :func:`crowdstat.fit` on the votes sent so far (em1, float64, EM to its fixed
point: ``tol=0``), on an identifiable crowd (every annotator better than chance, 5 votes a line, a
quarter of the lines honeypots), where EM from the previous fit and from scratch reach the same
optimum (docs/streaming.md, "What the same as a refit means").
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs

P, L, K, M = 24, 4, 5, 6  # programs, lines a program, votes a line, annotators
TIGHT = ["--method", "em1", "--x64", "--em-tol", "0", "--em-maxiter", "5000"]
PARAMS = {"method": "em1", "x64": True, "tol": 0.0, "maxiter": 5000}


def crowd(seed: int = 0):
    """Votes (program order), honeypot truth of 24 of the 96 lines, program sizes (more lines than voted)."""
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.7, 0.95, M)
    truth = np.where(rng.random((P, L)) < 0.6, 1, -1)
    rows = []
    for p in range(P):
        for ln in range(L):
            for a in rng.choice(M, K, replace=False):
                rows.append((f"p{p:02d}", ln + 1, f"a{a}", int(truth[p, ln] if rng.random() < rel[a] else -truth[p, ln])))
    votes = pd.DataFrame(rows, columns=["program", "line", "annotator", "label"])
    hp = rng.choice(P * L, P, replace=False)
    t = pd.DataFrame({"program": [f"p{i // L:02d}" for i in hp], "line": hp % L + 1, "truth": truth.ravel()[hp]})
    sizes = pd.DataFrame({"program": [f"p{p:02d}" for p in range(P)], "n_lines": L + 2})
    return votes, t, sizes


def request(op: str, votes: pd.DataFrame, truth: pd.DataFrame) -> dict:
    keys = set(zip(votes["program"], votes["line"]))
    t = truth[[k in keys for k in zip(truth["program"], truth["line"])]]
    return {
        "op": op,
        "votes": [[p, int(ln), a, int(lab)] for p, ln, a, lab in votes.itertuples(index=False)],
        "truth": [[p, int(ln), int(v)] for p, ln, v in t.itertuples(index=False)],
    }


class Stream:
    """``python -m crowdstat stream ARGS`` with a pipe each way; :meth:`ask` writes one line and reads one reply."""

    def __init__(self, *args: str, cwd: Path):
        self.p = subprocess.Popen(
            [sys.executable, "-m", "crowdstat", "stream", *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, line: str | dict) -> dict:
        self.p.stdin.write((json.dumps(line) if isinstance(line, dict) else line) + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        assert out, self.p.stderr.read()
        assert out.endswith("\n") and out.count("\n") == 1
        return json.loads(out)

    def close(self) -> tuple[int, str]:
        self.p.stdin.close()
        rc = self.p.wait(timeout=120)
        rest = self.p.stdout.read()
        assert rest == "", rest  # one reply per request, nothing else on stdout
        return rc, self.p.stderr.read()


def refit(votes: pd.DataFrame, truth: pd.DataFrame, sizes: pd.DataFrame) -> cs.FitResult:
    keys = set(zip(votes["program"], votes["line"]))
    t = truth[[k in keys for k in zip(truth["program"], truth["line"])]]
    s = sizes[sizes["program"].isin(votes["program"])]
    return cs.fit(votes.reset_index(drop=True), truth=t, programs=s, **PARAMS)


def assert_equals_refit(out: Path, votes, truth, sizes) -> float:
    ref = refit(votes, truth, sizes)
    got = pd.read_csv(out / "lines.csv", dtype={"program": str})
    assert list(zip(got["program"], got["line"])) == list(zip(ref.lines["program"], ref.lines["line"]))
    gap = float(np.abs(got["posterior"].to_numpy() - ref.lines["posterior"].to_numpy()).max())
    assert gap < 1e-6, gap
    ann = pd.read_csv(out / "annotators.csv", dtype={"annotator": str})
    assert list(ann["annotator"]) == list(ref.annotators["annotator"])
    np.testing.assert_allclose(ann["reliability"], ref.annotators["reliability"], rtol=0, atol=1e-6)
    rec = {r["program"]: r for r in map(json.loads, (out / "rewards.jsonl").read_text().splitlines())}
    for r in ref.reward_records():
        assert rec[r["program"]]["reward"] == pytest.approx(r["reward"], abs=1e-9)
        assert rec[r["program"]]["n_lines"] == r["n_lines"] == L + 2  # the sizes of --programs
    assert json.loads((out / "fit.json").read_text())["method"] == "em1"
    assert (out / "state.npz").is_file()
    return gap


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_updates_equal_a_refit_bad_requests_are_one_line_and_warm_start_continues(tmp_path):
    votes, truth, sizes = crowd()
    sizes.to_csv(tmp_path / "programs.csv", index=False)
    cuts = [0, 8, 14, 19, P]  # programs of each batch
    batches = [votes[votes["program"].isin([f"p{i:02d}" for i in range(a, b)])] for a, b in zip(cuts, cuts[1:])]
    s = Stream(*TIGHT, "--programs", "programs.csv", "--out", "s", cwd=tmp_path)
    out = tmp_path / "s"
    try:
        st = s.ask({"op": "status"})
        assert st["ok"] and st["method"] == "em1" and st["n_votes"] == 0 and st["params"]["x64"] is True and st["params"]["tol"] == 0.0
        sent, gaps = [], []
        for k, b in enumerate(batches[:3]):
            r = s.ask(request("update", b, truth))
            sent.append(b)
            n = sum(map(len, sent))
            assert r["ok"] and r["op"] == "update" and r["n_votes"] == n and r["n_new"] == len(b) and r["n_updates"] == k + 1, r
            assert Path(r["out"]) == out.resolve() and r["seconds"] > 0
            gaps.append(assert_equals_refit(out, pd.concat(sent), truth, sizes))
        before = digest(out)
        first = sent[0].iloc[0]
        hp = truth.iloc[0]
        bad = [
            ("not json", "not JSON: "),
            ("[1, 2]", "expected a JSON object, got list"),
            ({"op": "fit"}, "'op': expected one of update, refit, status"),
            ({"op": "update"}, "no 'votes'"),
            ({"op": "update", "votes": [], "truth": []}, "update: 'votes' is empty"),
            ({"op": "update", "votes": [["p20", 1, "a1", 1]], "extra": 1}, "update: unknown field(s) ['extra']"),
            ({"op": "update", "votes": [["p20", 1, "a1"]]}, "votes:1: expected [program, line, annotator, label]"),
            (
                {"op": "update", "votes": [["p20", 1, "a1", 1], ["p20", 2, "a1", "maybe"]]},
                "votes:2:label: unknown label 'maybe'",
            ),
            ({"op": "update", "votes": [["p20", 1, "a1", 1], ["p20", 1, "a1", -1]]}, "votes:2:"),
            (  # a vote already sent: crowdstat does not rewrite history (the caller sends a refit)
                {"op": "update", "votes": [["p20", 1, "a1", 1], [first["program"], int(first["line"]), first["annotator"], 1]]},
                "votes:2:annotator: vote (program, line, annotator)",
            ),
            (
                {"op": "update", "votes": [["p20", 1, "a1", 1]], "truth": [["p20", 3, 1]]},
                "truth:1:line: truth for line 3 of program 'p20', which nobody voted on",
            ),
            (
                {"op": "update", "votes": [["p99", 1, "a1", 1]]},
                "programs.csv:program: no size for program(s) 'p99' of the request's votes",
            ),
        ]
        if (hp["program"], hp["line"]) in set(zip(pd.concat(sent)["program"], pd.concat(sent)["line"])):
            contra = {
                "op": "update",
                "votes": [[hp["program"], int(hp["line"]), "zz", 1]],
                "truth": [[hp["program"], int(hp["line"]), -int(hp["truth"])]],
            }
            bad.append((contra, "truth:truth: truth for (program, line)"))
        for i, (req, want) in enumerate(bad, 5):  # a status and 3 updates before
            r = s.ask(req)
            assert r["ok"] is False and r["error"].startswith(f"request {i}: {want}"), (r, want)
            assert "\n" not in r["error"] and "Traceback" not in r["error"]
        assert digest(out) == before  # nothing written
        st = s.ask({"op": "status"})
        assert st["n_votes"] == sum(map(len, sent)) and st["n_updates"] == 3  # the fit as it was
        r = s.ask(request("update", batches[3], truth))  # ... and it goes on
        sent.append(batches[3])
        assert r["ok"] and r["n_votes"] == len(votes) == sum(map(len, sent))
        gaps.append(assert_equals_refit(out, votes, truth, sizes))
        rc, err = s.close()
    finally:
        if s.p.poll() is None:
            s.p.kill()
    assert rc == 0 and err.strip().splitlines()[-1].startswith(f"crowdstat stream: {3 + len(bad) + 3} requests ({len(bad)} refused)")

    # a refit: a new fit on exactly the votes given (an annotator's votes withdrawn, one vote changed)
    s = Stream("--warm-start", "s", "--programs", "programs.csv", "--out", "s", cwd=tmp_path)  # in place: --out may be --warm-start
    try:
        assert s.ask({"op": "status"})["n_votes"] == len(votes)
        kept = votes[votes["annotator"] != "a2"].copy()
        kept.iloc[0, 3] = -kept.iloc[0, 3]
        r = s.ask(request("refit", kept, truth))
        assert r["ok"] and r["op"] == "refit" and r["n_votes"] == len(kept) and r["n_updates"] == 1
        gaps.append(assert_equals_refit(out, kept, truth, sizes))
        rc, _ = s.close()
    finally:
        if s.p.poll() is None:
            s.p.kill()
    assert rc == 0

    # --warm-start continues a crowdstat fit --save-state output with the next batch (as crowdstat fit --warm-start)
    first3 = pd.concat(batches[:3])
    first3.to_csv(tmp_path / "v.csv", index=False)
    truth.merge(first3[["program", "line"]].drop_duplicates()).to_csv(tmp_path / "t.csv", index=False)
    sizes[sizes["program"].isin(first3["program"])].to_csv(tmp_path / "sz.csv", index=False)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "crowdstat",
            "fit",
            "v.csv",
            "--truth",
            "t.csv",
            "--programs",
            "sz.csv",
            *TIGHT,
            "--save-state",
            "--out",
            "f",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    s = Stream("--warm-start", "f", "--programs", "programs.csv", "--em-tol", "0", "--out", "w", cwd=tmp_path)
    try:
        assert s.ask({"op": "status"})["n_votes"] == len(first3)
        assert s.ask(request("update", batches[3], truth))["ok"]
        gaps.append(assert_equals_refit(tmp_path / "w", votes, truth, sizes))
        rc, _ = s.close()
    finally:
        if s.p.poll() is None:
            s.p.kill()
    assert rc == 0
    for args, want in (
        (["--method", "em2"], "--warm-start f: its state is a --method em1 fit, not --method em2"),
        (["--em-tol", "1e-3"], "--warm-start f: tol = 0.001 differs from the state's tol = 0.0"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "crowdstat", "stream", "--warm-start", "f", *args, "--out", "o"],
            cwd=tmp_path,
            input="",
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"crowdstat stream: error: {want}"], r.stderr
    print(f"largest |posterior - refit| over {len(gaps)} checks: {max(gaps):.1e}")


@pytest.mark.parametrize(
    "args, want",
    [
        (["--method", "sequential"], "crowdstat stream: error: --method sequential: not for crowdstat stream: eq. 8 takes"),
        (["--method", "majority"], "crowdstat stream: error: --method majority: crowdstat stream runs em1, em2, proximal"),
        ([], "crowdstat stream: error: --method: give one of em1, em2, proximal (or --warm-start PREVIOUS_OUT)"),
        (["--method", "em1", "--lam", "0.5"], "crowdstat stream: error: --lam: not an option of --method em1"),
        (["--method", "em1", "--calibrate", "auto"], "crowdstat stream: error: calibrate: not available when streaming"),
        (["--method", "em1", "--programs", "nope.csv"], "crowdstat stream: error: nope.csv: no such program file"),
        (["--warm-start", "nowhere"], "crowdstat stream: error: nowhere: no such state file or output directory"),
    ],
)
def test_refused_at_the_start_in_one_line(tmp_path, args, want):
    r = subprocess.run(
        [sys.executable, "-m", "crowdstat", "stream", *args, "--out", "o"], cwd=tmp_path, input="", capture_output=True, text=True
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(want), r.stderr
    assert r.stdout == "" and not (tmp_path / "o").exists()


def test_an_error_inside_the_estimator_leaves_the_last_written_fit(tmp_path, monkeypatch):
    """The store is updated before the estimator runs: an estimator error must not leave those votes in the fit."""
    from crowdstat.online import OnlineFit
    from crowdstat.online._serve import Stream as Server

    votes, truth, sizes = crowd()
    a, b, c = (votes[votes["program"].isin([f"p{i:02d}" for i in r])] for r in (range(0, 10), range(10, 16), range(16, P)))
    s = Server(OnlineFit("em1", x64=True, tol=0.0, maxiter=5000), tmp_path / "s", sizes)
    assert s.handle(json.dumps(request("update", a, truth)))["ok"]
    calls = []

    def broken(*args, **kw):
        calls.append(1)
        raise FloatingPointError("the estimator failed")

    monkeypatch.setattr(s.fit.model, "step", broken)
    r = s.handle(json.dumps(request("update", b, truth)))
    assert calls and r == {"ok": False, "error": "request 2: internal error: FloatingPointError: the estimator failed"}
    assert s.n_votes == len(a)  # reloaded from --out, without the votes of the failed request
    assert s.handle(json.dumps(request("update", b, truth)))["ok"]  # the same batch again, not a "repeated vote"
    assert s.handle(json.dumps(request("update", c, truth)))["ok"]
    assert_equals_refit(tmp_path / "s", pd.concat([a, b, c]), truth, sizes)
