"""Recalibration of line posteriors from honeypot lines (crowdstat.estimators.calibration, fit(calibrate=...)).

The maps against scikit-learn (an independent implementation), their properties, the cross-fitting
(no honeypot calibrates itself) against an independent re-computation, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

import crowdstat as cs
from crowdstat.estimators import calibration as C

# ---------------------------------------------------------------------------------------------
# the maps


@st.composite
def pairs(draw, min_size=2, max_size=60):
    n = draw(st.integers(min_size, max_size))
    grid = draw(st.sampled_from([5, 20, 1000]))  # coarse grids give tied posteriors
    p = np.array(draw(st.lists(st.integers(0, grid), min_size=n, max_size=n)), np.float64) / grid
    y = np.array(draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n)))
    return p, y


@settings(max_examples=60, deadline=None)
@given(pairs(), st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_pav_matches_sklearn_isotonic_regression(data, new):
    p, y = data
    x, fitted = C.pav(p, (y > 0).astype(float))
    ref = IsotonicRegression(out_of_bounds="clip", y_min=None, y_max=None).fit(p, (y > 0).astype(float))
    assert np.allclose(fitted, ref.predict(x), atol=1e-12)
    g = C.fit_isotonic(p, y)
    expect = np.clip(ref.predict(np.asarray(new)), g.lo, g.hi)
    assert np.allclose(g(new), expect, atol=1e-12)
    assert g.lo == pytest.approx(0.5 / (len(p) + 1)) and g.hi == pytest.approx(1 - g.lo)


def test_pav_weighted_against_sklearn():
    rng = np.random.default_rng(0)
    x, y, w = rng.random(200), rng.random(200), rng.random(200) + 0.1
    ux, fitted = C.pav(x, y, w)
    ref = IsotonicRegression().fit(x, y, sample_weight=w)
    assert np.allclose(fitted, ref.predict(ux), atol=1e-10)


def _platt_reference(p, y, temperature):
    """Platt's smoothed targets as two weighted rows per line, plain (unpenalised) logistic regression."""
    yy = y > 0
    n_pos, n_neg = yy.sum(), (~yy).sum()
    t = np.where(yy, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = C.clipped_logit(p)[:, None]
    X = np.concatenate([z, z])
    lab = np.concatenate([np.ones(len(p)), np.zeros(len(p))])
    w = np.concatenate([t, 1 - t])
    m = LogisticRegression(C=np.inf, fit_intercept=not temperature, tol=1e-12, max_iter=10_000).fit(X, lab, sample_weight=w)
    return float(m.coef_[0, 0]), float(m.intercept_[0]) if not temperature else 0.0


@pytest.mark.parametrize("temperature", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_matches_sklearn_logistic_regression(seed, temperature):
    rng = np.random.default_rng(seed)
    n = [30, 200, 1000][seed]
    z = rng.normal(0, 3, n)
    p = 1 / (1 + np.exp(-z))
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-(0.4 * z + 0.5))), 1, -1)  # over-confident and biased
    g = C.fit_platt(p, y, temperature=temperature)
    a, b = _platt_reference(p, y, temperature)
    assert g.a == pytest.approx(a, rel=1e-4, abs=1e-5) and g.b == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert g.kind == ("temperature" if temperature else "platt")


def test_platt_stays_finite_on_separable_zero_one_posteriors():
    """0/1 posteriors (sequential) that are always right: Platt's targets keep a, b finite."""
    p = np.array([0.0] * 10 + [1.0] * 30)
    y = np.array([-1] * 10 + [1] * 30)
    g = C.fit_platt(p, y)
    assert np.isfinite([g.a, g.b]).all()
    assert g(1.0) == pytest.approx(31 / 32, abs=1e-6) and g(0.0) == pytest.approx(1 / 12, abs=1e-6)
    same = C.fit_platt(np.full(8, 0.7), np.array([1, 1, 1, -1, 1, 1, -1, 1]))  # one posterior value: still a map
    assert np.isfinite(same(0.7)) and 0 < same(0.7) < 1


@settings(max_examples=40, deadline=None)
@given(pairs(min_size=4), st.sampled_from(["platt", "temperature", "affine", "isotonic"]))
def test_maps_are_monotone_and_in_unit_interval(data, kind):
    p, y = data
    g = C.fit_map(kind, p, y)
    grid = np.linspace(0, 1, 201)
    out = g(grid)
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.isfinite(out))
    d = np.diff(out)
    assert np.all(d >= -1e-12) or np.all(d <= 1e-12)  # Platt / affine may turn a map around (a < 0), never bend it
    if kind == "isotonic":
        assert np.all(d >= -1e-12)


