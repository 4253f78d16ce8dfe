"""Full-Bayes one-coin model (crowdstat.estimators.bayes).

Fast tests check the numpyro model's log joint against an independent scipy/dict-loop computation
(exact, no sampling) and the parameter validation (BayesConfig, nuts, crowdstat.fit). Tests that
run NUTS compile a sampler, which dominates their run time, and are marked slow.
"""

import math
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

jax.config.update("jax_enable_x64", True)  # also done by tests/conftest.py

import crowdstat  # noqa: E402
from crowdstat._typing import VoteArrays  # noqa: E402
from crowdstat.estimators import bayes  # noqa: E402
from crowdstat.estimators.registry import BayesConfig  # noqa: E402

DELTA = 1e-6


def simulate(seed, n_lines, p, p_vote=0.6, pi=0.5, honeypot=0.0):
    rng = np.random.default_rng(seed)
    m = len(p)
    y = np.where(rng.random(n_lines) < pi, 1, -1)
    rows, truth = [], []
    for j in range(n_lines):
        voters = [i for i in range(m) if rng.random() < p_vote] or [int(rng.integers(m))]
        for i in voters:
            rows.append((f"t{j // 3}", j % 3 + 1, f"a{i}", int(y[j] if rng.random() < p[i] else -y[j])))
        if rng.random() < honeypot:
            truth.append((f"t{j // 3}", j % 3 + 1, int(y[j])))
    return (
        pd.DataFrame(rows, columns=["program", "line", "annotator", "label"]),
        pd.DataFrame(truth, columns=["program", "line", "truth"]),
        y,
    )


def oracle_log_joint(votes, truth, p: dict, pi: float, a: float, b: float) -> float:
    """log Beta(p | a, b) + log Beta(pi | 1, 1) + sum_j log sum_y pi_y prod_i P(label_ij | y)  (honeypots: y fixed)."""
    lines = defaultdict(list)
    for r in votes.itertuples(index=False):
        lines[(r.program, r.line)].append((r.annotator, r.label))
    known = {(r.program, r.line): r.truth for r in truth.itertuples(index=False)}
    lp = sum(stats.beta.logpdf(v, a, b) for v in p.values()) + stats.beta.logpdf(pi, 1, 1)
    for k, vs in lines.items():
        lc, lw = math.log(pi), math.log(1 - pi)
        for ann, lab in vs:
            lc += math.log(p[ann] if lab > 0 else 1 - p[ann])
            lw += math.log(p[ann] if lab < 0 else 1 - p[ann])
        if k in known:
            lp += lc if known[k] > 0 else lw
        else:
            lp += max(lc, lw) + math.log1p(math.exp(-abs(lc - lw)))
    return lp


@pytest.mark.parametrize("honeypot,a,b", [(0.0, 2.0, 1.0), (0.3, 2.0, 1.0), (0.0, 3.0, 1.5)])
def test_model_log_joint_matches_oracle(honeypot, a, b):
    from numpyro.infer.util import log_density

    rng = np.random.default_rng(1)
    votes, truth, _ = simulate(2, 30, rng.uniform(0.5, 0.9, 6), honeypot=honeypot)
    table = crowdstat.read_votes(votes, truth=truth if len(truth) else None)
    arr = VoteArrays(*(jnp.asarray(x) for x in table.arrays))
    m = table.n_annotators
    for _ in range(3):
        p = rng.uniform(0.1, 0.95, m)
        pi = float(rng.uniform(0.2, 0.8))
        ld, _ = log_density(
            bayes.model, (arr, m, jnp.asarray(a), jnp.asarray(b), jnp.asarray(DELTA)), {}, {"p": jnp.asarray(p), "pi": jnp.asarray(pi)}
        )
        ref = oracle_log_joint(votes, truth, dict(zip(table.annotators, p)), pi, a, b)
        assert abs(float(ld) - ref) < 1e-9 * max(1.0, abs(ref))


