"""Intervals (crowdstat.estimators.intervals, ``fit(..., interval=)``). The Laplace intervals that ``fit``
reports: the posterior mode and inverse Hessian against a NumPy log posterior written line by line and
differentiated by finite differences, the line-logit variances against a finite-difference Jacobian,
properties of the output (lower <= estimate <= upper, in [0, 1], narrower with more votes,
deterministic), a small coverage check, sequential's refusal and bad input. The parametric bootstrap
(kept as a reference): the vmapped refits against the registry loop and a plain NumPy EM, the per-line
values against a loop over lines, the percentile rule."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crowdstat as cs
from crowdstat.estimators import intervals as I
from crowdstat.estimators import laplace as L
from crowdstat.estimators.registry import REGISTRY, make_configs
from crowdstat.io.tables import read_votes
from crowdstat.study.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
P = [0.95, 0.85, 0.75, 0.65, 0.9]
IID = {"p_buggy_program": 1.0, "p_wrong_line_if_buggy": 0.2}  # independent lines, P(correct) = 0.8


def _sim(seed=0, n_programs=30, p=P, **kw):
    return simulate(seed, p, n_programs=n_programs, lines_per_program=5, honeypot_fraction=0.2, annotators_per_item=3, **{**IID, **kw})


def _fit(sim, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cs.fit(sim.votes, truth=sim.truth, method=method, **kw)


def _replicates(method, extra, n_boot=12, seed=3, model=None):
    """(table, cfg, common, est, labels) of a small float64 case; labels from the fitted model, or from
    ``model`` = (sens, spec, pi) for every annotator."""
    sim = _sim(1)
    table = read_votes(sim.votes, truth=sim.truth)
    common, cfg = make_configs(method, {**extra, "interval": 0.9, "interval_method": "bootstrap", "n_boot": max(n_boot, 20), "x64": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = REGISTRY[method].load()(table, cfg, common, jnp.float64)
    m = table.n_annotators
    sens, spec, pi = (
        I.generative_model(method, est, table.arrays.truth, common.delta)
        if model is None
        else (np.full(m, model[0]), np.full(m, model[1]), model[2])
    )
    return table, cfg, common, est, I.draw_labels(table.arrays, sens, spec, pi, n_boot, seed)


# ---------------------------------------------------------------------------------------------
# the vmapped refits against references


@pytest.mark.parametrize(
    "method, extra",
    [
        ("em1", {}),
        ("em2", {}),
        pytest.param("proximal", {"tol": 1e-12}, marks=pytest.mark.slow),  # proximal Newton under vmap: ~40 s to compile
        ("proximal", {"solver": "fista", "tol": 1e-10, "gamma": 0.5}),
        ("proximal", {"latent": True}),
        ("sequential", {"lam": 0.05}),
    ],
)
def test_vmapped_refits_equal_the_registry_loop(method, extra):
    with jax.enable_x64(True):
        table, cfg, common, _, labels = _replicates(method, extra, model=(0.8, 0.7, 0.75))
        a = I.refit_vmapped(table, method, cfg, common, jnp.float64, labels)
        b = I.refit_loop(table, method, cfg, common, jnp.float64, labels)
    assert a.reliability.shape == (labels.shape[0], table.n_annotators)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert np.ptp(a.vote_pos, axis=0).max() > 0.01  # the replicates differ


def _numpy_em1(line, ann, lab, truth, m, iters=2000):
    """Plain one-coin Dawid-Skene EM (loops over votes; majority start, honeypots clamped): (p, pi)."""
    n = truth.shape[0]
    q = np.zeros(n)
    for j in range(n):
        v = lab[line == j]
        q[j] = 1.0 if truth[j] > 0 else 0.0 if truth[j] < 0 else np.mean(v > 0)
    for _ in range(iters):
        agree, cnt = np.zeros(m), np.zeros(m)
        for v in range(line.shape[0]):
            i, j = ann[v], line[v]
            agree[i] += q[j] if lab[v] > 0 else 1 - q[j]
            cnt[i] += 1
        p, pi = agree / cnt, q.mean()
        lc, lw = np.full(n, np.log(pi)), np.full(n, np.log1p(-pi))
        for v in range(line.shape[0]):
            i, j = ann[v], line[v]
            lc[j] += np.log(p[i]) if lab[v] > 0 else np.log1p(-p[i])
            lw[j] += np.log1p(-p[i]) if lab[v] > 0 else np.log(p[i])
        new = np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, 1 / (1 + np.exp(lw - lc))))
        if np.max(np.abs(new - q)) < 1e-13:
            break
        q = new
    return p, pi


def test_em1_bootstrap_equals_a_plain_numpy_loop():
    """Independent reference: a NumPy EM refitted replicate by replicate; then the line posteriors of the
    observed votes under each replicate's (p, pi), computed line by line, and the percentile interval."""
    with jax.enable_x64(True):
        table, cfg, common, est, labels = _replicates("em1", {"tol": 0.0, "maxiter": 3000}, n_boot=6)
        reps = I.refit_vmapped(table, "em1", cfg, common, jnp.float64, labels)
    a = table.arrays
    line, ann, truth = (np.asarray(x) for x in (a.line, a.annotator, a.truth))
    ref_p, ref_pi = zip(*(_numpy_em1(line, ann, lab, truth, table.n_annotators) for lab in labels))
    np.testing.assert_allclose(reps.reliability, np.array(ref_p), atol=1e-7)
    np.testing.assert_allclose(reps.prior_logit, np.log(ref_pi) - np.log1p(-np.array(ref_pi)), atol=1e-6)
    post = I.observed_posteriors(a, reps, clamp=True)
    lab = np.asarray(a.label)
    for b, (p, pi) in enumerate(zip(ref_p, ref_pi)):
        for j in range(truth.shape[0]):
            if truth[j]:
                assert post[b, j] == (truth[j] > 0)
                continue
            s = (
                np.log(pi)
                - np.log1p(-pi)
                + sum((1 if lab[v] > 0 else -1) * np.log(p[ann[v]] / (1 - p[ann[v]])) for v in np.flatnonzero(line == j))
            )
            assert post[b, j] == pytest.approx(1 / (1 + np.exp(-s)), abs=1e-6)


