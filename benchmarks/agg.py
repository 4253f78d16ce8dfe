"""Aggregation end to end (a vote table in, line posteriors out) against crowd-kit 1.4.2.

Same synthetic table for both: crowdstat gets the user's DataFrame (``program, line,
annotator, label``, string ids) through ``crowdstat.fit`` (validation, id encoding, kernel,
results mapped back to ids); crowd-kit gets ``task, worker, label`` (task = program:line) and
its ``fit(...).probas_``. The kernel-only time of crowdstat (arrays already encoded) is shown
apart, and so is the floor of any table-in implementation: encoding the two string-id columns
(``pd.factorize`` of program and annotator), which bounds the table-in ratio from above.
Posteriors are checked equal before the times count: majority vote exactly (both are vote
fractions); Dawid-Skene after the same number of EM cycles from crowd-kit's majority-vote
start, in float64 with crowd-kit's clipping to 1e-6 (float32 default: difference reported).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from benchmarks._util import jit_timing, timeit


def crowdkit_available() -> bool:
    return importlib.util.find_spec("crowdkit") is not None


def em2_available() -> bool:
    return importlib.util.find_spec("crowdstat.estimators.dawid_skene") is not None


def _ck_frame(df):
    import pandas as pd

    return pd.DataFrame({"task": df["program"] + ":" + df["line"].astype(str), "worker": df["annotator"], "label": df["label"]})


def _cs_posterior_by_task(res):
    lines = res.lines
    return dict(zip(lines["program"] + ":" + lines["line"].astype(str), lines["posterior"].to_numpy()))


def annotators_for(n: int) -> int:
    """About 200 votes per annotator (10 to 1000 annotators), so that EM is well posed."""
    return int(min(1000, max(10, n // 200)))


def run(sizes, repeat=3, seed=0, ds_iter=20):
    import crowdstat as cs
    from benchmarks.data import synth

    if not crowdkit_available():
        return {"skipped": "crowd-kit is not installed (it is in the `bench` extra; `make bench` builds .venv-bench with it)"}
    import crowdkit.aggregation as ca

    out = {"majority": [], "dawid_skene": [], "em2_available": em2_available()}
    for n in sizes:
        s = synth(n, n_annotators=annotators_for(n), seed=seed)
        df = s.frame()
        ck = _ck_frame(df)
        n = len(df)

        # Majority vote.
        t_ck = timeit(lambda: ca.MajorityVote().fit(ck).probas_, repeat=repeat, warmup=False)
        t_cs = jit_timing(lambda: cs.fit(df, method="majority"), repeat=repeat)
        res = t_cs["result"]
        pc = _cs_posterior_by_task(res)
        probas = t_ck["result"]
        ck_p = probas[1].reindex(list(pc.keys())).fillna(0.0).to_numpy() if 1 in probas.columns else None
        err = float(np.max(np.abs(ck_p - np.fromiter(pc.values(), float))))
        assert err < 1e-6, f"majority posteriors differ from crowd-kit: {err:.3g}"
        table = cs.read_votes(df)
        t_read = timeit(lambda: cs.read_votes(df), repeat=1, warmup=False)
        t_ids = timeit(lambda: _encode_ids(df), repeat=repeat, warmup=False)
        t_k = _kernel_majority(table, repeat)
        out["majority"].append(
            {
                "n_votes": n,
                "crowdkit_s": t_ck["median_s"],
                "crowdstat_table_in_s": t_cs["median_s"],
                "crowdstat_compile_s": t_cs["compile_s"],
                "crowdstat_read_votes_s": t_read["median_s"],
                "crowdstat_kernel_s": t_k,
                "ids_floor_s": t_ids["median_s"],
                "ceiling_table_in": t_ck["median_s"] / t_ids["median_s"],
                "max_abs_dposterior": err,
                "speedup_table_in": t_ck["median_s"] / t_cs["median_s"],
                "speedup_kernel": t_ck["median_s"] / t_k,
            }
        )
        r = out["majority"][-1]
        print(
            f"  MV  n={n:>9,}: crowd-kit {r['crowdkit_s']:.3f}s, crowdstat table-in {r['crowdstat_table_in_s']:.3f}s "
            f"(x{r['speedup_table_in']:.1f}; kernel {t_k * 1e3:.2f} ms, x{r['speedup_kernel']:.0f}; encoding the string ids alone "
            f"{r['ids_floor_s'] * 1e3:.0f} ms, so table in is at most x{r['ceiling_table_in']:.0f}), max|dP| {err:.1e}",
            flush=True,
        )

        # Dawid-Skene (two-coin = crowd-kit's 2x2 confusion matrices): the same number of EM
        # cycles on both sides (crowd-kit tol=-inf, crowdstat tol=0), so the iterates must agree.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_ck = timeit(lambda: ca.DawidSkene(n_iter=ds_iter, tol=-np.inf).fit(ck), repeat=1 if n >= 10**6 else repeat, warmup=False)
        ck_model = t_ck["result"]
        row = {"n_votes": n, "n_annotators": s.n_annotators, "em_iterations": ds_iter, "crowdkit_s": t_ck["median_s"]}
        if em2_available():
            kw = dict(method="em2", maxiter=ds_iter, tol=0.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "not converged" after a fixed number of cycles is expected
                # Equality: float64 with crowd-kit's clipping (1e-10) must reproduce its posteriors.
                r64 = cs.fit(df, x64=True, delta=1e-10, **kw)
                t_cs = jit_timing(lambda: cs.fit(df, **kw), repeat=repeat)  # the default: float32, delta 1e-6
            ck_p = ck_model.probas_[1]
            pc = _cs_posterior_by_task(r64)
            err64 = float(np.max(np.abs(ck_p.reindex(list(pc.keys())).to_numpy() - np.fromiter(pc.values(), float))))
            assert err64 < 1e-6, f"em2 (float64) posteriors differ from crowd-kit DawidSkene: {err64:.3g}"
            pc = _cs_posterior_by_task(t_cs["result"])
            err = float(np.max(np.abs(ck_p.reindex(list(pc.keys())).to_numpy() - np.fromiter(pc.values(), float))))
            row.update(
                {
                    "crowdstat_table_in_s": t_cs["median_s"],
                    "crowdstat_compile_s": t_cs["compile_s"],
                    "max_abs_dposterior_float64": err64,
                    "max_abs_dposterior_float32": err,
                    "speedup_table_in": t_ck["median_s"] / t_cs["median_s"],
                }
            )
            print(
                f"  DS  n={n:>9,} ({ds_iter} EM cycles): crowd-kit {row['crowdkit_s']:.3f}s, crowdstat em2 "
                f"{row['crowdstat_table_in_s']:.3f}s "
                f"(x{row['speedup_table_in']:.1f}), max|dP| {err64:.1e} (float64) / {err:.1e} (float32)",
                flush=True,
            )
        else:
            row["crowdstat"] = "em2 not in this checkout yet (crowdstat/estimators/dawid_skene.py)"
            print(f"  DS  n={n:>9,}: crowd-kit {row['crowdkit_s']:.3f}s; crowdstat em2 not available yet", flush=True)
        out["dawid_skene"].append(row)
    return out


def _encode_ids(df):
    """The least any table-in aggregator does: map the two string-id columns to integer codes
    (one hash pass each, pandas' factorize), before any validation or counting."""
    import pandas as pd

    return pd.factorize(df["program"])[0], pd.factorize(df["annotator"])[0]


def _kernel_majority(table, repeat):
    import jax
    import jax.numpy as jnp

    from crowdstat.estimators.majority import majority

    arrays = jax.device_put(table.arrays)
    z = jnp.zeros(table.n_annotators, jnp.float32)
    d = jnp.asarray(1e-6, jnp.float32)
    return jit_timing(lambda: majority(arrays, z, d), repeat=max(repeat, 5))["median_s"]
