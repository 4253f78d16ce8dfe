"""crowdstat.fit against the independent oracles of tests/reference/oracles.py (float64).

Tolerances: 1e-9 for loop / closed-form quantities (posteriors, eq. 8, majority); 1e-6 on
weights of the iterative proximal solve (both sides converged to a relative gap <= 1e-10).
"""

import math

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from tests.reference import oracles as O
from tests.strategies import random_tables

RTOL = 1e-9
ATOL = 1e-9
W_ATOL = 1e-6


def _fit(votes, truth, method, **kw):
    truth = truth if truth is not None and len(truth) else None
    if method == "proximal" and truth is not None and not kw.get("latent"):
        # This file checks the paper's L1-logistic (shrinkage towards 0); the default centred fit has
        # its own oracles in test_centred_fit.py.
        kw.setdefault("center", "zero")
    return cs.fit(votes, truth=truth, method=method, x64=True, **kw)


def _weights(res) -> dict:
    return dict(zip(res.annotators["annotator"], res.annotators["weight"].astype(float)))


def _check_lines(res, votes, post: dict):
    keys = O.lines_in_order(votes)
    got = res.lines
    assert list(got.columns[:4]) == ["program", "line", "posterior", "n_votes"]
    assert list(zip(got["program"], got["line"].astype(int))) == keys
    nv = O.n_votes(votes)
    assert got["n_votes"].astype(int).tolist() == [nv[k] for k in keys]
    np.testing.assert_allclose(got["posterior"].astype(float), [post[k] for k in keys], rtol=RTOL, atol=ATOL)


def _check_rewards(res, post: dict, tau=0.5, n_lines=None):
    want = O.rewards(post, tau=tau, n_lines=n_lines)
    got = res.rewards.to_dict("records")
    assert [g["program"] for g in got] == [w["program"] for w in want]
    for g, w in zip(got, want):
        assert int(g["n_annotated"]) == w["n_annotated"] and int(g["n_lines"]) == w["n_lines"]
        assert list(map(int, g["lines"])) == w["lines"]
        np.testing.assert_allclose(g["posteriors"], w["posteriors"], rtol=RTOL, atol=ATOL)
        # c is a count: exact unless a posterior sits within float noise of tau
        near = any(abs(p - tau) < 1e-9 for p in w["posteriors"])
        if not near:
            assert g["reward"] == pytest.approx(w["reward"], abs=1e-12)
        assert g["reward_soft"] == pytest.approx(w["reward_soft"], rel=RTOL, abs=ATOL)
        assert g["coverage"] == pytest.approx(w["coverage"], rel=1e-12)


# ================================================================ eq. (8) sequential

