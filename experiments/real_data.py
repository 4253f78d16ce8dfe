"""Every crowdstat estimator on the real binary crowdsourcing sets, next to the anchor figures.

    .venv/bin/python experiments/real_data.py [--quick] [--sets a,b] [--splits N] [--out DIR] [--report-only]

A full run writes ``experiments/results/real_data.json``, ``docs/real_data.md`` (the generated tables
and the protocol) and ``docs/figures/real_data_accuracy.png``; ``--quick`` (or a custom subset/size)
writes the same three under ``experiments/cache/real_data/quick/`` (``custom/``), ``--out DIR`` under
DIR, never over the committed files. ``--report-only`` redraws page and figure from the results.

Protocol (docs/real_data.md):

- unsupervised methods (majority, proximal latent, em1, em2, bayes) see no gold and are scored on
  ALL gold items (as crowd-kit's numbers in ANCHORS.md);
- honeypot methods (proximal supervised, sequential, em1/em2 with honeypots clamped) get a random
  20% of the gold as honeypots and are scored on the other 80%, mean (and sd) over ``--splits``
  seeded splits (seeds 0..N-1), exactly the ANCHORS "OCLV (b)" protocol;
- accuracy: predicted "correct" (label 1) iff posterior > 0.5 (an exact tie counts as label 0,
  like ANCHORS' OCLV); log-loss: mean -log P(gold | votes) with P clipped to [1e-6, 1 - 1e-6];
- time: wall seconds of ``crowdstat.fit`` on an already-read table, one call, JIT compilation
  included (one process, float64, 2 shared CPU cores: times are indicative).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crowdstat  # noqa: E402
from crowdstat.io import datasets  # noqa: E402

CLIP = 1e-6
UNSUP = ["majority", "proximal_latent", "em1", "em2", "bayes"]
SUP = ["proximal_hp", "em1_hp", "em2_hp", "sequential_lam0.1", "sequential_lam1"]
LABELS = {
    "majority": "majority",
    "proximal_latent": "proximal latent (L1 one-coin EM, gamma=1%)",
    "em1": "em1 (one-coin DS)",
    "em2": "em2 (two-coin DS)",
    "bayes": "bayes (one-coin, NUTS)",
    "proximal_hp": "proximal supervised (L1-logistic, gamma=1%)",
    "em1_hp": "em1 + honeypots clamped",
    "em2_hp": "em2 + honeypots clamped",
    "sequential_lam0.1": "sequential eq. 8, lam=0.1",
    "sequential_lam1": "sequential eq. 8, lam=1",
}


def parse_anchors(path: Path) -> dict:
    """The summary table of ANCHORS.md: {dataset: {column: accuracy or None}}."""
    text = path.read_text()
    out, header = {}, None
    for line in text.splitlines():
        if line.startswith("| dataset | MajorityVote"):
            header = [c.strip() for c in line.strip("|").split("|")]
            continue
        if header and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) != len(header):
                break
            row = {}
            for h, c in zip(header[1:], cells[1:]):
                row[h] = float(c) if re.fullmatch(r"[0-9.]+", c) else None
            out[cells[0]] = row
        elif header and not line.startswith("|"):
            if out:
                break
    return out


def score(res, eval_truth: pd.DataFrame) -> dict:
    lines = res.lines[["program", "posterior"]].merge(eval_truth[["program", "truth"]], on="program", how="inner")
    if len(lines) != len(eval_truth):
        raise RuntimeError(f"{len(eval_truth) - len(lines)} evaluation items have no posterior")
    post = lines["posterior"].to_numpy(np.float64)
    t = lines["truth"].to_numpy()
    pred = np.where(post > 0.5, 1, -1)
    finite = np.isfinite(post)
    pc = np.clip(np.where(finite, post, 0.5), CLIP, 1 - CLIP)
    nll = -np.mean(np.where(t > 0, np.log(pc), np.log1p(-pc)))
    return {
        "accuracy": float(np.mean(pred == t)),
        "log_loss": float(nll) if finite.all() else None,
        "n_eval": int(len(t)),
        "n_nonfinite": int((~finite).sum()),
    }


def run_fit(table, method, **kw):
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = crowdstat.fit(table, method=method, x64=True, **kw)
        sec = time.perf_counter() - t0
    return res, sec, [str(w.message) for w in wlist]


def diag_summary(method: str, d: dict) -> dict:
    keys = {
        "em1": ["iterations", "converged", "class_prior", "log_likelihood"],
        "em2": ["iterations", "converged", "class_prior", "log_likelihood"],
        "bayes": ["r_hat_max", "n_eff_min", "divergences", "num_chains", "num_samples", "num_warmup", "class_prior"],
        "proximal": ["variant", "iterations", "converged", "gamma", "rel_gap", "n_filtered_out"],
        "sequential": ["max_abs_weight"],
    }.get(method, [])
    return {k: d[k] for k in keys if k in d}


def bayes_settings(n_votes: int, quick: bool):
    """NUTS budget by size. On 2 shared CPU cores a NUTS compile alone takes ~1 min; the full run
    skips NUTS above 50,000 votes (trec2011) and says so in the table."""
    if quick:
        return None if n_votes > 10_000 else {"num_warmup": 200, "num_samples": 200, "num_chains": 2}
    if n_votes > 50_000:
        return None
    if n_votes > 10_000:
        return {"num_warmup": 200, "num_samples": 200, "num_chains": 2}
    return {"num_warmup": 300, "num_samples": 300, "num_chains": 2}


def run_set(name: str, splits: int, quick: bool, log) -> dict:
    votes, truth, info = datasets.load(name)
    out = {"info": info, "methods": {}}
    table = crowdstat.read_votes(votes)
    log(f"[{name}] {info['n_votes']} votes, {info['n_items']} items, {info['n_workers']} workers, {info['n_gold']} gold")

    def record(key, res, sec, warns, ev, method):
        s = score(res, ev)
        s.update({"seconds": sec, "warnings": warns[:5], "diagnostics": diag_summary(method, res.diagnostics)})
        out["methods"][key] = s
        log(
            f"  {key:22s} acc={s['accuracy']:.4f} nll={s['log_loss'] if s['log_loss'] is None else round(s['log_loss'], 3)} "
            f"t={sec:.1f}s {s['diagnostics']}"
        )

    for key, method, kw in [
        ("majority", "majority", {}),
        ("proximal_latent", "proximal", {"latent": True}),
        ("em1", "em1", {}),
        ("em2", "em2", {}),
    ]:
        res, sec, w = run_fit(table, method, **kw)
        record(key, res, sec, w, truth, method)
    bs = bayes_settings(info["n_votes"], quick)
    if bs is None:
        why = "--quick skips NUTS above 10,000 votes" if quick else "NUTS skipped above 50,000 votes (time budget on 2 shared cores)"
        out["methods"]["bayes"] = {"skipped": why}
        log(f"  bayes skipped ({why})")
    else:
        res, sec, w = run_fit(table, "bayes", **bs)
        record("bayes", res, sec, w, truth, "bayes")
        out["methods"]["bayes"]["settings"] = bs

    per = {k: [] for k in SUP}
    for seed in range(splits):
        hp, ev = datasets.honeypot_split(truth, 0.2, seed)
        t2 = crowdstat.read_votes(datasets.honeypots_first(votes, hp), truth=hp)  # Algorithm 1's order
        for key, method, kw in [
            ("proximal_hp", "proximal", {"latent": False, "center": "zero", "gamma": "1%"}),
            ("em1_hp", "em1", {}),
            ("em2_hp", "em2", {}),
            ("sequential_lam0.1", "sequential", {"lam": 0.1, "keep_trajectory": False}),
            ("sequential_lam1", "sequential", {"lam": 1.0, "keep_trajectory": False}),
        ]:
            res, sec, w = run_fit(t2, method, **kw)
            s = score(res, ev)
            s.update({"seconds": sec, "warnings": w[:3], "diagnostics": diag_summary(method, res.diagnostics)})
            per[key].append(s)
    for key, rows in per.items():
        acc = np.array([r["accuracy"] for r in rows])
        nll = [r["log_loss"] for r in rows]
        out["methods"][key] = {
            "accuracy": float(acc.mean()),
            "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            "log_loss": float(np.mean(nll)) if all(x is not None for x in nll) else None,
            "n_splits_nonfinite_loss": int(sum(x is None for x in nll)),
            "seconds": float(np.mean([r["seconds"] for r in rows])),
            "n_eval": rows[0]["n_eval"],
            "splits": rows,
        }
        m = out["methods"][key]
        log(f"  {key:22s} acc={m['accuracy']:.4f} (sd {m['accuracy_sd']}) nll={m['log_loss']} t={m['seconds']:.2f}s/split")
    return out


# --------------------------------------------------------------------------- report

CK_COLS = ["MajorityVote", "Wawa", "DawidSkene", "OneCoinDawidSkene", "GLAD", "MACE", "MMSR", "ZeroBasedSkill", "KOS"]


def fmt(x, nd=3):
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _crowdkit_best(a: dict):
    """crowd-kit's anchors for one set and the name of its best column (None without anchors)."""
    ck = {c: a.get(c) for c in CK_COLS if a.get(c) is not None}
    return ck, (max(ck, key=ck.get) if ck else None)


