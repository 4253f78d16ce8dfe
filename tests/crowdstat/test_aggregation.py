"""crowdstat.aggregation (crowd-kit style classes) against an independent pandas reference of crowd-kit's
algorithms, on a real shared set, plus crowd-kit itself when it is installed (the bench venv)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from crowdstat.aggregation import GLAD, MACE, DawidSkene, MajorityVote, OneCoinDawidSkene
from crowdstat.io.datasets import DatasetError, find_dataset_dir


def _rte() -> pd.DataFrame:
    try:
        d = find_dataset_dir("rte", ["answers.csv"])
    except DatasetError as e:
        pytest.skip(str(e))
    a = pd.read_csv(d / "answers.csv").rename(columns={"item": "task"})
    return a.drop_duplicates(["task", "worker"], keep="first").reset_index(drop=True)


def _mv_probas(df: pd.DataFrame) -> pd.DataFrame:
    counts = df.groupby(["task", "label"]).size().unstack(fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


def _ds_reference(df: pd.DataFrame, n_iter: int, eps: float = 1e-10):
    """crowd-kit 1.4's DawidSkene loop written with pandas: MV start, then n_iter x (E, priors, M)."""

    def m_step(probas):
        joined = df.join(probas, on="task")
        errors = joined.drop(columns=["task"]).groupby(["worker", "label"]).sum()
        return errors / errors.groupby(level="worker").transform("sum")

    def e_step(priors, errors):
        logerr = np.log(errors.clip(eps, 1 - eps))
        joined = df.join(logerr, on=["worker", "label"]).drop(columns=["worker", "label"])
        ll = joined.groupby("task").sum() + np.log(priors.clip(eps, 1 - eps))
        ll = ll.sub(ll.max(axis=1), axis=0)
        p = np.exp(ll)
        return p.div(p.sum(axis=1), axis=0)

    probas = _mv_probas(df)
    priors = probas.mean()
    errors = m_step(probas)
    for _ in range(n_iter):
        probas = e_step(priors, errors)
        priors = probas.mean()
        errors = m_step(probas)
    return probas, priors, errors


def test_majority_vote_matches_the_vote_shares_and_skills():
    df = _rte()
    mv = MajorityVote().fit(df)
    ref = _mv_probas(df)
    got = mv.probas_.reindex(ref.index)
    assert np.max(np.abs(got[1].to_numpy() - ref[1].to_numpy())) < 1e-12
    assert set(mv.labels_.unique()) <= {0, 1} and len(mv.labels_) == df["task"].nunique()
    lab = ref.idxmax(axis=1)  # ties: the first (smaller) label, as crowd-kit
    assert (mv.labels_.reindex(ref.index) == lab).all()
    skill = (df["label"].to_numpy() == lab.reindex(df["task"]).to_numpy()).astype(float)
    ref_skill = pd.Series(skill, index=df["worker"]).groupby(level=0).mean()
    assert np.allclose(mv.skills_.reindex(ref_skill.index).to_numpy(), ref_skill.to_numpy())


@pytest.mark.parametrize("n_iter", [1, 5, 20])
def test_dawid_skene_reproduces_crowd_kits_iterates(n_iter):
    df = _rte()
    probas, priors, errors = _ds_reference(df, n_iter)  # n_iter E-steps on both sides
    ds = DawidSkene(n_iter=n_iter, tol=0.0).fit(df)
    got = ds.probas_.reindex(probas.index)
    assert np.max(np.abs(got[1].to_numpy() - probas[1].to_numpy())) < 1e-6
    assert np.allclose(ds.priors_.to_numpy(), priors.to_numpy(), atol=1e-6)
    # errors_: P(observed | true) per worker, crowd-kit's layout: the M-step after the last E-step
    mine = ds.errors_.reindex(errors.index)[errors.columns]
    assert np.max(np.abs(mine.to_numpy() - errors.to_numpy())) < 1e-6
    assert ds.converged_ is False or n_iter == 1


