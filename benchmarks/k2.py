"""K2: the sequential update, eq. (8), over all tasks.

Competitors, same data and parameters (lam = 0.05, w_max = 8 so that the weights stay finite
over 10^5 tasks, pbar_honeypot = 0.99, nu = 0.7):
- crowdstat: ``sequential.run`` (float32, no trajectory) with its default CPU backend, the native
  kernel called through the XLA FFI inside the jitted function; also the pure-JAX ``lax.scan``
  over padded task blocks (``backend="xla"``, the GPU path); the host-side grouping
  ``task_blocks`` is reported apart (done once per table);
- numpy: a Python loop over tasks with vectorised NumPy inside each task (float64);
- python: a Python loop over tasks and votes (the paper's sample-code style).
The two loop baselines cost a constant per task, so they are timed on the first tasks up to
``loop_cap`` votes and reported per vote. Equality: crowdstat in float64 against the NumPy
loop on those tasks (the weights must agree to 1e-9) before the timings count.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from benchmarks._util import jit_timing, ns_per, timeit

PARAMS = {"lam": 0.05, "pbar_honeypot": 0.99, "w_max": 8.0, "delta": 1e-6, "prior": 0.5, "nu": 0.7}


def _logit(p):
    return float(np.log(p) - np.log1p(-p))


def task_slices(v):
    """Vote offsets of each task (votes are sorted by line, lines by program)."""
    n_prog = v.program_size.shape[0]
    vpt = np.bincount(v.line_program[v.line], minlength=n_prog)
    return np.concatenate([[0], np.cumsum(vpt)])


def numpy_loop(v, n_tasks, w0, p):
    lam, cap, lph, pl, wmax = p["lam"], _logit(1 - p["delta"]), _logit(p["pbar_honeypot"]), _logit(p["prior"]), p["w_max"]
    off = task_slices(v)
    lstart = np.concatenate([[0], np.cumsum(np.bincount(v.line_program))])
    w = w0.astype(np.float64).copy()
    line, ann, lab = v.line, v.annotator, v.label.astype(np.float64)
    truth_v = v.truth[v.line].astype(np.float64)
    for k in range(n_tasks):
        a0, a1 = off[k], off[k + 1]
        ll = line[a0:a1] - lstart[k]
        a = ann[a0:a1]
        e = lab[a0:a1]
        tr = truth_v[a0:a1]
        lsum = np.bincount(ll, weights=e * w[a], minlength=lstart[k + 1] - lstart[k]) + pl
        lv = lsum[ll]
        hp = tr != 0
        r = np.where(hp, tr, np.sign(lv))
        lp = np.where(hp, lph, np.minimum(np.abs(lv), cap))
        np.add.at(w, a, lam * e * r * lp)
        w[a] = np.clip(w[a], -wmax, wmax)
    return w


def python_loop(tasks, w0, p):
    """Paper sample-code style: per task, dict of line logits from the pre-task weights, then updates."""
    lam, cap, lph, pl, wmax = p["lam"], _logit(1 - p["delta"]), _logit(p["pbar_honeypot"]), _logit(p["prior"]), p["w_max"]
    w = list(w0)
    for votes in tasks:
        logit = defaultdict(lambda: pl)
        for j, i, e, _t in votes:
            logit[j] += e * w[i]
        upd = []
        for j, i, e, t in votes:
            if t != 0:
                r, lp = t, lph
            else:
                lj = logit[j]
                r = (lj > 0) - (lj < 0)
                lp = min(abs(lj), cap)
            upd.append((i, lam * e * r * lp))
        for i, s in upd:
            w[i] += s
        for i, _ in upd:
            w[i] = min(max(w[i], -wmax), wmax)
    return w


def _float64_weights(blocks_np, n_sub, m, n):
    """crowdstat in float64 on the first n_sub tasks (native kernel), checked against lax.scan."""
    import jax
    import jax.numpy as jnp

    from crowdstat.estimators import sequential as seq

    p = PARAMS
    with jax.enable_x64(True):
        sub = jax.tree.map(lambda x: jnp.asarray(x[:n_sub]) if x.ndim == 2 else jnp.asarray(x), blocks_np)
        prm = seq.make_params(p["lam"], p["pbar_honeypot"], p["w_max"], p["delta"], p["prior"], jnp.float64)
        st0 = seq.init(m, p["nu"], p["delta"], p["w_max"], jnp.float64)
        st, _ = seq.run(sub, st0.w, prm, keep_trajectory=False)
        w_cs64 = np.asarray(st.w)
        st_x, _ = seq.run(sub, st0.w, prm, keep_trajectory=False, backend="xla")
        err_x = float(np.max(np.abs(np.asarray(st_x.w) - w_cs64)))
        assert err_x < 1e-9, f"K2 crowdstat scan != native at n={n}: {err_x:.3g}"
    return w_cs64


def _python_tasks(v, off, n_sub):
    """The first n_sub tasks as lists of (line within the program, annotator, label, truth)."""
    lstart = np.concatenate([[0], np.cumsum(np.bincount(v.line_program))])
    tv = v.truth[v.line]
    tasks = []
    for k in range(n_sub):
        a0, a1 = off[k], off[k + 1]
        tasks.append(
            list(zip((v.line[a0:a1] - lstart[k]).tolist(), v.annotator[a0:a1].tolist(), v.label[a0:a1].tolist(), tv[a0:a1].tolist()))
        )
    return tasks


def run(sizes, repeat=5, loop_cap=10**6, seed=0, check_float32=True):
    import jax
    import jax.numpy as jnp

    from benchmarks.data import synth
    from crowdstat.estimators import sequential as seq

    p = PARAMS
    rows = []
    for n in sizes:
        s = synth(n, seed=seed)
        v = s.votes
        n = v.n_votes
        m = s.n_annotators
        t_blocks = timeit(lambda: seq.task_blocks(v), repeat=1)
        blocks_np = t_blocks["result"]
        n_tasks = blocks_np.label.shape[0]
        off = task_slices(v)
        n_sub = int(np.searchsorted(off, min(n, loop_cap), side="right")) - 1
        n_sub = max(n_sub, 1)
        votes_sub = int(off[n_sub])

        # Equality first: crowdstat float64 on the first n_sub tasks vs the NumPy loop.
        w0_np = np.full(m, _logit(p["nu"]))
        w_cs64 = _float64_weights(blocks_np, n_sub, m, n)
        t_np = timeit(lambda: numpy_loop(v, n_sub, w0_np, p), repeat=max(1, min(3, repeat // 2)), warmup=False)
        err = float(np.max(np.abs(w_cs64 - t_np["result"])))
        assert err < 1e-9, f"K2 crowdstat (float64) != NumPy loop at n={n}: max |dw| = {err:.3g}"

        # Plain Python on the same tasks.
        tasks = _python_tasks(v, off, n_sub)
        t_py = timeit(lambda: python_loop(tasks, w0_np.tolist(), p), repeat=1, warmup=False)
        err_py = float(np.max(np.abs(np.asarray(t_py["result"]) - t_np["result"])))
        assert err_py < 1e-9, f"K2 python loop != NumPy loop: {err_py:.3g}"

        # crowdstat, float32 (the default), all tasks.
        blocks = jax.device_put(blocks_np)
        prm32 = seq.make_params(p["lam"], p["pbar_honeypot"], p["w_max"], p["delta"], p["prior"], jnp.float32)
        w0 = seq.init(m, p["nu"], p["delta"], p["w_max"], jnp.float32).w
        f = lambda: seq.run(blocks, w0, prm32, keep_trajectory=False)[0].w  # noqa: E731
        t_cs = jit_timing(f, repeat=repeat, min_time=0.3)
        f_x = lambda: seq.run(blocks, w0, prm32, keep_trajectory=False, backend="xla")[0].w  # noqa: E731
        t_x = jit_timing(f_x, repeat=repeat, min_time=0.3)
        from crowdstat import _native

        backend = "native" if _native.sequential_target() is not None else "xla"
        w32 = np.asarray(t_cs["result"])
        assert np.all(np.isfinite(w32))
        # float32 vs float64 over many tasks: sign(l_j) decisions can flip near 0; reported, not asserted.
        dev32 = None
        if check_float32:
            sub32 = jax.device_put(jax.tree.map(lambda x: x[:n_sub] if x.ndim == 2 else x, blocks_np))
            w32_sub = np.asarray(seq.run(sub32, w0, prm32, keep_trajectory=False)[0].w)
            dev32 = float(np.max(np.abs(w32_sub - w_cs64)))

        cs_ns = ns_per(t_cs["median_s"], n)
        np_ns = ns_per(t_np["median_s"], votes_sub)
        py_ns = ns_per(t_py["median_s"], votes_sub)
        rows.append(
            {
                "n_votes": n,
                "n_tasks": n_tasks,
                "block_shape": list(blocks_np.label.shape),
                "task_blocks_s": t_blocks["median_s"],
                "crowdstat_ns_per_vote": cs_ns,
                "crowdstat_s": t_cs["median_s"],
                "crowdstat_compile_s": t_cs["compile_s"],
                "crowdstat_backend": backend,
                "scan_ns_per_vote": ns_per(t_x["median_s"], n),
                "scan_compile_s": t_x["compile_s"],
                "numpy_ns_per_vote": np_ns,
                "python_ns_per_vote": py_ns,
                "loop_votes_timed": votes_sub,
                "max_abs_dw_float64_vs_numpy": err,
                "max_abs_dw_float32_vs_float64": dev32,
                "speedup_vs_numpy": np_ns / cs_ns,
                "speedup_vs_python": py_ns / cs_ns,
                "runs": t_cs["runs"],
            }
        )
        print(
            f"  K2 n={n:>9,} ({n_tasks} tasks, block {blocks_np.label.shape[1]}): crowdstat {cs_ns:.2f} ns/vote "
            f"({backend}; compile {t_cs['compile_s']:.2f}s, task_blocks {t_blocks['median_s']:.2f}s; "
            f"lax.scan {ns_per(t_x['median_s'], n):.2f}), numpy loop {np_ns:.0f}, python {py_ns:.0f} "
            "ns/vote",
            flush=True,
        )
    return rows


def streaming(annotators=(1_000, 100_000, 1_000_000), n_tasks=500, repeat=3, seed=0):
    """Eq. (8) task by task, one compiled call per task (votes arriving in rounds): crowdstat's
    ``sequential.step`` (the weight state donated, updated in place) against ``jax.jit`` of the
    same ``sequential.update`` without donation (every call copies the weight vector), on the
    same tasks; the final weights must agree exactly. Microseconds per task."""
    import jax
    import jax.numpy as jnp

    from benchmarks.data import synth
    from crowdstat.estimators import sequential as seq

    p = PARAMS
    plain = jax.jit(seq.update)
    rows = []
    for m in annotators:
        s = synth(n_tasks * 50, n_annotators=m, seed=seed)  # 10 lines x 5 votes per task
        blocks = seq.task_blocks(s.votes)
        tasks = [jax.device_put(blocks.task(t)) for t in range(blocks.label.shape[0])]
        prm = seq.make_params(p["lam"], p["pbar_honeypot"], p["w_max"], p["delta"], p["prior"], jnp.float32)
        w0 = seq.init(m, p["nu"], p["delta"], p["w_max"], jnp.float32).w

        def loop_step():
            st = seq.SequentialState(w=jnp.array(w0), n_tasks=jnp.zeros((), jnp.int32))
            for b in tasks:
                st, _ = seq.step(st, b, prm)
            return st.w

        def loop_plain():
            st = seq.SequentialState(w=w0, n_tasks=jnp.zeros((), jnp.int32))
            for b in tasks:
                st, _ = plain(st, b, prm)
            return st.w

        t_d = timeit(loop_step, repeat=repeat)
        t_p = timeit(loop_plain, repeat=repeat)
        err = float(np.max(np.abs(np.asarray(t_d["result"]) - np.asarray(t_p["result"]))))
        assert err == 0.0, f"K2 streaming: donated step != plain jit at m={m}: {err:.3g}"
        n = len(tasks)
        rows.append(
            {
                "n_annotators": m,
                "n_tasks": n,
                "step_donated_us_per_task": t_d["median_s"] / n * 1e6,
                "jit_update_us_per_task": t_p["median_s"] / n * 1e6,
                "speedup": t_p["median_s"] / t_d["median_s"],
            }
        )
        r = rows[-1]
        print(
            f"  K2 streaming m={m:>9,}: sequential.step (donated) {r['step_donated_us_per_task']:.1f} us/task, "
            f"jit(update) {r['jit_update_us_per_task']:.1f} us/task (x{r['speedup']:.1f})",
            flush=True,
        )
    return rows
