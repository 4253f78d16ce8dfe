"""Markdown tables from a results JSON: ``python -m benchmarks.report benchmarks/results/results.json``."""

from __future__ import annotations

import json
import math
import sys


def _f(x, fmt):
    """``x`` formatted, or "n/a" for a value that was not measured (None, or NaN from older results)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _run_line(res: dict) -> list[str]:
    m = res.get("machine", {})
    bw = res.get("bandwidth", {})
    return [
        f"Run: {res.get('mode')} mode, {m.get('cpu')} x {m.get('cpu_count')}, load average "
        f"{tuple(round(x, 1) for x in m.get('loadavg_start', ()))} "
        f"at start and {tuple(round(x, 1) for x in m.get('loadavg_end', ()))} at end; jax {m.get('jax')}, numpy {m.get('numpy')}, "
        f"scikit-learn {m.get('sklearn')}, crowd-kit {m.get('crowd_kit')}; copy bandwidth {bw.get('copy_bytes_per_s', 0) / 1e9:.1f} GB/s "
        f"(limit {bw.get('limit_ns_per_vote', float('nan')):.2f} ns/vote at 9 B/vote); total {res.get('total_seconds', 0):.0f} s."
    ]


def _k1(res: dict) -> list[str]:
    if not res.get("k1"):
        return []
    bw = res.get("bandwidth", {})
    out = [
        "",
        "**K1 posteriors (eq. 7) + rewards**, ns per vote (median), compile apart",
        "",
        "| votes | crowdstat (ELL) | compile (s) | layout build (s) | crowdstat vote-list | NumPy "
        "| Python loop | bandwidth limit | x NumPy | x Python |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["k1"]:
        out.append(
            f"| {r['n_votes']:.0e} | {r['crowdstat_ns_per_vote']:.2f} | {r['crowdstat_compile_s']:.2f} "
            f"| {_f(r.get('ell_layout_build_s'), '.2f')} | "
            f"{_f(r.get('segment_ns_per_vote'), '.2f')} | {r['numpy_ns_per_vote']:.2f} | "
            f"{r['python_ns_per_vote']:.0f} | {bw.get('limit_ns_per_vote', float('nan')):.2f} | "
            f"{r['speedup_vs_numpy']:.1f} | {r['speedup_vs_python']:.0f} |"
        )
    return out


def _k2(res: dict) -> list[str]:
    out = []
    if res.get("k2"):
        out += [
            "",
            "**K2 sequential update (eq. 8)**, ns per vote (median); loops timed on the first <= 10^6 votes",
            "",
            "| votes | tasks | crowdstat (native FFI) | compile (s) | task_blocks (s) | crowdstat "
            "lax.scan | NumPy per task | Python loop | x NumPy | x Python | max dw f32 vs f64 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["k2"]:
            out.append(
                f"| {r['n_votes']:.0e} | {r['n_tasks']} | {r['crowdstat_ns_per_vote']:.1f} | "
                f"{r['crowdstat_compile_s']:.2f} | {r['task_blocks_s']:.2f} | "
                f"{_f(r.get('scan_ns_per_vote'), '.1f')} | "
                f"{r['numpy_ns_per_vote']:.0f} | {r['python_ns_per_vote']:.0f} | "
                f"{r['speedup_vs_numpy']:.1f} | {r['speedup_vs_python']:.1f} | "
                f"{_f(r.get('max_abs_dw_float32_vs_float64'), '.1e')} |"
            )
    if res.get("k2_streaming"):
        out += [
            "",
            "**K2 streaming** (one compiled call per task, `sequential.step` with the weight state "
            "donated vs `jax.jit(sequential.update)`), microseconds per task",
            "",
            "| annotators | tasks | step (donated) | jit(update) | x |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in res["k2_streaming"]:
            out.append(
                f"| {r['n_annotators']:,} | {r['n_tasks']} | {r['step_donated_us_per_task']:.1f} | "
                f"{r['jit_update_us_per_task']:.1f} | {r['speedup']:.1f} |"
            )
    return out


def _k3(res: dict) -> list[str]:
    k3 = res.get("k3") or {}
    if not k3.get("single"):
        return []
    out = [
        "",
        "**K3 one-shot L1-logistic** at equal objective (relative difference to the certified lower bound <= 1e-6), milliseconds",
        "",
        "| annotators | rows | nnz | crowdstat f64 | its | rel diff | crowdstat f32 (tol 1e-5) | "
        "liblinear | tol | rel diff | saga | rel diff | crowdstat / liblinear |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in k3["single"]:
        lib, sag = r["liblinear"], r.get("saga") or {}
        out.append(
            f"| {r['n_annotators']} | {r['n_rows']} | {r['nnz']} | {r['crowdstat_f64_s'] * 1e3:.1f} | "
            f"{r['crowdstat_f64_iterations']} | "
            f"{r['crowdstat_rel_objective_diff']:.1e} | {r['crowdstat_f32_s'] * 1e3:.1f} | "
            f"{lib['seconds'] * 1e3:.1f} | {lib['tol']:g} | "
            f"{lib['rel_objective_diff']:.1e}{'' if lib['reached'] else ' (not reached)'} | "
            f"{_f(sag.get('seconds') and sag['seconds'] * 1e3, '.0f')} | "
            f"{_f(sag.get('rel_objective_diff'), '.1e')}{'' if sag.get('reached', True) else ' (not reached)'} | "
            f"{r['crowdstat_over_liblinear']:.1f} |"
        )
    if k3.get("path"):
        p = k3["path"]
        out += [
            "",
            f"Gamma path ({p['n_gammas']} values, m = {p['n_annotators']}): crowdstat warm-started "
            f"`path` {p['crowdstat_path_s'] * 1e3:.0f} ms "
            f"(compile {p['crowdstat_path_compile_s']:.1f} s), vmapped `solve` "
            f"{_f(p.get('crowdstat_vmap_s') and p['crowdstat_vmap_s'] * 1e3, '.0f')} ms, "
            f"liblinear loop {p['liblinear_loop_s'] * 1e3:.0f} ms (tol {p['liblinear_tol']:g}; max "
            f"relative difference {p['max_rel_diff_liblinear']:.1e}, "
            f"crowdstat {p['max_rel_diff_crowdstat_path']:.1e}).",
        ]
    return out


def _agg(res: dict) -> list[str]:
    agg = res.get("agg") or {}
    if agg.get("skipped"):
        return ["", f"Aggregation vs crowd-kit: skipped ({agg['skipped']})."]
    if not agg:
        return []
    out = [
        "",
        "**Aggregation vs crowd-kit 1.4.2**, table in -> posteriors out, seconds (median)",
        "",
        "| method | votes | crowd-kit | crowdstat.fit (table in) | x | crowdstat compile (s) | "
        "kernel only | x kernel | id encoding floor | x at most | max abs dP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in agg.get("majority", []):
        out.append(
            f"| majority | {r['n_votes']:.0e} | {r['crowdkit_s']:.3f} | {r['crowdstat_table_in_s']:.3f} "
            f"| {r['speedup_table_in']:.1f} | "
            f"{r['crowdstat_compile_s']:.1f} | {r['crowdstat_kernel_s'] * 1e3:.2f} ms | {r['speedup_kernel']:.0f} | "
            f"{_f(r.get('ids_floor_s') and r['ids_floor_s'] * 1e3, '.1f')} ms | "
            f"{_f(r.get('ceiling_table_in'), '.0f')} | {r['max_abs_dposterior']:.0e} |"
        )
    for r in agg.get("dawid_skene", []):
        if "speedup_table_in" in r:
            out.append(
                f"| DS ({r['em_iterations']} EM cycles) | {r['n_votes']:.0e} | {r['crowdkit_s']:.3f} | "
                f"{r['crowdstat_table_in_s']:.3f} | "
                f"{r['speedup_table_in']:.1f} | {r['crowdstat_compile_s']:.1f} | - | - | - | - | "
                f"{r['max_abs_dposterior_float64']:.0e} (f64), {r['max_abs_dposterior_float32']:.0e} (f32) |"
            )
    return out


def _stream(res: dict) -> list[str]:
    st = res.get("stream") or {}
    if st.get("skipped"):
        return ["", f"Streaming: skipped ({st['skipped']})."]
    rows = st.get("rows") or []
    if not rows:
        return []
    out = [
        "",
        f"**Streaming** (`crowdstat.online.OnlineFit`): one batch of ~{st['batch_votes']} new votes, update vs full refit "
        f"of all the votes so far, same data, same run (median of {st['repeat']}; float64). *refit first*: a refit that "
        "compiles for the new size, as a fresh `crowdstat.fit` does.",
        "",
        "| method | history votes | update | state only | refit | refit first | update / refit | update / refit first "
        "| max abs dP vs refit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['method']} | {r['history_votes']:.0e} | {r['update_s'] * 1e3:.1f} ms | {r['update_state_s'] * 1e3:.1f} ms | "
            f"{r['refit_s'] * 1e3:.0f} ms | {r['refit_first_s'] * 1e3:.0f} ms | {r['update_over_refit']:.3f} | "
            f"{r['update_over_refit_first']:.3f} | {r['max_abs_dposterior_vs_refit']:.0e} |"
        )
    return out


def _e2e(res: dict) -> list[str]:
    e2e = res.get("e2e") or {}
    if not e2e.get("methods"):
        return []
    out = [
        "",
        f"**End to end** (`crowdstat fit votes.parquet --method M --out DIR`, {e2e['n_votes']:.0e} votes, fresh process; "
        f"`python -c 'import crowdstat.api, jax.numpy'` alone takes {e2e['python_import_s']:.2f} s)",
        "",
        "| method | cold (s) | warm compile cache (s) | read + validate (s) | fit (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, r in e2e["methods"].items():
        if "cold_s" in r:
            out.append(
                f"| {k} | {r['cold_s']:.2f} | {r['warm_cache_s']:.2f} | {_f(r.get('seconds_read'), '.2f')} "
                f"| {_f(r.get('seconds_fit'), '.2f')} | {_f(r.get('peak_rss_mib'), '.0f')} |"
            )
    if e2e.get("crowdkit_ds_fit_s"):
        out.append(
            f"\ncrowd-kit DawidSkene `fit` alone on the same data: {e2e['crowdkit_ds_fit_s']:.2f} s ({e2e.get('crowdkit_ds_note')})."
        )
    return out


def _memory_and_targets(res: dict) -> list[str]:
    out = []
    mem = res.get("memory")
    if mem:
        out += [
            "",
            f"**Memory**: {mem['n_votes']:.0e} votes ({mem['vote_array_bytes'] / 2**20:.0f} MiB of vote "
            f"arrays): peak RSS {mem['peak_rss_mib']:.0f} MiB "
            f"(after building the data {mem['stages']['after_data_mib']:.0f}, after K1 "
            f"{mem['stages']['after_k1_mib']:.0f}, after K2 {mem['stages']['after_k2_mib']:.0f}).",
        ]
    if res.get("targets"):
        out += ["", "**Targets** (ratios from this run)", "", "| target | where | measured | status |", "|---|---|---:|---|"]
        for t in res["targets"]:
            st = "n/a" if t["met"] is None else ("met" if t["met"] else f"missed by x{t['missed_by_factor']:.1f}")
            if t.get("why"):
                st += f" ({t['why']})"
            out.append(f"| {t['target']} | {t['where']} | {_f(t['value'], '.3g')} {t['unit']} | {st} |")
    return out


def markdown(res: dict) -> str:
    sections = (_run_line, _k1, _k2, _k3, _agg, _stream, _e2e, _memory_and_targets)
    return "\n".join(line for section in sections for line in section(res)) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(open(sys.argv[1]).read())))
