"""The ELLPACK kernels (crowdstat.estimators.ell.ell_layout / *_ell) against the plain-Python oracle
(eq. 7 and rewards from docs/math.md) and against the vote-list kernels, plus the layout's refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from crowdstat._typing import VoteArrays
from crowdstat.estimators import ell, posterior
from crowdstat.io.tables import read_votes
from tests.reference import oracles as O
from tests.strategies import random_tables, vote_tables


def _oracle(votes_df, w_by_id, prior_logit, tau):
    rows = list(votes_df.itertuples(index=False, name=None))
    post = O.posteriors(rows, w_by_id, prior_logit=prior_logit)
    return post, O.rewards(post, tau=tau)


def _check(table, w, prior_logit, tau, tol):
    v = table.arrays
    lay = ell.ell_layout(v, max_width=64, max_fill=100.0)
    assert lay is not None
    p, rw = ell.posteriors_and_rewards_ell(jnp.asarray(w), lay, jnp.asarray(prior_logit, w.dtype), jnp.asarray(tau, w.dtype))
    l_seg, p_seg, rw_seg = posterior.posteriors_and_rewards(jnp.asarray(w), v, jnp.asarray(prior_logit, w.dtype), jnp.asarray(tau, w.dtype))
    np.testing.assert_allclose(np.asarray(p), np.asarray(p_seg), rtol=0, atol=tol)
    l_ell = ell.line_logits_ell(jnp.asarray(w), lay, prior_logit)
    np.testing.assert_allclose(np.asarray(l_ell), np.asarray(l_seg), rtol=tol, atol=tol)
    for a, b in zip(rw, rw_seg):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)
    return p, rw, lay


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ell_equals_oracle_on_ragged_tables(seed):
    votes, _ = random_tables(seed, n_programs=9, max_lines=7, n_annotators=11, p_vote=0.45)
    table = read_votes(votes)
    rng = np.random.default_rng(seed)
    w = rng.normal(0.5, 1.5, table.n_annotators)
    prior_logit, tau = float(rng.normal()), 0.5
    p, rw, lay = _check(table, w.astype(np.float64), prior_logit, tau, 1e-12)
    post, rew = _oracle(votes, dict(zip(table.annotators, w)), prior_logit, tau)
    keys = list(zip(table.programs[table.arrays.line_program], table.line_numbers.tolist()))
    np.testing.assert_allclose(np.asarray(p), [post[k] for k in keys], rtol=0, atol=1e-12)
    by_prog = {r["program"]: r for r in rew}
    want = [by_prog[g] for g in table.programs]
    np.testing.assert_allclose(np.asarray(rw.reward_soft), [r["reward_soft"] for r in want], atol=1e-12)
    np.testing.assert_allclose(np.asarray(rw.reward), [r["reward"] for r in want], atol=1e-12)
    np.testing.assert_array_equal(np.asarray(rw.n_annotated), [r["n_annotated"] for r in want])
    # ragged: padding is present in both stages (empty slots; empty grid cells, so lines map to cells)
    assert (np.asarray(lay.slots) == 0).any() and lay.grid_width > 0 and lay.line_cell.shape == (table.arrays.n_lines,)
    assert lay.slots.shape[1] == lay.grid_width * len(table.programs) > table.arrays.n_lines


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vote_tables(max_programs=4, max_lines=5, max_annotators=6))
def test_ell_equals_vote_list_kernel(tables):
    votes, _ = tables
    table = read_votes(votes)
    w = np.random.default_rng(len(votes)).normal(0, 2, table.n_annotators)
    with jax.disable_jit():  # op by op: every drawn shape would otherwise compile twice
        _check(table, w, 0.3, 0.5, 1e-12)


def _uniform(n_lines, k, m, lines_per_prog, rng):
    line = np.repeat(np.arange(n_lines, dtype=np.int32), k)
    ann = np.concatenate([rng.choice(m, k, replace=False) for _ in range(n_lines)]).astype(np.int32)
    lab = rng.choice(np.array([-1, 1], np.int8), n_lines * k)
    lp = (np.arange(n_lines) // lines_per_prog).astype(np.int32)
    n_prog = int(lp[-1]) + 1
    return VoteArrays(line, ann, lab, lp, np.zeros(n_lines, np.int8), np.full(n_prog, lines_per_prog + 2, np.int32))


def test_ell_float32_and_coverage():
    rng = np.random.default_rng(5)
    v = _uniform(600, 4, 30, 6, rng)
    lay = ell.ell_layout(v)
    assert lay.slots.shape == (4, 600) and lay.grid_width == 6 and lay.line_cell.shape == (0,)  # cells = lines
    assert not (np.asarray(lay.slots) == 0).any()
    w = jnp.asarray(rng.normal(0.8, 1, 30), jnp.float32)
    p, rw = ell.posteriors_and_rewards_ell(w, lay, jnp.float32(-0.2), jnp.float32(0.6))
    wn = np.asarray(w, np.float64)
    l_ref = np.bincount(v.line, weights=wn[v.annotator] * v.label, minlength=600) - 0.2
    p_ref = 1 / (1 + np.exp(-l_ref))
    np.testing.assert_allclose(np.asarray(p), p_ref, atol=2e-6)
    k = np.bincount(v.line_program)
    np.testing.assert_allclose(np.asarray(rw.coverage), k / (6 + 2))
    np.testing.assert_allclose(np.asarray(rw.reward_soft), np.bincount(v.line_program, p_ref) / k, atol=2e-6)


def test_ell_refuses_ragged_and_falls_back_for_programs():
    rng = np.random.default_rng(1)
    v = _uniform(40, 2, 10, 4, rng)
    # one line with 30 votes: width 30 > 2 x the vote list -> no layout
    extra = 28
    line = np.concatenate([v.line, np.zeros(extra, np.int32)])
    order = np.argsort(line, kind="stable")
    ann = np.concatenate([v.annotator, 10 + np.arange(extra, dtype=np.int32)])[order]
    lab = np.concatenate([v.label, np.ones(extra, np.int8)])[order]
    ragged = v._replace(line=line[order], annotator=ann, label=lab)
    assert ell.ell_layout(ragged) is None
    assert ell.ell_layout(ragged, max_fill=20.0) is not None
    assert ell.ell_layout(ragged, max_width=16, max_fill=20.0) is None
    # ragged programs only: the line stage is ELL, the program sums fall back to a segment-sum
    lp = np.zeros(40, np.int32)
    lp[30:] = np.arange(1, 11)
    v2 = v._replace(line_program=lp, program_size=np.full(11, 30, np.int32))
    lay = ell.ell_layout(v2, max_fill=2.0)
    assert lay is not None and lay.grid_width == 0 and lay.slots.shape[1] == 40
    w = jnp.asarray(rng.normal(size=10 + extra))
    p, rw = ell.posteriors_and_rewards_ell(w, lay, 0.0, 0.5)
    _, p2, rw2 = posterior.posteriors_and_rewards(w, v2, 0.0, 0.5)
    np.testing.assert_allclose(np.asarray(p), np.asarray(p2), atol=1e-6)
    np.testing.assert_allclose(np.asarray(rw.reward), np.asarray(rw2.reward), atol=1e-6)


def test_ell_grid_with_lines_out_of_program_order():
    """Lines need not be sorted by program: each line's cell comes from its rank in its program."""
    rng = np.random.default_rng(4)
    v = _uniform(60, 3, 12, 5, rng)
    lp = rng.permutation(np.repeat(np.arange(15, dtype=np.int32), 4))  # 15 programs of 4 lines, shuffled
    lp[:3] = 15  # and a 16th program of 3 lines: one empty cell
    v = v._replace(line_program=lp, program_size=np.full(16, 5, np.int32))
    lay = ell.ell_layout(v)
    assert lay.grid_width == 4 and lay.slots.shape == (3, 64) and lay.line_cell.shape == (60,)
    w = jnp.asarray(rng.normal(0.3, 1.2, 12))
    p, rw = ell.posteriors_and_rewards_ell(w, lay, 0.4, 0.5)
    wn = np.asarray(w)
    p_ref = 1 / (1 + np.exp(-(np.bincount(v.line, weights=wn[v.annotator] * v.label, minlength=60) + 0.4)))
    k = np.bincount(lp, minlength=16)
    want = [np.bincount(lp, p_ref > 0.5, 16) / k, np.bincount(lp, p_ref, 16) / k, k, k / 5]
    np.testing.assert_allclose(np.asarray(p), p_ref, atol=1e-12)
    for got in (rw, ell.rewards_ell(p, lay, 0.5)):  # the driver and the per-line entry point
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), b, atol=1e-12)


