"""Bootstrap intervals (crowdstat.estimators.intervals, ``fit(..., interval=)``): the vmapped refits against
the registry loop and against a plain NumPy EM, the per-line values against a loop over lines, the
percentile rule, properties of the output (lower <= estimate <= upper, in [0, 1], narrower with more
votes, deterministic given the seed), a small coverage check and bad input."""

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
    common, cfg = make_configs(method, {**extra, "interval": 0.9, "n_boot": max(n_boot, 20), "x64": True})
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
@given(
    st.lists(st.floats(0.55, 0.97), min_size=5, max_size=5), st.integers(0, 1000), st.sampled_from(["em1", "em2", "proximal", "sequential"])
)
def test_fit_intervals_contain_the_estimate(p, seed, method):
    res = _fit(_sim(seed, p=p), method, interval=0.8, n_boot=30, boot_seed=seed)
    _check_bounds(res, method)
    rec = res.diagnostics["intervals"]
    assert rec["level"] == 0.8 and rec["replicates"] == 30 and rec["seed"] == seed


def test_deterministic_given_the_seed_and_off_by_default():
    sim = _sim(5)
    a, b = (_fit(sim, "em2", interval=0.9, n_boot=40, boot_seed=7) for _ in range(2))
    c = _fit(sim, "em2", interval=0.9, n_boot=40, boot_seed=8)
    _check_bounds(a, "em2")
    cols = ["reliability_lower", "reliability_upper", "sensitivity_lower", "specificity_upper"]
    np.testing.assert_array_equal(a.annotators[cols], b.annotators[cols])
    np.testing.assert_array_equal(a.lines["posterior_upper"], b.lines["posterior_upper"])
    assert not np.array_equal(a.annotators[cols], c.annotators[cols])
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
        res = _fit(sim, "em1", interval=0.9, n_boot=100, boot_seed=seed)
        _check_bounds(res, "em1")
        r = res.annotators.merge(sim.reliability, on="annotator")
        hits += list((r["reliability_lower"] <= r["p"]) & (r["p"] <= r["reliability_upper"]))
        widths.append(float(np.mean(r["reliability_upper"] - r["reliability_lower"])))
    assert 0.75 <= np.mean(hits) <= 1.0, np.mean(hits)
    small = _fit(_sim(100, n_programs=12), "em1", interval=0.9, n_boot=100).annotators
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
    res = _fit(sim, "sequential", interval=0.9, n_boot=25, lam=0.1, w_max=2.0)
    _check_bounds(res, "sequential")
    res.save(tmp_path / "out")
    import pandas as pd

    lines = pd.read_csv(tmp_path / "out" / "lines.csv")
    ann = pd.read_csv(tmp_path / "out" / "annotators.csv")
    assert {"posterior_lower", "posterior_upper"} <= set(lines.columns)
    assert {"reliability_lower", "reliability_upper"} <= set(ann.columns)
    rec = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert rec["params"]["interval"] == 0.9 and rec["params"]["n_boot"] == 25
    assert rec["diagnostics"]["intervals"]["replicates"] == 25 and rec["diagnostics"]["intervals"]["level"] == 0.9


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"interval": 1.0}, "interval"),
        ({"interval": 0}, "interval"),
        ({"n_boot": 5}, "n_boot"),
        ({"boot_seed": -1}, "boot_seed"),
        ({"n_boot": 2.5}, "n_boot"),
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