@pytest.mark.parametrize("kind", ["platt", "temperature", "affine", "isotonic"])
def test_maps_are_near_identity_on_calibrated_data(kind):
    rng = np.random.default_rng(7)
    p = rng.beta(0.7, 0.7, 20_000)
    y = np.where(rng.random(p.size) < p, 1, -1)
    g = C.fit_map(kind, p, y)
    grid = np.linspace(0.02, 0.98, 49)
    assert np.max(np.abs(g(grid) - grid)) < (0.06 if kind == "isotonic" else 0.02)
    if kind != "isotonic":  # the identity: a = 1, b = 0 for platt / temperature (logit) and affine (probability)
        assert g.a == pytest.approx(1, abs=0.05) and g.b == pytest.approx(0, abs=0.05)


def _affine_reference(p, y):
    """scipy's bounded L-BFGS-B from three starts on the same objective: (g(0), g(1)) in [1e-6, 1 - 1e-6]^2
    maximising the log-likelihood of Platt's smoothed targets."""
    from scipy.optimize import minimize

    yy = (np.asarray(y) > 0).astype(float)
    n_pos, n_neg = yy.sum(), yy.size - yy.sum()
    tgt = np.where(yy > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.stack([1 - p, p], 1)

    def nll(th):
        q = X @ th
        return -np.sum(tgt * np.log(q) + (1 - tgt) * np.log1p(-q))

    runs = [
        minimize(nll, x0, method="L-BFGS-B", bounds=[(1e-6, 1 - 1e-6)] * 2, options={"ftol": 1e-15, "gtol": 1e-12})
        for x0 in ([0.3, 0.7], [0.7, 0.3], [0.5, 0.5])
    ]
    return nll, min(runs, key=lambda r: r.fun)


@settings(max_examples=60, deadline=None)
@given(pairs(min_size=2, max_size=200))
def test_affine_reaches_the_bounded_maximum_likelihood(data):
    """fit_affine's projected Newton against scipy's L-BFGS-B on the same concave problem: never a worse
    log-likelihood (and the same map where the optimum is unique, i.e. two distinct posteriors)."""
    p, y = data
    g = C.fit_affine(p, y)
    nll, ref = _affine_reference(p, y)
    ours = nll(np.array([g.b, g.a + g.b]))
    assert ours <= ref.fun + 1e-7 * max(1.0, abs(ref.fun))
    assert 1e-6 <= g.b <= 1 - 1e-6 and 1e-6 - 1e-15 <= g.a + g.b <= 1 - 1e-6 + 1e-15
    if np.unique(p).size >= 2 and np.all((ref.x > 1e-4) & (ref.x < 1 - 1e-4)):
        assert np.allclose([g.b, g.a + g.b], ref.x, atol=1e-4)


def test_affine_leaves_an_end_without_data_at_the_identity():
    """Every held-out posterior 0: g(0) is fitted, g(1) is not identified and stays at 1 - 1e-6 (a least-squares
    start put it at 1e-6 and turned the map around)."""
    g = C.fit_affine(np.zeros(3), np.array([1, -1, 1]))  # Platt's targets 3/4, 1/3, 3/4: their mean at p = 0
    assert g.b == pytest.approx((3 / 4 + 1 / 3 + 3 / 4) / 3, rel=1e-6) and g.a + g.b == pytest.approx(1 - 1e-6)
    h = C.fit_affine(np.ones(4), np.array([1, 1, 1, -1]))  # targets 4/5 (x3), 1/3 at p = 1; g(0) stays at 1e-6
    assert h.b == pytest.approx(1e-6) and h.a + h.b == pytest.approx((3 * 4 / 5 + 1 / 3) / 4, rel=1e-6)


def test_affine_recovers_a_planted_linear_pool():
    """P(correct | p) = 0.2 + 0.6 p (a posterior right as it stands with weight 0.6, else a coin of 0.5):
    the fit finds a = 0.6, b = 0.2; Platt cannot (no sigmoid of the logit is linear in p)."""
    rng = np.random.default_rng(5)
    p = rng.random(40_000)
    y = np.where(rng.random(p.size) < 0.2 + 0.6 * p, 1, -1)
    g = C.fit_affine(p, y)
    assert g.a == pytest.approx(0.6, abs=0.02) and g.b == pytest.approx(0.2, abs=0.01)
    grid = np.linspace(0, 1, 11)
    assert np.max(np.abs(C.fit_platt(p, y)(grid) - (0.2 + 0.6 * grid))) > 0.03


def test_ece_and_log_loss_match_the_study_metrics():
    from crowdstat.study import metrics

    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(500), [0.0, 1.0, 0.1, 0.9999999]])
    y = np.where(rng.random(p.size) < p**2, 1, -1)
    assert C.ece(p, y) == pytest.approx(float(metrics.expected_calibration_error(np.asarray(p), y)), abs=1e-6)
    assert C.log_loss(p, y) == pytest.approx(float(metrics.log_loss(np.asarray(p), y)), rel=1e-5)
    # by hand: two bins
    assert C.ece([0.05, 0.15, 0.95], [-1, 1, 1]) == pytest.approx((0.05 + 0.85 + 0.05) / 3)


