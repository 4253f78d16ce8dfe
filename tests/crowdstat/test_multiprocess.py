"""The sharded fit in two JAX processes (``jax.distributed``, CPU, gloo collectives) equals one process's fit.

tests/crowdstat/test_sharding.py shards the vote axis over 2 devices of one process; here the two
devices belong to two processes on this machine, as two hosts would (docs/scale.md):

    jax.distributed.initialize(coordinator_address="127.0.0.1:PORT", num_processes=2, process_id=i)

JAX 0.10.2's CPU backend runs cross-process collectives through gloo (``jax_cpu_collectives_implementation``
defaults to "gloo"; "mpi" is the other choice). Each process holds half of the votes
(``jax.make_array_from_process_local_data``) and the replicated weights; the library's jitted
``posteriors_and_rewards`` (GSPMD inserts the cross-process all-reduce), an explicit ``shard_map`` +
``psum`` and a proximal (L1) solve on the sharded training votes must equal the unsharded computation
of each process on its own device, and the two processes must agree.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    r"""
    import json, sys
    pid, port, out_path, with_l1 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "l1"
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    import jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec as P
    from crowdstat._typing import VoteArrays
    from crowdstat.estimators import posterior
    from crowdstat.estimators.l1 import problem
    from crowdstat.estimators.l1 import solve as proximal

    assert jax.process_count() == 2 and jax.process_index() == pid
    assert len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    rng = np.random.default_rng(0)  # the same table in both processes; each keeps its half of the votes
    n_lines, k, m = 501, 5, 40
    line = np.repeat(np.arange(n_lines, dtype=np.int32), k)
    ann = np.concatenate([rng.choice(m, k, replace=False) for _ in range(n_lines)]).astype(np.int32)
    label = rng.choice(np.array([-1, 1], np.int8), line.shape[0])
    pad = (-line.shape[0]) % 2  # label-0 votes add nothing
    line = np.concatenate([line, np.full(pad, n_lines - 1, np.int32)])
    ann = np.concatenate([ann, np.zeros(pad, np.int32)])
    label = np.concatenate([label, np.zeros(pad, np.int8)])
    line_program = (np.arange(n_lines) // 7).astype(np.int32)
    truth = np.where(rng.random(n_lines) < 0.5, rng.choice([-1, 1], n_lines), 0).astype(np.int8)
    votes = VoteArrays(line, ann, label, line_program, truth, np.bincount(line_program).astype(np.int32))
    w = rng.normal(0.5, 1.0, m)

    mesh = jax.make_mesh((2,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))
    by_vote, repl = NamedSharding(mesh, P("v")), NamedSharding(mesh, P())

    def mine(x):  # this process's contiguous half of a vote-axis array
        h = x.shape[0] // 2
        return x[pid * h:(pid + 1) * h]

    def shard(x):
        return jax.make_array_from_process_local_data(by_vote, mine(np.asarray(x)))

    def rep(x):
        return jax.make_array_from_process_local_data(repl, np.asarray(x))

    def fetch(x):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    here = jax.local_devices()[0]
    sharded = VoteArrays(*(shard(x) if i < 3 else rep(x) for i, x in enumerate(votes)))
    assert not sharded.line.is_fully_addressable and sharded.line.addressable_shards[0].data.shape[0] == line.shape[0] // 2
    out = {}

    # 1. the library's jitted posteriors and rewards on the global (2-process) arrays
    res = posterior.posteriors_and_rewards(rep(w), sharded, 0.0, 0.5)
    ref = posterior.posteriors_and_rewards(jax.device_put(w, here), jax.device_put(votes, here), 0.0, 0.5)
    for i, (a, b) in enumerate(zip(jax.tree.leaves(ref), jax.tree.leaves(res))):
        np.testing.assert_allclose(fetch(b), np.asarray(a), rtol=1e-12, atol=1e-12)
        out[f"posterior{i}"] = fetch(b).tolist()

    # 2. shard_map: each process's partial eq.-7 segment sums, psum over the processes
    def partial_logits(w, line, ann, label):
        s = jax.ops.segment_sum(label.astype(w.dtype) * w[ann], line, num_segments=n_lines, indices_are_sorted=True)
        return jax.lax.psum(s, "v")

    f = jax.jit(jax.shard_map(partial_logits, mesh=mesh, in_specs=(P(), P("v"), P("v"), P("v")), out_specs=P()))
    np.testing.assert_allclose(fetch(f(rep(w), sharded.line, sharded.annotator, sharded.label)), np.asarray(ref[0]),
                               rtol=1e-12, atol=1e-12)

    # 3. the proximal (L1) solve on the sharded training votes (slow: about 30 s of compilation on 2 cores)
    if with_l1:
        data = problem.training_data(votes, jnp.float64)._replace(pairs=None)
        pad = (-data.row.shape[0]) % 2
        padv = lambda x, v: np.concatenate([np.asarray(x), np.full(pad, v, np.asarray(x).dtype)])
        data = data._replace(row=padv(data.row, data.q.shape[0] - 1), annotator=padv(data.annotator, 0), label=padv(data.label, 0.0))
        local = jax.device_put(data, here)
        gamma = 0.05 * float(problem.gamma_max(local, m))
        step = 1.0 / float(problem.lipschitz(local, m))
        s_ref = proximal.solve(local, gamma, jnp.zeros(m), 0.0, step, 1e-10)
        glob = data._replace(row=shard(data.row), annotator=shard(data.annotator), label=shard(data.label),
                             q=rep(data.q), row_mask=rep(data.row_mask))
        s_sh = proximal.solve(glob, gamma, rep(np.zeros(m)), 0.0, step, 1e-10)
        assert float(s_ref.rel_gap) <= 1e-10 and float(fetch(s_sh.rel_gap)) <= 1e-10
        np.testing.assert_allclose(fetch(s_sh.w), np.asarray(s_ref.w), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(float(fetch(s_sh.objective)), float(s_ref.objective), rtol=1e-10)
        out["l1_w"] = fetch(s_sh.w).tolist()
        out["l1_objective"] = float(fetch(s_sh.objective))
    with open(out_path, "w") as fh:
        json.dump(out, fh)
    jax.distributed.shutdown()
    print("MULTIPROCESS-OK", pid)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(tmp_path, what: str) -> tuple[dict, dict]:
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
    port = _free_port()
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), str(port), str(outs[i]), what],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=300)
            logs.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (rc, o, e) in enumerate(logs):
        assert rc == 0 and f"MULTIPROCESS-OK {i}" in o, f"process {i} exited {rc}\n{e[-4000:]}"
    a, b = (json.loads(f.read_text()) for f in outs)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))  # replicated results: identical everywhere
    return a, b


def test_two_jax_processes_compute_the_posteriors_of_one(tmp_path):
    """Line logits, posteriors and rewards (and the shard_map/psum logits) over votes split across 2 processes."""
    a, _ = _run_pair(tmp_path, "posteriors")
    assert len(a["posterior0"]) == 501 and "l1_w" not in a


@pytest.mark.slow
def test_two_jax_processes_solve_the_l1_problem_of_one(tmp_path):
    """The proximal solve on training votes split across 2 processes: the unsharded weights and objective."""
    a, _ = _run_pair(tmp_path, "l1")
    assert len(a["l1_w"]) == 40 and np.count_nonzero(a["l1_w"]) > 0  # gamma below gamma_max: some weights are nonzero