SEQ_PARAMS = [
    dict(),
    dict(lam=0.3, w_max=3.0),
    dict(lam=0.5, nu=0.6, pbar_honeypot=0.9, prior=0.4),
    dict(lam=1.0, w_max=5.0, tau=0.7),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("params", SEQ_PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_sequential_matches_eq8_oracle(seed, params):
    votes_df, truth_df = random_tables(seed, n_programs=6, max_lines=6, n_annotators=7)
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    res = _fit(votes_df, truth_df, "sequential", **params)
    okw = {k: v for k, v in params.items() if k != "tau"}
    w, traj = O.sequential(votes, truth, **okw)
    ann = O.annotators_in_order(votes)
    assert res.annotators["annotator"].tolist() == ann
    np.testing.assert_allclose(res.annotators["weight"].astype(float), [w[a] for a in ann], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.annotators["reliability"].astype(float), [O.sigmoid(w[a]) for a in ann], rtol=RTOL, atol=ATOL)
    # trajectory: one row per task in processing (= first appearance) order, w after that task
    T = res.trajectory
    assert [str(i) for i in T.index] == [p for p, _ in traj]
    assert [str(c) for c in T.columns] == ann
    want = np.array([[row[a] for a in ann] for _, row in traj])
    np.testing.assert_allclose(T.to_numpy(dtype=float), want, rtol=RTOL, atol=ATOL)
    post = O.posteriors(votes, w, prior=params.get("prior", 0.5))
    _check_lines(res, votes, post)
    _check_rewards(res, post, tau=params.get("tau", 0.5))


def test_sequential_without_truth_and_geometric_growth():
    """No honeypots: every step is lam*|l_j|, the weights feed on themselves (docs/math.md note)."""
    votes_df, _ = random_tables(7, n_programs=5, max_lines=4, n_annotators=5, p_vote=0.8)
    votes = O.frame_to_votes(votes_df)
    res = _fit(votes_df, None, "sequential")
    w, traj = O.sequential(votes, {})
    ann = O.annotators_in_order(votes)
    np.testing.assert_allclose(res.annotators["weight"].astype(float), [w[a] for a in ann], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.trajectory.to_numpy(dtype=float), [[r[a] for a in ann] for _, r in traj], rtol=RTOL)


def test_sequential_zero_logit_line_does_not_update():
    # one task, one line, a +1 b -1, equal initial weights: l = 0 -> nothing moves
    votes = pd.DataFrame({"program": ["p", "p"], "line": [1, 1], "annotator": ["a", "b"], "label": [1, -1]})
    res = _fit(votes, None, "sequential", nu=0.8)
    np.testing.assert_allclose(res.annotators["weight"], [O.logit(0.8)] * 2, rtol=1e-12)


# ================================================================ majority


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_majority_matches_oracle(seed):
    votes_df, truth_df = random_tables(seed, n_programs=6, max_lines=6, n_annotators=6, p_vote=0.6)
    votes = O.frame_to_votes(votes_df)
    post, rel, wt = O.majority(votes)
    res = _fit(votes_df, truth_df, "majority")
    ann = O.annotators_in_order(votes)
    assert res.annotators["annotator"].tolist() == ann
    for a, r, wgt in zip(ann, res.annotators["reliability"], res.annotators["weight"]):
        if rel[a] is None:
            continue  # no vote on a non-tied line: undefined in the spec (see report)
        assert r == pytest.approx(rel[a], rel=RTOL, abs=ATOL), a
        assert wgt == pytest.approx(wt[a], rel=1e-9, abs=1e-9), a
    _check_lines(res, votes, post)
    _check_rewards(res, post)


# ================================================================ eq. (7) consistency for every method


@pytest.mark.parametrize("method", ["sequential", "proximal"])
@pytest.mark.parametrize("prior", [0.5, 0.3])
def test_posteriors_are_eq7_of_reported_weights(method, prior):
    votes_df, truth_df = random_tables(4, n_programs=6, max_lines=6, n_annotators=6, p_honeypot=0.5)
    votes = O.frame_to_votes(votes_df)
    res = _fit(votes_df, truth_df, method, prior=prior)
    post = O.posteriors(votes, _weights(res), prior=prior)
    _check_lines(res, votes, post)
    _check_rewards(res, post)


def test_rewards_use_programs_table_for_coverage():
    votes_df, truth_df = random_tables(5, n_programs=4, max_lines=5, n_annotators=5)
    votes = O.frame_to_votes(votes_df)
    k = {p: len({l for q, l, _, _ in votes if q == p}) for p in O.programs_in_order(votes)}
    sizes = {p: k[p] + i for i, p in enumerate(k)}
    programs = pd.DataFrame({"program": list(sizes)[::-1], "n_lines": list(sizes.values())[::-1]})
    res = cs.fit(votes_df, truth=truth_df, programs=programs, method="sequential", x64=True, lam=0.2)
    w, _ = O.sequential(votes, O.frame_to_truth(truth_df), lam=0.2)
    _check_rewards(res, O.posteriors(votes, w), n_lines=sizes)


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.9])
def test_reward_threshold_tau(tau):
    votes_df, truth_df = random_tables(6, n_programs=5, max_lines=6, n_annotators=6)
    votes = O.frame_to_votes(votes_df)
    res = _fit(votes_df, truth_df, "sequential", tau=tau, lam=0.3)
    w, _ = O.sequential(votes, O.frame_to_truth(truth_df), lam=0.3)
    _check_rewards(res, O.posteriors(votes, w), tau=tau)


# ================================================================ proximal (one-shot L1 logistic)


def _prox_problem(seed, n_programs=10, n_annotators=6):
    votes_df, truth_df = random_tables(seed, n_programs=n_programs, max_lines=8, n_annotators=n_annotators, p_vote=0.7, p_honeypot=0.6)
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    E, t, _ = O.design(votes, truth)
    return votes_df, truth_df, votes, truth, E, t


