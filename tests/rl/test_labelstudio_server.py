"""Integration: a real Label Studio server (``make test-labelstudio``; slow, skipped without the venv).

One server per session in a temporary data directory (copied from a prepared data directory kept in
``.venv-labelstudio/prepared-data``, made on the first run: migrations take minutes), stopped and
removed at the end, pass or fail. The tests push a round through ``rl labelstudio``, post votes as
five annotators (each logged in as its own account), pull, and check the vote table, the honeypots'
secrecy and ``crowdstat fit``; a browser test opens a task in headless Chromium; the loop runs two
rounds with the Label Studio backend and resumes after stopping while waiting.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rl.cli import main as rl_main
from rl.crowd import ls_ops, ls_server
from tests.rl_helpers import labelstudio_prepared

pytestmark = pytest.mark.slow

VENV = ls_server.default_venv()
if not (VENV / "bin" / "label-studio").exists():
    pytest.skip(f"no Label Studio venv at {VENV} (build it with `make labelstudio-venv`)", allow_module_level=True)

POPULATION = "expert:2@0.9,novice:2@0.7,spammer:1"  # 5 annotators, 5 accounts


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = ls_server.Server(VENV, prepared=labelstudio_prepared(VENV), timeout=600)
    try:
        info = srv.start()
        print(f"Label Studio up in {srv.startup_seconds:.1f} s (prepared data directory)", file=sys.stderr)
        f = tmp_path_factory.mktemp("ls") / "server.json"
        f.write_text(json.dumps(info))
        yield f
    finally:
        srv.stop()
        assert srv.proc is None and not srv.data_dir.exists()


def _programs(d: Path, n: int = 8, prefix: str = "prog") -> tuple[Path, Path, Path]:
    """programs.jsonl, truth.csv (2 honeypots, 'mutant' ids) and true_lines.csv for n small programs."""
    progs, truth, true_lines = [], [], []
    for i in range(n):
        pid = f"HumanEval/{i}#m1" if i < 2 else f"{prefix}{i}"
        code = f"def f{i}(x):\n    y = x + {i}\n    if y > {i * 2}:\n        return y - 1\n    return y\n"
        lines = [2, 3, 4, 5][: 2 + i % 3]
        progs.append({"program": pid, "code": code, "lines": lines})
        for k, ln in enumerate(lines):
            t = -1 if (i + k) % 3 == 0 else 1
            true_lines.append((pid, ln, t))
            if i < 2:
                truth.append((pid, ln, t))
    (d / "programs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in progs))
    for name, rows in (("truth.csv", truth), ("true_lines.csv", true_lines)):
        (d / name).write_text("program,line,truth\n" + "".join(f"{p},{ln},{t:+d}\n" for p, ln, t in rows))
    return d / "programs.jsonl", d / "truth.csv", d / "true_lines.csv"


def _votes(path: Path) -> list[tuple]:
    with open(path, newline="") as f:
        return [(r["program"], int(r["line"]), r["annotator"], int(r["label"])) for r in csv.DictReader(f)]


def _fit(votes: Path, rd: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "crowdstat", "fit", str(votes), "--method", "em1", "--truth", str(rd / "truth.csv")]
    cmd += ["--programs", str(rd / "programs.csv"), "--out", str(out)]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    recs = [json.loads(x) for x in (out / "rewards.jsonl").read_text().splitlines()]
    return {r["program"]: (r["lines"], [round(p, 9) for p in r["posteriors"]]) for r in recs}


def test_round_trip_push_crowd_edit_skip_pull_fit(server, tmp_path):
    programs, truth, true_lines = _programs(tmp_path)
    rd = tmp_path / "round1"
    base = ["labelstudio"]
    t0 = time.time()
    assert rl_main([*base, "push", "--server", str(server), "--round", str(rd), "--programs", str(programs), "--truth", str(truth)]
                   + ["--population", POPULATION, "--per-program", "3", "--seed", "4"]) == 0  # fmt: skip
    assert rl_main([*base, "status", "--server", str(server), "--round", str(rd)]) == 0
    assert ls_ops.round_status(server, rd)["done"] == 0
    cmd = [*base, "crowd", "--server", str(server), "--round", str(rd), "--population", POPULATION, "--true-lines", str(true_lines)]
    assert rl_main(cmd) == 0
    assert ls_ops.round_status(server, rd) == {"tasks": 8, "done": 8, "annotations": 24, "cancelled": 0, "need": 3}
    assert rl_main([*base, "pull", "--server", str(server), "--round", str(rd)]) == 0
    simulated = _votes(rd / "crowd_votes.csv")
    pulled = _votes(rd / "votes.csv")
    assert len({v[2] for v in pulled}) == 5  # five distinct accounts voted
    assert Counter(pulled) == Counter(simulated) and len(pulled) == len(set(pulled))  # nothing lost, nothing twice
    with open(rd / "votes.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["annotator_id"].isdigit() and row["created_at"] and row["updated_at"] and float(row["lead_time"]) == 5.0
    # crowdstat fit on the pulled table (its extra columns ignored) equals the fit on the simulated path's votes
    assert _fit(rd / "votes.csv", rd, tmp_path / "fit_pulled") == _fit(rd / "crowd_votes.csv", rd, tmp_path / "fit_sim")

    # honeypot truth never reached the server: every task's data is exactly key, code and lines
    srv = ls_server.read_server_json(server)
    m = ls_ops.read_round(rd)
    export = ls_server.call_driver("pull", {"url": srv["url"], "token": srv["token"], "project_id": m["project_id"]})["tasks"]
    assert len(export) == 8 and all(set(t["data"]) == {"key", "code", "lines"} for t in export)
    blob = json.dumps([t["data"] for t in export]) + json.dumps([t.get("meta") for t in export])
    assert "HumanEval" not in blob and "#m1" not in blob and "truth" not in blob and "prog" not in blob
    assert set(m["honeypots"]) == {"HumanEval/0#m1", "HumanEval/1#m1"}

    # an edit: one annotator changes every vote on one program (counts once, the latest answer); a skip: another
    # annotator, not among the program's three, skips it (reported, not counted)
    prog = m["tasks"][0]["program"]
    who = sorted({v[2] for v in simulated if v[0] == prog})
    editor, skipper = who[0], next(a["annotator"] for a in m["annotators"] if a["annotator"] not in who)
    edited = [(p, ln, a, -lab) for p, ln, a, lab in simulated if p == prog and a == editor]
    assert ls_ops.post_votes(rd, edited) == {"posted": 0, "edited": 1}
    acc = next(a for a in m["annotators"] if a["annotator"] == skipper)
    skip = {
        "email": acc["email"],
        "password": acc["password"],
        "annotations": [{"task": m["task_ids"][m["tasks"][0]["key"]], "result": [], "was_cancelled": True}],
    }
    ls_server.call_driver("annotate", {"url": m["url"], "annotators": [skip]})
    rows, rep = ls_ops.pull_round(server, rd, tmp_path / "votes2.csv")
    expected = [v for v in simulated if not (v[0] == prog and v[2] == editor)] + edited
    assert Counter(_votes(tmp_path / "votes2.csv")) == Counter(expected)
    assert rep["cancelled"] == [{"program": prog, "annotator": skipper}] and rep["replaced"] == 0
    print(f"round trip: {time.time() - t0:.0f} s", file=sys.stderr)


def test_browser_finds_one_choice_control_per_line(server, tmp_path):
    if ls_server.chromium_path() is None:
        pytest.skip("no system chromium (Debian: apt-get install chromium; `make labelstudio-browser`)")
    if not list((VENV / "lib").glob("python*/site-packages/playwright")):
        pytest.skip(f"playwright is not installed in {VENV}")
    programs, _, _ = _programs(tmp_path, n=4, prefix="b")
    rd = tmp_path / "round_b"
    assert (
        rl_main(["labelstudio", "push", "--server", str(server), "--round", str(rd), "--programs", str(programs), "--annotators", "ann1"])
        == 0
    )
    m = ls_ops.read_round(rd)
    task = max(m["tasks"], key=lambda t: len(t["lines"]))
    png = tmp_path / "task.png"
    cmd = ["labelstudio", "browse", "--server", str(server), "--round", str(rd), "--task", task["key"], "--screenshot", str(png)]
    assert rl_main(cmd) == 0  # exit 1 when the page's choice controls do not match the task's lines
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("torch")
    from rl.train.sft import SFTConfig, warm_start

    out = tmp_path_factory.mktemp("ws") / "model"
    cfg = SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=3e-3, threads=2)
    warm_start(out, cfg, progress=False)
    return out


def _loop_cfg(model, out, server, rounds=2, **ls):
    from rl.config import LoopConfig

    return LoopConfig(
        model=str(model),
        out=str(out),
        rounds=rounds,
        prompts_per_round=2,
        samples=3,
        sampling={"max_new_tokens": 14},
        reward_source="em1",
        annotate="labelstudio",
        population=POPULATION,
        per_program=3,
        honeypot_fraction=0.3,
        labelstudio={"server": str(server), "poll_seconds": 1.0, "timeout": 300.0, **ls},
        bench={"seed": 0, "n_train_per_template": 3},
        eval={"n": 2, "n_mid": 1, "temperature": 0.8, "n_problems": 3, "every": 1},
        ppo={"learning_rate": 1e-3, "ppo_epochs": 1, "minibatch_size": 3, "reward_mode": "lines"},
        lora={"r": 4, "alpha": 8},
        threads=2,
        seed=1,
    )


def test_loop_two_rounds_with_the_local_crowd(server, tiny_model, tmp_path):
    from rl.loop import run_rounds

    out = tmp_path / "run"
    st = run_rounds(_loop_cfg(tiny_model, out, server, local_crowd=True), progress=False)
    assert st["round"] == 2 and [h["round"] for h in st["history"]] == [0, 1, 2]
    projects = set()
    for r in ("r001", "r002"):
        ls_dir = out / "rounds" / r / "labelstudio"
        assert Counter(_votes(out / "rounds" / r / "votes.csv")) == Counter(_votes(ls_dir / "crowd_votes.csv"))
        assert (out / "rounds" / r / "rewards.jsonl").exists()
        projects.add(ls_ops.read_round(ls_dir)["project_id"])
    assert len(projects) == 1  # both rounds in one project
    # exactly as with the simulated crowd: the same votes, hence the same rewards, in both rounds
    sim = tmp_path / "sim"
    run_rounds(dataclasses.replace(_loop_cfg(tiny_model, sim, server), annotate="simulate", out=str(sim)), progress=False)
    for r in ("r001", "r002"):
        a, b = (
            {x["program"]: x for x in map(json.loads, (d / "rounds" / r / "rewards.jsonl").read_text().splitlines())} for d in (out, sim)
        )
        assert a.keys() == b.keys()
        assert all(a[k]["lines"] == b[k]["lines"] and a[k]["posteriors"] == pytest.approx(b[k]["posteriors"], abs=1e-6) for k in a)


def test_loop_stops_while_waiting_and_resumes(server, tiny_model, tmp_path):
    import numpy as np

    from rl.crowd.population import parse_population, simulate
    from rl.loop import PausedForAnnotation, run_rounds

    out = tmp_path / "run"
    cfg = _loop_cfg(tiny_model, out, server, rounds=1, wait="exit")
    with pytest.raises(PausedForAnnotation, match="waits for Label Studio annotations: 0/"):
        run_rounds(cfg, progress=False)
    rdir = out / "rounds" / "r001"
    assert (rdir / "PAUSED.txt").exists() and not (out / "checkpoints").exists()
    with pytest.raises(PausedForAnnotation):  # resumed before the votes: still waiting, nothing pushed twice
        run_rounds(cfg, resume=True, progress=False)
    assert len(ls_ops.read_round(rdir / "labelstudio")["tasks"]) == ls_ops.round_status(server, rdir / "labelstudio")["tasks"]
    # the annotators vote (here: the simulated population through the API)
    progs = [tuple(x) for x in json.loads((rdir / "labelstudio" / "local_truth.json").read_text())]
    votes, _ = simulate(progs, parse_population(POPULATION), np.random.default_rng(7), 3)
    ls_ops.post_votes(rdir / "labelstudio", votes)
    st = run_rounds(cfg, resume=True, progress=False)
    assert st["round"] == 1 and Counter(_votes(rdir / "votes.csv")) == Counter(votes)