def test_draw_labels_follow_the_model():
    sim = _sim(2)
    a = read_votes(sim.votes, truth=sim.truth).arrays
    m = int(np.max(a.annotator)) + 1
    truth, line = np.asarray(a.truth), np.asarray(a.line)
    perfect = I.draw_labels(a, np.ones(m), np.ones(m), 0.8, 50, 0)  # sens = spec = 1: every vote is its line's truth
    per_line = np.zeros((50, truth.shape[0]))
    np.add.at(per_line, (slice(None), line), perfect)
    counts = np.bincount(line, minlength=truth.shape[0])
    assert np.all(np.abs(per_line) == counts)  # unanimous on every line
    hp = truth[line] != 0
    assert np.all(perfect[:, hp] == truth[line][hp])  # honeypots keep their truth
    assert abs(np.mean(per_line[:, truth == 0] > 0) - 0.8) < 0.03  # free lines: Bernoulli(pi)
    sens, spec = np.full(m, 0.9), np.full(m, 0.6)
    noisy = I.draw_labels(a, sens, spec, 0.5, 400, 1)[:, hp]
    t = truth[line][hp]
    assert abs(np.mean(noisy[:, t > 0] > 0) - 0.9) < 0.02 and abs(np.mean(noisy[:, t < 0] < 0) - 0.6) < 0.02
    np.testing.assert_array_equal(noisy, I.draw_labels(a, sens, spec, 0.5, 400, 1)[:, hp])


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 200), st.integers(1, 5), st.floats(0.5, 0.99), st.integers(0, 2**31 - 1))
def test_percentile_interval(n, k, level, seed):
    rng = np.random.default_rng(seed)
    v = rng.random((n, k)) ** rng.uniform(0.2, 5)
    est = rng.random(k)
    lo, hi = I.percentile(v, est, level)
    for i in range(k):
        s = np.sort(v[:, i])
        assert lo[i] == pytest.approx(min(np.quantile(s, (1 - level) / 2), est[i]))
        assert hi[i] == pytest.approx(max(np.quantile(s, (1 + level) / 2), est[i]))
        inside = np.mean((v[:, i] >= lo[i]) & (v[:, i] <= hi[i]))
        assert inside >= level - 2 / n
    assert np.all((0 <= lo) & (lo <= est) & (est <= hi) & (hi <= 1))


# ---------------------------------------------------------------------------------------------
# the fit's output