def _check_proximal(res, votes, E, t, gamma):
    w_star, info = O.l1_logistic(E, t, gamma)
    assert info["polished"], "oracle precondition: an isolated (unique) minimiser"
    ann = O.annotators_in_order(votes)
    got = res.annotators["weight"].to_numpy(dtype=float)
    np.testing.assert_allclose(got, w_star, atol=W_ATOL, rtol=0)
    # exact zeros: annotators filtered out by the L1 penalty are exactly 0 in both
    assert set(np.flatnonzero(got == 0)) == set(np.flatnonzero(w_star == 0))
    d = res.diagnostics
    assert d["gamma"] == pytest.approx(gamma, rel=1e-12)
    assert d["gamma_max"] == pytest.approx(O.gamma_max(E, t), rel=1e-12)
    f, dv, gap = O.duality_gap(E, t, got, gamma)  # diagnostics evaluated at crowdstat's own w
    assert d["objective"] == pytest.approx(f, rel=1e-10)
    assert d["dual_value"] == pytest.approx(dv, rel=1e-9)
    assert d["gap"] == pytest.approx(d["objective"] - d["dual_value"], rel=1e-6, abs=1e-12)
    assert d["gap"] >= -4e-16 * abs(d["objective"])  # exact sign: test_reported_gap_is_never_negative
    assert d["objective"] == pytest.approx(info["objective"], rel=1e-9)
    assert d["converged"]
    post = O.posteriors(votes, dict(zip(ann, got)))
    _check_lines(res, votes, post)
    _check_rewards(res, post)
    return w_star


# Most proximal tests reuse the problem of seed 0: same shapes, so crowdstat compiles its solver once.


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("frac", [0.01, 0.1, 0.5])
def test_proximal_matches_dense_solve(seed, frac):
    votes_df, truth_df, votes, truth, E, t = _prox_problem(seed)
    gamma = frac * O.gamma_max(E, t)
    res = _fit(votes_df, truth_df, "proximal", gamma=gamma, tol=1e-12)
    _check_proximal(res, votes, E, t, gamma)


@pytest.mark.parametrize("pct", ["1%", "10%", "37.5%"])
def test_proximal_gamma_percent_of_gamma_max(pct):
    votes_df, truth_df, votes, truth, E, t = _prox_problem(0)
    gamma = float(pct[:-1]) / 100 * O.gamma_max(E, t)
    res = _fit(votes_df, truth_df, "proximal", gamma=pct, tol=1e-12)
    _check_proximal(res, votes, E, t, gamma)


def test_proximal_default_gamma_is_one_percent_below_five_honeypot_programs():
    # gamma=None (the default) cross-validates with >= 5 honeypot programs (test_centred_fit.py); with
    # fewer there is nothing to cross-validate on and it is 1% of gamma_max.
    votes_df, truth_df, votes, _, _, _ = _prox_problem(0)
    keep = truth_df[truth_df["program"].isin(pd.unique(truth_df["program"])[:4])]
    E, t, _ = O.design(votes, O.frame_to_truth(keep))
    res = _fit(votes_df, keep, "proximal", tol=1e-12)
    assert "selection" not in res.diagnostics
    assert res.diagnostics["gamma"] == pytest.approx(0.01 * O.gamma_max(E, t), rel=1e-12)


def test_proximal_ista_and_fista_agree():
    votes_df, truth_df, votes, truth, E, t = _prox_problem(0)
    gamma = 0.1 * O.gamma_max(E, t)
    fista = _fit(votes_df, truth_df, "proximal", gamma=gamma, tol=1e-12, accelerated=True)
    ista = _fit(votes_df, truth_df, "proximal", gamma=gamma, tol=1e-12, accelerated=False)
    assert ista.diagnostics["converged"] and fista.diagnostics["converged"]
    np.testing.assert_allclose(ista.annotators["weight"], fista.annotators["weight"], atol=W_ATOL)
    _check_proximal(ista, votes, E, t, gamma)