def test_choose_kind_thresholds():
    """The counts that skip calibration, and ``auto`` handed on to the data-driven choice."""
    kind, why = C.choose_kind("auto", 2000, 900, 400)
    assert kind == "auto" and "none, temperature, platt, affine, isotonic" in why
    assert C.choose_kind("auto", 100, C.MIN_PER_CLASS - 1, 20)[0] is None
    assert C.choose_kind("auto", 100, C.MIN_PER_CLASS, 20)[0] == "auto"
    assert C.choose_kind("isotonic", 10, 3, 2)[0] == "isotonic"  # asked for: fitted even when small
    kind, why = C.choose_kind("platt", 50, 50, 10)
    assert kind is None and "one truth class" in why
    assert C.choose_kind("platt", 50, 20, 1)[0] is None  # one program: nothing to hold out
    assert C.choose_kind("none", 5000, 2000, 1000) == (None, "calibrate='none'")
    with pytest.raises(ValueError, match="calibrate: expected one of"):
        C.choose_kind("sigmoid", 10, 5, 5)


def test_auto_candidates_leave_out_isotonic_on_few_lines_of_a_class():
    m = C.ISOTONIC_MIN_PER_CLASS
    assert C.auto_candidates(m, m) == (["none", "temperature", "platt", "affine", "isotonic"], {})
    kinds, excluded = C.auto_candidates(500, m - 1)
    assert kinds == ["none", "temperature", "platt", "affine"] and f"({500} correct, {m - 1} wrong)" in excluded["isotonic"]
    assert C.auto_candidates(m - 1, 500)[0] == ["none", "temperature", "platt", "affine"]


def _reference_scores(kinds, p, y, lp, k=C.FOLDS):
    """Slow plain-numpy nested score: folds of whole honeypot programs (seeded permutation dealt
    round-robin), each kind fitted by scikit-learn (affine: scipy) on the other folds' pairs, then a per-line loop."""
    progs = np.random.default_rng(0).permutation(np.unique(lp))
    k = min(k, len(progs))
    fold_of = {int(g): i % k for i, g in enumerate(progs)}
    fold = np.array([fold_of[int(g)] for g in lp])
    out = {}
    for kind in kinds:
        q = np.empty(len(p))
        for f in range(k):
            train, test = fold != f, fold == f
            if kind == "none" or len(set((y[train] > 0).tolist())) < 2:
                q[test] = p[test]
            elif kind == "isotonic":
                iso = IsotonicRegression(out_of_bounds="clip").fit(p[train], (y[train] > 0).astype(float))
                eps = 0.5 / (train.sum() + 1)
                q[test] = np.clip(iso.predict(p[test]), eps, 1 - eps)
            elif kind == "affine":
                g0, g1 = _affine_reference(p[train], y[train])[1].x
                q[test] = [g0 + (g1 - g0) * v for v in p[test]]
            else:
                a, b = _platt_reference(p[train], y[train], kind == "temperature")
                q[test] = [1 / (1 + math.exp(-(a * C.clipped_logit(v) + b))) for v in p[test]]
        losses = []
        for qi, yi in zip(q.tolist(), y.tolist()):
            qi = min(max(qi, 1e-6), 1 - 1e-6)
            losses.append(-math.log(qi) if yi > 0 else -math.log(1 - qi))
        bins = [[] for _ in range(10)]
        for qi, yi in zip(q.tolist(), y.tolist()):
            bins[min(int(qi * 10), 9)].append((qi, yi > 0))
        ece = sum(abs(sum(c for _, c in b) - sum(v for v, _ in b)) for b in bins) / len(q)
        out[kind] = (sum(losses) / len(losses), ece)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_map_scores_match_a_slow_reference(seed):
    """The nested held-out score of every candidate against an independent per-line loop (sklearn maps)."""
    rng = np.random.default_rng(seed)
    n_prog = [7, 23][seed]  # 7 programs: uneven folds
    lp = np.repeat(np.arange(n_prog), rng.integers(2, 6, n_prog))
    z = rng.normal(0, 2.5, lp.size)
    p = np.round(1 / (1 + np.exp(-z)), [2, 6][seed])  # seed 0: tied posteriors
    y = np.where(rng.random(lp.size) < 1 / (1 + np.exp(-(0.5 * z - 0.3))), 1, -1)  # over-confident, biased
    folds = C.honeypot_folds(lp, y)
    got = C.map_scores(C.CANDIDATES, p, y, folds)
    ref = _reference_scores(C.CANDIDATES, p, y, lp)
    for kind in C.CANDIDATES:
        assert got[kind]["log_loss"] == pytest.approx(ref[kind][0], rel=1e-6), kind
        assert got[kind]["ece"] == pytest.approx(ref[kind][1], abs=1e-6), kind
    assert got["none"]["log_loss"] == pytest.approx(C.log_loss(p, y))
    chosen = C.select_map(got)
    assert chosen == min(ref, key=lambda k: ref[k][0])


