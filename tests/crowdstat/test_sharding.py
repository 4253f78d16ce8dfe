"""The vote arrays sharded across 2 CPU devices give the unsharded results (docs/performance.md).

Runs in a subprocess because the device count is fixed when JAX starts:
XLA_FLAGS=--xla_force_host_platform_device_count=2. Two ways are checked:

- automatic (GSPMD): the vote arrays carry a NamedSharding over the vote axis and the library's
  own jitted ``posteriors_and_rewards`` / ``proximal.solve`` run unchanged (XLA inserts the
  cross-device reductions);
- explicit: ``jax.shard_map`` computes each device's partial eq.-7 segment sums over its shard
  of the votes and ``psum`` adds them, which is the pattern for several GPUs or hosts.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    r"""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    from crowdstat._typing import VoteArrays
    from crowdstat.estimators import posterior
    from crowdstat.estimators.l1 import problem
    from crowdstat.estimators.l1 import solve as proximal

    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    n_lines, k, m = 501, 5, 40
    line = np.repeat(np.arange(n_lines, dtype=np.int32), k)
    ann = np.concatenate([rng.choice(m, k, replace=False) for _ in range(n_lines)]).astype(np.int32)
    label = rng.choice(np.array([-1, 1], np.int8), line.shape[0])
    # Pad the vote axis to a multiple of the device count with label-0 votes (they add nothing).
    pad = (-line.shape[0]) % 2
    line = np.concatenate([line, np.full(pad, n_lines - 1, np.int32)])
    ann = np.concatenate([ann, np.zeros(pad, np.int32)])
    label = np.concatenate([label, np.zeros(pad, np.int8)])
    line_program = (np.arange(n_lines) // 7).astype(np.int32)
    truth = np.where(rng.random(n_lines) < 0.5, rng.choice([-1, 1], n_lines), 0).astype(np.int8)
    votes = VoteArrays(line, ann, label, line_program, truth, np.bincount(line_program).astype(np.int32))
    w = jnp.asarray(rng.normal(0.5, 1.0, m))

    # Auto axes: GSPMD propagates the sharding through the library's unchanged kernels.
    mesh = jax.make_mesh((2,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))
    by_vote = NamedSharding(mesh, P("v"))
    repl = NamedSharding(mesh, P())
    sharded = VoteArrays(*(jax.device_put(x, by_vote if i < 3 else repl) for i, x in enumerate(votes)))
    assert len(sharded.line.sharding.device_set) == 2 and not sharded.line.sharding.is_fully_replicated

    # 1. Automatic partitioning of the library's jitted K1 driver.
    ref = posterior.posteriors_and_rewards(w, jax.device_put(votes), 0.0, 0.5)
    out = posterior.posteriors_and_rewards(jax.device_put(w, repl), sharded, 0.0, 0.5)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)

    # 2. Explicit shard_map: per-device partial segment sums, then psum over the devices.
    def partial_logits(w, line, ann, label):
        s = jax.ops.segment_sum(label.astype(w.dtype) * w[ann], line, num_segments=n_lines, indices_are_sorted=True)
        return jax.lax.psum(s, "v")

    f = jax.jit(jax.shard_map(partial_logits, mesh=mesh, in_specs=(P(), P("v"), P("v"), P("v")), out_specs=P()))
    l_sm = f(w, sharded.line, sharded.annotator, sharded.label)
    np.testing.assert_allclose(np.asarray(l_sm), np.asarray(ref[0]), rtol=1e-12, atol=1e-12)

    # 3. A proximal solve on sharded training votes equals the unsharded one.
    data = problem.training_data(votes, jnp.float64)
    pad = (-data.row.shape[0]) % 2
    padv = lambda x, v: jnp.concatenate([x, jnp.full(pad, v, x.dtype)])
    data = data._replace(row=padv(data.row, data.q.shape[0] - 1), annotator=padv(data.annotator, 0), label=padv(data.label, 0.0))
    data_s = data._replace(row=jax.device_put(data.row, by_vote), annotator=jax.device_put(data.annotator, by_vote),
                           label=jax.device_put(data.label, by_vote))
    gamma = 0.05 * float(problem.gamma_max(data, m))
    step = 1.0 / float(problem.lipschitz(data, m))
    z = jnp.zeros(m)
    s_ref = proximal.solve(data, gamma, z, 0.0, step, 1e-10)
    s_sh = proximal.solve(data_s, gamma, jax.device_put(z, repl), 0.0, step, 1e-10)
    assert float(s_ref.rel_gap) <= 1e-10 and float(s_sh.rel_gap) <= 1e-10
    np.testing.assert_allclose(np.asarray(s_sh.w), np.asarray(s_ref.w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(s_sh.objective), float(s_ref.objective), rtol=1e-10)
    print("SHARDING-OK")
    """
)


def test_sharded_votes_match_unsharded():
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "SHARDING-OK" in p.stdout
