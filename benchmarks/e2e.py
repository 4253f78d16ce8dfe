"""End to end as a user runs it: ``crowdstat fit votes.parquet --method M --out DIR`` in a fresh
process, timed from process start to outputs written (import, read + validate + id encoding,
compile, fit, writing lines.csv / annotators.csv / rewards.jsonl / fit.json), against
crowd-kit's DawidSkene ``fit`` alone on the same data (already in memory).

Each CLI run is done cold (no compilation cache: ``CROWDSTAT_NO_COMPILE_CACHE=1``, or the CLI
would use the user's default cache, filled by earlier runs) and warm (JAX's persistent
compilation cache in a directory of its own, through JAX_COMPILATION_CACHE_DIR, already filled
by one run); the child's peak RSS comes from ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run_cli(args, env) -> dict:
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "crowdstat", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN (max over children so far).
    if p.returncode != 0:
        raise RuntimeError(f"crowdstat {' '.join(args)} failed ({p.returncode}): {err.decode()[-2000:]}")
    return {"wall_s": wall, "stderr_tail": err.decode()[-300:]}


def _child_peak_rss_mib(args, env) -> float:
    """Peak RSS (MiB, VmHWM) of one CLI run: ``benchmarks.e2e --rss`` runs crowdstat's ``main`` in
    a fresh process and prints its own high-water mark (ru_maxrss would include the parent's)."""
    p = subprocess.run([sys.executable, "-m", "benchmarks.e2e", "--rss", *args], env=env, capture_output=True, text=True, check=True)
    return float(p.stdout.strip().splitlines()[-1])


def run(n_votes: int, methods=("em2", "majority"), repeat=3, seed=0, workdir=None, measure_rss=True) -> dict:
    from benchmarks.agg import em2_available
    from benchmarks.data import synth

    tmp = Path(workdir or tempfile.mkdtemp(prefix="crowdstat-e2e-"))
    tmp.mkdir(parents=True, exist_ok=True)
    from benchmarks.agg import annotators_for

    s = synth(n_votes, n_annotators=annotators_for(n_votes), seed=seed)
    df = s.frame()
    path = tmp / "votes.parquet"
    df.to_parquet(path, index=False)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    cache = tmp / "jax-cache"
    warm_env = {
        **base_env,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    res: dict = {"n_votes": len(df), "parquet_bytes": path.stat().st_size, "methods": {}}
    t_imp = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import crowdstat.api, jax.numpy"], env=base_env, check=True)
        t_imp.append(time.perf_counter() - t)
    res["python_import_s"] = sorted(t_imp)[1]
    for m in methods:
        if m == "em2" and not em2_available():
            res["methods"][m] = {"skipped": "em2 not in this checkout yet"}
            print(f"  e2e {m}: skipped (em2 not available yet)", flush=True)
            continue
        args = ["fit", str(path), "--method", m, "--out", str(tmp / f"out-{m}")]
        cold = [_run_cli(args, {**base_env, "CROWDSTAT_NO_COMPILE_CACHE": "1"})["wall_s"] for _ in range(repeat)]
        _run_cli(args, warm_env)  # fill the cache
        warm = [_run_cli(args, warm_env)["wall_s"] for _ in range(repeat)]
        rss = _child_peak_rss_mib(args, warm_env) if measure_rss else None
        fitj = json.loads((tmp / f"out-{m}" / "fit.json").read_text())
        d = fitj.get("diagnostics", {})
        cold.sort()
        warm.sort()
        res["methods"][m] = {
            "cold_s": cold[len(cold) // 2],
            "warm_cache_s": warm[len(warm) // 2],
            "peak_rss_mib": rss,
            "seconds_read": d.get("seconds_read"),
            "seconds_fit": d.get("seconds_fit"),
            "seconds_total_in_fit": d.get("seconds_total"),
        }
        r = res["methods"][m]
        print(
            f"  e2e {m} n={len(df):,}: cold {r['cold_s']:.2f}s, warm cache {r['warm_cache_s']:.2f}s "
            f"(read {r['seconds_read']:.2f}s, fit {r['seconds_fit']:.2f}s), peak RSS "
            + (f"{rss:.0f} MiB" if rss is not None else "n/a (not measured in --smoke)")
            + f"; python+jax import {res['python_import_s']:.2f}s",
            flush=True,
        )
    return res


if __name__ == "__main__" and sys.argv[1:2] == ["--rss"]:
    import contextlib
    import io

    from benchmarks._util import peak_rss_mib
    from crowdstat.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(sys.argv[2:])
    if rc != 0:
        raise SystemExit(rc)
    print(peak_rss_mib())