def _cell(acc: dict, k: str, best) -> str:
    v = acc[k]
    if v is None:
        return "skipped"
    t = fmt(v)
    return f"**{t}**" if best is not None and abs(v - best) < 1e-12 else t


def _accuracy_table(results: dict, anchors: dict, args) -> list[str]:
    L = ["### Accuracy on the gold labels\n"]
    L.append(
        "Unsupervised columns: scored on all gold. Honeypot columns (marked hp): 20% of the gold as "
        f"honeypots, scored on the other 80%, mean over {args.splits} seeded splits. **Bold**: the best of our "
        "unsupervised / honeypot methods on the set.\n"
    )
    hdr = [
        "dataset",
        "majority",
        "prox latent",
        "em1",
        "em2",
        "bayes",
        "crowd-kit best (method)",
        "prox hp",
        "em1 hp",
        "em2 hp",
        "seq λ=0.1 hp",
        "seq λ=1 hp",
        "OCLV(b) hp",
        "OCLV(a) all-gold",
    ]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for s in results["sets"]:
        M = results["sets"][s]["methods"]
        a = anchors.get(s, {})
        ck, best_c = _crowdkit_best(a)
        acc = {k: (M[k].get("accuracy") if k in M else None) for k in UNSUP + SUP}
        bu = max((acc[k] for k in UNSUP if acc[k] is not None), default=None)
        supervised = ["proximal_hp", "em1_hp", "em2_hp", "sequential_lam0.1", "sequential_lam1"]
        bs = max((acc[k] for k in supervised if acc[k] is not None), default=None)
        row = [s] + [_cell(acc, k, bu) for k in UNSUP] + [f"{fmt(ck[best_c])} ({best_c})" if best_c else "—"]
        row += [_cell(acc, k, bs) for k in SUP] + [fmt(a.get("OCLV(b) 20%hp")), fmt(a.get("OCLV(a) all-gold"))]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    return L


