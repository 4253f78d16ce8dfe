"""Dawid-Skene EM (crowdstat.estimators.dawid_skene) against an independent dict-loop oracle.

The oracle below is written from the model statement in the module docstring / docs/baselines.md
(not from the JAX code): plain Python dicts keyed by (program, line) and annotator id, float64,
math.log, one loop per vote. Same initialisation (majority fractions, honeypots clamped), same
M-step, same E-step, same stopping rule (relative log-likelihood gain).
"""

import math
from collections import defaultdict
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

jax.config.update("jax_enable_x64", True)  # also done by tests/conftest.py

import crowdstat  # noqa: E402
from crowdstat.estimators import dawid_skene as ds  # noqa: E402
from crowdstat.estimators.registry import EMConfig  # noqa: E402

DELTA = 1e-6


# --------------------------------------------------------------------------- oracle


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def oracle_em(votes: pd.DataFrame, truth: pd.DataFrame | None, two_coin: bool, maxiter=100, tol=1e-6, delta=DELTA):
    lines = defaultdict(list)
    for r in votes.itertuples(index=False):
        lines[(r.program, int(r.line))].append((r.annotator, int(r.label)))
    known = {} if truth is None else {(r.program, int(r.line)): int(r.truth) for r in truth.itertuples(index=False)}
    anns = sorted({a for vs in lines.values() for a, _ in vs})
    clip = lambda x: min(max(x, delta), 1.0 - delta)  # noqa: E731

    q = {}
    for k, vs in lines.items():
        q[k] = (1.0 if known[k] > 0 else 0.0) if k in known else sum(1 for _, l in vs if l > 0) / len(vs)

    def mstep(q):
        pi = sum(q.values()) / len(q)
        nb, db, na, dna, agree, n = (defaultdict(float) for _ in range(6))
        for k, vs in lines.items():
            for a, l in vs:
                db[a] += q[k]
                dna[a] += 1.0 - q[k]
                n[a] += 1.0
                if l > 0:
                    nb[a] += q[k]
                    agree[a] += q[k]
                else:
                    na[a] += 1.0 - q[k]
                    agree[a] += 1.0 - q[k]
        if two_coin:
            beta = {a: nb[a] / db[a] if db[a] > 0 else 0.5 for a in anns}
            alpha = {a: na[a] / dna[a] if dna[a] > 0 else 0.5 for a in anns}
        else:
            beta = {a: agree[a] / n[a] for a in anns}
            alpha = dict(beta)
        return pi, alpha, beta

    def estep(pi, alpha, beta):
        qn, ll = {}, 0.0
        for k, vs in lines.items():
            lc, lw = math.log(clip(pi)), math.log(1.0 - clip(pi))
            for a, l in vs:
                b_, a_ = clip(beta[a]), clip(alpha[a])
                lc += math.log(b_) if l > 0 else math.log(1.0 - b_)
                lw += math.log(1.0 - a_) if l > 0 else math.log(a_)
            if k in known:
                qn[k] = 1.0 if known[k] > 0 else 0.0
                ll += lc if known[k] > 0 else lw
            else:
                qn[k] = _sig(lc - lw)
                mx = max(lc, lw)
                ll += mx + math.log(math.exp(lc - mx) + math.exp(lw - mx))
        return qn, ll

    pi, alpha, beta = mstep(q)
    q, ll = estep(pi, alpha, beta)
    it, gain = 1, math.inf
    while it < maxiter and not gain < tol * max(1.0, abs(ll)):
        pi, alpha, beta = mstep(q)
        q, ll_new = estep(pi, alpha, beta)
        gain, ll, it = ll_new - ll, ll_new, it + 1
    return dict(q=q, pi=pi, alpha=alpha, beta=beta, ll=ll, iterations=it)


# --------------------------------------------------------------------------- data


