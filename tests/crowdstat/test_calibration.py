"""Recalibration of line posteriors from honeypot lines (crowdstat.estimators.calibration, fit(calibrate=...)).

The maps against scikit-learn (an independent implementation), their properties, the cross-fitting
(no honeypot calibrates itself) against an independent re-computation, and bad input."""

from __future__ import annotations

import dataclasses
import json
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
@given(pairs(min_size=4), st.sampled_from(["platt", "temperature", "isotonic"]))
def test_maps_are_monotone_and_in_unit_interval(data, kind):
    p, y = data
    g = C.fit_map(kind, p, y)
    grid = np.linspace(0, 1, 201)
    out = g(grid)
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.isfinite(out))
    d = np.diff(out)
    assert np.all(d >= -1e-12) or np.all(d <= 1e-12)  # Platt may turn a map around (a < 0), never bends it
    if kind == "isotonic":
        assert np.all(d >= -1e-12)


@pytest.mark.parametrize("kind", ["platt", "temperature", "isotonic"])
def test_maps_are_near_identity_on_calibrated_data(kind):
    rng = np.random.default_rng(7)
    p = rng.beta(0.7, 0.7, 20_000)
    y = np.where(rng.random(p.size) < p, 1, -1)
    g = C.fit_map(kind, p, y)
    grid = np.linspace(0.02, 0.98, 49)
    assert np.max(np.abs(g(grid) - grid)) < (0.06 if kind == "isotonic" else 0.02)
    if kind != "isotonic":
        assert g.a == pytest.approx(1, abs=0.05) and g.b == pytest.approx(0, abs=0.05)


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
    assert C.choose_kind("auto", 2000, 900, 400)[0] == "isotonic"
    assert C.choose_kind("auto", C.ISOTONIC_MIN_LINES - 1, 500, 400)[0] == "platt"
    assert C.choose_kind("auto", C.PLATT_MIN_LINES - 1, 20, 10)[0] == "temperature"
    assert C.choose_kind("auto", 200, 100, 40, n_distinct=C.DISCRETE_MAX_VALUES)[0] == "isotonic"  # vote shares, 0/1
    assert C.choose_kind("auto", 200, 100, 40, n_distinct=C.DISCRETE_MAX_VALUES + 1)[0] == "platt"
    assert C.choose_kind("auto", 100, C.MIN_PER_CLASS - 1, 20)[0] is None
    assert C.choose_kind("isotonic", 10, 3, 2)[0] == "isotonic"  # asked for: fitted even when small
    kind, why = C.choose_kind("platt", 50, 50, 10)
    assert kind is None and "one truth class" in why
    assert C.choose_kind("platt", 50, 20, 1)[0] is None  # one program: nothing to hold out
    assert C.choose_kind("none", 5000, 2000, 1000) == (None, "calibrate='none'")
    with pytest.raises(ValueError, match="calibrate: expected one of"):
        C.choose_kind("sigmoid", 10, 5, 5)


def test_bad_pairs_and_kinds():
    with pytest.raises(ValueError, match="as many posteriors"):
        C.fit_platt([0.2, 0.3], [1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        C.fit_isotonic([0.2, np.nan], [1, -1])
    with pytest.raises(ValueError, match="expected platt, temperature or isotonic"):
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
    # sequential's posteriors are 0/1: two distinct values, so auto fits a two-step isotonic map
    assert rec["params"]["calibrate"] == "auto" and cal["kind"] == "isotonic" and cal["n_distinct_heldout"] <= 2
    assert len(cal["map"]["knots_posterior"]) <= 4
    assert cal["log_loss_after"] < cal["log_loss_before"] / 2  # sequential's 0/1 posteriors: the map must help
    first = json.loads((tmp_path / "out" / "rewards.jsonl").read_text().splitlines()[-1])
    last = lines[lines["program"] == first["program"]]
    assert np.allclose(first["posteriors"], last["posterior"]) and not np.allclose(last["posterior"], last["posterior_raw"])


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


@pytest.mark.parametrize("kind", ["platt", "temperature", "isotonic"])
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