def _log_loss_and_time_tables(results: dict) -> list[str]:
    sets = list(results["sets"])
    L = ["### Log-loss (mean -log P(gold), P clipped to [1e-6, 1-1e-6]; lower is better)\n"]
    hdr2 = ["dataset"] + [LABELS[k].split(" (")[0] + (" hp" if k in SUP and not k.endswith("_hp") else "") for k in UNSUP + SUP]
    L.append("| " + " | ".join(hdr2) + " |")
    L.append("|" + "---|" * len(hdr2))
    for s in sets:
        M = results["sets"][s]["methods"]
        L.append("| " + " | ".join([s] + [fmt(M.get(k, {}).get("log_loss")) for k in UNSUP + SUP]) + " |")
    L.append(
        "\nOCLV's log-loss in ANCHORS (20% hp): bluebirds 0.942, welinder_ducks 0.689, rte 0.281, jn_product 0.249, "
        "possent 0.350, sp 0.357, zencrowd_all 0.417, trec2011 0.686. A dash: non-finite posteriors (sequential weights "
        "overflowed).\n"
    )
    L.append("### Wall time (seconds; one `fit` call, compilation included; hp columns: mean per split)\n")
    L.append("| " + " | ".join(["dataset", "votes"] + [k for k in UNSUP + SUP] + ["crowd-kit DS", "crowd-kit GLAD"]) + " |")
    L.append("|" + "---|" * (len(UNSUP + SUP) + 4))
    ck_times = results.get("anchor_seconds", {})
    for s in sets:
        M = results["sets"][s]["methods"]
        ct = ck_times.get(s, {})
        L.append(
            "| "
            + " | ".join(
                [s, str(results["sets"][s]["info"]["n_votes"])]
                + [fmt(M.get(k, {}).get("seconds"), 2) for k in UNSUP + SUP]
                + [fmt(ct.get("DawidSkene"), 2), fmt(ct.get("GLAD"), 2)]
            )
            + " |"
        )
    L.append("")
    return L