def _check_bounds(res, method):
    """0 <= lower <= estimate <= upper <= 1 for every interval column of a fit."""
    cols = [("reliability", res.annotators), ("posterior", res.lines)]
    cols += [(c, res.annotators) for c in ("sensitivity", "specificity") if method == "em2"]
    for col, df in cols:
        lo, est, hi = (df[c].to_numpy(np.float64) for c in (f"{col}_lower", col, f"{col}_upper"))
        assert np.all((0 <= lo) & (lo <= est + 1e-6) & (est <= hi + 1e-6) & (hi <= 1)), col


@pytest.mark.slow  # ~50 s: a compilation per method
@settings(max_examples=4, deadline=None)
@given(st.lists(st.floats(0.55, 0.97), min_size=5, max_size=5), st.integers(0, 1000), st.sampled_from(["em1", "em2", "proximal"]))
def test_fit_intervals_contain_the_estimate(p, seed, method):
    res = _fit(_sim(seed, p=p), method, interval=0.8)
    _check_bounds(res, method)
    rec = res.diagnostics["intervals"]
    assert rec["level"] == 0.8 and rec["converged"] and rec["method"].startswith("Laplace")


def test_deterministic_and_off_by_default():
    """The Laplace intervals draw nothing: the same on every call; a higher level gives wider intervals; the
    bootstrap's seed and replicates are refused with them (an option that would do nothing)."""
    sim = _sim(5)
    a, b = (_fit(sim, "em2", interval=0.9) for _ in range(2))
    for kw in ({"boot_seed": 7}, {"n_boot": 50}):
        with pytest.raises(ValueError, match="used by interval_method='bootstrap' only"):
            _fit(sim, "em2", interval=0.9, **kw)
    c = _fit(sim, "em2", interval=0.95)
    _check_bounds(a, "em2")
    cols = ["reliability_lower", "reliability_upper", "sensitivity_lower", "specificity_upper"]
    np.testing.assert_array_equal(a.annotators[cols], b.annotators[cols])
    np.testing.assert_array_equal(a.lines["posterior_upper"], b.lines["posterior_upper"])
    assert np.all(c.annotators["sensitivity_lower"] <= a.annotators["sensitivity_lower"])
    assert np.all(c.annotators["sensitivity_upper"] >= a.annotators["sensitivity_upper"])
    plain = _fit(sim, "em2")
    assert "reliability_lower" not in plain.annotators and "intervals" not in plain.diagnostics
    np.testing.assert_array_equal(plain.annotators["reliability"], a.annotators["reliability"])  # the point fit is unchanged


def test_small_coverage_check_and_narrower_with_more_votes():
    """Nominal 90% intervals of em1 cover the simulated p (independent lines, 60 programs): 10 data sets x 5
    annotators. Loose bounds (the study, experiments/coverage.py, has the full figures): a broken interval
    (zero width, or centred elsewhere) covers far less. The same intervals on 12 programs are wider."""
    hits, widths = [], []
    for seed in range(10):
        sim = _sim(100 + seed, n_programs=60)
        res = _fit(sim, "em1", interval=0.9)
        _check_bounds(res, "em1")
        r = res.annotators.merge(sim.reliability, on="annotator")
        hits += list((r["reliability_lower"] <= r["p"]) & (r["p"] <= r["reliability_upper"]))
        widths.append(float(np.mean(r["reliability_upper"] - r["reliability_lower"])))
    assert 0.75 <= np.mean(hits) <= 1.0, np.mean(hits)
    small = _fit(_sim(100, n_programs=12), "em1", interval=0.9).annotators
    small_width = small["reliability_upper"] - small["reliability_lower"]
    assert np.mean(widths) < 0.7 * float(np.mean(small_width))  # 5x the votes: ~1/sqrt(5) = 0.45 the width


def test_majority_has_no_intervals():
    sim = _sim(6, n_programs=10)
    with pytest.warns(UserWarning, match="no intervals"):
        maj = cs.fit(sim.votes, truth=sim.truth, method="majority", interval=0.9)
    assert "reliability_lower" not in maj.annotators and maj.diagnostics["intervals"]["method"] is None


@pytest.mark.slow  # ~30-60 s: NUTS compiles
def test_bayes_intervals_are_its_credible_intervals():
    sim = _sim(6, n_programs=10)
    bay = _fit(sim, "bayes", interval=0.9, num_warmup=30, num_samples=30, num_chains=1)
    np.testing.assert_array_equal(bay.annotators["reliability_lower"], bay.annotators["ci_low"])
    np.testing.assert_array_equal(bay.lines["posterior_upper"], bay.lines["ci_high"])