def test_label_switching_symmetry_is_broken_only_by_the_prior():
    """The likelihood is invariant under (p, pi) -> (1 - p, 1 - pi); Beta(2, 1) prefers p > 1/2 by prod p/(1-p)."""
    from numpyro.infer.util import log_density

    votes, _, _ = simulate(3, 30, np.array([0.8, 0.7, 0.9, 0.6]))
    table = crowdstat.read_votes(votes)
    arr = VoteArrays(*(jnp.asarray(x) for x in table.arrays))
    m = table.n_annotators
    p = np.array([0.8, 0.7, 0.9, 0.6])[:m]
    args = (arr, m, jnp.asarray(2.0), jnp.asarray(1.0), jnp.asarray(DELTA))
    ld, _ = log_density(bayes.model, args, {}, {"p": jnp.asarray(p), "pi": jnp.asarray(0.3)})
    ld_m, _ = log_density(bayes.model, args, {}, {"p": jnp.asarray(1 - p), "pi": jnp.asarray(0.7)})
    assert abs(float(ld - ld_m) - float(np.sum(np.log(p / (1 - p))))) < 1e-9
    args_sym = (arr, m, jnp.asarray(2.0), jnp.asarray(2.0), jnp.asarray(DELTA))
    ld_s, _ = log_density(bayes.model, args_sym, {}, {"p": jnp.asarray(p), "pi": jnp.asarray(0.3)})
    ld_sm, _ = log_density(bayes.model, args_sym, {}, {"p": jnp.asarray(1 - p), "pi": jnp.asarray(0.7)})
    assert abs(float(ld_s - ld_sm)) < 1e-9  # symmetric prior: the mirror mode is exactly as probable


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"num_warmup": 0}, "num_warmup"),
        ({"num_samples": 1.5}, "num_samples"),
        ({"num_chains": 0}, "num_chains"),
        ({"a": -1.0}, "a:"),
        ({"b": 0.0}, "b:"),
        ({"a": float("inf")}, "a:"),
        ({"credible": 1.0}, "credible"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        BayesConfig(**kw)


@pytest.mark.parametrize("kw,match", [({"delta": 0.6}, "delta"), ({"delta": 1e-30}, "delta"), ({"prior": 0.0}, "prior")])
def test_bad_parameters(kw, match):
    votes, _, _ = simulate(4, 6, np.full(3, 0.8))
    table = crowdstat.read_votes(votes)
    args = {"dtype": jnp.float64, "prior": 0.5, "delta": DELTA, **kw}
    with pytest.raises(ValueError, match=match):
        bayes.nuts(table.arrays, **args)
    with pytest.raises(ValueError, match="num_chains"):  # through crowdstat.fit: the config validates first
        crowdstat.fit(votes, method="bayes", num_chains=0)


@pytest.mark.slow  # NUTS compilation; the log joint and label-switching tests cover the model by default
def test_fit_facade_columns_tiny_run():
    """One tiny NUTS run through crowdstat.fit: documented columns, diagnostics, honeypots exact."""
    votes, truth, _ = simulate(5, 24, np.array([0.9, 0.8, 0.75, 0.85, 0.7]), p_vote=0.8, honeypot=0.25)
    res = crowdstat.fit(votes, truth, method="bayes", x64=True, num_warmup=60, num_samples=60, num_chains=2, seed=1)
    assert list(res.annotators.columns) == ["annotator", "weight", "reliability", "ci_low", "ci_high"]
    assert list(res.lines.columns) == ["program", "line", "posterior", "n_votes", "ci_low", "ci_high"]
    d = res.diagnostics
    for k in ("r_hat_max", "n_eff_min", "divergences", "num_chains", "num_samples", "seconds"):
        assert k in d
    assert d["num_chains"] == 2 and d["num_samples"] == 60 and isinstance(d["divergences"], int)
    an = res.annotators
    assert (an["ci_low"] <= an["reliability"]).all() and (an["reliability"] <= an["ci_high"]).all()
    assert np.allclose(an["weight"], np.log(an["reliability"] / (1 - an["reliability"])))
    ln = res.lines
    assert (ln["ci_low"] <= ln["posterior"] + 1e-12).all() and (ln["posterior"] <= ln["ci_high"] + 1e-12).all()
    hp = ln.merge(truth, on=["program", "line"])
    np.testing.assert_array_equal(hp["posterior"], (1 + hp["truth"]) / 2)  # honeypot lines: the truth, every draw


@pytest.mark.slow
def test_nuts_recovers_reliabilities_within_credible_intervals():
    p_true = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.9, 0.6, 0.8])
    votes, _, y = simulate(6, 150, p_true, p_vote=0.6, pi=0.4)
    table = crowdstat.read_votes(votes)
    with jax.enable_x64(True):
        bf = bayes.nuts(
            table.arrays,
            BayesConfig(num_warmup=400, num_samples=400, num_chains=2, seed=0, credible=0.9),
            dtype=jnp.float64,
            prior=0.5,
            delta=DELTA,
        )
    d = bf.diagnostics
    assert d["r_hat_max"] < 1.05, d
    assert d["divergences"] <= 5, d
    assert d["n_eff_min"] > 100, d
    order = [int(a[1:]) for a in table.annotators]
    inside = (bf.annotator_columns["ci_low"] <= p_true[order]) & (p_true[order] <= bf.annotator_columns["ci_high"])
    assert inside.sum() >= 8, (inside, bf.reliability, p_true[order])  # 90% intervals: 9 of 10 expected
    assert np.abs(bf.reliability - p_true[order]).max() < 0.12
    assert abs(d["class_prior"] - np.mean(y > 0)) < 0.08
    # Bayes and EM agree on the line decisions for this well-identified crowd
    from crowdstat.estimators.dawid_skene import em_one_coin

    with jax.enable_x64(True):
        em = em_one_coin(table.arrays, dtype=jnp.float64, prior=0.5, delta=DELTA)
    assert np.mean((bf.posterior > 0.5) == (em.posterior > 0.5)) > 0.97


