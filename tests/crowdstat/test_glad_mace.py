"""GLAD and MACE (crowdstat.estimators.glad / mace).

- NumPy transcriptions of both EM loops on a small case (same iterates; GLAD's M-step by scipy to convergence);
- properties on seeded random crowds (probabilities in [0, 1], honeypots clamped, annotator permutation / renaming);
- bad input;
- accuracy on the shared real sets against crowd-kit 1.4.2's figures in ANCHORS.md (the acceptance of
  docs/baselines.md: within 0.005). Two sets run by default, the rest are slow. MACE differs from crowd-kit on five
  sets because crowd-kit 1.4.2's MACE M-step pairs each worker's strategy counts with another worker
  (docs/baselines.md); those are strict xfails, and with crowd-kit installed (the bench venv) a test checks that
  crowd-kit on worker-sorted rows, where its pairing is right, gives our figure.
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special

import crowdstat
from crowdstat.estimators import glad, mace
from crowdstat.estimators.registry import GLADConfig, MACEConfig
from crowdstat.io import datasets
from tests.strategies import random_tables

DELTA = 1e-6


def _arrays(votes, truth=None):
    t = crowdstat.read_votes(votes, truth=truth if truth is not None and len(truth) else None)
    return t, t.arrays


def _np(arrays):
    a = arrays
    return (np.asarray(a.line), np.asarray(a.annotator), np.asarray(a.label, np.float64), np.asarray(a.truth), a.n_lines)


# ---------------------------------------------------------------------------------------------
# NumPy references


def np_glad(arrays, m, n_cycles, mu_a=1.0, mu_b=1.0, prior=0.5):
    """GLAD EM written with NumPy: E-step, then the M-step to convergence by scipy's BFGS with crowd-kit's analytic gradient."""
    line, ann, lab, truth, n_lines = _np(arrays)

    def e_step(alpha, beta):
        s = np.bincount(line, lab * alpha[ann] * np.exp(beta[line]), minlength=n_lines)
        q = special.expit(math.log(prior / (1 - prior)) + s)
        return np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, q))

    def neg_q_and_grad(x, q):
        alpha, beta = x[:m], x[m:]
        eb = np.exp(beta[line])
        z = alpha[ann] * eb
        r = np.where(lab > 0, q[line], 1 - q[line])
        val = np.sum(r * -np.logaddexp(0, -z) + (1 - r) * -np.logaddexp(0, z))
        val += -0.5 * np.sum((alpha - mu_a) ** 2) - 0.5 * np.sum((beta - mu_b) ** 2)
        d = r - special.expit(z)
        ga = np.bincount(ann, d * eb, minlength=m) - (alpha - mu_a)
        gb = np.bincount(line, d * z, minlength=n_lines) - (beta - mu_b)
        return -val, -np.concatenate([ga, gb])

    alpha, beta = np.full(m, mu_a), np.full(n_lines, mu_b)
    for _ in range(n_cycles):
        q = e_step(alpha, beta)
        res = optimize.minimize(neg_q_and_grad, np.concatenate([alpha, beta]), args=(q,), jac=True, method="BFGS", options={"gtol": 1e-10})
        alpha, beta = res.x[:m], res.x[m:]
    return e_step(alpha, beta), alpha, beta


def np_mace(arrays, m, n_iter, vb, seed=0, smoothing=0.005, a=0.5, b=0.5, c=10.0, prior=0.5):
    """MACE written with NumPy in probability space (crowd-kit's products), one start from RandomState(seed)."""
    line, ann, lab, truth, n_lines = _np(arrays)
    col = (lab > 0).astype(int)
    u = np.random.RandomState(seed).uniform(size=(m, 2)) * 1.5 + 1.0
    u /= u.sum(axis=1, keepdims=True)
    spam, know, xi = u[:, 0].copy(), u[:, 1].copy(), u.copy()

    def e_step():
        p_spam = spam[ann] * xi[ann, col]
        pos = np.ones(n_lines) * prior
        neg = np.ones(n_lines) * (1 - prior)
        np.multiply.at(pos, line, p_spam + know[ann] * (lab > 0))
        np.multiply.at(neg, line, p_spam + know[ann] * (lab < 0))
        q = pos / (pos + neg)
        q = np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, q))
        qa = np.where(lab > 0, q[line], 1 - q[line])
        k = qa * know[ann] / (p_spam + know[ann])
        K = np.bincount(ann, k, minlength=m)
        S = np.bincount(ann, 1 - k, minlength=m)
        X = np.stack([np.bincount(ann, (1 - k) * (col == v), minlength=m) for v in (0, 1)], axis=1)
        return q, K, S, X

    q, K, S, X = e_step()
    for _ in range(n_iter):
        if vb:
            tot = special.digamma(K + S + a + b)
            know, spam = np.exp(special.digamma(K + a) - tot), np.exp(special.digamma(S + b) - tot)
            xi = np.exp(special.digamma(X + c) - special.digamma(X.sum(axis=1, keepdims=True) + 2 * c))
        else:
            know, spam = (K + smoothing) / (K + S + 2 * smoothing), (S + smoothing) / (K + S + 2 * smoothing)
            xi = (X + smoothing) / (X.sum(axis=1, keepdims=True) + 2 * smoothing)
        q, K, S, X = e_step()
    return q, know / (know + spam)


