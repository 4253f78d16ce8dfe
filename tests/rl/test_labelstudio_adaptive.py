"""Adaptive allocation in a Label Studio round (:mod:`rl.crowd.ls_adaptive`).

Default run (no server): the overlap decision from a ``crowdstat next`` proposal (next.csv + programs.csv),
checked against a brute-force reference on random proposals (hypothesis); the budget accounting; the stop when
every program is decided; bad proposal files; the config check. Slow (real Label Studio server, skipped without
``.venv-labelstudio``): a loop round through :func:`rl.crowd.ls_backend.round_votes` with the local crowd, where
the undecided programs' tasks end with more annotations than the decided ones; and one ``rl loop`` round with
``allocation = "adaptive"`` and ``annotate = "labelstudio"`` (a tiny warm-started model), whose fit gets every vote
the local crowd posted.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.crowd import ls_adaptive, ls_ops, ls_server
from rl.crowd.ls_adaptive import all_decided, plan_raise, read_proposal, round_budget
from tests.rl_helpers import labelstudio_server_json


def _write_proposal(d: Path, rows: list[tuple], decided: dict[str, bool]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "next.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["program", "annotator", "kind", "gain"])
        w.writerows([(p, a, k, 0.5) for p, a, k in rows])
    with open(d / "programs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["program", "n_lines", "n_votes", "confidence", "decided"])
        w.writerows([(p, 3, 3, 0.99 if dec else 0.6, dec) for p, dec in decided.items()])
    return d


def test_overlap_decision_from_next_and_programs_csv(tmp_path):
    rows = [("a", "x1", "vote"), ("b", "x1", "vote"), ("a", "x2", "vote"), ("h", "x3", "honeypot"), ("zz", "x1", "vote")]
    rows += [("c", "x2", "vote"), ("a", "x3", "vote")]
    d = _write_proposal(tmp_path / "next", rows, {"a": False, "b": True, "c": False, "h": True})
    props, decided = read_proposal(d)
    assert props == rows and decided == {"a": False, "b": True, "c": False, "h": True}
    wanted = {"a": 1, "b": 1, "c": 1, "h": 1}
    # b is decided (skipped), zz is not in the round (skipped), the honeypot review counts, a is capped at 3
    new, taken = plan_raise(props, decided, wanted, max_overlap=3, left=10)
    assert new == {"a": 3, "b": 1, "c": 2, "h": 2}
    assert taken == [("a", "x1", "vote"), ("a", "x2", "vote"), ("h", "x3", "honeypot"), ("c", "x2", "vote")]
    assert wanted == {"a": 1, "b": 1, "c": 1, "h": 1}  # not changed in place
    # the budget cuts the proposal in its order
    new, taken = plan_raise(props, decided, wanted, max_overlap=5, left=2)
    assert new == {"a": 3, "b": 1, "c": 1, "h": 1} and len(taken) == 2
    assert plan_raise(props, decided, wanted, max_overlap=5, left=0) == (wanted, [])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("abcdq"), st.sampled_from(["u", "v", "w"]), st.sampled_from(["vote", "honeypot"])), max_size=25
    ),
    dec=st.dictionaries(st.sampled_from("abcd"), st.booleans()),
    start=st.dictionaries(st.sampled_from("abcd"), st.integers(1, 4), min_size=1),
    cap=st.integers(1, 5),
    left=st.integers(-2, 12),
)
def test_plan_raise_matches_a_slow_reference(rows, dec, start, cap, left):
    new, taken = plan_raise(rows, dec, start, cap, left)
    # reference: replay the proposals one by one, re-checking every condition from scratch
    ref, budget, took = dict(start), left, []
    for i, (p, _a, k) in enumerate(rows):
        if budget - len(took) <= 0:
            break
        eligible = p in ref and (k == "honeypot" or not dec.get(p, False))
        if eligible and ref[p] < cap:
            ref[p] += 1
            took.append(rows[i])
    assert new == ref and taken == took
    assert sum(new.values()) - sum(start.values()) == len(taken) <= max(left, 0)
    assert all(new[p] == start[p] or new[p] <= cap for p in new)  # never raised past the cap
    assert all(new[p] == start[p] for p in new if dec.get(p) and not any(r[0] == p and r[2] == "honeypot" for r in rows))


def test_budget_and_stop_rules():
    assert [ls_adaptive.start_overlap(b, n) for b, n in ((3.0, 5), (1.5, 5), (3.0, 1), (1.0, 1))] == [2, 1, 1, 1]
    assert round_budget(16, 2.0) == 32 and round_budget(10, 2.25) == 22 and round_budget(0, 3.0) == 0
    with pytest.raises(ValueError, match="vote_budget >= 1"):
        round_budget(5, 0.5)
    assert all_decided({"a": True, "b": True, "c": False}, ["a", "b"])
    assert not all_decided({"a": True, "b": True, "c": False}, ["a", "b", "c"])
    assert not all_decided({"a": True}, ["a", "b"])  # a program the fit has not seen is not decided


def _round_dir(tmp_path: Path, n: int = 8) -> Path:
    ls_dir = tmp_path / "labelstudio"
    ls_dir.mkdir(parents=True)
    tasks = [{"key": f"r001-t{i:04d}", "program": f"p{i}", "lines": [2, 3]} for i in range(n)]
    m = {"url": "http://x", "project_id": 1, "per_program": 1, "tasks": tasks, "task_ids": {t["key"]: 100 + i for i, t in enumerate(tasks)}}
    m["annotators"] = [{"annotator": a, "email": f"{a}@crowd.local", "password": "pw"} for a in ("e1", "e2", "n1")]
    (ls_dir / "round.json").write_text(json.dumps(m))
    (ls_dir / "truth.csv").write_text("program,line,truth\n")
    return ls_dir


class _Cfg:
    vote_budget = 2.0
    allocation_confidence = 0.95
    honeypot_fraction = 0.1
    seed = 0

    class labelstudio:
        server = "server.json"
        local_crowd = False


def test_steps_stop_when_every_program_is_decided_and_on_budget(tmp_path, monkeypatch):
    ls_dir = _round_dir(tmp_path)
    calls = []
    monkeypatch.setattr(ls_ops, "pull_round", lambda server, rd, out: ([("p0", 2, "e1", 1, 7, "t", "t", 1.0)], {}))
    monkeypatch.setattr(ls_ops, "set_overlaps", lambda server, rd, ov: calls.append(dict(ov)))
    decided = {f"p{i}": i >= 2 for i in range(8)}

    class Rewarder:
        def _allocation_fit(self):
            return "em2"

        def _crowdstat(self, cmd, votes):
            assert cmd[0] == "next" and cmd[cmd.index("--annotators") + 1] == "e1,e2,n1" and "--truth" not in cmd
            budget = int(cmd[cmd.index("--budget") + 1])
            rows = [(f"p{i % 2}", "e1", "vote") for i in range(budget)]
            _write_proposal(Path(cmd[cmd.index("--out") + 1]), rows, decided)

    st0 = ls_adaptive.start(_Cfg, ls_dir)
    assert (st0["budget"], st0["step_size"], st0["max_overlap"], st0["start_overlap"]) == (16, 2, 3, 1)
    assert ls_adaptive.next_step(_Cfg, Rewarder(), "r001", ls_dir)  # step 0: p0, p1 raised to 2
    assert calls == [{"r001-t0000": 2, "r001-t0001": 2, **{f"r001-t{i:04d}": 1 for i in range(2, 8)}}]
    (ls_dir / "overlap.json").write_text(json.dumps(calls[-1]))  # as set_overlaps keeps it
    assert ls_adaptive.next_step(_Cfg, Rewarder(), "r001", ls_dir)  # step 1: p0, p1 raised to 3 (the cap)
    (ls_dir / "overlap.json").write_text(json.dumps(calls[-1]))
    assert calls[-1]["r001-t0000"] == 3 == calls[-1]["r001-t0001"]
    # step 2: both undecided programs are at the cap: nothing to ask, the round is finished
    assert not ls_adaptive.next_step(_Cfg, Rewarder(), "r001", ls_dir)
    st = json.loads((ls_dir / "adaptive.json").read_text())
    assert st["finished"] == "nothing to ask" and len(st["steps"]) == 2 and st["annotations_wanted"] == 12 <= st["budget"]
    assert not ls_adaptive.next_step(_Cfg, Rewarder(), "r001", ls_dir) and len(calls) == 2  # stays finished

    # every program decided: finished at the first step, nothing raised
    ls_dir2 = _round_dir(tmp_path / "b")
    decided.update({p: True for p in decided})
    assert not ls_adaptive.next_step(_Cfg, Rewarder(), "r001", ls_dir2)
    assert json.loads((ls_dir2 / "adaptive.json").read_text())["finished"] == "all decided" and len(calls) == 2

    # a budget of one annotation per program is spent by the push: no `crowdstat next` at all
    ls_dir3 = _round_dir(tmp_path / "c")

    class Spent(_Cfg):
        vote_budget = 1.0

    assert not ls_adaptive.next_step(Spent, None, "r001", ls_dir3)
    assert json.loads((ls_dir3 / "adaptive.json").read_text())["finished"] == "budget"


def test_a_step_stopped_half_way_is_completed_on_resume(tmp_path, monkeypatch):
    from rl.crowd.population import parse_population

    ls_dir = _round_dir(tmp_path, n=3)
    truths = [[f"p{i}", [2, 3], [1, -1], False] for i in range(3)]
    (ls_dir / "local_truth.json").write_text(json.dumps(truths))
    (ls_dir / "crowd_votes.csv").write_text("program,line,annotator,label\np0,2,e1,1\n")
    patched, posted = [], []
    monkeypatch.setattr(ls_ops, "set_overlaps", lambda server, rd, ov: patched.append(dict(ov)))
    monkeypatch.setattr(ls_ops, "post_votes", lambda rd, votes: posted.append(list(votes)))

    class Cfg(_Cfg):
        class labelstudio:
            server = "server.json"
            local_crowd = True

    class Rewarder:
        population = parse_population("expert:2@1.0,novice:1@1.0")  # expert01, expert02, novice01

    ids = [a.id for a in Rewarder.population.annotators]
    st = ls_adaptive.start(Cfg, ls_dir)
    step = {
        "dir": "adaptive/step00",
        "wanted": {"p0": 1, "p1": 3, "p2": 2},
        "taken": [["p1", ids[0], "vote"], ["p1", ids[1], "vote"], ["p2", ids[2], "vote"]],
    }
    st["steps"].append({**step, "patched": False, "posted": False})
    (ls_dir / "adaptive.json").write_text(json.dumps(st))
    ls_adaptive.complete_step(Cfg, Rewarder(), "r001", ls_dir)
    assert patched == [{"r001-t0000": 1, "r001-t0001": 3, "r001-t0002": 2}]
    # reliability-1 annotators answer with the truth, every line of their program, as the proposal says
    want = [
        ("p1", 2, ids[0], 1),
        ("p1", 3, ids[0], -1),
        ("p1", 2, ids[1], 1),
        ("p1", 3, ids[1], -1),
        ("p2", 2, ids[2], 1),
        ("p2", 3, ids[2], -1),
    ]
    assert posted == [want]
    with open(ls_dir / "crowd_votes.csv", newline="") as f:
        assert [tuple(r) for r in csv.reader(f)][1:] == [("p0", "2", "e1", "1")] + [tuple(map(str, v)) for v in want]
    done = json.loads((ls_dir / "adaptive.json").read_text())["steps"][-1]
    assert done["patched"] and done["posted"]
    ls_adaptive.complete_step(Cfg, Rewarder(), "r001", ls_dir)  # nothing left to do: nothing sent again
    assert len(patched) == 1 and len(posted) == 1


def test_round_status_uses_each_tasks_own_overlap(tmp_path, monkeypatch):
    ls_dir = _round_dir(tmp_path, n=3)
    (tmp_path / "server.json").write_text(json.dumps({"url": "http://x", "token": "t"}))
    totals = {100: 1, 101: 2, 102: 2}
    reply = {
        "tasks": [{"id": i, "total_annotations": n, "cancelled_annotations": 0} for i, n in totals.items()]
        + [{"id": 9, "total_annotations": 0, "cancelled_annotations": 0}]
    }
    monkeypatch.setattr(ls_ops, "call_driver", lambda action, req: reply)
    assert ls_ops.round_status(tmp_path / "server.json", ls_dir) == {"tasks": 3, "done": 3, "annotations": 5, "cancelled": 0, "need": 1}
    (ls_dir / "overlap.json").write_text(json.dumps({"r001-t0001": 3, "r001-t0002": 2}))
    st = ls_ops.round_status(tmp_path / "server.json", ls_dir)
    assert st == {"tasks": 3, "done": 2, "annotations": 5, "cancelled": 0, "need": 3, "wanted": 6}


def test_bad_proposal_files_name_file_row_and_column(tmp_path):
    d = _write_proposal(tmp_path / "n", [("a", "x", "vote")], {"a": False})
    (d / "programs.csv").write_text("program,n_lines,n_votes,confidence,decided\na,3,3,0.5,maybe\n")
    with pytest.raises(ValueError, match=r"programs.csv: row 2, column 'decided': expected True or False"):
        read_proposal(d)
    (d / "next.csv").write_text("program,kind\na,vote\n")
    with pytest.raises(ValueError, match=r"next.csv: row 1, column 'annotator': column missing"):
        read_proposal(d)


def test_config_allows_adaptive_with_labelstudio_only():
    from rl.config import LoopConfig

    assert LoopConfig(allocation="adaptive", annotate="labelstudio").allocation == "adaptive"
    with pytest.raises(ValueError, match="needs annotate 'simulate' or 'labelstudio'"):
        LoopConfig(allocation="adaptive", annotate="pause")


# ---------------------------------------------------------------- the real server (slow)

VENV = ls_server.default_venv()
POP = "expert:3@0.97,novice:2@0.65"  # 5 accounts
NOISY = "novice:3@0.7,spammer:2"  # the loop test: no annotator that the small round's fit finds perfect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (VENV / "bin" / "label-studio").exists():
        pytest.skip(f"no Label Studio venv at {VENV} (build it with `make labelstudio-venv`)")
    yield from labelstudio_server_json(tmp_path_factory, VENV)


class _Problem:
    def program(self, completion: str) -> str:
        return completion


def _round_items(n: int = 16):
    """n programs: odd ones have one annotated line (easy to decide), even ones four; every third line is wrong."""
    from rl.crowd.pipeline import Scored

    items, scored = [], []
    for i in range(n):
        code = f"def f{i}(x):\n    y = x + {i}\n    if y > {i * 2}:\n        return y - 1\n    return y\n"
        lines = [2] if i % 2 else [2, 3, 4, 5]
        truths = [(ln, (i + k) % 3 != 0) for k, ln in enumerate(lines)]
        items.append((f"prog{i:02d}", _Problem(), code))
        scored.append(Scored(f"prog{i:02d}", f"T/{i}", False, 0.0, False, truths))
    return items, scored


@pytest.mark.slow
def test_adaptive_round_on_a_real_server(server, tmp_path):
    from rl.config import LoopConfig
    from rl.crowd.ls_backend import round_votes
    from rl.crowd.pipeline import CrowdRewarder

    items, scored = _round_items()
    cfg = LoopConfig(
        out=str(tmp_path / "run"), annotate="labelstudio", allocation="adaptive", vote_budget=3.0, allocation_confidence=0.9,
        reward_source="em2", population=POP, honeypot_fraction=0.25, seed=3,
        labelstudio={"server": str(server), "local_crowd": True, "poll_seconds": 1.0, "timeout": 120.0},
    )  # fmt: skip
    rewarder = CrowdRewarder("em2", tmp_path / "crowd", population=POP, honeypot_fraction=0.25, seed=3)
    rewarder.score = lambda its: scored  # the sandbox's verdicts, given
    rdir = tmp_path / "run" / "rounds" / "r001"
    t0 = time.time()
    votes_file, truth_file = round_votes(cfg, rewarder, items, 1, rdir, progress=False)
    ls_dir = rdir / "labelstudio"
    st = json.loads((ls_dir / "adaptive.json").read_text())
    m = ls_ops.read_round(ls_dir)
    print(f"adaptive round: {len(st['steps'])} steps, finished: {st['finished']}, {time.time() - t0:.0f} s", file=sys.stderr)

    # the server's tasks want exactly the recorded overlaps, and have them
    srv = ls_server.read_server_json(server)
    tasks = {
        t["id"]: t
        for t in ls_server.call_driver("status", {"url": srv["url"], "token": srv["token"], "project_id": m["project_id"]})["tasks"]
    }
    wanted = ls_ops.wanted(ls_dir, m)
    assert {tid: tasks[tid]["overlap"] for tid in wanted} == wanted
    assert all(tasks[tid]["total_annotations"] == n and tasks[tid]["is_labeled"] for tid, n in wanted.items())
    n_prog = len(m["tasks"])
    s0 = st["start_overlap"]
    assert s0 == 2 and st["steps"] and s0 * n_prog < sum(wanted.values()) == st["annotations_wanted"] <= st["budget"] == 3 * n_prog
    assert st["finished"] in ("budget", "all decided", "nothing to ask")

    # what the round hands to the fit: every local-crowd vote, once, and only those
    with open(votes_file, newline="") as f:
        pulled = Counter((r["program"], int(r["line"]), r["annotator"], int(r["label"])) for r in csv.DictReader(f))
    with open(ls_dir / "crowd_votes.csv", newline="") as f:
        posted = Counter((r["program"], int(r["line"]), r["annotator"], int(r["label"])) for r in csv.DictReader(f))
    assert pulled == posted and max(pulled.values()) == 1
    assert truth_file is not None and truth_file.read_text().count("\n") > 1

    # undecided programs (at the first proposal, honeypots aside) got more annotations than decided ones;
    # a program decided then and never proposed later kept the push's annotations
    _, decided0 = read_proposal(ls_dir / "adaptive" / "step00" / "next")
    n_ann = {t["program"]: tasks[m["task_ids"][t["key"]]]["total_annotations"] for t in m["tasks"]}
    plain = [p for p in n_ann if p not in m["honeypots"]]
    dec = [p for p in plain if decided0.get(p)]
    und = [p for p in plain if not decided0.get(p)]
    assert dec and und, (dec, und)
    mean = lambda ps: sum(n_ann[p] for p in ps) / len(ps)  # noqa: E731
    assert mean(und) > mean(dec), (mean(und), mean(dec))
    proposed = {p for s in st["steps"] for p, _, _ in s["taken"]}
    assert all(n_ann[p] == s0 for p in dec if p not in proposed)
    assert all(n_ann[p] == s0 + sum(p == q for s in st["steps"] for q, _, _ in s["taken"]) for p in n_ann)

    # resuming a finished round changes nothing on the server
    again, _ = round_votes(cfg, rewarder, items, 1, rdir, progress=False)
    assert again.read_text() == votes_file.read_text()


@pytest.mark.slow
def test_loop_round_with_adaptive_allocation(server, tmp_path):
    pytest.importorskip("torch")
    from rl.config import LoopConfig
    from rl.loop import run_rounds
    from rl.train.sft import SFTConfig, warm_start

    model = tmp_path / "model"
    warm_start(
        model,
        SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=3e-3, threads=2),
        progress=False,
    )
    cfg = LoopConfig(
        model=str(model), out=str(tmp_path / "run"), rounds=1, prompts_per_round=3, samples=4, sampling={"max_new_tokens": 14},
        reward_source="em1", annotate="labelstudio", allocation="adaptive", vote_budget=3.0,
        population=NOISY, honeypot_fraction=0.3,
        labelstudio={"server": str(server), "local_crowd": True, "poll_seconds": 1.0, "timeout": 120.0},
        bench={"seed": 0, "n_train_per_template": 3}, eval={"n": 1, "n_problems": 2, "every": 1},
        ppo={"learning_rate": 1e-3, "ppo_epochs": 1, "minibatch_size": 3, "reward_mode": "lines"}, lora={"r": 4, "alpha": 8},
        threads=2, seed=1,
    )  # fmt: skip
    try:
        st = run_rounds(cfg, progress=False)
    except RuntimeError as e:  # a known crowdstat bug, reported; any other error fails the test
        if "prior_reliability: expected a number in [0.5, 1), got 1.0" not in str(e):
            raise
        pytest.xfail("crowdstat next refuses a fit whose median reliability is 1.0 (crowdstat/allocate.py _annotator_rates)")
    rdir = tmp_path / "run" / "rounds" / "r001"
    ls_dir = rdir / "labelstudio"
    assert st["round"] == 1 and (rdir / "rewards.jsonl").exists()
    ad = json.loads((ls_dir / "adaptive.json").read_text())
    m = ls_ops.read_round(ls_dir)
    assert ad["finished"] and ad["start_overlap"] == 2 and m["per_program"] == 2
    assert sum(ls_ops.wanted(ls_dir, m).values()) == ad["annotations_wanted"] <= ad["budget"] == 3 * len(m["tasks"])
    with open(rdir / "votes.csv", newline="") as f:
        fitted = Counter((r["program"], int(r["line"]), r["annotator"], int(r["label"])) for r in csv.DictReader(f))
    with open(ls_dir / "crowd_votes.csv", newline="") as f:
        posted = Counter((r["program"], int(r["line"]), r["annotator"], int(r["label"])) for r in csv.DictReader(f))
    assert fitted == posted and len(posted) > 2 * len(m["tasks"])  # the fit got every vote the crowd posted over all steps