def test_ell_bad_input():
    rng = np.random.default_rng(2)
    v = _uniform(20, 3, 8, 5, rng)
    lay = ell.ell_layout(v)
    with pytest.raises(ValueError, match="w has 5 entries but the votes name 8 annotators"):
        ell.posteriors_and_rewards_ell(jnp.zeros(5), lay, 0.0, 0.5)
    unsorted = v._replace(line=v.line[::-1].copy())
    with pytest.raises(ValueError, match="sorted"):
        ell.ell_layout(unsorted)


def test_ell_int32_slots_above_16384_annotators():
    rng = np.random.default_rng(3)
    v = _uniform(300, 3, 20000, 5, rng)
    lay = ell.ell_layout(v)
    assert lay.slots.dtype == jnp.int32 and lay.n_annotators == int(v.annotator.max()) + 1
    small = ell.ell_layout(v._replace(annotator=(v.annotator % 1000).astype(np.int32)))
    assert small is not None and small.slots.dtype == jnp.int16
    w = jnp.asarray(rng.normal(size=20000))
    p, _ = ell.posteriors_and_rewards_ell(w, lay, 0.0, 0.5)
    wn = np.asarray(w)
    l_ref = np.bincount(v.line, weights=wn[v.annotator] * v.label, minlength=300)
    np.testing.assert_allclose(np.asarray(p), 1 / (1 + np.exp(-l_ref)), atol=1e-6)
