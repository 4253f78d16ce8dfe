"""K1: line posteriors (eq. 7) and rewards.

Competitors, same data, same weights:
- crowdstat: ``ell.posteriors_and_rewards_ell`` (jitted, float32) on the ELLPACK layout
  built once on the host (``ell.ell_layout``, its build time reported apart, like a sort
  done once); also the vote-list kernel ``posterior.posteriors_and_rewards`` (one sorted
  segment-sum), which needs no layout;
- numpy: vectorised, two ``np.bincount`` segment sums (float64, NumPy's natural dtype);
- python: the paper's sample-code style, a dict loop over votes (timed on at most
  ``python_cap`` votes, reported per vote; it is linear in the votes);
- bandwidth limit: 9 bytes touched per vote (int32 line + int32 annotator + int8 label) divided
  by the measured copy bandwidth.
Before any timing counts, the posteriors and rewards of every competitor are checked against
the float64 NumPy reference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial

import numpy as np

from benchmarks._util import jit_timing, ns_per, timeit

BYTES_PER_VOTE = 9


def python_loop(line, annotator, label, line_program, w, prior_logit, tau):
    """Eq. (7) and rewards the way the paper's sample code does it: dicts and a loop over votes."""
    logit = defaultdict(lambda: prior_logit)
    for j, i, e in zip(line, annotator, label):
        logit[j] += e * w[i]
    post = {j: 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0 for j, x in logit.items()}
    k = defaultdict(int)
    c = defaultdict(int)
    soft = defaultdict(float)
    for j, pj in post.items():
        g = line_program[j]
        k[g] += 1
        c[g] += pj > tau
        soft[g] += pj
    reward = {g: c[g] / k[g] for g in k}
    reward_soft = {g: soft[g] / k[g] for g in k}
    return post, reward, reward_soft


def numpy_vectorised(v, w, prior_logit, tau):
    n_lines = v.line_program.shape[0]
    n_prog = v.program_size.shape[0]
    l = np.bincount(v.line, weights=w[v.annotator] * v.label, minlength=n_lines) + prior_logit
    p = 0.5 * (1.0 + np.tanh(0.5 * l))
    k = np.bincount(v.line_program, minlength=n_prog)
    c = np.bincount(v.line_program, weights=(p > tau), minlength=n_prog)
    soft = np.bincount(v.line_program, weights=p, minlength=n_prog)
    kk = np.maximum(k, 1)
    return l, p, c / kk, soft / kk