@pytest.mark.parametrize("mult", [1.0, 1.5])
def test_gamma_at_or_above_gamma_max_filters_everyone(mult):
    votes_df, truth_df, votes, truth, E, t = _prox_problem(0)
    gm = O.gamma_max(E, t)
    for gamma in [mult * gm, f"{100 * mult:g}%"]:
        res = _fit(votes_df, truth_df, "proximal", gamma=gamma)
        assert np.all(res.annotators["weight"].to_numpy() == 0.0)
        np.testing.assert_allclose(res.annotators["reliability"], 0.5, rtol=0, atol=0)
        np.testing.assert_allclose(res.lines["posterior"], 0.5, rtol=0, atol=1e-15)
        assert res.diagnostics["objective"] == pytest.approx(len(t) * math.log(2), rel=1e-12)
        assert res.diagnostics["gap"] == pytest.approx(0.0, abs=1e-12)


def test_just_below_gamma_max_someone_survives():
    votes_df, truth_df, votes, truth, E, t = _prox_problem(0)
    gm = O.gamma_max(E, t)
    res = _fit(votes_df, truth_df, "proximal", gamma=0.97 * gm, tol=1e-12)
    assert np.any(res.annotators["weight"].to_numpy() != 0)
    _check_proximal(res, votes, E, t, 0.97 * gm)


def test_proximal_single_annotator_closed_form():
    # one annotator, 9 honeypot lines: a = 7 agreements, d = 2 disagreements; plus unlabelled lines
    rows, truth = [], []
    for j in range(9):
        rows.append(("p", j + 1, "solo", 1 if j < 7 else -1))
        truth.append(("p", j + 1, 1))
    rows += [("q", 1, "solo", -1), ("q", 2, "solo", 1)]
    votes_df = pd.DataFrame(rows, columns=["program", "line", "annotator", "label"])
    truth_df = pd.DataFrame(truth, columns=["program", "line", "truth"])
    for gamma in [0.1, 1.0, 2.4, 2.5, 3.0]:
        res = _fit(votes_df, truth_df, "proximal", gamma=gamma, tol=1e-12)
        want = O.single_annotator_l1(7, 2, gamma)
        assert res.annotators["weight"].iloc[0] == pytest.approx(want, abs=W_ATOL), gamma
        assert res.diagnostics["gamma_max"] == pytest.approx(2.5)


def test_proximal_separable_closed_form():
    """Each honeypot line carries exactly one vote: f separates into single-annotator problems."""
    rng = np.random.default_rng(8)
    rel = [0.9, 0.75, 0.5, 0.2, 0.85]
    rows, truth = [], []
    for j in range(60):
        a = int(rng.integers(5))
        t = int(rng.choice([-1, 1]))
        rows.append((f"p{j // 6}", j % 6 + 1, f"a{a}", t if rng.random() < rel[a] else -t))
        truth.append((f"p{j // 6}", j % 6 + 1, t))
    for j in range(12):  # unlabelled lines with several votes (not training lines)
        for a in range(5):
            if rng.random() < 0.6:
                rows.append((f"p{j // 6}", 10 + j % 6, f"a{a}", int(rng.choice([-1, 1]))))
    votes_df = pd.DataFrame(rows, columns=["program", "line", "annotator", "label"])
    truth_df = pd.DataFrame(truth, columns=["program", "line", "truth"])
    votes, tr = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    E, t, _ = O.design(votes, tr)
    for frac in [0.05, 0.3, 0.8]:
        gamma = frac * O.gamma_max(E, t)
        res = _fit(votes_df, truth_df, "proximal", gamma=gamma, tol=1e-12)
        want = O.separable_l1(votes, tr, gamma)
        got = _weights(res)
        for a in want:
            assert got[a] == pytest.approx(want[a], abs=W_ATOL), (frac, a)


def test_annotator_without_training_votes_gets_zero_weight():
    votes_df, truth_df, votes, truth, E, t = _prox_problem(9, n_programs=8)
    extra = pd.DataFrame({"program": ["p0", "p1"], "line": [99, 99], "annotator": ["lurker", "lurker"], "label": [1, -1]})
    votes_df = pd.concat([votes_df, extra], ignore_index=True)
    res = _fit(votes_df, truth_df, "proximal", gamma="5%", tol=1e-12)
    assert _weights(res)["lurker"] == 0.0
    votes = O.frame_to_votes(votes_df)
    E, t, _ = O.design(votes, truth)
    _check_proximal(res, votes, E, t, 0.05 * O.gamma_max(E, t))