def test_dawid_skene_defaults_converge_and_agree_with_the_reference_at_convergence():
    df = _rte()
    ds = DawidSkene().fit(df)
    assert ds.converged_
    ref, _, _ = _ds_reference(df, 100)
    acc = (ds.labels_.reindex(ref.index) == ref.idxmax(axis=1)).mean()
    assert acc > 0.995  # different stopping rules, same fixed point


def test_one_coin_skills_are_accuracies_and_labels_keep_their_values():
    df = _rte().assign(label=lambda d: d["label"].map({0: "wrong", 1: "right"}))
    oc = OneCoinDawidSkene(n_iter=50).fit(df)
    assert list(oc.probas_.columns) == ["right", "wrong"] and set(oc.labels_.unique()) <= {"right", "wrong"}
    assert np.allclose(oc.probas_.sum(axis=1), 1.0)
    e = oc.errors_
    w = oc.skills_.index[0]
    assert e.loc[(w, "right"), "right"] == pytest.approx(oc.skills_[w]) and e.loc[(w, "wrong"), "wrong"] == pytest.approx(oc.skills_[w])


def test_true_labels_clamp_their_tasks():
    df = _rte()
    first = df["task"].unique()[:20]
    truth = pd.Series(1 - MajorityVote().fit_predict(df).reindex(first).to_numpy(), index=first)
    p = DawidSkene(n_iter=30).fit_predict_proba(df, true_labels=truth)
    assert np.array_equal(p.loc[first, 1].to_numpy(), truth.to_numpy().astype(float))


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"task": [1], "worker": ["a"]}), r"missing column\(s\) \['label'\]"),
        (pd.DataFrame({"task": [1, 2, 3], "worker": ["a"] * 3, "label": [0, 1, 2]}), "3 distinct labels"),
        (pd.DataFrame({"task": [1, 1], "worker": ["a", "a"], "label": [0, 1]}), "row 1: worker 'a' labels task '1' twice"),
        (pd.DataFrame({"task": [1, "1"], "worker": ["a", "b"], "label": [0, 1]}), "same text form"),
        (pd.DataFrame({"task": [1, None], "worker": ["a", "b"], "label": [0, 1]}), "row 1: a missing"),
        (pd.DataFrame({"task": [1, 2], "worker": ["a", "b"], "label": [1, 1]}), "EM needs both labels"),
    ],
)
def test_bad_frames_are_one_line_errors(frame, message):
    with pytest.raises(ValueError, match=message):
        DawidSkene().fit(frame)


@pytest.mark.skipif(importlib.util.find_spec("crowdkit") is None, reason="crowd-kit is installed in the bench venv only (make bench)")
def test_against_crowd_kit_itself():  # pragma: no cover - runs in .venv-bench
    from crowdkit.aggregation import DawidSkene as CKDawidSkene
    from crowdkit.aggregation import MajorityVote as CKMajorityVote

    df = _rte()
    ck = CKDawidSkene(n_iter=20, tol=-np.inf).fit_predict_proba(df)
    mine = DawidSkene(n_iter=20, tol=0.0).fit_predict_proba(df).reindex(ck.index)
    assert np.max(np.abs(mine[1].to_numpy() - ck[1].to_numpy())) < 1e-6
    ck = CKMajorityVote().fit_predict_proba(df)
    mine = MajorityVote().fit_predict_proba(df).reindex(ck.index)
    assert np.max(np.abs(mine[1].to_numpy() - ck[1].to_numpy())) < 1e-6


# ---------------------------------------------------------------------------------------------
# GLAD and MACE: the classes are crowdstat.fit(method="glad" / "mace") with crowd-kit's names and defaults


def _set(name: str) -> pd.DataFrame:
    try:
        d = find_dataset_dir(name, ["answers.csv"])
    except DatasetError as e:
        pytest.skip(str(e))
    return pd.read_csv(d / "answers.csv").rename(columns={"item": "task"})


def _as_votes(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"program": df["task"].astype(str), "line": 1, "annotator": df["worker"].astype(str), "label": np.where(df["label"] > 0, 1, -1)}
    )