def simulate(seed, n_lines, n_ann, p_vote, alpha, beta, pi=0.5, n_per_program=4, honeypot=0.0):
    """Votes (+1/-1) of annotators with specificity alpha_i = P(-1 | wrong), sensitivity beta_i = P(+1 | correct)."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n_lines) < pi, 1, -1)
    vote = rng.random((n_lines, n_ann)) < p_vote
    vote[np.arange(n_lines), rng.integers(0, n_ann, n_lines)] = True  # every line has a vote
    u = rng.random((n_lines, n_ann))
    says_pos = np.where(y[:, None] > 0, u < beta[None, :], u >= alpha[None, :])
    lab = np.where(says_pos, 1, -1)
    jj, ii = np.nonzero(vote)
    perm = rng.permutation(len(jj))  # row order must not matter
    jj, ii = jj[perm], ii[perm]
    votes = pd.DataFrame(
        {
            "program": [f"p{j // n_per_program}" for j in jj],
            "line": jj % n_per_program + 1,
            "annotator": [f"a{i}" for i in ii],
            "label": lab[jj, ii],
        }
    )
    hp = np.flatnonzero(rng.random(n_lines) < honeypot)
    truth = pd.DataFrame({"program": [f"p{j // n_per_program}" for j in hp], "line": hp % n_per_program + 1, "truth": y[hp]})
    return votes, truth, y


def run_ds(votes, truth, two_coin, dtype=jnp.float64, **kw):
    table = crowdstat.read_votes(votes, truth=truth if truth is not None and len(truth) else None)
    fn = ds.em_two_coin if two_coin else ds.em_one_coin
    with jax.enable_x64(dtype == jnp.float64):
        bf = fn(table.arrays, EMConfig(**kw), dtype=dtype, prior=0.5, delta=DELTA)
    return table, bf


# --------------------------------------------------------------------------- oracle agreement


@pytest.mark.filterwarnings("ignore:em_.*maxiter:UserWarning")
@pytest.mark.parametrize("two_coin", [False, True])
@pytest.mark.parametrize("seed,honeypot,maxiter", [(0, 0.0, 100), (1, 0.3, 100), (2, 0.0, 3), (3, 0.2, 7)])
def test_matches_dict_loop_oracle(two_coin, seed, honeypot, maxiter):
    rng = np.random.default_rng(100 + seed)
    m = 7
    alpha, beta = rng.uniform(0.3, 0.95, m), rng.uniform(0.3, 0.95, m)
    votes, truth, _ = simulate(seed, 40, m, 0.5, alpha, beta, pi=0.4, honeypot=honeypot)
    table, bf = run_ds(votes, truth, two_coin, maxiter=maxiter, tol=1e-9)
    ref = oracle_em(votes, truth if honeypot else None, two_coin, maxiter=maxiter, tol=1e-9)
    keys = list(zip(table.lines_frame()["program"], table.lines_frame()["line"]))
    q_ref = np.array([ref["q"][k] for k in keys])
    assert bf.diagnostics["iterations"] == ref["iterations"]
    np.testing.assert_allclose(bf.posterior, q_ref, rtol=0, atol=1e-8)
    assert abs(bf.diagnostics["class_prior"] - ref["pi"]) < 1e-8
    assert abs(bf.diagnostics["log_likelihood"] - ref["ll"]) < 1e-8 * max(1.0, abs(ref["ll"]))
    anns = list(table.annotators)
    if two_coin:
        # sensitivity = P(+1 | correct) = beta, specificity = P(-1 | wrong) = alpha
        np.testing.assert_allclose(bf.annotator_columns["sensitivity"], [ref["beta"][a] for a in anns], rtol=0, atol=1e-8)
        np.testing.assert_allclose(bf.annotator_columns["specificity"], [ref["alpha"][a] for a in anns], rtol=0, atol=1e-8)
        bal = np.array([(ref["alpha"][a] + ref["beta"][a]) / 2 for a in anns])
        np.testing.assert_allclose(bf.reliability, bal, rtol=0, atol=1e-8)
    else:
        p = np.array([ref["beta"][a] for a in anns])
        np.testing.assert_allclose(bf.reliability, p, rtol=0, atol=1e-8)
        pc = np.clip(p, DELTA, 1 - DELTA)
        np.testing.assert_allclose(bf.weight, np.log(pc / (1 - pc)), rtol=0, atol=1e-7)
    if honeypot:  # clamped lines: exactly the truth
        t = table.arrays.truth
        np.testing.assert_array_equal(bf.posterior[t != 0], (1 + t[t != 0]) / 2)


def test_log_likelihood_monotone_and_converges():
    rng = np.random.default_rng(5)
    votes, _, _ = simulate(5, 300, 10, 0.4, rng.uniform(0.55, 0.9, 10), rng.uniform(0.55, 0.9, 10), pi=0.3)
    table = crowdstat.read_votes(votes)
    v = ds.VoteArrays(*(jnp.asarray(x) for x in table.arrays))
    lls = []
    for k in range(1, 30):
        s = ds.run(v, jnp.asarray(0.5), jnp.asarray(DELTA), jnp.asarray(k), jnp.asarray(0.0), m=10, two_coin=True)
        lls.append(float(s.log_likelihood))
    assert np.all(np.diff(lls) >= -1e-9), np.diff(lls)  # EM never decreases the likelihood
    _, bf = run_ds(votes, None, True)
    assert bf.diagnostics["converged"] and bf.diagnostics["iterations"] < 100


def _long_oracle(votes, truth, two_coin, table, cycles=3000):
    """The dict-loop EM run ``cycles`` cycles (no stopping rule): its fixed point, to float rounding, on these crowds."""
    ref = oracle_em(votes, truth if len(truth) else None, two_coin, maxiter=cycles, tol=-math.inf)
    keys = list(zip(table.lines_frame()["program"], table.lines_frame()["line"]))
    return ref, np.array([ref["q"][k] for k in keys])


@pytest.mark.parametrize("two_coin,seed,honeypot,perfect", [(True, 30, 0.0, False), (True, 31, 0.25, True), (False, 31, 0.25, False)])
def test_tol_zero_is_the_fixed_point_not_a_point_near_it(two_coin, seed, honeypot, perfect):
    """tol = 0: EM to float noise, then Newton on L: the fixed point of the oracle's EM run 3000 cycles, to 1e-10.

    EM's gain alone stops ~1e-7..1e-6 short of it (L is quadratic there; the run with tol = 1e-300 is
    that stop): that is what the Newton polish removes. A perfect annotator (alpha = beta = 1, at the
    clip bound: not a free parameter) stays where EM puts it."""
    rng = np.random.default_rng(100 + seed)
    m = 7
    alpha, beta = rng.uniform(0.55, 0.85, m), rng.uniform(0.55, 0.85, m)
    votes, truth, y = simulate(seed, 60, m, 0.5, alpha, beta, pi=0.4, honeypot=honeypot)
    if perfect:
        lines = votes[["program", "line"]].drop_duplicates().iloc[::3]
        yl = y[(lines["program"].str[1:].astype(int) * 4 + lines["line"] - 1).to_numpy()]
        votes = pd.concat([votes, lines.assign(annotator="ap", label=yl)], ignore_index=True)
    table, bf = run_ds(votes, truth, two_coin, tol=0.0, maxiter=20_000)
    _, short = run_ds(votes, truth, two_coin, tol=1e-300, maxiter=20_000)
    ref, q_ref = _long_oracle(votes, truth, two_coin, table)
    np.testing.assert_allclose(bf.posterior, q_ref, rtol=0, atol=1e-10)
    assert abs(bf.diagnostics["class_prior"] - ref["pi"]) < 1e-10
    anns = list(table.annotators)
    cols = {"sensitivity": "beta", "specificity": "alpha"} if two_coin else {}
    for col, key in cols.items():
        np.testing.assert_allclose(bf.annotator_columns[col], [ref[key][a] for a in anns], rtol=0, atol=1e-10, err_msg=col)
    if not two_coin:
        np.testing.assert_allclose(bf.reliability, [ref["beta"][a] for a in anns], rtol=0, atol=1e-10)
    if perfect:
        k = anns.index("ap")
        assert bf.annotator_columns["sensitivity"][k] > 1 - DELTA and bf.annotator_columns["specificity"][k] > 1 - DELTA
    assert bf.diagnostics["converged"] and bf.diagnostics["newton_steps"] >= 1 and bf.diagnostics["gradient_norm"] < 1e-12
    # the gain-only stop: the same log-likelihood to 1e-12, posteriors further than 1e-8 from the fixed point
    assert short.diagnostics["newton_steps"] == 0 and short.diagnostics["gradient_norm"] is None  # no polish with tol > 0
    assert abs(short.diagnostics["log_likelihood"] - ref["ll"]) < 1e-12 * abs(ref["ll"])
    assert np.abs(short.posterior - q_ref).max() > 1e-8


@pytest.mark.parametrize("two_coin", [False, True])
def test_newton_derivatives_are_those_of_the_log_likelihood(two_coin):
    """The closed-form gradient and information-vector products of the polish (Louis' identity) against
    autodiff of the E-step's log-likelihood, with honeypot lines, empty slots and padding lines (n_real)."""
    rng = np.random.default_rng(40)
    m = 6
    votes, truth, _ = simulate(40, 50, m, 0.5, rng.uniform(0.6, 0.9, m), rng.uniform(0.6, 0.9, m), honeypot=0.2)
    a = crowdstat.read_votes(votes, truth=truth).arrays
    n = a.n_lines
    pad = 7  # padding lines after the real ones, and empty slots (label 0) on them
    arrays = a._replace(
        line=np.concatenate([a.line, np.full(5, n + pad - 1, np.int32)]),
        annotator=np.concatenate([a.annotator, np.arange(5, dtype=np.int32)]),
        label=np.concatenate([a.label, np.zeros(5, np.int8)]),
        line_program=np.concatenate([a.line_program, np.full(pad, a.line_program[-1], np.int32)]),
        truth=np.concatenate([a.truth, np.zeros(pad, np.int8)]),
    )
    with jax.enable_x64(True):
        v = ds.VoteArrays(*map(jnp.asarray, arrays))
        k = 1 + (2 * m if two_coin else m)
        theta = jnp.asarray(rng.uniform(0.2, 0.9, k))
        n_real = jnp.asarray(n, jnp.int32)
        d = ds._derivatives(theta, v, m, DELTA, two_coin, n_real)
        f = partial(ds.log_likelihood, votes=v, m=m, delta=DELTA, two_coin=two_coin, n_real=n_real)
        assert float(d.log_likelihood) == pytest.approx(float(f(theta)), rel=1e-14)
        np.testing.assert_allclose(np.asarray(d.grad), np.asarray(jax.grad(f)(theta)), rtol=1e-11, atol=1e-11)
        hess = np.asarray(jax.hessian(f)(theta))
        for u in (np.eye(k)[0], np.eye(k)[k - 1], rng.standard_normal(k)):
            got = np.asarray(ds._information_times(d, jnp.asarray(u), v, m, two_coin))
            np.testing.assert_allclose(got, -hess @ u, rtol=1e-10, atol=1e-9)


def test_tol_zero_float32_keeps_dtype_and_agrees():
    rng = np.random.default_rng(9)
    votes, _, _ = simulate(9, 200, 8, 0.5, rng.uniform(0.6, 0.9, 8), rng.uniform(0.6, 0.9, 8))
    _, b64 = run_ds(votes, None, True, tol=0.0, maxiter=5000)
    _, b32 = run_ds(votes, None, True, dtype=jnp.float32, tol=0.0, maxiter=5000)
    assert b32.posterior.dtype == np.float32 and b32.reliability.dtype == np.float32
    assert np.all(np.isfinite(b32.posterior)) and math.isfinite(b32.diagnostics["gradient_norm"])
    np.testing.assert_allclose(b32.posterior, b64.posterior, atol=2e-3)
    assert b64.diagnostics["gradient_norm"] < 1e-12


def test_one_compile_for_new_tol_and_maxiter():
    votes, _, _ = simulate(6, 50, 5, 0.6, np.full(5, 0.8), np.full(5, 0.8))
    table = crowdstat.read_votes(votes)
    v = ds.VoteArrays(*(jnp.asarray(x) for x in table.arrays))
    before = ds.run._cache_size()
    for tol, mi in [(1e-6, 10), (1e-3, 50), (0.0, 3)]:
        ds.run(v, jnp.asarray(0.5), jnp.asarray(DELTA), jnp.asarray(mi), jnp.asarray(tol), m=5, two_coin=False)
    assert ds.run._cache_size() - before <= 1


# --------------------------------------------------------------------------- recovery on large data


def test_one_coin_recovers_reliabilities():
    rng = np.random.default_rng(7)
    m = 30
    p = rng.uniform(0.55, 0.95, m)
    votes, _, y = simulate(7, 2000, m, 1.0, p, p, pi=0.5)
    table, bf = run_ds(votes, None, False)
    order = [int(a[1:]) for a in table.annotators]
    err = np.abs(bf.reliability - p[order])
    assert err.max() < 0.03, err.max()
    # accuracy of the line decisions against the simulated truth (30 votes per line: near perfect)
    keys = table.lines_frame()
    y_line = y[(keys["program"].str[1:].astype(int) * 4 + keys["line"] - 1).to_numpy()]
    assert np.mean((bf.posterior > 0.5) == (y_line > 0)) > 0.995
    assert abs(bf.diagnostics["class_prior"] - np.mean(y > 0)) < 0.01


def test_two_coin_recovers_sensitivity_and_specificity():
    rng = np.random.default_rng(8)
    m = 30
    alpha = rng.uniform(0.55, 0.95, m)
    beta = np.clip(alpha + rng.choice([-0.25, 0.25], m), 0.5, 0.97)  # distinct alpha and beta
    votes, _, y = simulate(8, 2000, m, 0.5, alpha, beta, pi=0.35)  # ~15 votes per line
    table, bf = run_ds(votes, None, True)
    order = [int(a[1:]) for a in table.annotators]
    # the complete-data MLE (truth known): what EM should reach up to the posterior's uncertainty
    jj = (votes["program"].str[1:].astype(int) * 4 + votes["line"] - 1).to_numpy()
    ai, lab, yv = votes["annotator"].str[1:].astype(int).to_numpy(), votes["label"].to_numpy(), y[jj]
    a_mle = np.array([np.mean(lab[(ai == i) & (yv < 0)] < 0) for i in order])
    b_mle = np.array([np.mean(lab[(ai == i) & (yv > 0)] > 0) for i in order])
    # sensitivity = P(+1 | correct) (beta), specificity = P(-1 | wrong) (alpha)
    spec, sens = bf.annotator_columns["specificity"], bf.annotator_columns["sensitivity"]
    assert np.abs(spec - a_mle).max() < 0.02 and np.abs(sens - b_mle).max() < 0.02
    # against the simulation's parameters: ~650 wrong-line and ~350 correct-line votes per annotator,
    # sd up to ~0.02 and ~0.027 for the MLE itself (this seed: 2.8 sd = 0.076 for one annotator) plus
    # the latent-truth uncertainty; the max over 30 annotators is allowed 0.12, the mean 0.03
    ea, eb = np.abs(spec - alpha[order]), np.abs(sens - beta[order])
    assert ea.max() < 0.12 and ea.mean() < 0.03, (ea.max(), ea.mean())
    assert eb.max() < 0.12 and eb.mean() < 0.03, (eb.max(), eb.mean())
    assert abs(bf.diagnostics["class_prior"] - np.mean(y > 0)) < 0.02
    # one-coin on the same data cannot represent alpha != beta: two-coin's likelihood is higher
    _, bf1 = run_ds(votes, None, False)
    assert bf.diagnostics["log_likelihood"] > bf1.diagnostics["log_likelihood"] + 10


def test_float32_keeps_dtype_and_agrees():
    rng = np.random.default_rng(9)
    votes, _, _ = simulate(9, 200, 8, 0.5, rng.uniform(0.6, 0.9, 8), rng.uniform(0.6, 0.9, 8))
    _, b64 = run_ds(votes, None, True)
    _, b32 = run_ds(votes, None, True, dtype=jnp.float32)
    assert b32.posterior.dtype == np.float32 and b32.reliability.dtype == np.float32 and b32.weight.dtype == np.float32
    assert np.all(np.isfinite(b32.posterior))
    np.testing.assert_allclose(b32.posterior, b64.posterior, atol=2e-3)
    np.testing.assert_allclose(b32.reliability, b64.reliability, atol=2e-3)


# --------------------------------------------------------------------------- errors and the facade


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"maxiter": 0}, "maxiter"),
        ({"maxiter": 2.5}, "maxiter"),
        ({"maxiter": True}, "maxiter"),
        ({"tol": -1.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        EMConfig(**kw)
    assert EMConfig(maxiter=np.int64(5)).maxiter == 5  # a NumPy integer is an integer


@pytest.mark.parametrize("kw,match", [({"delta": 0.7}, "delta"), ({"delta": 1e-20}, "delta"), ({"prior": 1.0}, "prior")])
def test_bad_parameters(kw, match):
    votes, _, _ = simulate(10, 10, 3, 0.6, np.full(3, 0.8), np.full(3, 0.8))
    table = crowdstat.read_votes(votes)
    args = {"dtype": jnp.float64, "prior": 0.5, "delta": DELTA, **kw}
    with pytest.raises(ValueError, match=match):
        ds.em_one_coin(table.arrays, **args)
    with pytest.raises(ValueError, match=match):
        ds.em_two_coin(table.arrays, **args)


def test_maxiter_reached_warns():
    rng = np.random.default_rng(11)
    votes, _, _ = simulate(11, 100, 6, 0.5, rng.uniform(0.6, 0.9, 6), rng.uniform(0.6, 0.9, 6))
    with pytest.warns(UserWarning, match="maxiter"):
        _, bf = run_ds(votes, None, True, maxiter=2, tol=1e-12)
    assert bf.diagnostics["converged"] is False and bf.diagnostics["iterations"] == 2


@pytest.mark.parametrize("method", ["em1", "em2"])
def test_fit_facade_columns(method):
    rng = np.random.default_rng(12)
    votes, truth, _ = simulate(12, 60, 5, 0.7, rng.uniform(0.6, 0.9, 5), rng.uniform(0.6, 0.9, 5), honeypot=0.2)
    res = crowdstat.fit(votes, truth, method=method, x64=True)
    extra = ["sensitivity", "specificity"] if method == "em2" else []
    assert list(res.annotators.columns) == ["annotator", "weight", "reliability", *extra]
    assert list(res.lines.columns) == ["program", "line", "posterior", "n_votes"]
    for k in ("iterations", "log_likelihood", "converged", "class_prior"):
        assert k in res.diagnostics
    # the facade maps back to ids: same numbers as the direct call
    table, bf = run_ds(votes, truth, method == "em2")
    np.testing.assert_allclose(res.lines["posterior"], bf.posterior, atol=1e-12)
    np.testing.assert_allclose(res.annotators["reliability"], bf.reliability, atol=1e-12)
    with pytest.raises(ValueError, match="maxiter"):
        crowdstat.fit(votes, method=method, maxiter=0)


@pytest.mark.parametrize("tol", [1e-10, 0.0])
@pytest.mark.parametrize("two_coin", [False, True])
def test_empty_slots_change_nothing(two_coin, tol):
    """Label-0 slots (padding to a fixed shape) add nothing: the same state as without them, and the
    padded run is one compilation for any number of real votes in the grid."""
    rng = np.random.default_rng(21)
    votes, truth, _ = simulate(21, 80, 5, 0.6, rng.uniform(0.6, 0.9, 5), rng.uniform(0.6, 0.9, 5), honeypot=0.2)
    table = crowdstat.read_votes(votes, truth=truth)
    a = table.arrays
    n_lines, m = a.n_lines, table.n_annotators
    # every (line, annotator) slot, the real votes filled in, the rest label 0
    grid = np.zeros((n_lines, m), np.int8)
    grid[np.asarray(a.line), np.asarray(a.annotator)] = np.asarray(a.label)
    jj, ii = np.divmod(np.arange(n_lines * m), m)
    padded = a._replace(line=jj.astype(np.int32), annotator=ii.astype(np.int32), label=grid.ravel())
    with jax.enable_x64(True):
        args = (jnp.asarray(0.5), jnp.asarray(DELTA), jnp.asarray(200, jnp.int32), jnp.asarray(tol))
        s_real = ds.run(ds.VoteArrays(*map(jnp.asarray, a)), *args, m=m, two_coin=two_coin, polish=tol == 0)
        s_pad = ds.run(ds.VoteArrays(*map(jnp.asarray, padded)), *args, m=m, two_coin=two_coin, polish=tol == 0)
    for name in ("q", "pi", "alpha", "beta", "log_likelihood"):
        np.testing.assert_allclose(np.asarray(getattr(s_pad, name)), np.asarray(getattr(s_real, name)), atol=1e-12, err_msg=name)
    if tol > 0:  # with tol = 0 EM stops on the sign of a gain at float noise: the cycle can differ by one, not the point
        assert int(s_pad.iter_num) == int(s_real.iter_num)
    # the polish ran on both (how many steps it keeps once at float noise can differ by one)
    assert (int(s_pad.newton_steps) > 0) == (int(s_real.newton_steps) > 0) == (tol == 0)