def test_proximal_intercept_matches_oracle():
    votes_df, truth_df = random_tables(10, n_programs=12, max_lines=8, n_annotators=5, p_vote=0.7, p_honeypot=0.6)
    # unbalance the truth so that the intercept is clearly non-zero
    truth_df = truth_df.assign(truth=np.where(np.arange(len(truth_df)) % 4 == 0, -1, 1))
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    E, t, _ = O.design(votes, truth)
    gamma = 0.05 * O.gamma_max(E, t)
    res = _fit(votes_df, truth_df, "proximal", gamma=gamma, intercept=True, tol=1e-12)
    w, b = O.l1_logistic_intercept(E, t, gamma)
    assert abs(b) > 0.1
    np.testing.assert_allclose(res.annotators["weight"].to_numpy(dtype=float), w, atol=W_ATOL)
    assert res.diagnostics["intercept"] == pytest.approx(b, abs=W_ATOL)
    got_b = res.diagnostics["intercept"]
    post = O.posteriors(votes, _weights(res), prior_logit=got_b)
    _check_lines(res, votes, post)


# ================================================================ float32


@pytest.mark.parametrize(
    "method,kw",
    [("majority", {}), ("sequential", dict(lam=0.3, w_max=4.0)), ("proximal", dict(gamma="10%"))],
)
def test_float32_finite_and_close_to_float64(method, kw):
    votes_df, truth_df = random_tables(12, n_programs=6, max_lines=6, n_annotators=6, p_honeypot=0.5)
    r64 = cs.fit(votes_df, truth=truth_df, method=method, x64=True, **kw)
    r32 = cs.fit(votes_df, truth=truth_df, method=method, x64=False, **kw)
    for col in ["posterior"]:
        v = r32.lines[col].to_numpy()
        # computed in float32 (the frame may widen the column to float64 for export)
        assert np.array_equal(v.astype(np.float32).astype(v.dtype), v)
        assert np.all(np.isfinite(v))
        np.testing.assert_allclose(v, r64.lines[col].to_numpy(), rtol=1e-4, atol=1e-5)
    w32 = r32.annotators["weight"].to_numpy()
    assert np.array_equal(w32.astype(np.float32).astype(w32.dtype), w32) and np.all(np.isfinite(w32))
    assert r32.diagnostics.get("dtype", "float32") == "float32"
    np.testing.assert_allclose(r32.annotators["reliability"], r64.annotators["reliability"], rtol=1e-4, atol=1e-6)
    # logit(1 - delta) itself is only good to ~1e-3 in float32 (1 - 1e-6 is 1 - 8 ulps): skip capped weights
    w64 = r64.annotators["weight"].to_numpy()
    ok = np.abs(w64) < 10
    np.testing.assert_allclose(w32[ok], w64[ok], rtol=1e-4, atol=1e-4)


# ================================================================ ids and label codings


def test_integer_ids_become_strings():
    votes = pd.DataFrame({"program": [7, 7, 8], "line": [1, 2, 1], "annotator": [3, 4, 3], "label": [1, -1, 1]})
    res = _fit(votes, None, "sequential")
    assert res.lines["program"].tolist() == ["7", "7", "8"]
    assert res.annotators["annotator"].tolist() == ["3", "4"]
    assert res.rewards["program"].tolist() == ["7", "8"]


@pytest.mark.parametrize("coding", [{1: 1, -1: 0}, {1: "correct", -1: "wrong"}, {1: "+1", -1: "-1"}])
def test_label_codings_are_equivalent(coding):
    votes_df, truth_df = random_tables(13, n_programs=4, max_lines=5, n_annotators=5)
    ref = _fit(votes_df, truth_df, "sequential", lam=0.5)
    v2 = votes_df.assign(label=votes_df["label"].map(coding))
    t2 = truth_df.assign(truth=truth_df["truth"].map(coding))
    res = _fit(v2, t2, "sequential", lam=0.5)
    np.testing.assert_array_equal(res.annotators["weight"], ref.annotators["weight"])
    np.testing.assert_array_equal(res.lines["posterior"], ref.lines["posterior"])


# ================================================================ more parameters


