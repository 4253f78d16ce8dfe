"""crowdstat.io.datasets: the lookup chain ($CROWDSTAT_DATASETS, then ../shared/datasets beside the checkout) and
the loader of the public crowd sets (counts checked against shared/datasets/README.md)."""

import numpy as np
import pandas as pd
import pytest

import crowdstat
from crowdstat.io import datasets


def _have_shared():
    try:
        datasets.find_dataset_dir("bluebirds", ("answers.csv", "truth.csv"))
        return True
    except datasets.DatasetError:
        return False


shared = pytest.mark.skipif(not _have_shared(), reason="the data sets are neither in $CROWDSTAT_DATASETS nor in ../shared/datasets")

# README.md "Binary datasets" table: items, workers, answers, gold positives, gold negatives
README = {
    "bluebirds": (108, 39, 4212, 48, 60),
    "welinder_ducks": (240, 53, 9600, 100, 140),
    "rte": (800, 164, 8000, 400, 400),
    "jn_product": (8315, 176, 24945, 1011, 7304),
    "possent": (1000, 85, 20000, 472, 528),
    "sp": (4999, 203, 27746, 2502, 2497),
    "zencrowd_all": (2040, 78, 20372, 443, 1597),
    "trec2011": (19033, 762, 88385, 1275, 1000),
}


@shared
def test_list_datasets():
    assert datasets.list_datasets(binary_only=True) == sorted(README)
    allsets = datasets.list_datasets()
    assert {"multiclass_dog", "multiclass_web"} <= set(allsets) and "mbpp" not in allsets


@shared
@pytest.mark.parametrize("name", ["bluebirds", "rte", "welinder_ducks", "possent"])
def test_load_counts_and_format(name):
    votes, truth, info = datasets.load(name)
    items, workers, answers, pos, neg = README[name]
    assert list(votes.columns) == ["program", "line", "annotator", "label"]
    assert list(truth.columns) == ["program", "line", "truth"]
    assert (votes["line"] == 1).all() and set(votes["label"]) == {1, -1}
    assert len(votes) == answers == info["n_votes"] == info["n_answers_in_file"]
    assert votes["program"].nunique() == items and votes["annotator"].nunique() == workers
    assert ((truth["truth"] > 0).sum(), (truth["truth"] < 0).sum()) == (pos, neg)
    assert info["n_conflicting_pairs"] == 0 and info["n_votes_dropped_conflicts"] == 0
    # label mapping 1 -> +1, 0 -> -1 against the raw file, row for row
    raw = pd.read_csv(datasets.find_dataset_dir(name) / "answers.csv", dtype={"item": str, "worker": str})
    np.testing.assert_array_equal(votes["label"].to_numpy(), np.where(raw["label"] == 1, 1, -1))
    np.testing.assert_array_equal(votes["program"].to_numpy(), raw["item"].to_numpy())
    # crowdstat accepts the tables as they are
    table = crowdstat.read_votes(votes, truth=truth)
    assert table.n_lines == items and table.n_honeypots == pos + neg


@shared
def test_zencrowd_duplicates_are_resolved_and_reported():
    v_drop, _, info = datasets.load("zencrowd_all")
    assert info["n_conflicting_pairs"] == 247 and info["n_votes_dropped_conflicts"] == 494
    assert len(v_drop) == 20372 - 494 and info["duplicate_policy"] == "drop"
    v_first, _, info1 = datasets.load("zencrowd_all", duplicates="first")
    assert info1["n_conflicting_pairs"] == 247 and info1["n_votes_dropped_conflicts"] == 247
    assert len(v_first) == 20372 - 247
    for v in (v_drop, v_first):
        assert not v.duplicated(["program", "line", "annotator"]).any()
        crowdstat.read_votes(v)  # no duplicate-vote error
    with pytest.raises(datasets.DatasetError, match="247 .* pairs have two different answers"):
        datasets.load("zencrowd_all", duplicates="error")
    with pytest.raises(ValueError, match="duplicates"):
        datasets.load("zencrowd_all", duplicates="last")


@shared
def test_trec_sparse_gold():
    votes, truth, info = datasets.load("trec2011")
    assert info["n_items"] == 19033 and info["n_gold"] == 2275 and len(votes) == 88385


@shared
def test_errors_multiclass_and_unknown():
    with pytest.raises(datasets.DatasetError, match="multi-class"):
        datasets.load("multiclass_dog")
    with pytest.raises(datasets.DatasetError, match="available"):
        datasets.load("no_such_set")