def _small_case(seed=3, honeypot=0.2):
    votes, truth = random_tables(seed, n_programs=6, max_lines=5, n_annotators=6, p_vote=0.7, p_honeypot=honeypot)
    return votes, truth


@pytest.mark.parametrize("n_cycles", [1, 4])
@pytest.mark.filterwarnings("ignore:glad. EM stopped at maxiter")
def test_glad_matches_the_numpy_transcription(n_cycles):
    votes, truth = _small_case()
    table, arrays = _arrays(votes, truth)
    cfg = GLADConfig(maxiter=n_cycles, tol=-1e300, m_step_maxiter=1000, m_step_tol=1e-9)
    got = glad.glad(arrays, cfg, dtype=jnp.float64, prior=0.5, delta=DELTA)
    q, alpha, beta = np_glad(arrays, table.n_annotators, n_cycles)
    assert got.diagnostics["iterations"] == n_cycles
    np.testing.assert_allclose(got.posterior, q, atol=1e-6)
    np.testing.assert_allclose(got.annotator_columns["ability"], alpha, atol=1e-5)
    np.testing.assert_allclose(np.log(got.line_columns["inverse_difficulty"]), beta, atol=1e-5)


@pytest.mark.parametrize("inference,n_iter", [("vb", 1), ("vb", 30), ("em", 30)])
def test_mace_matches_the_numpy_transcription(inference, n_iter):
    votes, truth = _small_case(seed=4)
    table, arrays = _arrays(votes, truth)
    cfg = MACEConfig(inference=inference, n_iter=n_iter, n_restarts=1, seed=5)
    got = mace.mace(arrays, cfg, dtype=jnp.float64, prior=0.5, delta=DELTA)
    q, theta = np_mace(arrays, table.n_annotators, n_iter, vb=inference == "vb", seed=5)
    np.testing.assert_allclose(got.posterior, q, atol=1e-10)
    np.testing.assert_allclose(got.annotator_columns["competence"], theta, atol=1e-10)
    np.testing.assert_allclose(got.reliability, (1 + theta) / 2, atol=1e-10)


def test_mace_keeps_the_restart_with_the_largest_likelihood():
    votes, _ = _small_case(seed=6, honeypot=0.0)
    _, arrays = _arrays(votes)
    many = mace.mace(arrays, MACEConfig(n_restarts=3, seed=2, n_iter=5), dtype=jnp.float64, prior=0.5, delta=DELTA)
    lls = many.diagnostics["restart_log_likelihoods"]
    assert many.diagnostics["restart"] == int(np.argmax(lls))
    r = many.diagnostics["restart"]
    one = mace.mace(arrays, MACEConfig(n_restarts=1, seed=2 + r, n_iter=5), dtype=jnp.float64, prior=0.5, delta=DELTA)
    np.testing.assert_allclose(one.posterior, many.posterior, atol=1e-12)
    assert one.diagnostics["log_marginal_likelihood"] == pytest.approx(lls[r], abs=1e-9)


# ---------------------------------------------------------------------------------------------
# properties (fixed shapes: full tables, so one compilation serves every example)