def test_proximal_default_tolerance_x64_is_tight_enough():
    """x64 with the default tol (relative gap 1e-10): weights within 1e-6 of the converged solve."""
    votes_df, truth_df, votes, truth, E, t = _prox_problem(0)
    for frac in [0.01, 0.1]:
        gamma = frac * O.gamma_max(E, t)
        res = _fit(votes_df, truth_df, "proximal", gamma=gamma)
        assert res.diagnostics["rel_gap"] <= 1e-10 and res.diagnostics["converged"]
        w, _ = O.l1_logistic(E, t, gamma)
        np.testing.assert_allclose(res.annotators["weight"].to_numpy(dtype=float), w, atol=W_ATOL)


@pytest.mark.parametrize("delta", [1e-2, 1e-4])
def test_delta_caps_the_step_and_clips_probabilities(delta):
    votes_df, truth_df = random_tables(7, n_programs=5, max_lines=4, n_annotators=5, p_vote=0.8, p_honeypot=0.3)
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    res = _fit(votes_df, truth_df, "sequential", delta=delta, pbar_honeypot=1.0)  # 1 -> 1 - delta
    w, _ = O.sequential(votes, truth, delta=delta, pbar_honeypot=1.0)
    ann = O.annotators_in_order(votes)
    np.testing.assert_allclose(res.annotators["weight"].astype(float), [w[a] for a in ann], rtol=RTOL, atol=ATOL)
    res = _fit(votes_df, truth_df, "majority", delta=delta)
    _, rel, wt = O.majority(votes, delta=delta)
    for a, got in zip(ann, res.annotators["weight"]):
        if wt[a] is not None:
            assert got == pytest.approx(wt[a], rel=1e-9, abs=1e-9)


def test_majority_ties_are_not_counted_at_tau_one_half():
    """reward counts P_j > tau strictly: a tied line (P = 1/2) is not 'correct' at tau = 1/2."""
    votes = pd.DataFrame(
        {"program": ["p"] * 5, "line": [1, 1, 2, 3, 3], "annotator": ["a", "b", "a", "a", "b"], "label": [1, -1, 1, -1, -1]}
    )
    res = _fit(votes, None, "majority")
    assert res.lines["posterior"].tolist() == [0.5, 1.0, 0.0]
    assert res.rewards["reward"].iloc[0] == pytest.approx(1 / 3)
    assert res.rewards["reward_soft"].iloc[0] == pytest.approx(0.5)