def _diagnostics(results: dict) -> list[str]:
    L = ["### Diagnostics\n"]
    for s in results["sets"]:
        M = results["sets"][s]["methods"]
        parts = []
        for k in ("em1", "em2", "bayes", "proximal_latent"):
            if k in M and "diagnostics" in M[k]:
                parts.append(
                    f"{k}: " + ", ".join(f"{a}={fmt(b, 4) if isinstance(b, float) else b}" for a, b in M[k]["diagnostics"].items())
                )
        info = results["sets"][s]["info"]
        dup = (
            (
                f"; loader: {info['n_conflicting_pairs']} conflicting (item, worker) pairs, {info['n_votes_dropped_conflicts']} votes "
                f"dropped (policy '{info['duplicate_policy']}')"
            )
            if info["n_conflicting_pairs"]
            else ""
        )
        L.append(f"- **{s}**{dup}. " + "; ".join(parts))
    L.append("")
    return L


def _misses(results: dict, anchors: dict) -> list[str]:
    L = ["### Where we do not match or beat the anchors (computed)\n"]
    for s in results["sets"]:
        M = results["sets"][s]["methods"]
        a = anchors.get(s, {})
        ck, best_c = _crowdkit_best(a)
        un = {k: M[k]["accuracy"] for k in ("em1", "em2", "bayes") if k in M and "accuracy" in M[k]}
        sp = {k: M[k]["accuracy"] for k in ("proximal_hp", "em1_hp", "em2_hp") if k in M}
        msgs = []
        if best_c and un:
            k = max(un, key=un.get)
            if un[k] + 5e-4 < ck[best_c]:  # the summary anchors are rounded to 3 digits
                msgs.append(f"unsupervised: best of em1/em2/bayes is {k} {un[k]:.3f} < crowd-kit {best_c} {ck[best_c]:.3f}")
        ob = a.get("OCLV(b) 20%hp")
        if ob is not None and sp:
            k = max(sp, key=sp.get)
            if sp[k] + 5e-4 < ob:
                msgs.append(f"20% honeypots: best of ours is {k} {sp[k]:.3f} < OCLV(b) {ob:.3f}")
        L.append(
            f"- {s}: "
            + (
                "; ".join(msgs)
                if msgs
                else "matched (within the 3-digit rounding of the anchors) or beaten: best of em1/em2/bayes vs "
                "crowd-kit best; best honeypot method vs OCLV(b)"
            )
        )
    L.append("")
    return L


