"""``make bench``: the whole benchmark suite in one run; ``--smoke`` for the tiny CI version.

    python -m benchmarks.run [--smoke] [--out benchmarks/results] [--only k1,k2,k3,agg,e2e,memory,stream]
    python -m benchmarks.run [--smoke] --only rl   # opt-in: RL trainers' throughput (benchmarks/rl_throughput.py; needs torch + trl)

Prints one table per kernel with ratios measured in this run, then the targets of issue #7
(met, or missed by how much), and writes ``results.json`` (or ``smoke.json``) and log-log plots
(time per vote vs votes) to the output directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from benchmarks import _util

FULL = {
    "sizes": [10**4, 10**5, 10**6, 10**7],
    "agg_sizes": [10**4, 10**5, 10**6],
    "k3_annotators": (10, 1000, 100_000),
    "k3_rows": 20_000,
    "k3_path": 20,
    "e2e_votes": 10**6,
    "memory_votes": 10**7,
    "repeat": 5,
    "loop_cap": 10**6,
    "streaming_annotators": (1_000, 100_000, 1_000_000),
    "streaming_tasks": 500,
    "stream_sizes": [10**4, 10**5, 10**6],  # votes of history before a batch (benchmarks/stream.py)
    "stream_methods": ("em2", "proximal", "sequential"),
    "stream_batch": 1000,
}
SMOKE = {
    "sizes": [10**4],
    "agg_sizes": [10**4],
    "k3_annotators": (10,),
    "k3_rows": 300,
    "k3_path": 3,
    "e2e_votes": 10**4,
    "memory_votes": 10**5,
    "repeat": 2,
    "loop_cap": 10**4,
    "streaming_annotators": (1_000,),
    "streaming_tasks": 20,
    "stream_sizes": [2000],
    "stream_methods": ("em2", "sequential"),
    "stream_batch": 200,
}


def _measured(x) -> bool:
    """A timing that was measured: not None (not run, e.g. in --smoke) and not NaN (older results)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _target(name, value, limit, kind, unit="", where=""):
    """kind '<=' (value must be at most limit) or '>=' (at least). 'by' = factor still missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return {"target": name, "where": where, "value": None, "limit": limit, "met": None, "by": None, "unit": unit}
    met = value <= limit if kind == "<=" else value >= limit
    by = None if met else (value / limit if kind == "<=" else limit / value)
    return {"target": name, "where": where, "value": value, "limit": limit, "kind": kind, "met": met, "missed_by_factor": by, "unit": unit}


def targets(res: dict) -> list[dict]:
    t = []
    k1 = [r for r in res.get("k1", []) if r["n_votes"] >= 10**6]
    for r in k1:
        w = f"n={r['n_votes']:.0e}"
        t.append(_target("K1 ns/vote <= 1", r["crowdstat_ns_per_vote"], 1.0, "<=", "ns/vote", w))
        t.append(_target("K1 vs NumPy >= 3x", r["speedup_vs_numpy"], 3.0, ">=", "x", w))
        t.append(_target("K1 vs Python loop >= 300x", r["speedup_vs_python"], 300.0, ">=", "x", w))
    for r in [r for r in res.get("k2", []) if r["n_votes"] >= 10**6]:
        w = f"n={r['n_votes']:.0e}"
        t.append(_target("K2 vs NumPy per task >= 8x", r["speedup_vs_numpy"], 8.0, ">=", "x", w))
        t.append(_target("K2 vs Python loop >= 100x", r["speedup_vs_python"], 100.0, ">=", "x", w))
    k3 = res.get("k3") or {}
    for r in k3.get("single", []):
        if r["n_annotators"] == 1000:
            t.append(_target("K3 crowdstat / liblinear <= 2 (equal objective)", r["crowdstat_over_liblinear"], 2.0, "<=", "x", "m=1000"))
    if k3.get("path"):
        p = k3["path"]
        t.append(
            _target(
                "K3 gamma path: liblinear / crowdstat > 1",
                p["liblinear_over_crowdstat_path"],
                1.0,
                ">=",
                "x",
                f"m={p['n_annotators']}, {p['n_gammas']} gammas",
            )
        )
    agg = res.get("agg") or {}
    if agg.get("majority"):
        r = agg["majority"][-1]
        t.append(_target("MV vs crowd-kit >= 100x (table in)", r["speedup_table_in"], 100.0, ">=", "x", f"n={r['n_votes']:.0e}"))
        if not t[-1]["met"] and r.get("ceiling_table_in"):
            t[-1]["why"] = (
                f"encoding the string ids alone ({r['ids_floor_s'] * 1e3:.0f} ms) caps any table-in majority vote at "
                f"x{r['ceiling_table_in']:.0f}; kernel only x{r['speedup_kernel']:.0f}"
            )
    if agg.get("dawid_skene") and "speedup_table_in" in agg["dawid_skene"][-1]:
        r = agg["dawid_skene"][-1]
        t.append(_target("DS EM vs crowd-kit >= 20x (table in)", r["speedup_table_in"], 20.0, ">=", "x", f"n={r['n_votes']:.0e}"))
    e2e = res.get("e2e") or {}
    ck = e2e.get("crowdkit_ds_fit_s")
    em2 = (e2e.get("methods") or {}).get("em2") or {}
    if ck and "cold_s" in em2:
        t.append(
            _target("e2e CLI em2 <= crowd-kit DS fit / 3 (cold)", em2["cold_s"] / ck, 1 / 3, "<=", "fraction", f"n={e2e['n_votes']:.0e}")
        )
        t.append(
            _target(
                "e2e CLI em2 <= crowd-kit DS fit / 3 (warm compile cache)",
                em2["warm_cache_s"] / ck,
                1 / 3,
                "<=",
                "fraction",
                f"n={e2e['n_votes']:.0e}",
            )
        )
    mem = res.get("memory")
    if mem:
        t.append(_target("peak RSS < 2 GiB", mem["peak_rss_mib"], 2048.0, "<=", "MiB", f"n={mem['n_votes']:.0e}"))
    return t


def print_tables(res: dict) -> None:
    def line(cols, widths):
        print("  ".join(str(c).rjust(w) for c, w in zip(cols, widths)))

    if res.get("k1"):
        print("\nK1 posteriors + rewards (ns per vote; median; compile apart)")
        wd = (10, 10, 9, 9, 10, 9, 11, 9)
        line(("votes", "crowdstat", "compile", "numpy", "python", "bw-limit", "x numpy", "x python"), wd)
        for r in res["k1"]:
            line(
                (
                    f"{r['n_votes']:.0e}",
                    f"{r['crowdstat_ns_per_vote']:.2f}",
                    f"{r['crowdstat_compile_s']:.2f}s",
                    f"{r['numpy_ns_per_vote']:.2f}",
                    f"{r['python_ns_per_vote']:.0f}",
                    f"{res['bandwidth']['limit_ns_per_vote']:.2f}",
                    f"{r['speedup_vs_numpy']:.1f}",
                    f"{r['speedup_vs_python']:.0f}",
                ),
                wd,
            )
    if res.get("k2"):
        print("\nK2 sequential update (ns per vote; loops timed on <= loop_cap votes)")
        wd = (10, 8, 10, 9, 11, 9, 9, 9)
        line(("votes", "tasks", "crowdstat", "compile", "numpy-loop", "python", "x numpy", "x python"), wd)
        for r in res["k2"]:
            line(
                (
                    f"{r['n_votes']:.0e}",
                    r["n_tasks"],
                    f"{r['crowdstat_ns_per_vote']:.1f}",
                    f"{r['crowdstat_compile_s']:.2f}s",
                    f"{r['numpy_ns_per_vote']:.0f}",
                    f"{r['python_ns_per_vote']:.0f}",
                    f"{r['speedup_vs_numpy']:.1f}",
                    f"{r['speedup_vs_python']:.1f}",
                ),
                wd,
            )
    k3 = res.get("k3") or {}
    if k3.get("single"):
        print("\nK3 one-shot L1-logistic at equal objective (relative difference to the certified bound <= 1e-6)")
        wd = (8, 9, 14, 12, 14, 12, 14, 12)
        line(("m", "nnz", "crowdstat f64", "rel diff", "liblinear", "rel diff", "saga", "cs/liblin"), wd)
        for r in k3["single"]:
            lib, sag = r["liblinear"], r["saga"] or {}
            line(
                (
                    r["n_annotators"],
                    r["nnz"],
                    f"{r['crowdstat_f64_s'] * 1e3:.1f} ms",
                    f"{r['crowdstat_rel_objective_diff']:.1e}",
                    f"{lib['seconds'] * 1e3:.1f} ms",
                    f"{lib['rel_objective_diff']:.1e}",
                    f"{sag['seconds'] * 1e3:.0f} ms" if sag.get("seconds") is not None else "n/a",  # saga: not run in --smoke
                    f"{r['crowdstat_over_liblinear']:.2f}",
                ),
                wd,
            )
        if k3.get("path"):
            p = k3["path"]
            print(
                f"  path ({p['n_gammas']} gammas, m={p['n_annotators']}): crowdstat warm-started path "
                f"{p['crowdstat_path_s'] * 1e3:.0f} ms, "
                + (
                    f"vmap {p['crowdstat_vmap_s'] * 1e3:.0f} ms"
                    if _measured(p.get("crowdstat_vmap_s"))
                    else "vmap n/a (not run in --smoke)"
                )
                + f", liblinear loop {p['liblinear_loop_s'] * 1e3:.0f} ms"
            )
    agg = res.get("agg") or {}
    if agg.get("skipped"):
        print(f"\nAggregation vs crowd-kit: SKIPPED ({agg['skipped']})")
    elif agg:
        print("\nAggregation, table in -> posteriors out (seconds; crowd-kit vs crowdstat.fit)")
        for r in agg.get("majority", []):
            print(
                f"  MV n={r['n_votes']:.0e}: crowd-kit {r['crowdkit_s']:.3f}  crowdstat "
                f"{r['crowdstat_table_in_s']:.3f} (x{r['speedup_table_in']:.1f}); "
                f"kernel only {r['crowdstat_kernel_s'] * 1e3:.2f} ms (x{r['speedup_kernel']:.0f})"
            )
        for r in agg.get("dawid_skene", []):
            if "speedup_table_in" in r:
                print(
                    f"  DS n={r['n_votes']:.0e}: crowd-kit {r['crowdkit_s']:.3f}  crowdstat em2 "
                    f"{r['crowdstat_table_in_s']:.3f} (x{r['speedup_table_in']:.1f}), "
                    f"max|dP| f64 {r['max_abs_dposterior_float64']:.1e}"
                )
            else:
                print(f"  DS n={r['n_votes']:.0e}: crowd-kit {r['crowdkit_s']:.3f}; {r.get('crowdstat')}")


def plots(res: dict, out: Path, stem: str) -> list[str]:
    from crowdstat.study.plotting import NEUTRAL, PALETTE, legend_outside, log_axis, new_figure, save_figure, series_style, style_axes

    files = []
    series = {
        "k1": (
            "K1 posteriors + rewards",
            [
                ("crowdstat_ns_per_vote", "crowdstat (ELL layout)"),
                ("segment_ns_per_vote", "crowdstat (vote list)"),
                ("numpy_ns_per_vote", "NumPy (bincount)"),
                ("python_ns_per_vote", "Python loop"),
            ],
        ),
        "k2": (
            "K2 sequential update",
            [
                ("crowdstat_ns_per_vote", "crowdstat (native FFI)"),
                ("scan_ns_per_vote", "crowdstat lax.scan"),
                ("numpy_ns_per_vote", "NumPy per task"),
                ("python_ns_per_vote", "Python loop"),
            ],
        ),
    }
    for key, (title, cols) in series.items():
        rows = res.get(key) or []
        if not rows:
            continue
        fig, axes = new_figure(1, 1, figsize=(7.6, 4.2))
        ax = axes[0, 0]
        x = [r["n_votes"] for r in rows]
        for i, (col, label) in enumerate(cols):
            if all(col in r for r in rows):
                ax.plot(x, [r[col] for r in rows], label=label, **series_style(i))
        if key == "k1":
            ax.axhline(res["bandwidth"]["limit_ns_per_vote"], ls="--", c=NEUTRAL, label="bandwidth limit (9 B/vote)")
            ax.axhline(1.0, ls=":", c=PALETTE[1], label="target 1 ns/vote")
        log_axis(ax, "x")
        log_axis(ax, "y")
        style_axes(ax, "votes (log scale)", "time per vote (ns, median; log scale)", title)
        legend_outside(ax, "right")
        f = save_figure(fig, out / f"{stem}_{key}.png", dpi=110)
        files.append(str(f))
    agg = res.get("agg") or {}
    if agg.get("majority"):
        fig, axes = new_figure(1, 1, figsize=(7.6, 4.2))
        ax = axes[0, 0]
        for j, (key, name) in enumerate((("majority", "MV"), ("dawid_skene", "DS"))):
            rows = [r for r in agg.get(key, []) if "crowdstat_table_in_s" in r]
            if rows:
                x = [r["n_votes"] for r in rows]
                st = series_style(j)  # colour = the aggregation; solid = crowdstat, dashed + hollow = crowd-kit
                ax.plot(x, [r["crowdstat_table_in_s"] for r in rows], label=f"crowdstat {name} (table in)", **st)
                ax.plot(x, [r["crowdkit_s"] for r in rows], label=f"crowd-kit {name}", **{**st, "linestyle": "--"}, mfc="none")
        log_axis(ax, "x")
        log_axis(ax, "y")
        style_axes(ax, "votes (log scale)", "wall time (seconds, median; log scale)", "Aggregation vs crowd-kit")
        legend_outside(ax, "right")
        f = save_figure(fig, out / f"{stem}_agg.png", dpi=110)
        files.append(str(f))
    return files


def _machine_and_bandwidth(res: dict, smoke: bool) -> None:
    res["machine"] = _util.machine_info()
    bw = _util.copy_bandwidth(64 * 2**20 if smoke else 256 * 2**20)
    res["bandwidth"] = {"copy_bytes_per_s": bw, "bytes_per_vote": 9, "limit_ns_per_vote": 9 / bw * 1e9}
    print(
        f"machine: {res['machine'].get('cpu')}, {res['machine']['cpu_count']} CPUs, load {res['machine']['loadavg_start']}, "
        f"copy bandwidth {bw / 1e9:.1f} GB/s -> limit {res['bandwidth']['limit_ns_per_vote']:.2f} ns/vote; "
        f"OPENBLAS_CORETYPE={res['machine']['OPENBLAS_CORETYPE']}",
        flush=True,
    )
    for p in res["machine"].get("threadpools", []) if isinstance(res["machine"].get("threadpools"), list) else []:
        print(
            f"  numpy threadpool: {p.get('internal_api')} {p.get('version')} kernel={p.get('architecture')} threads={p.get('num_threads')}"
        )


def _print_targets(targets_: list) -> None:
    print("\nTargets (issue #7; ratios measured in this run)")
    for t in targets_:
        if t["met"] is None:
            status = "n/a"
        elif t["met"]:
            status = "MET"
        else:
            status = f"MISSED by x{t['missed_by_factor']:.2f}"
        v = t["value"]
        print(f"  {t['target']:<58} {t['where']:<28} {('-' if v is None else f'{v:.3g}'):>9} {t['unit']:<8} {status}")
        if t.get("why"):
            print(f"      why: {t['why']}")


def _clean(o):
    """JSON-ready: drop the raw "result" entries, non-finite floats to null, NumPy scalars to Python."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items() if k not in ("result",)}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    return o