def run(sizes, repeat=5, python_cap=10**6, seed=0):
    import jax
    import jax.numpy as jnp

    from benchmarks.data import synth
    from crowdstat.estimators import ell, posterior

    rows = []
    for n in sizes:
        s = synth(n, seed=seed)
        v = s.votes
        n = v.n_votes
        rng = np.random.default_rng(seed + 1)
        w64 = rng.normal(0.8, 1.0, s.n_annotators)
        prior_logit, tau = 0.0, 0.5

        # Reference (float64 NumPy) and equality checks before timing.
        l_ref, p_ref, r_ref, rs_ref = numpy_vectorised(v, w64, prior_logit, tau)
        vd = jax.device_put(v)
        w32 = jnp.asarray(w64, jnp.float32)
        pl, tu = jnp.asarray(prior_logit, jnp.float32), jnp.asarray(tau, jnp.float32)
        import time as _time

        t0 = _time.perf_counter()
        layout = ell.ell_layout(v)
        layout_s = _time.perf_counter() - t0
        assert layout is not None, "benchmark data has uniform votes per line: the ELL layout must apply"
        # partial, not a lambda: the callables hold their arguments, and the `del` at the end of the
        # iteration drops callables and arguments together (device memory before the next size).
        f = partial(ell.posteriors_and_rewards_ell, w32, layout, pl, tu)
        t_cs = jit_timing(f, repeat=repeat, min_time=0.5)  # first call = trace + compile
        f_seg = partial(posterior.posteriors_and_rewards, w32, vd, pl, tu)
        t_seg = jit_timing(f_seg, repeat=repeat, min_time=0.5)
        l_seg = t_seg["result"][0]
        err_l = float(np.max(np.abs(np.asarray(l_seg, np.float64) - l_ref) / np.maximum(1.0, np.abs(l_ref))))
        near = np.abs(p_ref - tau) < 1e-5
        for name, (p_cs, rw) in (("ell", t_cs["result"]), ("segment", t_seg["result"][1:])):
            err_p = float(np.max(np.abs(np.asarray(p_cs, np.float64) - p_ref)))
            # Reward s = c / k can differ only where a posterior sits within float32 rounding of tau.
            ok_r = np.allclose(np.asarray(rw.reward_soft, np.float64), rs_ref, atol=1e-5)
            ok = err_p < 1e-5 and err_l < 1e-5 and ok_r
            assert ok, f"K1 crowdstat ({name}) != reference at n={n}: max|dP|={err_p:.3g}, rel dl={err_l:.3g}, rewards ok={ok_r}"
            if not near.any():
                assert np.allclose(np.asarray(rw.reward, np.float64), r_ref, atol=1e-6)
        err_p = float(np.max(np.abs(np.asarray(t_cs["result"][0], np.float64) - p_ref)))

        t_np = timeit(lambda: numpy_vectorised(v, w64, prior_logit, tau), repeat=max(3, repeat // 2))

        # Plain Python on at most python_cap votes (whole lines), per vote.
        n_py = min(n, python_cap)
        n_py_lines = int(v.line[n_py - 1]) + 1
        sl = slice(0, int(np.searchsorted(v.line, n_py_lines)))
        args = (
            v.line[sl].tolist(),
            v.annotator[sl].tolist(),
            v.label[sl].tolist(),
            v.line_program.tolist(),
            w64.tolist(),
            prior_logit,
            tau,
        )
        t_py = timeit(lambda: python_loop(*args), repeat=1 if n_py >= 10**6 else 3, warmup=False)
        post_py = t_py["result"][0]
        js = np.fromiter(post_py.keys(), np.int64)
        assert np.allclose(np.fromiter(post_py.values(), float), p_ref[js], atol=1e-12), "K1 python loop != reference"
        py_ns = t_py["median_s"] / (sl.stop - sl.start) * 1e9

        rows.append(
            {
                "n_votes": n,
                "crowdstat_ns_per_vote": ns_per(t_cs["median_s"], n),
                "crowdstat_s": t_cs["median_s"],
                "crowdstat_compile_s": t_cs["compile_s"],
                "ell_layout_build_s": layout_s,
                "segment_ns_per_vote": ns_per(t_seg["median_s"], n),
                "segment_compile_s": t_seg["compile_s"],
                "numpy_ns_per_vote": ns_per(t_np["median_s"], n),
                "numpy_s": t_np["median_s"],
                "python_ns_per_vote": py_ns,
                "python_votes_timed": sl.stop - sl.start,
                "max_abs_dposterior_vs_ref": err_p,
                "speedup_vs_numpy": t_np["median_s"] / t_cs["median_s"],
                "speedup_vs_python": py_ns / ns_per(t_cs["median_s"], n),
                "runs": t_cs["runs"],
            }
        )
        print(
            f"  K1 n={n:>9,}: crowdstat {rows[-1]['crowdstat_ns_per_vote']:.2f} ns/vote "
            f"(compile {t_cs['compile_s']:.2f}s, layout {layout_s:.2f}s; vote-list "
            f"{rows[-1]['segment_ns_per_vote']:.2f}), numpy {rows[-1]['numpy_ns_per_vote']:.2f}, python "
            f"{py_ns:.0f} ns/vote",
            flush=True,
        )
        del f, f_seg, vd, layout
    return rows