def write_report(results: dict, anchors: dict, args, md_path: Path, fig_path: Path | None):
    L = ["<!-- Generated by experiments/real_data.py; edit the script, not this block. -->"]
    machine = f"; {results['cpu_note']}" if results.get("cpu_note") else ""
    L.append(
        f"Command: `.venv/bin/python experiments/real_data.py{' --quick' if args.quick else ''}"
        f"{' --splits ' + str(args.splits) if args.splits != 10 else ''}` "
        f"({results['date']}, {results['seconds_total']:.0f} s in total, float64, CPU{machine}).\n"
    )
    L += _accuracy_table(results, anchors, args)
    L += _log_loss_and_time_tables(results)
    L += _diagnostics(results)
    L += _misses(results, anchors)
    if fig_path is not None:
        L.append(f"![accuracy per set and method](figures/{fig_path.name})\n")
    block = "\n".join(L)

    begin, end = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
    text = md_path.read_text() if md_path.exists() else f"# Real crowdsourcing data\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    md_path.write_text(pre + begin + "\n" + block + "\n" + end + post)


def plot(results: dict, anchors: dict, path: Path):
    from crowdstat.study.plotting import PALETTE, legend_outside, new_figure, save_figure, style_axes

    sets = list(results["sets"])
    keys = ["majority", "em1", "em2", "bayes", "proximal_hp", "em2_hp"]
    fig, axes = new_figure(1, 1, figsize=(12.5, 4.6))
    ax = axes[0, 0]
    width = 0.8 / (len(keys) + 2)
    x = np.arange(len(sets))
    for i, k in enumerate(keys):
        vals = [results["sets"][s]["methods"].get(k, {}).get("accuracy", np.nan) for s in sets]
        ax.bar(x + i * width, vals, width, color=PALETTE[i], label=LABELS[k])
    ck = [max(v for c, v in anchors.get(s, {}).items() if c in CK_COLS and v is not None) for s in sets]
    ob = [anchors.get(s, {}).get("OCLV(b) 20%hp") or np.nan for s in sets]
    ax.bar(x + len(keys) * width, ck, width, label="crowd-kit best (all gold)", color="0.35", hatch="//", edgecolor="white", lw=0)
    ax.bar(x + (len(keys) + 1) * width, ob, width, label="OCLV(b), 20% honeypots", color="0.7", hatch="..", edgecolor="white", lw=0)
    missing = [(i, j) for j, k in enumerate(keys) for i, s in enumerate(sets) if "accuracy" not in results["sets"][s]["methods"].get(k, {})]
    for i, j in missing:  # say "not run" rather than leave a silent gap
        ax.text(x[i] + j * width, 0.505, "not run", rotation=90, ha="center", va="bottom", fontsize=6.5, color="0.3")
    ax.set_xticks(x + width * (len(keys) + 1) / 2, sets, rotation=20)
    ax.set_ylim(0.5, 1.0)
    style_axes(
        ax, "data set", "accuracy on the gold labels (fraction)", "Accuracy per set: crowdstat methods vs the anchors (axis from 0.5)"
    )
    legend_outside(ax, "right", title="method")
    save_figure(fig, path, dpi=120)


