"""Self-checks of the NumPy / plain-Python oracles (no crowdstat here).

The oracles must be right before they can judge crowdstat: closed forms, sklearn's L1 logistic
regression, strong duality, eq. (7) against a dense matrix product, eq. (8) on a hand example.
"""

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.reference import oracles as O
from tests.strategies import random_tables


def _dense_problem(seed, n=60, m=6, p_vote=0.8):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 0.95, m)
    t = rng.choice([-1.0, 1.0], n)
    mask = rng.random((n, m)) < p_vote
    right = rng.random((n, m)) < p
    E = np.where(mask, np.where(right, t[:, None], -t[:, None]), 0.0)
    return E, t


# ---------------------------------------------------------------- scalars


def test_binary_entropy_endpoints_and_max():
    assert O.binary_entropy(0.0) == 0.0
    assert O.binary_entropy(1.0) == 0.0
    assert O.binary_entropy(0.5) == pytest.approx(math.log(2), rel=1e-15)
    v = 0.2
    assert O.binary_entropy(v) == pytest.approx(-v * math.log(v) - (1 - v) * math.log(1 - v), rel=1e-14)


def test_sigmoid_logit_stable():
    for x in [-800.0, -30.0, -1e-3, 0.0, 2.5, 40.0, 800.0]:
        s = O.sigmoid(x)
        assert 0.0 <= s <= 1.0
        if abs(x) < 30:
            assert O.logit(s) == pytest.approx(x, abs=1e-9)
    assert O.log1pexp(800.0) == 800.0
    assert O.logit(O.clip_prob(1.0)) == pytest.approx(math.log((1 - 1e-6) / 1e-6), rel=1e-10)


# ---------------------------------------------------------------- eq. (7) and rewards


def test_eq7_dict_loop_matches_dense_product():
    votes_df, _ = random_tables(3, n_programs=5, n_annotators=7)
    votes = O.frame_to_votes(votes_df)
    ann = O.annotators_in_order(votes)
    keys = O.lines_in_order(votes)
    rng = np.random.default_rng(0)
    w = {a: rng.normal() for a in ann}
    M = np.zeros((len(keys), len(ann)))
    for p, l, a, e in votes:
        M[keys.index((p, l)), ann.index(a)] = e
    wv = np.array([w[a] for a in ann])
    l = O.line_logits(votes, w, prior=0.3)
    np.testing.assert_allclose([l[k] for k in keys], M @ wv + math.log(0.3 / 0.7), rtol=1e-13, atol=1e-13)


def test_rewards_hand_example():
    post = {("p", 1): 0.9, ("p", 3): 0.5, ("p", 2): 0.2, ("q", 7): 0.51}
    r = O.rewards(post, tau=0.5, n_lines={"p": 4, "q": 1})
    assert [x["program"] for x in r] == ["p", "q"]
    assert r[0]["lines"] == [1, 2, 3] and r[0]["posteriors"] == [0.9, 0.2, 0.5]
    assert r[0]["reward"] == pytest.approx(1 / 3)  # 0.5 is not > 0.5
    assert r[0]["reward_soft"] == pytest.approx(1.6 / 3)
    assert r[0]["coverage"] == 0.75 and r[0]["n_annotated"] == 3 and r[0]["n_lines"] == 4
    assert r[1]["reward"] == 1.0


# ---------------------------------------------------------------- eq. (8)


def test_sequential_hand_example():
    # task p: honeypot line 1 (truth +1): a votes +1, b votes -1; line 2 not honeypot: a votes +1.
    # task q: line 1: b +1, a -1 (no honeypot).
    votes = [("p", 1, "a", 1), ("p", 1, "b", -1), ("p", 2, "a", 1), ("q", 1, "b", 1), ("q", 1, "a", -1)]
    truth = {("p", 1): 1}
    w0 = O.logit(0.7)
    hp = O.logit(0.99)
    w, traj = O.sequential(votes, truth, lam=0.5, nu=0.7, pbar_honeypot=0.99)
    # task p, pre-task w = (w0, w0); line 2: l = w0 > 0 -> r = +1, step |l| = w0 for a
    wa = w0 + 0.5 * hp + 0.5 * w0
    wb = w0 - 0.5 * hp
    assert traj[0][0] == "p"
    assert traj[0][1]["a"] == pytest.approx(wa, rel=1e-14)
    assert traj[0][1]["b"] == pytest.approx(wb, rel=1e-14)
    # task q: l = wb - wa < 0 -> r = -1; b: mu = -1, a: mu = +1; step |l|
    l = wb - wa
    assert l < 0
    assert w["a"] == pytest.approx(wa + 0.5 * abs(l), rel=1e-14)
    assert w["b"] == pytest.approx(wb - 0.5 * abs(l), rel=1e-14)