def _toy(folder, name="toy"):
    """A tiny binary set: an identical repeat and a conflicting pair."""
    d = folder / name
    d.mkdir(parents=True)
    (d / "answers.csv").write_text("item,worker,label\ni1,w1,1\ni1,w1,1\ni1,w2,0\ni2,w1,0\ni2,w2,1\ni2,w2,0\n")
    (d / "truth.csv").write_text("item,label\ni1,1\ni2,0\ni3,1\n")
    return d


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A fake checkout ``tmp/repo`` with ``tmp/shared/datasets`` beside it, and ``tmp/env`` for the variable."""
    monkeypatch.setattr(datasets, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    return tmp_path / "env", tmp_path / "shared" / "datasets"


def test_places_in_order(places, monkeypatch):
    env, shared_dir = places
    assert datasets.dataset_places() == [shared_dir]
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert datasets.dataset_places() == [env, shared_dir]


def test_env_var_wins_then_shared_folder(places, monkeypatch):
    env, shared_dir = places
    _toy(shared_dir)
    assert datasets.find_dataset_dir("toy") == shared_dir / "toy"
    _toy(env)
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert datasets.find_dataset_dir("toy", ("answers.csv", "truth.csv")) == env / "toy"
    assert datasets.load("toy")[2]["path"] == str(env / "toy")
    assert datasets.datasets_root() == env
    # a set only in the shared folder is still found with the variable set
    _toy(shared_dir, "other")
    assert datasets.find_dataset_dir("other") == shared_dir / "other"
    assert datasets.list_datasets() == ["other", "toy"]
    # a folder lacking the required files does not count
    (env / "half").mkdir()
    with pytest.raises(datasets.DatasetError, match="half"):
        datasets.find_dataset_dir("half", ("answers.csv",))


def test_missing_set_one_line_error_names_both_places(places, monkeypatch):
    env, shared_dir = places
    for env_value in (None, env):
        if env_value is not None:
            monkeypatch.setenv(datasets.ENV_VAR, str(env_value))
        with pytest.raises(datasets.DatasetError) as e:
            datasets.find_dataset_dir("mbpp")
        msg = str(e.value)
        assert "\n" not in msg and "'mbpp'" in msg
        assert "$CROWDSTAT_DATASETS" in msg and str(shared_dir) in msg and "../shared/datasets" in msg
        assert ("unset" in msg) == (env_value is None) and (env_value is None or str(env) in msg)
        assert "set CROWDSTAT_DATASETS to a folder that holds mbpp/" in msg
        for call in (datasets.datasets_root, datasets.list_datasets, lambda: datasets.load("toy")):
            with pytest.raises(datasets.DatasetError) as e:
                call()
            assert "\n" not in str(e.value) and str(shared_dir) in str(e.value) and "$CROWDSTAT_DATASETS" in str(e.value)


def test_root_from_env_and_duplicates(places, monkeypatch):
    env, _ = places
    _toy(env)
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert datasets.list_datasets() == ["toy"]
    votes, truth, info = datasets.load("toy")
    assert info["n_identical_repeats_merged"] == 1 and info["n_conflicting_pairs"] == 1
    assert info["n_votes_dropped_conflicts"] == 2 and info["n_gold_without_votes"] == 1
    assert votes.values.tolist() == [["i1", 1, "w1", 1], ["i1", 1, "w2", -1], ["i2", 1, "w1", -1]]
    assert truth.values.tolist() == [["i1", 1, 1], ["i2", 1, -1]]
    with pytest.raises(datasets.DatasetError, match=r"available: \['toy'\]"):
        datasets.load("nope")


def test_default_places_are_the_local_copy(monkeypatch):
    """Without the variable, the second place is ../shared/datasets beside this checkout."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert datasets.REPO_ROOT == repo
    assert datasets.dataset_places() == [repo.parent / "shared" / "datasets"]


def test_honeypot_split():
    truth = pd.DataFrame({"program": [f"i{k}" for k in range(101)], "line": 1, "truth": np.where(np.arange(101) % 3, 1, -1)})
    hp, ev = datasets.honeypot_split(truth, 0.2, seed=4)
    assert len(hp) == 20 and len(ev) == 81
    assert set(hp["program"]).isdisjoint(ev["program"]) and set(hp["program"]) | set(ev["program"]) == set(truth["program"])
    hp2, _ = datasets.honeypot_split(truth, 0.2, seed=4)
    pd.testing.assert_frame_equal(hp, hp2)
    hp3, _ = datasets.honeypot_split(truth, 0.2, seed=5)
    assert set(hp3["program"]) != set(hp["program"])
    assert len(datasets.honeypot_split(truth, 0.0, 0)[0]) == 0 and len(datasets.honeypot_split(truth, 1.0, 0)[1]) == 0
    with pytest.raises(ValueError, match="fraction"):
        datasets.honeypot_split(truth, 1.5, 0)


def test_honeypots_first_moves_the_honeypot_programs_rows_first_and_keeps_every_row():
    votes = pd.DataFrame(
        {"program": ["a", "b", "a", "c", "b", "d"], "line": 1, "annotator": ["x", "x", "y", "y", "z", "z"], "label": [1, -1, 1, 1, -1, 1]}
    )
    hp = pd.DataFrame({"program": ["b", "d"], "line": 1, "truth": [-1, 1]})
    out = datasets.honeypots_first(votes, hp)
    # honeypot programs' rows first, each part in input order; the same rows, not one changed
    assert out["program"].tolist() == ["b", "b", "d", "a", "a", "c"]
    assert out["annotator"].tolist() == ["x", "z", "z", "x", "y", "y"]
    pd.testing.assert_frame_equal(
        out.sort_values(["program", "annotator"]).reset_index(drop=True), votes.sort_values(["program", "annotator"]).reset_index(drop=True)
    )
    assert datasets.honeypots_first(votes, hp.iloc[:0])["program"].tolist() == votes["program"].tolist()


def test_import_loads_no_jax():
    import subprocess
    import sys

    code = "import sys, crowdstat.io.datasets; print('jax' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"  # the lookup is cheap to reuse (rl.tasks.benchmarks)