def test_map_scores_skip_a_fold_whose_complement_has_one_class():
    lp = np.repeat(np.arange(4), 3)
    y = np.array([1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1])  # program 0 holds every correct line
    p = np.linspace(0.1, 0.9, 12)
    folds = C.honeypot_folds(lp, y)
    got = C.map_scores(["none", "platt"], p, y, folds)
    assert got["platt"]["folds_uncalibrated"] == 1 and got["none"]["folds_uncalibrated"] == 0
    ref = _reference_scores(["platt"], p, y, lp)
    assert got["platt"]["log_loss"] == pytest.approx(ref["platt"][0], rel=1e-6)


def test_select_map_takes_the_smallest_score_and_the_simpler_on_a_tie():
    s = lambda **kw: {k: {"log_loss": v} for k, v in kw.items()}  # noqa: E731
    assert C.select_map(s(none=0.5, temperature=0.4, platt=0.3, isotonic=0.31)) == "platt"
    assert C.select_map(s(isotonic=0.2, platt=0.2, none=0.2)) == "none"  # a tie: the simplest
    assert C.select_map(s(isotonic=0.2, platt=0.2 + 1e-13)) == "platt"
    assert C.select_map(s(isotonic=0.2, platt=0.2 + 1e-6)) == "isotonic"
    with pytest.raises(ValueError, match="no candidate"):
        C.select_map({})


def _calibrated(seed, n_prog=80, lines=5, sharpen=1.0):
    """Honeypot-like pairs: y ~ Bernoulli(p) exactly (sharpen = 1) or p made over-confident (logit x sharpen)."""
    rng = np.random.default_rng(seed)
    lp = np.repeat(np.arange(n_prog), lines)
    p = rng.beta(2, 1, lp.size)
    y = np.where(rng.random(lp.size) < p, 1, -1)
    return lp, 1 / (1 + np.exp(-sharpen * C.clipped_logit(p))), y