# ---------------------------------------------------------------------------------------------
# files and bad input


def test_saved_columns_and_fit_json(tmp_path):
    sim = _sim(7, n_programs=12)
    res = _fit(sim, "em1", interval=0.9)
    _check_bounds(res, "em1")
    res.save(tmp_path / "out")
    import pandas as pd

    lines = pd.read_csv(tmp_path / "out" / "lines.csv")
    ann = pd.read_csv(tmp_path / "out" / "annotators.csv")
    assert {"posterior_lower", "posterior_upper"} <= set(lines.columns)
    assert {"reliability_lower", "reliability_upper"} <= set(ann.columns)
    rec = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert rec["params"]["interval"] == 0.9
    assert rec["diagnostics"]["intervals"]["model"] == "one_coin" and rec["diagnostics"]["intervals"]["level"] == 0.9


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"interval": 1.0}, "interval"),
        ({"interval": 0}, "interval"),
        ({"n_boot": 5}, "n_boot"),
        ({"boot_seed": -1}, "boot_seed"),
        ({"n_boot": 2.5}, "n_boot"),
        ({"interval_method": "wald"}, "interval_method"),
    ],
)
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        make_configs("em1", kw)


def test_cli_bad_interval_is_one_line(tmp_path, capsys):
    from crowdstat.cli import main

    sim = _sim(8, n_programs=6)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    for flag, bad in (("--interval", "2"), ("--interval", "0"), ("--n-boot", "3"), ("--boot-seed", "-1")):
        rc = main(["fit", str(tmp_path / "votes.csv"), "--method", "em1", flag, bad, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert flag.lstrip("-").replace("-", "_") in err, err
        assert not (tmp_path / "o").exists()


def test_chunked_batches_equal_one_loop(monkeypatch):
    """Large tables refit in padded batches (CHUNK_SLOTS): 20 replicates in batches of 7 (the last padded) give the
    intervals of the registry loop over the same draws."""
    with jax.enable_x64(True):
        table, cfg, common, est, _ = _replicates("em1", {}, n_boot=20)
        monkeypatch.setattr(I, "CHUNK_SLOTS", 7 * table.arrays.n_votes)
        ann, lines, rec = I.bootstrap(table, "em1", cfg, common, jnp.float64, est)
        sens, spec, pi = I.generative_model("em1", est, table.arrays.truth, common.delta)
        rng = np.random.default_rng(common.boot_seed)
        labels = np.concatenate([I.draw_labels(table.arrays, sens, spec, pi, n, rng) for n in (7, 7, 6)])
        reps = I.refit_loop(table, "em1", cfg, common, jnp.float64, labels)
    lo, hi = I.percentile(reps.reliability, est.reliability, common.interval)
    np.testing.assert_allclose(ann["reliability_lower"], lo, atol=1e-9)
    np.testing.assert_allclose(ann["reliability_upper"], hi, atol=1e-9)
    plo, phi = I.percentile(I.observed_posteriors(table.arrays, reps, clamp=True).astype(np.float32), est.posterior, common.interval)
    np.testing.assert_allclose(lines["posterior_lower"], plo, atol=1e-6)
    assert rec["replicates"] == 20


# ---------------------------------------------------------------------------------------------
# the Laplace intervals against finite differences of a NumPy log posterior


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_log_posterior(theta, kind, line, ann, lab, truth, m, prior_logit, intercept):
    """The log posterior written line by line (no JAX): the likelihood of the method's model plus log p + log(1 - p)
    per probability on the logit scale."""
    theta = np.asarray(theta, np.float64)
    lp = float(np.sum(np.log(_sig(theta)) + np.log(_sig(-theta))))
    for j in range(truth.shape[0]):
        vs = np.flatnonzero(line == j)
        if kind == "separable":  # each honeypot vote on its own: right with probability p_i
            if truth[j] != 0:
                lp += sum(np.log(_sig(truth[j] * lab[v] * theta[ann[v]])) for v in vs)
            continue
        if kind == "logistic":
            if truth[j] == 0:
                continue
            z = (theta[m] if intercept else 0.0) + sum(lab[v] * theta[ann[v]] for v in vs)
            lp += np.log(_sig(truth[j] * z))
            continue
        if kind == "two_coin":
            sens, spec, c = _sig(theta[:m]), _sig(theta[m : 2 * m]), theta[2 * m]
        else:
            sens = spec = _sig(theta[:m])
            c = theta[m] if kind == "one_coin" else prior_logit
        pc = _sig(c) * np.prod([sens[ann[v]] if lab[v] > 0 else 1 - sens[ann[v]] for v in vs])
        pw = _sig(-c) * np.prod([1 - spec[ann[v]] if lab[v] > 0 else spec[ann[v]] for v in vs])
        lp += np.log(pc if truth[j] > 0 else pw if truth[j] < 0 else pc + pw)
    return lp


def _numpy_line_logits(theta, kind, line, ann, lab, n_lines, m, prior_logit, intercept):
    """Each line's posterior logit, line by line: prior logit + sum of log P(vote | correct) / P(vote | wrong)."""
    out = np.zeros(n_lines)
    for j in range(n_lines):
        if kind == "two_coin":
            sens, spec, c = _sig(theta[:m]), _sig(theta[m : 2 * m]), theta[2 * m]
        else:
            sens = spec = _sig(theta[:m])
            c = theta[m] if kind == "one_coin" or (kind == "logistic" and intercept) else prior_logit
        s = c
        for v in np.flatnonzero(line == j):
            i = ann[v]
            s += np.log(sens[i] / (1 - spec[i])) if lab[v] > 0 else np.log((1 - sens[i]) / spec[i])
        out[j] = s
    return out


LAPLACE_CASES = [
    ("em1", {}, "one_coin"),
    ("em2", {}, "two_coin"),
    ("proximal", {"center": "zero"}, "logistic"),
    ("proximal", {"center": "zero", "intercept": True}, "logistic"),
    ("proximal", {"intercept": True}, "logistic"),  # the centred fit with an intercept: eq. (7)'s likelihood
    ("proximal", {}, "separable"),
    ("proximal", {"latent": True}, "one_coin_fixed_prior"),
]


@pytest.mark.parametrize("method, extra, kind", LAPLACE_CASES)
def test_laplace_mode_and_hessian_match_finite_differences(method, extra, kind):
    """At the mode the finite-difference gradient of the NumPy log posterior vanishes, and the covariance is the
    inverse of its finite-difference Hessian."""
    sim = simulate(3, P, n_programs=8, lines_per_program=4, honeypot_fraction=0.25, annotators_per_item=3, **IID)
    table = read_votes(sim.votes, truth=sim.truth)
    common, cfg = make_configs(method, {**extra, "interval": 0.9, "x64": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = REGISTRY[method].load()(table, cfg, common, jnp.float64)
    lf = L.laplace(table, method, cfg, common, est)
    assert lf.kind == kind and lf.converged
    a = table.arrays
    line, ann, lab, truth = (np.asarray(x) for x in (a.line, a.annotator, a.label, a.truth))
    m, intercept = table.n_annotators, bool(extra.get("intercept"))
    assert (
        lf.mode.shape[0]
        == {"one_coin": m + 1, "two_coin": 2 * m + 1, "one_coin_fixed_prior": m, "logistic": m + intercept, "separable": m}[kind]
    )
    if kind == "separable":  # the mode is the centre: logit((a + 1) / (n + 2)) of each annotator's honeypot votes
        agree = (truth[line] != 0) & (lab != 0)
        a_ = np.bincount(ann[agree], weights=(lab * truth[line])[agree] > 0, minlength=m)
        n_ = np.bincount(ann[agree], minlength=m)
        np.testing.assert_allclose(lf.mode, np.log((a_ + 1) / (n_ - a_ + 1)), atol=1e-8)
    f = lambda th: _numpy_log_posterior(th, kind, line, ann, lab, truth, m, lf.prior_logit, intercept)  # noqa: E731
    d, h = lf.mode.shape[0], 1e-4
    eye = np.eye(d)
    grad = np.array([(f(lf.mode + 1e-6 * eye[i]) - f(lf.mode - 1e-6 * eye[i])) / 2e-6 for i in range(d)])
    assert np.max(np.abs(grad)) < 1e-5, grad

    def d2(i, j):
        pp, pm, mp, mm = (f(lf.mode + h * (si * eye[i] + sj * eye[j])) for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)))
        return (pp - pm - mp + mm) / (4 * h * h)

    hess = np.array([[d2(i, j) for j in range(d)] for i in range(d)])
    np.testing.assert_allclose(lf.cov, np.linalg.inv(-hess), rtol=1e-4, atol=1e-6)
    # the line logits' mean and variance: the NumPy line logits and their finite-difference Jacobian G, G cov G'
    mean, var = L.line_logit_moments(lf, a, m)
    g = lambda th: _numpy_line_logits(th, kind, line, ann, lab, truth.shape[0], m, lf.prior_logit, intercept)  # noqa: E731
    np.testing.assert_allclose(mean, g(lf.mode), atol=1e-9)
    jac = np.stack([(g(lf.mode + 1e-6 * eye[i]) - g(lf.mode - 1e-6 * eye[i])) / 2e-6 for i in range(d)], axis=1)
    np.testing.assert_allclose(var, np.einsum("jd,de,je->j", jac, lf.cov, jac), rtol=1e-5, atol=1e-8)


def test_laplace_interval_columns_are_the_gaussian_quantiles():
    """em1: reliability interval = sigmoid(mode +- z sd) widened to the estimate; line interval = sigmoid(mean +- z sd),
    honeypot lines clamped to their truth."""
    with jax.enable_x64(True):
        table, cfg, common, est, _ = _replicates("em1", {})
    ann, lines, rec = L.laplace_intervals(table, "em1", cfg, common, est)
    lf = L.laplace(table, "em1", cfg, common, est)
    m, z = table.n_annotators, 1.6448536269514722
    sd = np.sqrt(np.diag(lf.cov))[:m]
    lo = np.minimum(_sig(lf.mode[:m] - z * sd), est.reliability)
    hi = np.maximum(_sig(lf.mode[:m] + z * sd), est.reliability)
    np.testing.assert_allclose(ann["reliability_lower"], lo, atol=1e-12)
    np.testing.assert_allclose(ann["reliability_upper"], hi, atol=1e-12)
    mean, var = L.line_logit_moments(lf, table.arrays, m)
    truth = np.asarray(table.arrays.truth)
    free = truth == 0
    np.testing.assert_allclose(lines["posterior_lower"][free], np.minimum(_sig(mean - z * np.sqrt(var)), est.posterior)[free], atol=1e-12)
    assert np.all(lines["posterior_lower"][truth > 0] == 1) and np.all(lines["posterior_upper"][truth < 0] == 0)
    assert rec["parameters"] == m + 1 and rec["model"] == "one_coin"


def test_sequential_refuses_intervals(tmp_path, capsys):
    """sequential has no honest interval (its weights are not an estimate with a sampling distribution): fit raises
    and the CLI prints one line and exits non-zero."""
    sim = _sim(9, n_programs=8)
    with pytest.raises(ValueError, match="sequential: no intervals"):
        _fit(sim, "sequential", interval=0.9)
    from crowdstat.cli import main

    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    args = ["fit", str(tmp_path / "votes.csv"), "--truth", str(tmp_path / "truth.csv"), "--method", "sequential", "--interval", "0.9"]
    rc = main([*args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and "sequential: no intervals" in err, err


def test_interval_method_bootstrap_gives_the_reference_bootstrap(tmp_path):
    """``interval_method="bootstrap"`` reaches the parametric bootstrap (replicates recorded, seeded: the
    same seed gives the same intervals, another seed other ones) and the CLI takes ``--interval-method``."""
    from crowdstat.cli import main

    sim = _sim(5)
    a, b, c = (_fit(sim, "em1", interval=0.9, interval_method="bootstrap", n_boot=40, boot_seed=s) for s in (1, 1, 2))
    assert a.diagnostics["intervals"]["replicates"] == 40 and a.diagnostics["intervals"]["seed"] == 1
    np.testing.assert_array_equal(a.annotators["reliability_lower"], b.annotators["reliability_lower"])
    assert not np.array_equal(a.annotators["reliability_lower"], c.annotators["reliability_lower"])
    _check_bounds(a, "em1")
    sim.votes.to_csv(tmp_path / "v.csv", index=False)
    argv = ["fit", str(tmp_path / "v.csv"), "--method", "em1", "--interval", "0.9", "--interval-method", "bootstrap", "--n-boot", "20"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "fit.json").read_text())
    assert rec["params"]["interval_method"] == "bootstrap" and rec["diagnostics"]["intervals"]["replicates"] == 20
