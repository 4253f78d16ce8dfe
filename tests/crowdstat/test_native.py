"""The native CPU kernel of eq. (8) (crowdstat/_native, called through the XLA FFI) against the
pure-JAX lax.scan and the plain-Python oracle, its fallback and its bad input."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdstat import _native
from crowdstat.estimators import sequential as seq
from crowdstat.io.tables import read_votes
from tests.reference import oracles as O
from tests.strategies import random_tables

pytestmark = pytest.mark.skipif(_native.sequential_target() is None, reason="no C++ compiler: native kernel unavailable")


def _blocks(seed, **kw):
    votes, truth = random_tables(seed, n_programs=kw.pop("n_programs", 15), max_lines=6, n_annotators=9, p_vote=0.6, p_honeypot=0.3)
    table = read_votes(votes, truth)
    return votes, truth, table, seq.task_blocks(table.arrays)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("w_max", [np.inf, 1.5])
def test_native_equals_scan(dtype, w_max):
    with jax.enable_x64(dtype == jnp.float64):
        for seed in range(3):
            _, _, table, blocks = _blocks(seed)
            params = seq.make_params(lam=0.7, pbar_honeypot=0.95, w_max=w_max, prior=0.4, dtype=dtype)
            w0 = jnp.asarray(np.random.default_rng(seed).normal(0.5, 2.0, table.n_annotators), dtype)
            a_state, a_info = seq.run(blocks, w0, params, keep_trajectory=True, backend="xla")
            b_state, b_info = seq.run(blocks, w0, params, keep_trajectory=True, backend="native")
            assert b_state.w.dtype == dtype
            tol = 1e-5 if dtype == jnp.float32 else 1e-12
            np.testing.assert_allclose(np.asarray(b_state.w), np.asarray(a_state.w), rtol=tol, atol=tol)
            np.testing.assert_allclose(np.asarray(b_info.w), np.asarray(a_info.w), rtol=tol, atol=tol)
            np.testing.assert_array_equal(np.asarray(b_info.n_updates), np.asarray(a_info.n_updates))
            assert int(b_state.n_tasks) == blocks.label.shape[0]
            if np.isfinite(w_max):
                assert float(jnp.abs(b_info.w).max()) <= w_max + 1e-6


def test_native_equals_python_oracle():
    with jax.enable_x64(True):
        votes, truth, table, blocks = _blocks(7, n_programs=20)
        params = seq.make_params(lam=0.2, pbar_honeypot=0.99, w_max=6.0, prior=0.5, dtype=jnp.float64)
        w0 = seq.init(table.n_annotators, nu=0.7, w_max=6.0, dtype=jnp.float64).w
        state, info = seq.run(blocks, w0, params, keep_trajectory=False, backend="native")
        rows = list(votes.itertuples(index=False, name=None))
        hp = {(p, l): t for p, l, t in truth.itertuples(index=False, name=None)}
        want_w, _ = O.sequential(rows, hp, lam=0.2, nu=0.7, pbar_honeypot=0.99, w_max=6.0)
        got = dict(zip(table.annotators, np.asarray(state.w).tolist()))
        assert set(got) == set(want_w)
        for a, wa in want_w.items():
            assert got[a] == pytest.approx(wa, abs=1e-9), a
        assert info.w is None and len({round(x, 6) for x in got.values()}) > 3


def test_native_under_vmap_over_lam():
    _, _, table, blocks = _blocks(3)
    w0 = seq.init(table.n_annotators).w
    lams = jnp.asarray([0.1, 0.5, 1.0], jnp.float32)

    def final(lam, backend):
        p = seq.make_params(lam=1.0)._replace(lam=lam)
        return seq.run(blocks, w0, p, keep_trajectory=False, backend=backend)[0].w

    got = jax.vmap(lambda l: final(l, "native"))(lams)
    want = jax.vmap(lambda l: final(l, "xla"))(lams)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_backend_argument_is_checked():
    _, _, table, blocks = _blocks(1)
    with pytest.raises(ValueError, match="backend must be"):
        seq.run(blocks, seq.init(table.n_annotators).w, seq.make_params(), backend="gpu")


def test_disabled_native_falls_back_to_scan(tmp_path):
    code = (
        "import jax.numpy as jnp, numpy as np\n"
        "from crowdstat import _native\nfrom crowdstat.estimators import sequential as seq\n"
        "assert _native.sequential_target() is None\n"
        "b = seq.TaskBlocks(np.zeros((2, 2), np.int32), np.array([[0, 1], [1, 0]], np.int32),\n"
        "                   np.array([[1, -1], [1, 1]], np.int8), np.zeros((2, 2), np.int8), np.zeros(1, np.int8))\n"
        "s, _ = seq.run(b, jnp.zeros(2), seq.make_params())\n"
        "print(np.asarray(s.w).tolist())\n"
        "try:\n    seq.run(b, jnp.zeros(2), seq.make_params(), backend='native')\n"
        "except RuntimeError as e:\n    print('native refused:', e)\n"
    )
    env = dict(os.environ, CROWDSTAT_NATIVE="0", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=os.getcwd(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "native refused: backend='native'" in r.stdout
    # prior 1/2: first task l = w0 = 0 on the one line -> sign 0, no update; weights stay 0
    assert r.stdout.splitlines()[0] == "[0.0, 0.0]"


def test_native_any_vote_order_and_interior_padding():
    """The kernel sums runs of one line in a register; votes out of line order, and padding
    (label 0) between real votes, must give the scan's weights all the same."""
    _, _, table, blocks = _blocks(11, n_programs=25)
    rng = np.random.default_rng(0)
    n_tasks, b = blocks.label.shape
    wide = [np.zeros((n_tasks, 2 * b), x.dtype) for x in blocks[:4]]
    for t in range(n_tasks):
        slots = np.sort(rng.choice(2 * b, size=b, replace=False))  # padding scattered inside
        order = rng.permutation(b)
        for dst, src in zip(wide, blocks[:4]):
            dst[t, slots] = src[t, order]
    shuffled = seq.TaskBlocks(*wide, blocks.n_lines_block)
    params = seq.make_params(lam=0.3, pbar_honeypot=0.9, w_max=4.0, prior=0.6)
    w0 = seq.init(table.n_annotators, nu=0.65).w
    want, want_info = seq.run(blocks, w0, params, keep_trajectory=True, backend="xla")
    got, got_info = seq.run(shuffled, w0, params, keep_trajectory=True, backend="native")
    np.testing.assert_allclose(np.asarray(got.w), np.asarray(want.w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_info.w), np.asarray(want_info.w), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got_info.n_updates), np.asarray(want_info.n_updates))


@pytest.mark.parametrize("field, value", [("annotator", 9), ("annotator", -1), ("line_local", 99)])
def test_native_rejects_out_of_range_indices(field, value):
    _, _, table, blocks = _blocks(2)
    arr = getattr(blocks, field).copy()
    arr[-1, 0] = value  # the last task: the kernel has already run the others
    bad = blocks._replace(**{field: arr})
    w0 = seq.init(table.n_annotators).w
    with pytest.raises(Exception, match="vote index out of range"):
        jax.block_until_ready(seq.run(bad, w0, seq.make_params(), keep_trajectory=False, backend="native"))