def test_sequential_no_update_on_zero_logit_and_w_max_clip():
    votes = [("p", 1, "a", 1), ("p", 1, "b", -1), ("q", 1, "a", 1)]
    w, traj = O.sequential(votes, {}, lam=1.0, nu=0.7, w_max=1.0)
    # p: l = w0 - w0 = 0: no update; only the clip to [-1, 1] applies (w0 = 0.847 < 1)
    assert traj[0][1] == {"a": pytest.approx(O.logit(0.7)), "b": pytest.approx(O.logit(0.7))}
    # q: l = w0 > 0, a agrees: w_a = 2 w0 -> clipped to 1
    assert w["a"] == 1.0


def test_sequential_step_capped_at_logit_one_minus_delta():
    votes = [("p", 1, f"a{i}", 1) for i in range(40)]
    w, _ = O.sequential(votes, {}, lam=1.0, nu=0.9)
    assert w["a0"] == pytest.approx(O.logit(0.9) + math.log((1 - 1e-6) / 1e-6), rel=1e-10)


# ---------------------------------------------------------------- majority


def test_majority_hand_example():
    votes = [("p", 1, "a", 1), ("p", 1, "b", 1), ("p", 1, "c", -1), ("p", 2, "a", 1), ("p", 2, "c", -1), ("q", 1, "c", -1)]
    post, rel, wt = O.majority(votes)
    assert post[("p", 1)] == pytest.approx(2 / 3) and post[("p", 2)] == 0.5 and post[("q", 1)] == 0.0
    # p1 majority +1 (a, b agree; c not); p2 tie (ignored); q1 majority -1 (c agrees)
    assert rel == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert wt["c"] == 0.0 and wt["a"] == pytest.approx(math.log((1 - 1e-6) / 1e-6))


# ---------------------------------------------------------------- L1 logistic: closed forms


@pytest.mark.parametrize("a,d", [(5, 1), (1, 5), (3, 3), (7, 0), (0, 4), (10, 2)])
@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 0.99, 1.0, 1.5])
def test_single_annotator_closed_form_is_the_minimiser(a, d, frac):
    gmax = abs(a - d) / 2
    gamma = frac * gmax if gmax > 0 else 0.1 + frac
    if gamma == 0 and (a == 0 or d == 0):
        pytest.skip("gamma = 0 with one-sided votes: no finite minimiser")
    w = O.single_annotator_l1(a, d, gamma)
    E = np.array([[1.0]] * a + [[-1.0]] * d)
    t = np.ones(a + d)
    f = lambda x: O.objective(E, t, np.array([x]), gamma)  # noqa: E731
    for h in [1e-3, 1e-5]:
        assert f(w) <= f(w + h) + 1e-13 and f(w) <= f(w - h) + 1e-13
    assert O.gamma_max(E, t) == pytest.approx(gmax)
    if gamma >= gmax:
        assert w == 0.0
    if gamma > 0:
        wn, info = O.l1_logistic(E, t, gamma)
        assert wn[0] == pytest.approx(w, abs=1e-9)


def test_separable_case_matches_dense_solve():
    rng = np.random.default_rng(5)
    votes, truth = [], {}
    for j in range(80):
        a = f"a{rng.integers(6)}"
        t = int(rng.choice([-1, 1]))
        e = t if rng.random() < [0.9, 0.7, 0.5, 0.3, 0.8, 0.6][int(a[1])] else -t
        votes.append((f"p{j // 8}", j % 8, a, e))
        truth[(f"p{j // 8}", j % 8)] = t
    E, t, _ = O.design(votes, truth)
    gamma = 0.2 * O.gamma_max(E, t)
    closed = O.separable_l1(votes, truth, gamma)
    w, info = O.l1_logistic(E, t, gamma)
    ann = O.annotators_in_order(votes)
    np.testing.assert_allclose(w, [closed[a] for a in ann], atol=1e-9)
    assert info["rel_gap"] < 1e-12


# ---------------------------------------------------------------- L1 logistic vs sklearn


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("frac", [0.01, 0.1, 0.5])
def test_l1_logistic_matches_sklearn_liblinear(seed, frac):
    E, t = _dense_problem(seed)
    gamma = frac * O.gamma_max(E, t)
    w, info = O.l1_logistic(E, t, gamma)
    assert info["converged"] and info["rel_gap"] < 1e-12
    # sklearn minimises C sum(loss) + ||w||_1 = C * f(w) with C = 1/gamma: same minimiser.
    sk = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=1.0 / gamma, fit_intercept=False, tol=1e-12, max_iter=100_000)
    try:
        sk.fit(E, t)
    except TypeError:  # older signature
        sk = LogisticRegression(penalty="l1", solver="liblinear", C=1.0 / gamma, fit_intercept=False, tol=1e-12, max_iter=100_000)
        sk.fit(E, t)
    w_sk = sk.coef_.ravel() * (1.0 if sk.classes_[1] == 1 else -1.0)
    # liblinear's own stopping rule is looser than ours: compare objectives tightly, weights to 1e-4
    f_ours = O.objective(E, t, w, gamma)
    f_sk = O.objective(E, t, w_sk, gamma)
    assert f_ours <= f_sk + 1e-9 * abs(f_sk)
    assert f_sk - f_ours <= 1e-6 * abs(f_ours)
    np.testing.assert_allclose(w, w_sk, atol=1e-3 * max(1.0, np.max(np.abs(w))))