def _fit(votes, truth, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return crowdstat.fit(votes, truth if len(truth) else None, method=method, x64=True, **kw)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_glad_properties(seed):
    votes, truth = random_tables(seed, n_programs=4, max_lines=5, n_annotators=6, full=True, p_honeypot=0.3)
    res = _fit(votes, truth, "glad")
    post = res.lines["posterior"].to_numpy()
    assert np.all((post >= 0) & (post <= 1))
    assert np.all((res.annotators["reliability"] >= 0) & (res.annotators["reliability"] <= 1))
    assert np.all(res.lines["inverse_difficulty"] > 0)
    hp = res.lines.merge(truth, on=["program", "line"])
    np.testing.assert_array_equal(hp["posterior"], (1 + hp["truth"]) / 2)
    # permuting the rows permutes the annotators (order of first appearance) and the lines: the same fit
    perm = votes.sample(frac=1.0, random_state=seed % 1000).reset_index(drop=True)
    again = _fit(perm, truth, "glad")
    key = ["program", "line"]
    a = res.lines.set_index(key)["posterior"]
    b = again.lines.set_index(key)["posterior"].reindex(a.index)
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), atol=1e-8)
    ab = again.annotators.set_index("annotator")["ability"].reindex(res.annotators["annotator"])
    np.testing.assert_allclose(ab.to_numpy(), res.annotators["ability"].to_numpy(), atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_mace_properties(seed):
    votes, truth = random_tables(seed, n_programs=4, max_lines=5, n_annotators=6, full=True, p_honeypot=0.3)
    res = _fit(votes, truth, "mace")
    post = res.lines["posterior"].to_numpy()
    assert np.all((post >= 0) & (post <= 1))
    an = res.annotators
    for col in ("competence", "spam_positive", "sensitivity", "specificity"):
        assert np.all((an[col] >= 0) & (an[col] <= 1)), col
    np.testing.assert_allclose(an["reliability"], (1 + an["competence"]) / 2, atol=1e-12)
    assert np.all(an["reliability"] >= 0.5)
    hp = res.lines.merge(truth, on=["program", "line"])
    np.testing.assert_array_equal(hp["posterior"], (1 + hp["truth"]) / 2)
    # renaming the annotators (same order of appearance, so the same starts) changes nothing
    renamed = votes.assign(annotator=votes["annotator"].map(lambda a: f"w-{a}-x"))
    again = _fit(renamed, truth, "mace")
    np.testing.assert_array_equal(again.lines["posterior"].to_numpy(), post)


def test_mace_optimum_does_not_depend_on_the_annotator_order_on_a_clear_crowd():
    """The starts follow the annotator order; on a well-identified crowd every start reaches the same fixed point."""
    rel = np.array([0.9, 0.85, 0.8, 0.9, 0.75, 0.8])
    votes, truth = random_tables(11, n_programs=4, max_lines=5, n_annotators=6, full=True, p_honeypot=0.0, reliabilities=rel)
    res = _fit(votes, truth, "mace")
    perm = votes.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again = _fit(perm, truth, "mace")
    a = res.lines.set_index(["program", "line"])["posterior"]
    b = again.lines.set_index(["program", "line"])["posterior"].reindex(a.index)
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (GLADConfig, {"maxiter": 0}, "maxiter"),
        (GLADConfig, {"tol": float("nan")}, "tol"),
        (GLADConfig, {"m_step_tol": 0.0}, "m_step_tol"),
        (GLADConfig, {"alpha_mean": float("inf")}, "alpha_mean"),
        (MACEConfig, {"inference": "gibbs"}, "inference"),
        (MACEConfig, {"n_restarts": 0}, "n_restarts"),
        (MACEConfig, {"n_iter": 2.5}, "n_iter"),
        (MACEConfig, {"alpha": 0.0}, "alpha"),
        (MACEConfig, {"smoothing": -1.0}, "smoothing"),
        (MACEConfig, {"seed": -1}, "seed"),
    ],
)
def test_bad_config(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


@pytest.mark.parametrize("module", [glad.glad, mace.mace])
def test_bad_parameters(module):
    votes, _ = _small_case()
    _, arrays = _arrays(votes)
    with pytest.raises(ValueError, match="prior"):
        module(arrays, dtype=jnp.float64, prior=1.0, delta=DELTA)
    with pytest.raises(ValueError, match="delta"):
        module(arrays, dtype=jnp.float64, prior=0.5, delta=0.7)
    empty = arrays._replace(line=arrays.line[:0], annotator=arrays.annotator[:0], label=arrays.label[:0])
    with pytest.raises(ValueError, match="empty"):
        module(empty, dtype=jnp.float64, prior=0.5, delta=DELTA)


def test_unknown_parameter_through_fit():
    votes, _ = _small_case()
    with pytest.raises(TypeError, match="unknown parameter"):
        crowdstat.fit(votes, method="glad", n_restarts=3)
    with pytest.raises(ValueError, match="inference"):
        crowdstat.fit(votes, method="mace", inference="gibbs")


# ---------------------------------------------------------------------------------------------
# accuracy on the shared sets against ANCHORS.md

BINARY = ["bluebirds", "welinder_ducks", "rte", "jn_product", "possent", "sp", "zencrowd_all", "trec2011"]
FAST = {("glad", "bluebirds"), ("mace", "rte")}
# crowd-kit 1.4.2's MACE builds its strategy counts with a groupby that sorts workers and labels, then indexes them by
# order of first appearance, so each worker gets another worker's strategy. Where that changes the accuracy by more than
# 0.005 we do not match; crowd-kit on rows sorted by (worker, label) gives our figure (test_crowd_kit_mace_on_sorted_rows).
MACE_CROWDKIT_PAIRING = {"bluebirds", "welinder_ducks", "jn_product", "zencrowd_all", "trec2011"}
TOLERANCE = 0.005


def _anchors() -> dict[tuple[str, str], float]:
    try:
        text = (datasets.datasets_root() / "ANCHORS.md").read_text(encoding="utf-8")
    except (datasets.DatasetError, OSError) as e:
        pytest.skip(f"ANCHORS.md not found: {e}")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for ln in rows[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[0] == "dataset":
            break  # the full table starts
        for method in ("GLAD", "MACE"):
            v = cells[header.index(method)]
            if re.fullmatch(r"[0-9.]+", v):
                out[(method.lower(), cells[0])] = float(v)
    return out


def _accuracy(name: str, method: str) -> float:
    try:
        votes, truth, _ = datasets.load(name)
    except datasets.DatasetError as e:
        pytest.skip(str(e))
    res = _fit(votes, truth.iloc[:0], method)  # no honeypots: the unsupervised aggregate, as crowd-kit
    post = res.lines.set_index("program")["posterior"].reindex(truth["program"]).to_numpy()
    return float(np.mean(np.where(post > 0.5, 1, -1) == truth["truth"].to_numpy()))


def _cases():
    for method in ("glad", "mace"):
        for name in BINARY:
            marks = [] if (method, name) in FAST else [pytest.mark.slow]
            if method == "mace" and name in MACE_CROWDKIT_PAIRING:
                marks.append(pytest.mark.xfail(strict=True, reason="crowd-kit 1.4.2's MACE pairs workers with other workers' strategies"))
            yield pytest.param(method, name, marks=marks, id=f"{method}-{name}")


@pytest.mark.parametrize("method,name", list(_cases()))
def test_accuracy_matches_crowd_kit_anchor(method, name):
    anchor = _anchors()[(method, name)]
    acc = _accuracy(name, method)
    assert abs(acc - anchor) <= TOLERANCE, f"{method} on {name}: {acc:.4f}, crowd-kit {anchor:.4f}"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("crowdkit") is None, reason="crowd-kit is installed in the bench venv only (make bench)")
@pytest.mark.parametrize("name", ["bluebirds", "zencrowd_all"])
def test_crowd_kit_mace_on_sorted_rows(name):  # pragma: no cover - runs in .venv-bench
    from crowdkit.aggregation import MACE as CKMACE

    votes, truth, _ = datasets.load(name)
    df = pd.DataFrame({"task": votes["program"], "worker": votes["annotator"], "label": (votes["label"] > 0).astype(int)})
    gold = truth.set_index("program")["truth"].gt(0).astype(int)
    ck_sorted = CKMACE().fit_predict(df.sort_values(["worker", "label"], kind="stable").reset_index(drop=True))
    ck_acc = float((ck_sorted.reindex(gold.index) == gold).mean())
    assert abs(_accuracy(name, "mace") - ck_acc) <= TOLERANCE