def test_majority_padding_votes_add_nothing():
    """Label-0 votes (the padding of sharded / bucketed vote arrays) change no count."""
    import jax.numpy as jnp

    from crowdstat.estimators.majority import majority

    votes_df, _ = random_tables(21, n_programs=5, max_lines=5, n_annotators=6, p_vote=0.6)
    a = cs.read_votes(votes_df).arrays
    k = 7  # padding votes spread over lines and annotators, lines kept sorted
    at = np.searchsorted(a.line, np.linspace(0, a.line_program.shape[0] - 1, k).astype(np.int32))
    padded = a._replace(
        line=np.insert(a.line, at, a.line[np.minimum(at, a.n_votes - 1)]),
        annotator=np.insert(a.annotator, at, np.arange(k) % 6),
        label=np.insert(a.label, at, 0),
    )
    z, d = jnp.zeros(6, jnp.float64), jnp.float64(1e-6)
    import jax

    with jax.enable_x64(True):
        for x, y in zip(majority(a, z, d), majority(padded, z, d)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_extra_columns_are_ignored():
    votes_df, truth_df = random_tables(14, n_programs=4, max_lines=5, n_annotators=5)
    ref = _fit(votes_df, truth_df, "sequential", lam=0.5)
    with pytest.warns(UserWarning, match="comment"):
        res = _fit(votes_df.assign(comment="x"), truth_df, "sequential", lam=0.5)
    pd.testing.assert_frame_equal(res.annotators, ref.annotators)
    pd.testing.assert_frame_equal(res.lines, ref.lines)


def test_latent_variant_runs_and_posteriors_follow_eq7():
    """No truth: the latent-truth variant (docs/math.md leaves it loose; only self-consistency is checked)."""
    votes_df, _ = random_tables(15, n_programs=6, max_lines=6, n_annotators=6, p_vote=0.7)
    votes = O.frame_to_votes(votes_df)
    res = _fit(votes_df, None, "proximal", gamma="5%")
    w = _weights(res)
    assert all(np.isfinite(list(w.values())))
    post = O.posteriors(votes, w, prior_logit=res.diagnostics.get("intercept", 0.0) or 0.0)
    _check_lines(res, votes, post)


@pytest.mark.parametrize("method", ["majority", "sequential", "proximal"])
def test_programs_keep_first_appearance_order_not_sorted_order(method):
    """Program ids whose sorted (lexical or numeric) order differs from their first appearance."""
    names = ["zeta", "10", "9", "alpha", "b", "0"]
    votes_df, truth_df = random_tables(16, n_programs=6, max_lines=5, n_annotators=5, p_honeypot=0.5, program_names=names)
    assert list(dict.fromkeys(votes_df["program"])) == names
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    res = _fit(votes_df, truth_df, method, **({"lam": 0.5} if method == "sequential" else {"gamma": "1%"} if method == "proximal" else {}))
    assert list(dict.fromkeys(res.lines["program"])) == names
    assert res.rewards["program"].tolist() == names
    if method == "sequential":
        assert [str(i) for i in res.trajectory.index] == names
        w, _ = O.sequential(votes, truth, lam=0.5)
    elif method == "majority":
        post, _, _ = O.majority(votes)
        _check_lines(res, votes, post)
        return
    else:
        E, t, _ = O.design(votes, truth)
        w = dict(zip(O.annotators_in_order(votes), O.l1_logistic(E, t, 0.01 * O.gamma_max(E, t))[0]))
    post = O.posteriors(votes, w)
    tol = dict(rtol=RTOL, atol=ATOL) if method == "sequential" else dict(rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.lines["posterior"].astype(float), [post[k] for k in O.lines_in_order(votes)], **tol)
    _check_rewards(res, O.posteriors(votes, _weights(res)))


def test_proximal_intercept_gamma_max():
    """With an unpenalised intercept, w* = 0 iff gamma >= ||E^T (t * sigmoid(-t b0))||_inf, where
    b0 = logit(share of t = +1) is the intercept-only fit (docs/math.md states gamma_max only without
    intercept; this is its generalisation, and reduces to ||E^T t||_inf / 2 when b0 = 0)."""
    votes_df, truth_df = random_tables(10, n_programs=12, max_lines=8, n_annotators=5, p_vote=0.7, p_honeypot=0.6)
    truth_df = truth_df.assign(truth=np.where(np.arange(len(truth_df)) % 4 == 0, -1, 1))
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    E, t, _ = O.design(votes, truth)
    b0 = O.logit(float(np.mean(t == 1)))
    gm = float(np.max(np.abs(E.T @ (t / (1 + np.exp(t * b0))))))
    res = _fit(votes_df, truth_df, "proximal", gamma="100%", intercept=True, tol=1e-12)
    assert res.diagnostics["gamma_max"] == pytest.approx(gm, rel=1e-12)
    assert np.all(res.annotators["weight"].to_numpy() == 0)
    assert res.diagnostics["intercept"] == pytest.approx(b0, abs=1e-8)
    res = _fit(votes_df, truth_df, "proximal", gamma=0.97 * gm, intercept=True, tol=1e-12)
    w, b = O.l1_logistic_intercept(E, t, 0.97 * gm)
    assert np.any(w != 0)
    np.testing.assert_allclose(res.annotators["weight"].to_numpy(dtype=float), w, atol=W_ATOL)


def test_reported_gap_is_never_negative():
    votes = pd.DataFrame({"program": ["p0"], "line": [0], "annotator": ["a0"], "label": [-1]})
    truth = pd.DataFrame({"program": ["p0"], "line": [0], "truth": [-1]})
    d = _fit(votes, truth, "proximal", gamma="1%", tol=1e-12).diagnostics
    # the weight itself is right: the closed form logit((a - gamma)/(a + d)) with a=1, d=0
    assert d["objective"] == pytest.approx(
        O.objective(np.array([[-1.0]]), np.array([-1.0]), np.array([O.single_annotator_l1(1, 0, 0.005)]), 0.005), rel=1e-12
    )
    assert d["gap"] >= 0 and d["rel_gap"] >= 0
