"""Peak RSS of the kernels at a given size, in a fresh process: ``python -m benchmarks.memory N``.

Builds the integer-coded arrays of N votes (int32 line, int32 annotator, int8 label: 9 bytes a
vote), moves them to the device, runs K1 (posteriors and rewards), majority vote and the
sequential scan (no trajectory), and prints one JSON line with the peak RSS (ru_maxrss).
"""

from __future__ import annotations

import json
import subprocess
import sys


def measure(n: int) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks._util import peak_rss_mib
    from benchmarks.data import synth
    from crowdstat.estimators import posterior
    from crowdstat.estimators import sequential as seq
    from crowdstat.estimators.majority import majority

    rss = {"start_mib": peak_rss_mib()}
    s = synth(n)
    v = s.votes
    rss["after_data_mib"] = peak_rss_mib()
    vd = jax.device_put(v)
    m = s.n_annotators
    w = jnp.full(m, 0.8, jnp.float32)
    jax.block_until_ready(posterior.posteriors_and_rewards(w, vd, jnp.float32(0), jnp.float32(0.5)))
    rss["after_k1_mib"] = peak_rss_mib()
    jax.block_until_ready(majority(vd, jnp.zeros(m, jnp.float32), jnp.float32(1e-6)))
    blocks = seq.task_blocks(v)
    bd = jax.device_put(blocks)
    del blocks
    prm = seq.make_params(0.05, 0.99, 8.0)
    jax.block_until_ready(seq.run(bd, seq.init(m, 0.7, w_max=8.0).w, prm, keep_trajectory=False))
    rss["after_k2_mib"] = peak_rss_mib()
    return {
        "n_votes": v.n_votes,
        "vote_array_bytes": int(v.line.nbytes + v.annotator.nbytes + v.label.nbytes),
        "peak_rss_mib": peak_rss_mib(),
        "stages": rss,
    }


def run(n: int) -> dict:
    p = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(n)], capture_output=True, text=True, check=True)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"  memory n={r['n_votes']:,}: peak RSS {r['peak_rss_mib']:.0f} MiB (stages {r['stages']})", flush=True)
    return r


if __name__ == "__main__":
    print(json.dumps(measure(int(float(sys.argv[1])))))