def clean(x):
    """JSON-safe: non-finite floats -> None (e.g. overflowed sequential weights), numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def anchor_seconds(path: Path) -> dict:
    out: dict = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 4 and cells[1] in ("DawidSkene", "GLAD"):
            try:
                out.setdefault(cells[0], {})[cells[1]] = float(cells[3])
            except ValueError:
                pass
    return out


def _paths(args) -> tuple[Path, Path, Path]:
    """(results JSON, markdown page, figure): quick / custom runs never write over the committed files."""
    if args.out:
        out = Path(args.out).resolve()
    elif args.quick:
        out = ROOT / "experiments" / "cache" / "real_data" / "quick"
    elif args.splits != 10 or (args.sets and not args.merge):
        out = ROOT / "experiments" / "cache" / "real_data" / "custom"
    else:
        return (
            ROOT / "experiments" / "results" / "real_data.json",
            ROOT / "docs" / "real_data.md",
            ROOT / "docs" / "figures" / "real_data_accuracy.png",
        )
    return out / "real_data.json", out / "real_data.md", out / "figures" / "real_data_accuracy.png"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 splits, NUTS only on sets with <= 10,000 votes (200+200 draws)")
    ap.add_argument("--sets", default=None, help="comma-separated subset of the binary sets")
    ap.add_argument("--splits", type=int, default=None, help="honeypot splits (default 10; 3 with --quick)")
    ap.add_argument(
        "--out",
        default=None,
        help="folder for real_data.json, real_data.md and figures/real_data_accuracy.png. Default: the committed "
        "experiments/results/real_data.json, docs/real_data.md and docs/figures for a full run; experiments/cache/real_data/quick "
        "(or /custom for --sets without --merge, or non-default --splits) otherwise",
    )
    ap.add_argument("--merge", action="store_true", help="keep the sets already in the results and add/replace the ones run now")
    ap.add_argument("--report-only", action="store_true", help="rewrite the page and the figure from the results, run nothing")
    args = ap.parse_args(argv)
    if args.out and args.out.endswith(".json"):
        ap.error("--out is a folder now (it receives real_data.json, real_data.md and figures/); got a .json file name")
    if args.splits is None:
        args.splits = 3 if args.quick else 10
    results_path, md_path, fig = _paths(args)
    names = datasets.list_datasets(binary_only=True)
    if args.sets:
        want = args.sets.split(",")
        unknown = sorted(set(want) - set(names))
        if unknown:
            ap.error(f"unknown or non-binary set(s) {unknown}; binary sets: {names}")
        names = [n for n in names if n in want]
    order = ["bluebirds", "welinder_ducks", "rte", "jn_product", "possent", "sp", "zencrowd_all", "trec2011"]
    names = sorted(names, key=lambda n: order.index(n) if n in order else 99)
    anchors_md = datasets.datasets_root() / "ANCHORS.md"
    anchors = parse_anchors(anchors_md)

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_note": f"{os.cpu_count()} CPU cores (shared); niceness {os.nice(0)}; load average {os.getloadavg()[0]:.1f} at the start",
        "quick": args.quick,
        "splits": args.splits,
        "sets": {},
        "versions": {"crowdstat": crowdstat.__version__},
    }
    if args.merge or args.report_only:
        if not results_path.exists():
            raise SystemExit(f"--merge / --report-only: no results at {results_path} (run without them first, same --out/--quick)")
        prev = json.loads(results_path.read_text())
        results["sets"] = {k: v for k, v in prev["sets"].items() if args.report_only or k not in names}
        results["seconds_total"] = prev.get("seconds_total", 0.0)
        results["date"] = prev.get("date", results["date"])
        results["cpu_note"] = prev.get("cpu_note", results["cpu_note"] if args.merge else None)
    if args.report_only:
        results["sets"] = {n: results["sets"][n] for n in sorted(results["sets"], key=lambda n: order.index(n) if n in order else 99)}
        results["anchor_seconds"] = anchor_seconds(anchors_md)
        plot(results, anchors, fig)
        write_report(results, anchors, args, md_path, fig)
        print(f"rewrote {md_path} and {fig} from {results_path}")
        return
    t_prev = results.get("seconds_total", 0.0)
    import jax
    import numpyro

    results["versions"].update({"jax": jax.__version__, "numpyro": numpyro.__version__, "numpy": np.__version__, "pandas": pd.__version__})
    for n in names:
        results["sets"][n] = run_set(n, args.splits, args.quick, log)
        results["seconds_total"] = t_prev + time.perf_counter() - t0
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(
            json.dumps(clean({**results, "anchors": {k: anchors.get(k) for k in results["sets"]}}), indent=1, allow_nan=False, default=str)
        )
    results["sets"] = {n: results["sets"][n] for n in sorted(results["sets"], key=lambda n: order.index(n) if n in order else 99)}
    results["anchor_seconds"] = anchor_seconds(anchors_md)
    plot(results, anchors, fig)
    write_report(results, anchors, args, md_path, fig)
    log(f"wrote {results_path}, {md_path}, {fig} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