@pytest.mark.parametrize("seed", range(3))
def test_ista_and_fista_reach_the_same_minimiser(seed):
    E, t = _dense_problem(seed, n=40, m=5)
    gamma = 0.05 * O.gamma_max(E, t)
    w_f, info_f = O.proximal_gradient(E, t, gamma, accelerated=True, tol=1e-12)
    w_i, info_i = O.proximal_gradient(E, t, gamma, accelerated=False, tol=1e-12, maxiter=400_000)
    assert info_f["converged"] and info_i["converged"]
    w_star, _ = O.l1_logistic(E, t, gamma)
    np.testing.assert_allclose(w_f, w_star, atol=1e-5)
    np.testing.assert_allclose(w_i, w_star, atol=1e-5)


# ---------------------------------------------------------------- duality


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("frac", [0.02, 0.3, 0.9])
def test_strong_duality_and_dual_optimum(seed, frac):
    E, t = _dense_problem(seed, n=50, m=7, p_vote=0.6)
    gamma = frac * O.gamma_max(E, t)
    w, info = O.l1_logistic(E, t, gamma)
    f, d, gap = O.duality_gap(E, t, w, gamma)
    assert gap >= -1e-12
    assert gap <= 1e-11 * f
    # nu* = sigmoid(-t * E w*) is itself feasible at the optimum (the KKT condition)
    nu = 1 / (1 + np.exp(t * (E @ w)))
    assert np.max(np.abs(E.T @ (t * nu))) <= gamma * (1 + 1e-8)
    assert O.dual_value(nu) == pytest.approx(f, rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_gap_is_positive_at_arbitrary_points(seed):
    E, t = _dense_problem(seed, n=30, m=5)
    rng = np.random.default_rng(seed)
    gamma = 0.2 * O.gamma_max(E, t)
    for _ in range(20):
        w = rng.normal(scale=3, size=E.shape[1])
        nu = O.feasible_nu(E, t, w, gamma)
        assert np.max(np.abs(E.T @ (t * nu))) <= gamma * (1 + 1e-12)
        assert np.all((nu >= 0) & (nu <= 1))
        assert O.duality_gap(E, t, w, gamma)[2] > 0


def test_gamma_max_is_the_threshold_for_zero():
    E, t = _dense_problem(11, n=40, m=6)
    gm = O.gamma_max(E, t)
    w_at, _ = O.l1_logistic(E, t, gm)
    assert np.all(w_at == 0)
    w_below, _ = O.l1_logistic(E, t, 0.98 * gm)
    assert np.any(w_below != 0)
    # at w = 0 the gap is zero iff gamma >= gamma_max: f(0) = n log 2 = D(1/2)
    f, d, gap = O.duality_gap(E, t, np.zeros(E.shape[1]), gm)
    assert f == pytest.approx(E.shape[0] * math.log(2)) and gap == pytest.approx(0, abs=1e-12)


def test_scalar_bound_n1():
    eps = np.array([1.0, -1.0, 0.0])
    for gamma in [0.1, 0.3, 0.5, 2.0]:
        nu, h = O.scalar_bound(eps, gamma)
        assert nu == min(0.5, gamma)
        # equals the dual optimum of the one-line problem (t = +1, E = eps): f(w*) = D(nu*)
        E, t = eps[None, :], np.array([1.0])
        w, info = O.l1_logistic(E, t, gamma)
        assert O.objective(E, t, w, gamma) == pytest.approx(h, rel=1e-9)


def test_intercept_solver_matches_sklearn():
    E, t = _dense_problem(2, n=80, m=5)
    t = np.where(np.random.default_rng(0).random(80) < 0.8, 1.0, t)  # unbalanced: b != 0
    gamma = 0.1 * O.gamma_max(E, t)
    w, b = O.l1_logistic_intercept(E, t, gamma)
    # optimality in b: sum_j t_j sigmoid(-t_j z_j) = 0, and in w: KKT
    z = E @ w + b
    assert abs(np.sum(t / (1 + np.exp(t * z)))) < 1e-9
    g = O.gradient(E, t, w, b)
    assert np.all(np.abs(g) <= gamma * (1 + 1e-9))
    on = w != 0
    np.testing.assert_allclose(g[on], -gamma * np.sign(w[on]), atol=1e-9)
    # compare to liblinear with a (huge, effectively unpenalised) intercept column
    s = 1e3
    X = np.hstack([E, np.full((80, 1), s)])
    sk = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=1 / gamma, fit_intercept=False, tol=1e-12, max_iter=100_000)
    sk.fit(X, t)
    coef = sk.coef_.ravel()
    np.testing.assert_allclose(coef[:-1], w, atol=1e-3)
    assert coef[-1] * s == pytest.approx(b, abs=1e-3)