def test_auto_keeps_perfectly_calibrated_posteriors():
    """y ~ Bernoulli(p): no map can help on held-out lines. ``none`` is chosen in most of 40 draws (the
    old size rule fitted Platt every time), a map chosen beats ``none`` only by noise, and the same
    procedure on over-confident posteriors (logit x 3) never keeps them."""
    chosen, gain = [], []
    for seed in range(40):
        lp, p, y = _calibrated(seed)
        sc = C.map_scores(C.CANDIDATES, p, y, C.honeypot_folds(lp, y))
        chosen.append(C.select_map(sc))
        gain.append(sc["none"]["log_loss"] - sc[chosen[-1]]["log_loss"])
    assert chosen.count("none") >= 20 and max(gain) < 0.02 and min(gain) >= 0
    over = []
    for seed in range(40):
        lp, p, y = _calibrated(seed, sharpen=3.0)
        over.append(C.select_map(C.map_scores(C.CANDIDATES, p, y, C.honeypot_folds(lp, y))))
    assert "none" not in over
    # one draw through recalibrate: the posteriors come back unchanged, the identity recorded
    lp, p, y = _calibrated(next(s for s, c in enumerate(chosen) if c == "none"))
    truth = np.concatenate([y, np.zeros(50, int)])
    post = np.concatenate([p, np.linspace(0, 1, 50)])
    out, rec = C.recalibrate(
        "auto", post, truth, np.concatenate([lp, np.repeat(1000, 50)]), None, heldout=np.concatenate([p, np.full(50, np.nan)])
    )
    assert rec["kind"] == "none" and rec["map"] == {"kind": "none", "formula": "p (the identity)"}
    assert np.array_equal(out, post) and rec["ece_after"] == rec["ece_before"] and rec["log_loss_after"] == rec["log_loss_before"]
    assert np.array_equal(C.from_record(rec["map"])(post), post)


def test_auto_prefers_isotonic_on_a_step_miscalibration():
    """P(correct | p) a step (0.3 below p = 0.6, 0.9 above) on 600 lines: no sigmoid fits it, isotonic
    does; the old size rule fitted Platt below 1,000 lines."""
    rng = np.random.default_rng(4)
    lp = np.repeat(np.arange(150), 4)
    p = rng.random(lp.size)
    y = np.where(rng.random(lp.size) < np.where(p < 0.6, 0.3, 0.9), 1, -1)
    truth = np.concatenate([y, np.zeros(3, int)])
    post = np.concatenate([p, [0.2, 0.5, 0.95]])
    held = np.concatenate([p, np.full(3, np.nan)])
    out, rec = C.recalibrate("auto", post, truth, np.concatenate([lp, [999] * 3]), None, heldout=held)
    cand = rec["selection"]["candidates"]
    assert rec["kind"] == "isotonic" and cand["platt"]["log_loss"] - cand["isotonic"]["log_loss"] > 0.02
    assert out[-3:] == pytest.approx([0.3, 0.3, 0.9], abs=0.08) and np.array_equal(out[:-3], p)


def test_auto_prefers_affine_on_saturated_over_confident_posteriors():
    """The shape of EM on a crowd of many annotators with few votes each (trec2011, docs/calibration.md):
    most posteriors saturated at 0 or 1 but wrong at a fixed rate there, and P(correct | p) = 0.25 + 0.5 p
    throughout. A sigmoid of the (clipped) logit cannot send +-13.8 to 0.75 / 0.25 without flattening
    the middle; the affine map can, and auto picks it by held-out log-loss (before it, auto had no
    such candidate and picked temperature)."""
    rng = np.random.default_rng(8)
    lp = np.repeat(np.arange(500), 3)
    u = rng.random(lp.size)
    p = np.where(u < 0.35, rng.random(lp.size) * 1e-8, np.where(u < 0.7, 1 - rng.random(lp.size) * 1e-8, rng.random(lp.size)))
    y = np.where(rng.random(lp.size) < 0.25 + 0.5 * p, 1, -1)
    truth = np.concatenate([y, np.zeros(3, int)])
    post = np.concatenate([p, [0.0, 0.5, 1.0]])
    held = np.concatenate([p, np.full(3, np.nan)])
    out, rec = C.recalibrate("auto", post, truth, np.concatenate([lp, [999] * 3]), None, heldout=held)
    cand = rec["selection"]["candidates"]
    sigmoid_or_step = min(cand[k]["log_loss"] for k in ("temperature", "platt", "isotonic"))
    assert rec["kind"] == "affine" and sigmoid_or_step - cand["affine"]["log_loss"] > 0.005
    assert out[-3:] == pytest.approx([0.25, 0.5, 0.75], abs=0.035)
    assert rec["map"]["formula"] == "b + a * p" and rec["ece_after"] < rec["ece_before"]