# ---------------------------------------------------------------------------------------------
# bayes2: the two-coin model (sensitivity / specificity per annotator)


def oracle_log_joint_two_coin(votes, truth, sens: dict, spec: dict, pi: float, a: float, b: float) -> float:
    """log Beta(sens) + log Beta(spec) + log Beta(pi | 1, 1) + sum_j log sum_y pi_y prod_i P(label_ij | y) (honeypots: y fixed)."""
    lines = defaultdict(list)
    for r in votes.itertuples(index=False):
        lines[(r.program, r.line)].append((r.annotator, r.label))
    known = {(r.program, r.line): r.truth for r in truth.itertuples(index=False)}
    lp = sum(stats.beta.logpdf(v, a, b) for v in [*sens.values(), *spec.values()]) + stats.beta.logpdf(pi, 1, 1)
    for k, vs in lines.items():
        lc = math.log(pi) + sum(math.log(sens[i] if lab > 0 else 1 - sens[i]) for i, lab in vs)
        lw = math.log(1 - pi) + sum(math.log(spec[i] if lab < 0 else 1 - spec[i]) for i, lab in vs)
        lp += (lc if known[k] > 0 else lw) if k in known else float(np.logaddexp(lc, lw))
    return lp


@pytest.mark.parametrize("honeypot", [0.0, 0.3])
def test_two_coin_model_log_joint_matches_oracle(honeypot):
    from numpyro.infer.util import log_density

    rng = np.random.default_rng(7)
    votes, truth, _ = simulate(8, 30, rng.uniform(0.5, 0.9, 5), honeypot=honeypot)
    table = crowdstat.read_votes(votes, truth=truth if len(truth) else None)
    arr = VoteArrays(*(jnp.asarray(x) for x in table.arrays))
    m = table.n_annotators
    args = (arr, m, jnp.asarray(2.0), jnp.asarray(1.0), jnp.asarray(DELTA), True)
    for _ in range(3):
        sens, spec = rng.uniform(0.1, 0.95, m), rng.uniform(0.1, 0.95, m)
        pi = float(rng.uniform(0.2, 0.8))
        ld, _ = log_density(bayes.model, args, {}, {"sens": jnp.asarray(sens), "spec": jnp.asarray(spec), "pi": jnp.asarray(pi)})
        ref = oracle_log_joint_two_coin(votes, truth, dict(zip(table.annotators, sens)), dict(zip(table.annotators, spec)), pi, 2.0, 1.0)
        assert abs(float(ld) - ref) < 1e-9 * max(1.0, abs(ref))
    if honeypot:
        return  # known truths break the mirror symmetry below
    # the mirror (sens, spec, pi) -> (1 - spec, 1 - sens, 1 - pi) has the same likelihood; Beta(2, 1) tells them apart
    sens, spec = rng.uniform(0.6, 0.9, m), rng.uniform(0.6, 0.9, m)
    ld, _ = log_density(bayes.model, args, {}, {"sens": jnp.asarray(sens), "spec": jnp.asarray(spec), "pi": jnp.asarray(0.3)})
    ld_m, _ = log_density(bayes.model, args, {}, {"sens": jnp.asarray(1 - spec), "spec": jnp.asarray(1 - sens), "pi": jnp.asarray(0.7)})
    prior_gap = float(np.sum(np.log(sens / (1 - sens))) + np.sum(np.log(spec / (1 - spec))))
    assert abs(float(ld - ld_m) - prior_gap) < 1e-9