def _rl_throughput(out: Path, smoke: bool) -> dict:
    """``python -m benchmarks.rl_throughput`` in a child process (its table is printed); its JSON result."""
    import subprocess
    import sys

    f = out / ("rl_throughput_smoke.json" if smoke else "rl_throughput.json")
    cmd = [sys.executable, "-m", "benchmarks.rl_throughput", "--out", str(f), *(["--smoke"] if smoke else [])]
    p = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if p.returncode != 0:
        return {"skipped": f"rl_throughput exited with {p.returncode}: {p.stderr[-500:]}"}
    print(p.stdout[p.stdout.find("RL throughput") :], flush=True)
    return json.loads(f.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (< 1 min), for CI")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--only", default="k1,k2,k3,agg,e2e,memory,stream")
    ap.add_argument("--stem", default=None, help="output file stem (default: results, or smoke with --smoke)")
    args = ap.parse_args(argv)
    cfg = SMOKE if args.smoke else FULL
    only = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or ("smoke" if args.smoke else "results")
    t0 = time.perf_counter()
    res: dict = {"mode": "smoke" if args.smoke else "full", "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
    _machine_and_bandwidth(res, args.smoke)
    timings = {}

    def section(name, fn):
        if name not in only and name.split("_")[0] not in only:  # --only k2 includes k2_streaming
            return
        print(f"\n[{name}]", flush=True)
        t = time.perf_counter()
        res[name] = fn()
        timings[name] = time.perf_counter() - t

    from benchmarks import agg, e2e, k1, k2, k3, memory, stream

    section("k1", lambda: k1.run(cfg["sizes"], repeat=cfg["repeat"], python_cap=cfg["loop_cap"]))
    section("k2", lambda: k2.run(cfg["sizes"], repeat=cfg["repeat"], loop_cap=cfg["loop_cap"], check_float32=not args.smoke))
    section("k2_streaming", lambda: k2.streaming(cfg["streaming_annotators"], n_tasks=cfg["streaming_tasks"], repeat=cfg["repeat"]))
    section(
        "k3",
        lambda: k3.run(
            cfg["k3_annotators"],
            n_rows=cfg["k3_rows"],
            n_path=cfg["k3_path"],
            repeat=3 if not args.smoke else 1,
            saga=not args.smoke,
            vmap=not args.smoke,
        ),
    )

    def _agg():
        r = agg.run(cfg["agg_sizes"], repeat=3 if not args.smoke else 1)
        if "skipped" in r:
            print(f"  SKIPPED: {r['skipped']}", flush=True)
        return r

    section("agg", _agg)

    def _e2e():
        if args.smoke:
            r = e2e.run(cfg["e2e_votes"], methods=("majority",), repeat=1, measure_rss=False)
        else:
            r = e2e.run(cfg["e2e_votes"], repeat=3)
        ds = [d for d in (res.get("agg") or {}).get("dawid_skene", []) if d["n_votes"] == r["n_votes"]]
        if ds:
            r["crowdkit_ds_fit_s"] = ds[0]["crowdkit_s"]
            r["crowdkit_ds_note"] = f"crowd-kit DawidSkene fit, {ds[0]['em_iterations']} EM cycles, same data (from [agg])"
        return r

    section("e2e", _e2e)
    section("memory", lambda: memory.run(cfg["memory_votes"]))
    section("stream", lambda: stream.run(cfg["stream_sizes"], cfg["stream_methods"], batch=cfg["stream_batch"], repeat=3))
    if "rl" in only:  # opt-in (not in the default --only): torch and TRL, in their own process
        section("rl", lambda: _rl_throughput(out, args.smoke))
    res["section_seconds"] = timings
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["targets"] = targets(res)

    print_tables(res)
    stream.print_table(res.get("stream"))
    _print_targets(res["targets"])
    res["plots"] = plots(res, out, stem)

    f = out / f"{stem}.json"
    f.write_text(json.dumps(_clean(res), indent=1) + "\n")
    from benchmarks.report import markdown

    (out / f"{stem}.md").write_text(markdown(_clean(res)))
    print(f"\nwrote {f} and {len(res['plots'])} plot(s); total {res['total_seconds']:.0f}s (load {res['machine']['loadavg_end']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