def test_auto_record_fields():
    """recalibrate's record under auto: every candidate's held-out score, the choice and why."""
    rng = np.random.default_rng(2)
    lp = np.repeat(np.arange(40), 5)
    z = rng.normal(0, 3, lp.size)
    y = np.where(rng.random(lp.size) < 1 / (1 + np.exp(-0.4 * z)), 1, -1)
    y[:15] = -1  # enough of the smaller class either way
    truth = np.concatenate([y, np.zeros(10, int)])
    line_program = np.concatenate([lp, np.repeat([100, 101], 5)])
    post = 1 / (1 + np.exp(-np.concatenate([z, np.linspace(-4, 4, 10)])))
    calls = []

    def refit(masked):
        calls.append(masked.copy())
        return post

    out, rec = C.recalibrate("auto", post, truth, line_program, refit)
    assert len(calls) == C.FOLDS
    sel = rec["selection"]
    assert set(sel) == {"score", "folds", "candidates", "excluded", "chosen"} and sel["folds"] == C.FOLDS
    assert list(sel["candidates"]) == list(C.CANDIDATES) and sel["excluded"] == {}
    for v in sel["candidates"].values():
        assert set(v) == {"log_loss", "ece", "folds_uncalibrated"}
    best = min(sel["candidates"], key=lambda k: sel["candidates"][k]["log_loss"])
    assert rec["kind"] == sel["chosen"] == best != "none"
    assert rec["log_loss_after"] == sel["candidates"][best]["log_loss"] and rec["ece_after"] == sel["candidates"][best]["ece"]
    assert rec["log_loss_before"] == sel["candidates"]["none"]["log_loss"] <= C.log_loss(post[:200], y) + 1e-12
    assert rec["why"].startswith(f"auto: {best}, the smallest held-out log-loss")
    for k, v in sel["candidates"].items():
        assert f"{k} {v['log_loss']:.4f}" in rec["why"]
    assert rec["n_honeypot_lines"] == 200 and rec["n_honeypot_programs"] == 40 and rec["map"]["kind"] == best
    assert np.array_equal(out[:200], post[:200]) and np.allclose(out[200:], C.from_record(rec["map"])(post[200:]))
    json.dumps(rec)  # fit.json can hold it
    # few lines of a class: isotonic left out, and why says so
    y2 = y.copy()
    y2[np.flatnonzero(y2 < 0)[C.ISOTONIC_MIN_PER_CLASS - 1 :]] = 1
    _, rec2 = C.recalibrate("auto", post, np.concatenate([y2, np.zeros(10, int)]), line_program, refit)
    assert "isotonic" not in rec2["selection"]["candidates"] and "isotonic" in rec2["selection"]["excluded"]
    assert "not compared: isotonic (needs 20 honeypot lines of each class" in rec2["why"]
    # explicit maps: no selection
    _, rec3 = C.recalibrate("platt", post, truth, line_program, refit)
    assert rec3["kind"] == "platt" and "selection" not in rec3