def test_bayes2_is_registered_with_the_bayes_parameters():
    from crowdstat.estimators.registry import REGISTRY, make_configs

    assert REGISTRY["bayes2"].config is BayesConfig and REGISTRY["bayes2"].available()[0]
    _, cfg = make_configs("bayes2", {"num_samples": 10})
    assert cfg.num_samples == 10
    with pytest.raises(ValueError, match="num_chains"):
        crowdstat.fit(simulate(4, 6, np.full(3, 0.8))[0], method="bayes2", num_chains=0)


@pytest.mark.slow  # two NUTS compilations: about a minute on a loaded 2-core machine
def test_bayes2_seeded_small_run():
    """A short seeded NUTS run: columns, intervals around the means, honeypots exact, the same draws twice."""
    votes, truth, _ = simulate(9, 24, np.array([0.9, 0.8, 0.75, 0.85]), p_vote=0.9, honeypot=0.25)
    kw = dict(method="bayes2", x64=True, num_warmup=40, num_samples=40, num_chains=1, seed=3)
    res = crowdstat.fit(votes, truth, **kw)
    an = res.annotators
    cols = ["sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity", "specificity_ci_low", "specificity_ci_high"]
    assert list(an.columns) == ["annotator", "weight", "reliability", "ci_low", "ci_high", *cols]
    for name in ("sensitivity", "specificity"):
        assert (an[f"{name}_ci_low"] <= an[name]).all() and (an[name] <= an[f"{name}_ci_high"]).all()
    assert np.allclose(an["reliability"], 0.5 * (an["sensitivity"] + an["specificity"]))
    assert (an["ci_low"] <= an["reliability"]).all() and (an["reliability"] <= an["ci_high"]).all()
    ln = res.lines.merge(truth, on=["program", "line"])
    np.testing.assert_array_equal(ln["posterior"], (1 + ln["truth"]) / 2)
    assert res.diagnostics["model"].startswith("two-coin Bayes")
    again = crowdstat.fit(votes, truth, **kw)
    np.testing.assert_array_equal(again.lines["posterior"], res.lines["posterior"])


def simulate_two_coin(seed, n_lines, sens, spec, p_vote=0.5, pi=0.4):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n_lines) < pi, 1, -1)
    rows = []
    for j in range(n_lines):
        for i in range(len(sens)):
            if rng.random() < p_vote:
                right = rng.random() < (sens[i] if y[j] > 0 else spec[i])
                rows.append((f"t{j}", 1, f"a{i}", int(y[j] if right else -y[j])))
    return pd.DataFrame(rows, columns=["program", "line", "annotator", "label"]), y


@pytest.mark.slow  # about a minute: NUTS on 800 lines x 8 annotators
def test_bayes2_posterior_means_near_the_em2_mle_on_a_big_crowd():
    sens = np.array([0.9, 0.8, 0.85, 0.7, 0.95, 0.75, 0.8, 0.9])
    spec = np.array([0.7, 0.9, 0.8, 0.85, 0.75, 0.95, 0.65, 0.8])
    votes, _ = simulate_two_coin(11, 800, sens, spec)
    bf = crowdstat.fit(votes, method="bayes2", x64=True, num_warmup=300, num_samples=300, num_chains=2, seed=0)
    em = crowdstat.fit(votes, method="em2", x64=True, tol=1e-12, maxiter=2000)
    assert bf.diagnostics["r_hat_max"] < 1.05 and bf.diagnostics["divergences"] <= 5
    for name in ("sensitivity", "specificity"):
        diff = np.abs(bf.annotators[name].to_numpy() - em.annotators[name].to_numpy())
        assert diff.max() < 0.03, (name, diff)  # posterior mean vs MLE: O(1/n) apart; sd about 0.02 here
    assert np.mean((bf.lines["posterior"] > 0.5) == (em.lines["posterior"] > 0.5)) > 0.99
