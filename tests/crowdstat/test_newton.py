"""Proximal Newton (crowdstat/estimators/l1/newton.py via proximal.solve(solver="newton")) against the NumPy oracle.

Two problem shapes are reused throughout so that each jitted variant compiles once: a small one
(m = 7 annotators, the Hessian from a dense E) and a wider one (m = 70: the native column-wise
CD kernel when it builds, which is what proximal.solve runs; the pure-XLA dense Hessian from the
sorted vote-pair list, ``L1Data.pairs``, is checked too). The oracle (tests/reference/oracles.py, FISTA to a
relative gap of 1e-13 plus an active-set Newton polish) is self-checked against scikit-learn.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdstat import _native
from crowdstat._typing import VoteArrays
from crowdstat.estimators.l1 import newton, problem
from crowdstat.estimators.l1 import solve as proximal
from tests.reference import oracles as O

jax.config.update("jax_enable_x64", True)

TOL = 1e-12
SHAPES = {"dense_e": (7, 70, 5), "pairs": (70, 120, 8)}  # (m, n rows, votes per row): fixed shapes


def _problem(seed, kind):
    """Dense (E, t) with k votes on every row (so every seed has the same array shapes), and the L1Data."""
    m, n, k = SHAPES[kind]
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.35, 0.95, m)
    t = rng.choice([-1.0, 1.0], n, p=[0.35, 0.65])
    mask = np.zeros((n, m), bool)
    mask[np.arange(n)[:, None], np.argsort(rng.random((n, m)), axis=1)[:, :k]] = True
    right = rng.random((n, m)) < p
    E = np.where(mask, np.where(right, t[:, None], -t[:, None]), 0.0)
    line, ann = np.nonzero(E)  # row-major: sorted by line
    votes = VoteArrays(
        line=line.astype(np.int32),
        annotator=ann.astype(np.int32),
        label=E[line, ann].astype(np.int8),
        line_program=np.arange(n, dtype=np.int32),
        truth=t.astype(np.int8),
        program_size=np.ones(n, np.int32),
    )
    data = problem.training_data(votes, jnp.float64)
    if kind == "pairs":  # the pair list for the pure-XLA Hessian (training_data skips it when the native kernel is there)
        data = data._replace(pairs=problem.vote_pairs(np.asarray(data.row), np.asarray(data.annotator), n, force=True))
    return E, t, data


_xla_newton = jax.jit(partial(newton.solve, intercept=False, maxiter=1000, native=False))
_xla_newton_b = jax.jit(partial(newton.solve, intercept=True, maxiter=1000, native=False))


def _newton(data, gamma, m, tol=TOL, w0=None, b0=0.0, intercept=False):
    w0 = jnp.zeros(m) if w0 is None else w0
    return proximal.solve(
        data, jnp.float64(gamma), w0, jnp.float64(b0), jnp.float64(1.0), jnp.float64(tol), intercept=intercept, solver="newton"
    )


@pytest.mark.parametrize("kind", ["dense_e", "pairs"])
def test_hessian_modes_and_pairs_structure(kind):
    E, t, data = _problem(0, kind)
    m = E.shape[1]
    assert newton.hessian_mode(data, m, native=False) == kind
    assert newton.hessian_mode(data, m, native=True) == ("native" if kind == "pairs" else kind)
    assert proximal.resolve_solver("auto", data, m) == "newton"
    if kind == "pairs":
        u, v = np.asarray(data.pairs)
        ann, row = np.asarray(data.annotator), np.asarray(data.row)
        assert np.all(row[u] == row[v]) and np.all(ann[u] < ann[v])
        assert u.shape[0] == int(sum(c * (c - 1) // 2 for c in np.count_nonzero(E, axis=1)))
        key = ann[u] * m + ann[v]
        assert np.all(np.diff(key) >= 0)
    # The Hessian builder equals E^T D E (with the intercept column) computed densely.
    dw = jnp.asarray(np.random.default_rng(1).uniform(0.05, 0.25, E.shape[0]))
    for intercept in (False, True):
        prep = newton.prepare(data, m, intercept, native=False)
        h = np.asarray(newton.hessian(prep, data, m, intercept, dw))
        A = np.hstack([E, np.ones((E.shape[0], 1)) if intercept else np.zeros((E.shape[0], 1))])
        assert h.dtype == np.float32  # newton.HESSIAN_DTYPE: the model only shapes the step
        np.testing.assert_allclose(h, A.T @ (np.asarray(dw)[:, None] * A), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["dense_e", "pairs"])
@pytest.mark.parametrize("seed, frac", [(1, 0.03), (2, 0.2), (3, 0.6)])
def test_newton_equals_oracle_and_certifies(kind, seed, frac):
    E, t, data = _problem(seed, kind)
    m = E.shape[1]
    gamma = frac * O.gamma_max(E, t)
    st = _newton(data, gamma, m)
    w_ref, info = O.l1_logistic(E, t, gamma)
    assert info["rel_gap"] <= 1e-12
    w = np.asarray(st.w)
    np.testing.assert_allclose(w, w_ref, atol=1e-6)
    f = O.objective(E, t, w, gamma)
    assert math.isclose(f, O.objective(E, t, w_ref, gamma), rel_tol=1e-6)
    # The certificate at return: the reported one, and the oracle's own independent gap.
    assert float(st.rel_gap) <= TOL
    assert math.isclose(float(st.objective), f, rel_tol=1e-12)
    f_o, d_o, gap_o = O.duality_gap(E, t, w, gamma)
    assert gap_o <= 1e-10 * f_o
    assert np.array_equal(w == 0, np.abs(w_ref) < 1e-9)  # same annotators filtered out


def test_newton_with_intercept_equals_oracle():
    E, t, data = _problem(4, "pairs")
    m = E.shape[1]
    gmax_b = float(problem.gamma_max(data, m, intercept=True))
    gamma = 0.1 * gmax_b
    b0 = problem.b_at_zero(data)
    st = _newton(data, gamma, m, b0=b0, intercept=True)
    w_ref, b_ref = O.l1_logistic_intercept(E, t, gamma)
    np.testing.assert_allclose(np.asarray(st.w), w_ref, atol=1e-6)
    assert abs(float(st.b) - b_ref) <= 1e-6
    f = O.objective(E, t, np.asarray(st.w), gamma, float(st.b))
    assert math.isclose(f, O.objective(E, t, w_ref, gamma, b_ref), rel_tol=1e-6)
    assert float(st.rel_gap) <= TOL and math.isclose(float(st.objective), f, rel_tol=1e-12)


@pytest.mark.parametrize("kind", ["dense_e", "pairs"])
def test_gamma_at_or_above_gamma_max_gives_zero(kind):
    E, t, data = _problem(5, kind)
    m = E.shape[1]
    gm = float(problem.gamma_max(data, m))
    assert math.isclose(gm, O.gamma_max(E, t), rel_tol=1e-12)
    for g in (gm, 1.5 * gm):
        st = _newton(data, g, m, w0=jnp.full(m, 0.3))  # even from a non-zero warm start
        assert np.all(np.asarray(st.w) == 0.0) and float(st.rel_gap) <= TOL
    # Just below gamma_max some weight is non-zero.
    assert np.any(np.asarray(_newton(data, 0.98 * gm, m).w) != 0.0)
    if kind != "pairs":
        return
    # With an intercept: w = 0 and b = logit(mean q).
    gmb = float(problem.gamma_max(data, m, intercept=True))
    st = _newton(data, 1.2 * gmb, m, intercept=True)
    qbar = np.mean((1 + t) / 2)
    assert np.all(np.asarray(st.w) == 0.0) and abs(float(st.b) - math.log(qbar / (1 - qbar))) <= 1e-6


def test_newton_equals_fista():
    E, t, data = _problem(6, "pairs")
    m = E.shape[1]
    gamma = 0.1 * O.gamma_max(E, t)
    lip = problem.lipschitz(data, m)
    fi = proximal.solve(
        data, jnp.float64(gamma), jnp.zeros(m), jnp.float64(0.0), 1.0 / lip, jnp.float64(TOL), solver="fista", maxiter=100_000
    )
    nw = _newton(data, gamma, m)
    assert float(fi.rel_gap) <= TOL
    np.testing.assert_allclose(np.asarray(nw.w), np.asarray(fi.w), atol=1e-6)
    assert math.isclose(float(nw.objective), float(fi.objective), rel_tol=1e-10)
    assert int(nw.iter_num) < int(fi.iter_num) // 5  # second order: far fewer (outer) iterations


def test_path_and_vmap_equal_cold_solves():
    E, t, data = _problem(7, "pairs")
    m = E.shape[1]
    gm = O.gamma_max(E, t)
    gammas = jnp.asarray(gm * np.geomspace(1.0, 0.01, 8))
    states = proximal.path(data, gammas, jnp.zeros(m), jnp.float64(0.0), jnp.float64(1.0), jnp.float64(TOL), solver="newton")
    assert np.all(np.asarray(states.w[0]) == 0.0)
    assert np.all(np.asarray(states.rel_gap) <= TOL)
    cold_iters = 0
    for k in (2, 5, 7):
        cold = _newton(data, gammas[k], m)
        cold_iters += int(cold.iter_num)
        np.testing.assert_allclose(np.asarray(states.w[k]), np.asarray(cold.w), atol=1e-7)
    assert int(states.iter_num[np.asarray([2, 5, 7])].sum()) < cold_iters  # warm starts help
    batched = jax.vmap(lambda g: _newton(data, g, m))(gammas)
    np.testing.assert_allclose(np.asarray(batched.w), np.asarray(states.w), atol=1e-7)
    assert np.all(np.asarray(batched.rel_gap) <= TOL)


def test_pure_xla_pair_hessian_and_native_agree_with_oracle():
    E, t, data = _problem(9, "pairs")
    m = E.shape[1]
    gamma = 0.05 * O.gamma_max(E, t)
    w_ref, _ = O.l1_logistic(E, t, gamma)
    w, _, _, info, _ = _xla_newton(data, jnp.float64(gamma), jnp.zeros(m), jnp.float64(0.0), jnp.float64(TOL))
    np.testing.assert_allclose(np.asarray(w), w_ref, atol=1e-6)
    assert float(info.rel_gap) <= TOL
    gmb = float(problem.gamma_max(data, m, intercept=True))
    wb, bb, _, info_b, _ = _xla_newton_b(data, jnp.float64(0.1 * gmb), jnp.zeros(m), problem.b_at_zero(data), jnp.float64(TOL))
    w_ref_b, b_ref = O.l1_logistic_intercept(E, t, 0.1 * gmb)
    np.testing.assert_allclose(np.asarray(wb), w_ref_b, atol=1e-6)
    assert abs(float(bb) - b_ref) <= 1e-6 and float(info_b.rel_gap) <= TOL
    if newton.native_available():  # what proximal.solve runs for this shape
        assert newton.hessian_mode(data, m) == "native"
        nat = _newton(data, gamma, m)
        np.testing.assert_allclose(np.asarray(nat.w), np.asarray(w), atol=1e-7)


def test_float32_default_tolerance():
    E, t, data64 = _problem(8, "dense_e")
    m = E.shape[1]
    gamma = 0.05 * O.gamma_max(E, t)
    data = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, data64)
    st = proximal.solve(
        data, jnp.float32(gamma), jnp.zeros(m, jnp.float32), jnp.float32(0.0), jnp.float32(1.0), jnp.float32(1e-5), solver="newton"
    )
    assert st.w.dtype == jnp.float32 and float(st.rel_gap) <= 1e-5
    w_ref, _ = O.l1_logistic(E, t, gamma)
    np.testing.assert_allclose(np.asarray(st.w, np.float64), w_ref, atol=2e-3)


def test_bad_input_errors(monkeypatch):
    E, t, data = _problem(0, "pairs")
    m = E.shape[1]
    with pytest.raises(ValueError, match="solver"):
        proximal.solve(data, 0.1, jnp.zeros(m), 0.0, 1.0, 1e-6, solver="bogus")
    with pytest.raises(ValueError, match="solver"):
        proximal.path(data, jnp.ones(2), jnp.zeros(m), 0.0, 1.0, 1e-6, solver="lbfgs")
    # Without the native kernel: too many annotators for the dense Hessian, 'newton' refuses and
    # 'auto' falls back to FISTA.
    monkeypatch.setitem(_native._state, "newton_cd.cc", False)
    big = newton.DENSE_MAX + 5
    with pytest.raises(ValueError, match="newton"):
        proximal.solve(data, 0.1, jnp.zeros(big), 0.0, 1.0, 1e-6, solver="newton")
    assert proximal.resolve_solver("auto", data, big) == "fista"
    # No vote pairs (as for a wide problem whose pair list would be too big): no Newton either.
    no_pairs = data._replace(pairs=None, q=jnp.zeros(600_000), row_mask=jnp.zeros(600_000, bool))
    assert newton.hessian_mode(no_pairs, m) is None
    with pytest.raises(ValueError, match="newton"):
        proximal.resolve_solver("newton", no_pairs, m)
    # ISTA stays ISTA under 'auto'.
    assert proximal.resolve_solver("auto", data, m, accelerated=False) == "ista"
    # The pair list is refused above the budget.
    row = np.repeat(np.arange(3), 4)
    assert problem.vote_pairs(row, np.tile(np.arange(64, 68), 3), 3, max_pairs=17, force=True) is None
    assert problem.vote_pairs(row, np.tile(np.arange(64, 68), 3), 3, force=True).shape == (2, 18)
    # With the native kernel, any number of annotators.
    monkeypatch.setitem(_native._state, "newton_cd.cc", True)
    assert newton.hessian_mode(no_pairs, big, native=True) == "native"