def test_bad_pairs_and_kinds():
    with pytest.raises(ValueError, match="as many posteriors"):
        C.fit_platt([0.2, 0.3], [1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        C.fit_isotonic([0.2, np.nan], [1, -1])
    with pytest.raises(ValueError, match="expected platt, temperature, affine or isotonic"):
        C.fit_map("auto", [0.2, 0.3], [1, -1])


# ---------------------------------------------------------------------------------------------
# cross-fitting


def test_heldout_posteriors_mask_exactly_the_fold():
    """Each honeypot line's held-out posterior comes from the call that did not see its truth, and
    that call saw every other honeypot's truth."""
    rng = np.random.default_rng(1)
    lp = np.repeat(np.arange(30), 4)
    truth = np.where(lp < 17, rng.choice([-1, 1], lp.size), 0).astype(np.int8)
    folds = C.honeypot_folds(lp, truth)
    assert len(folds) == C.FOLDS and sorted(np.concatenate(folds).tolist()) == np.flatnonzero(truth).tolist()
    for f in folds:  # whole programs per fold
        assert not set(lp[f]) & set(lp[np.setdiff1d(np.flatnonzero(truth), f)])
    calls = []

    def refit(masked):
        calls.append(masked.copy())
        return np.where(masked != 0, 0.99, 0.5) + 0.0001 * len(calls)  # "seeing the truth" shows

    h = C.heldout_posteriors(refit, truth, folds)
    assert len(calls) == len(folds)
    for k, f in enumerate(folds):
        assert np.allclose(h[f], 0.5 + 0.0001 * (k + 1))  # never the 0.99 of a fit that saw it
        hidden = np.flatnonzero((truth != 0) & (calls[k] == 0))
        assert hidden.tolist() == sorted(f.tolist())
    assert np.isnan(h[truth == 0]).all()
    assert len(C.honeypot_folds(lp, np.where(lp < 3, 1, 0))) == 3  # fewer programs than folds: one each


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "sim"
    pop = "expert:2@0.9,novice:5@0.7,spammer:3,adversary:2@0.3"
    cmd = [sys.executable, "-m", "crowdstat", "simulate", "--population", pop, "--programs", "60", "--lines", "5"]
    subprocess.run([*cmd, "--honeypots", "0.4", "--seed", "5", "--out", str(out)], check=True, capture_output=True)
    return out


def _independent(sim, method, kind, extra=None):
    """Held-out posteriors by hand (same seeded folds), the map from scikit-learn, applied to the other lines."""
    table = cs.read_votes(str(sim / "votes.csv"), truth=str(sim / "truth.csv"))
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    order = np.random.default_rng(0).permutation(np.unique(lp[t != 0]))
    held = np.full(t.size, np.nan)
    for k in range(5):
        lines = np.flatnonzero(np.isin(lp, order[k::5]) & (t != 0))
        masked = t.copy()
        masked[lines] = 0
        tab = dataclasses.replace(table, arrays=table.arrays._replace(truth=masked))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            held[lines] = cs.fit(tab, method=method, x64=True, **(extra or {})).lines["posterior"].to_numpy()[lines]
    hp = t != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = cs.fit(table, method=method, x64=True, **(extra or {})).lines["posterior"].to_numpy()
    if kind == "isotonic":
        n = int(hp.sum())
        iso = IsotonicRegression(out_of_bounds="clip").fit(held[hp], (t[hp] > 0).astype(float))
        mapped = np.clip(iso.predict(raw), 0.5 / (n + 1), 1 - 0.5 / (n + 1))
    else:
        a, b = _platt_reference(held[hp], t[hp], kind == "temperature")
        z = C.clipped_logit(raw)
        mapped = 1 / (1 + np.exp(-(a * z + b)))
    return held, raw, np.where(hp, raw, mapped)


@pytest.mark.parametrize(("method", "kind"), [("em1", "platt"), ("sequential", "isotonic"), ("em2", "temperature")])
def test_fit_calibrate_equals_an_independent_cross_fit(sim, method, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method=method, calibrate=kind, x64=True)
    held, raw, expect = _independent(sim, method, kind)
    t = np.asarray(r.table.arrays.truth)
    rec = r.diagnostics["calibration"]
    assert rec["kind"] == kind and rec["n_honeypot_lines"] == int((t != 0).sum()) == 120 and rec["folds"] == 5
    assert np.allclose(r.lines["posterior_raw"], raw) and np.allclose(r.lines["posterior"], expect, atol=1e-6)
    hp = t != 0
    assert rec["ece_before"] == pytest.approx(C.ece(held[hp], t[hp]))  # the held-out posteriors, not the fitted ones
    if method == "em1":  # em clamps honeypots to their truth: fitted on its own posteriors, the map would see perfection
        assert C.ece(raw[hp], t[hp]) < 1e-9 < rec["ece_before"]
    # the rewards come from the calibrated posteriors
    soft = r.lines.assign(p=r.lines["posterior"]).groupby("program", sort=False)["p"].mean().to_numpy()
    assert np.allclose(r.rewards["reward_soft"], soft)


def test_auto_method_reuses_its_heldout_posteriors(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), calibrate="platt", x64=True)
        chosen = r.diagnostics["auto"]["chosen"]
        direct = cs.fit(
            str(sim / "votes.csv"), str(sim / "truth.csv"), method=chosen, calibrate="platt", x64=True, **r.diagnostics["auto"]["params"]
        )
    assert np.allclose(r.lines["posterior"], direct.lines["posterior"], atol=1e-9)
    assert r.diagnostics["calibration"]["map"] == pytest.approx(direct.diagnostics["calibration"]["map"])


def test_no_honeypots_or_one_class_skip_with_a_diagnostic(sim, tmp_path):
    with pytest.warns(UserWarning, match="0 honeypot program"):
        r = cs.fit(str(sim / "votes.csv"), method="em1", calibrate="auto")
    assert r.diagnostics["calibration"]["kind"] == "none" and "posterior_raw" not in r.lines
    plain = cs.fit(str(sim / "votes.csv"), method="em1")
    assert np.array_equal(r.lines["posterior"], plain.lines["posterior"])
    truth = pd.read_csv(sim / "truth.csv").assign(truth=1)
    with pytest.warns(UserWarning, match="one truth class"):
        r = cs.fit(str(sim / "votes.csv"), truth, method="majority", calibrate="isotonic")
    assert r.diagnostics["calibration"]["kind"] == "none"


def test_outputs_carry_the_raw_posterior_and_the_map(sim, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method="sequential", calibrate="auto")
    r.save(tmp_path / "out")
    lines = pd.read_csv(tmp_path / "out" / "lines.csv")
    assert list(lines.columns[:4]) == ["program", "line", "posterior", "posterior_raw"]
    rec = json.loads((tmp_path / "out" / "fit.json").read_text())
    cal = rec["diagnostics"]["calibration"]
    # sequential's posteriors are 0/1 (two distinct values): a map that moves them wins the held-out score
    assert rec["params"]["calibrate"] == "auto" and cal["n_distinct_heldout"] <= 2
    cand = cal["selection"]["candidates"]
    assert cal["kind"] == cal["selection"]["chosen"] == min(cand, key=lambda k: cand[k]["log_loss"]) != "none"
    assert cal["log_loss_after"] < cal["log_loss_before"] / 2  # sequential's 0/1 posteriors: the map must help
    first = json.loads((tmp_path / "out" / "rewards.jsonl").read_text().splitlines()[-1])
    last = lines[lines["program"] == first["program"]]
    assert np.allclose(first["posteriors"], last["posterior"]) and not np.allclose(last["posterior"], last["posterior_raw"])


def test_auto_keeps_an_already_calibrated_method(sim, tmp_path):
    """em1 on the simulated crowd is calibrated on held-out honeypots: auto keeps its posteriors and
    rewards (the old size rule fitted a map on 120 lines) and fit.json says why, with every score."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method="em1", calibrate="auto", x64=True)
        plain = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method="em1", x64=True)
    r.save(tmp_path / "out")
    cal = json.loads((tmp_path / "out" / "fit.json").read_text())["diagnostics"]["calibration"]
    cand = cal["selection"]["candidates"]
    assert cal["kind"] == "none" and list(cand) == [k for k in C.CANDIDATES if k not in cal["selection"]["excluded"]]
    assert {"none", "temperature", "platt"} <= set(cand)
    assert all(cand["none"]["log_loss"] < v["log_loss"] for k, v in cand.items() if k != "none")
    assert cal["why"].startswith("auto: none, the smallest held-out log-loss") and cal["map"]["kind"] == "none"
    assert np.array_equal(r.lines["posterior"], plain.lines["posterior"]) and np.array_equal(r.lines["posterior_raw"], r.lines["posterior"])
    assert np.allclose(r.rewards["reward_soft"], plain.rewards["reward_soft"])


def test_bad_calibrate_values(sim, tmp_path):
    for bad in ("sigmoid", 1, None, "AUTO"):
        with pytest.raises(ValueError, match="calibrate: expected one of"):
            cs.fit(str(sim / "votes.csv"), method="majority", calibrate=bad)
    r = subprocess.run(
        [sys.executable, "-m", "crowdstat", "fit", str(sim / "votes.csv"), "--calibrate", "bogus", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--calibrate" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["platt", "temperature", "affine", "isotonic"])
def test_record_round_trip_and_interval_columns(kind):
    rng = np.random.default_rng(11)
    p = rng.random(300)
    y = np.where(rng.random(300) < 1 - p, 1, -1)  # anti-calibrated: Platt turns the map around (a < 0)
    g = C.fit_map(kind, p, y)
    back = C.from_record(json.loads(json.dumps(g.record())))
    grid = np.linspace(0, 1, 57)
    assert np.array_equal(back(grid), g(grid))
    truth = np.array([0, 0, 1, 0])
    lo, hi = np.array([0.1, 0.3, 0.2, 0.0]), np.array([0.4, 0.35, 0.9, 1.0])
    out = C.map_intervals({"posterior_lower": lo, "posterior_upper": hi, "other": lo}, {"map": g.record()}, truth)
    assert set(out) == {"posterior_lower", "posterior_upper"}
    assert out["posterior_lower"][2] == 0.2 and out["posterior_upper"][2] == 0.9  # honeypot line untouched
    free = truth == 0
    ends = np.stack([g(lo), g(hi)])
    assert np.allclose(out["posterior_lower"][free], ends.min(0)[free]) and np.allclose(out["posterior_upper"][free], ends.max(0)[free])
    assert np.all(out["posterior_lower"] <= out["posterior_upper"])