@pytest.mark.filterwarnings("ignore:glad")
def test_glad_class_is_the_glad_method_with_crowd_kits_names():
    import crowdstat

    df = _set("bluebirds")
    g = GLAD().fit(df)
    res = crowdstat.fit(_as_votes(df), method="glad", x64=True)
    post = res.lines.set_index("program")["posterior"]
    np.testing.assert_allclose(g.probas_[1].to_numpy(), post.reindex(g.probas_.index.astype(str)).to_numpy(), atol=1e-12)
    np.testing.assert_allclose(g.probas_.sum(axis=1), 1.0)
    assert (g.labels_ == g.probas_.idxmax(axis=1)).all() and g.converged_
    assert set(g.alphas_.index) == set(df["worker"]) and g.alphas_.name == "alpha" and g.alphas_.index.name == "worker"
    inv = res.lines.set_index("program")["inverse_difficulty"].reindex(g.betas_.index.astype(str)).to_numpy()
    np.testing.assert_allclose(np.exp(g.betas_.to_numpy()), inv, rtol=1e-12)
    ab = res.annotators.set_index("annotator")["ability"].reindex(g.alphas_.index.astype(str)).to_numpy()
    np.testing.assert_allclose(g.alphas_.to_numpy(), ab)


def test_glad_class_bad_input():
    df = _set("bluebirds")
    with pytest.raises(ValueError, match="labels_priors"):
        GLAD(labels_priors=pd.Series({0: 0.3, 1: 0.3})).fit(df)
    with pytest.raises(ValueError, match="alphas_priors_mean"):
        GLAD(alphas_priors_mean=pd.Series({"w": 1.0})).fit(df)
    with pytest.raises(ValueError, match="both labels"):
        GLAD().fit(df.assign(label=1))


@pytest.mark.filterwarnings("ignore:mace")
def test_mace_class_is_the_mace_method_with_crowd_kits_names():
    import crowdstat

    df = _rte()
    mc = MACE(alpha=2.0, beta=0.5).fit(df)  # crowd-kit's alpha is on spamming: crowdstat's beta
    res = crowdstat.fit(_as_votes(df), method="mace", alpha=0.5, beta=2.0, smoothing=0.005, x64=True)
    post = res.lines.set_index("program")["posterior"]
    np.testing.assert_allclose(mc.probas_[1].to_numpy(), post.reindex(mc.probas_.index.astype(str)).to_numpy(), atol=1e-12)
    np.testing.assert_allclose(mc.spamming_.sum(axis=1), 1.0)
    np.testing.assert_allclose(mc.thetas_.sum(axis=1), 1.0)
    np.testing.assert_allclose(mc.spamming_[:, 1], res.annotators["competence"].to_numpy())
    assert list(mc.competence_.index) == list(pd.unique(df["worker"]))
    with pytest.raises(ValueError, match="default_noise"):
        MACE(default_noise=0.3).fit(df)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("crowdkit") is None, reason="crowd-kit is installed in the bench venv only (make bench)")
def test_glad_and_mace_against_crowd_kit_itself():  # pragma: no cover - runs in .venv-bench
    from crowdkit.aggregation import GLAD as CKGLAD
    from crowdkit.aggregation import MACE as CKMACE

    df = _set("bluebirds")
    ck = CKGLAD().fit_predict(df)
    mine = GLAD().fit_predict(df).reindex(ck.index)
    assert (mine == ck).mean() > 0.98  # scipy CG vs L-BFGS M-steps: the same fixed point, a line or two may differ
    # crowd-kit's MACE pairs its strategy counts with the right worker only when the rows come sorted by worker and label
    srt = df.sort_values(["worker", "label"], kind="stable").reset_index(drop=True)
    ck = CKMACE(n_restarts=1).fit_predict_proba(srt)
    mine = MACE(n_restarts=1).fit_predict_proba(srt).reindex(ck.index)
    assert np.max(np.abs(mine[1].to_numpy() - ck[1].to_numpy())) < 1e-6
