"""Compile-count guards (as blackjax tests/test_compilation.py): new parameters, or new data of
the same padded shape, must reuse the compiled program of every jitted driver.

Counts are taken from the jitted function's own cache (``_cache_size()``): the number of
compiled specialisations. Each test first compiles one specialisation, then checks that the
other calls add none, whatever other tests compiled before.
"""

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators import posterior
from crowdstat.estimators import sequential as seq
from crowdstat.estimators.l1 import problem
from crowdstat.estimators.l1 import solve as proximal
from crowdstat.estimators.majority import majority


def _votes(seed, n_prog=12, lines=4, k=3, m=9, honeypot=0.3):
    """Same shapes for every seed (n_prog programs x lines x k votes), different votes and truths."""
    rng = np.random.default_rng(seed)
    n_lines = n_prog * lines
    line = np.repeat(np.arange(n_lines, dtype=np.int32), k)
    ann = np.concatenate([rng.choice(m, k, replace=False) for _ in range(n_lines)]).astype(np.int32)
    label = rng.choice(np.array([-1, 1], np.int8), n_lines * k)
    line_program = (np.arange(n_lines) // lines).astype(np.int32)
    hp = rng.permutation(n_lines)[: int(honeypot * n_lines)]
    truth = np.zeros(n_lines, np.int8)
    truth[hp] = rng.choice(np.array([-1, 1], np.int8), hp.shape[0])
    return VoteArrays(line, ann, label, line_program, truth, np.full(n_prog, lines, np.int32)), m


def _grows(fn, calls):
    """Run calls[0] (may compile), then the rest; return how many compilations the rest added."""
    jax.block_until_ready(calls[0]())
    before = fn._cache_size()
    for c in calls[1:]:
        jax.block_until_ready(c())
    return fn._cache_size() - before


def test_sequential_run_compiles_once_for_new_params_and_data():
    tables = [_votes(s) for s in range(3)]
    blocks = [jax.device_put(seq.task_blocks(v)) for v, _ in tables]
    assert len({jax.tree.map(lambda x: x.shape, b) for b in blocks}) == 1  # same padded shape
    m = tables[0][1]
    w0 = seq.init(m, 0.7, dtype=jnp.float32).w
    calls = []
    for i, b in enumerate(blocks):
        for lam, ph, wmax in ((1.0, 0.99, np.inf), (0.1, 0.9, 3.0)):
            prm = seq.make_params(lam + i, ph, wmax, dtype=jnp.float32)
            calls.append(lambda b=b, prm=prm: seq.run(b, w0, prm, keep_trajectory=False))
    assert _grows(seq.run, calls) == 0


def test_streaming_step_equals_run_donates_the_state_and_compiles_once():
    """seq.step, task by task, gives run()'s weights and update counts; the state passed in is
    donated (its buffer reused, so it is deleted after the call); one compilation for all tasks."""
    v, m = _votes(5)
    blocks = seq.task_blocks(v)
    with jax.enable_x64(True):
        prm = seq.make_params(0.7, 0.95, 2.5, dtype=jnp.float64)
        w0 = seq.init(m, 0.7, w_max=2.5, dtype=jnp.float64).w
        ref, info = seq.run(jax.device_put(blocks), w0, prm, keep_trajectory=False, backend="xla")
        state = seq.SequentialState(w=jnp.array(w0), n_tasks=jnp.zeros((), jnp.int32))
        jax.block_until_ready(seq.step(seq.SequentialState(jnp.array(w0), jnp.zeros((), jnp.int32)), blocks.task(0), prm))
        before = seq.step._cache_size()
        counts = []
        for t in range(blocks.label.shape[0]):
            old = state
            state, n = seq.step(state, blocks.task(t), prm)
            counts.append(int(n))
            assert old.w.is_deleted()  # donated: updated in place, not copied
        assert seq.step._cache_size() == before
        np.testing.assert_allclose(np.asarray(state.w), np.asarray(ref.w), rtol=1e-13, atol=1e-13)
        assert int(state.n_tasks) == blocks.label.shape[0]
        np.testing.assert_array_equal(counts, np.asarray(info.n_updates))


def test_proximal_solve_and_path_compile_once_for_new_gamma_and_data():
    datas = [problem.training_data(_votes(s, honeypot=1.0)[0], jnp.float32) for s in range(3)]
    assert len({jax.tree.map(lambda x: x.shape, d) for d in datas}) == 1
    m = _votes(0)[1]
    z = jnp.zeros(m, jnp.float32)
    calls = [
        (lambda d=d, g=g: proximal.solve(d, jnp.float32(g), z, jnp.float32(0.0), jnp.float32(0.05), jnp.float32(1e-5), maxiter=200))
        for d in datas
        for g in (0.1, 0.5, 2.0)
    ]
    assert _grows(proximal.solve, calls) == 0
    gammas = [jnp.asarray(np.geomspace(3.0, 0.03, 5), jnp.float32), jnp.asarray(np.geomspace(2.0, 0.01, 5), jnp.float32)]
    calls = [
        (lambda d=d, g=g: proximal.path(d, g, z, jnp.float32(0.0), jnp.float32(0.05), jnp.float32(1e-5), maxiter=200))
        for d in datas
        for g in gammas
    ]
    assert _grows(proximal.path, calls) == 0
    # gamma_max and lipschitz (static m) too.
    assert _grows(problem.lipschitz, [lambda d=d: problem.lipschitz(d, m) for d in datas]) == 0


def test_posteriors_and_majority_compile_once_for_new_weights_and_data():
    tables = [jax.device_put(_votes(s)[0]) for s in range(3)]
    m = _votes(0)[1]
    rng = np.random.default_rng(0)
    weights = [jnp.asarray(rng.normal(size=m), jnp.float32) for _ in range(len(tables) * 2)]
    calls = [
        (lambda v=v, w=w, t=t: posterior.posteriors_and_rewards(w, v, jnp.float32(0.0), jnp.float32(t)))
        for (v, t), w in zip([(v, t) for v in tables for t in (0.5, 0.8)], weights)
    ]
    assert _grows(posterior.posteriors_and_rewards, calls) == 0
    z = jnp.zeros(m, jnp.float32)
    calls = [(lambda v=v, d=d: majority(v, z, jnp.float32(d))) for v in tables for d in (1e-6, 1e-3)]
    assert _grows(majority, calls) == 0


def test_a_new_padded_shape_does_compile():
    """The guard can fail: a different number of tasks is a new shape and a new program."""
    m = _votes(0)[1]
    w0 = seq.init(m, 0.7, dtype=jnp.float32).w
    prm = seq.make_params(dtype=jnp.float32)
    b1 = jax.device_put(seq.task_blocks(_votes(0, n_prog=12)[0]))
    b2 = jax.device_put(seq.task_blocks(_votes(0, n_prog=13)[0]))
    grown = _grows(seq.run, [lambda: seq.run(b1, w0, prm, keep_trajectory=False), lambda: seq.run(b2, w0, prm, keep_trajectory=False)])
    assert grown == 1
