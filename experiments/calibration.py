"""Recalibration (``crowdstat.fit(calibrate="auto")``): ECE and log-loss before and after, every method.

    .venv/bin/python experiments/calibration.py [--quick] [--sets a,b] [--splits 5] [--replicates 10] [--report-only]
    .venv/bin/python experiments/calibration.py --small-sets 50 | --large-sets 50 [--sets a,b] [--report-only]

Issue 17's acceptance check (docs/calibration.md): ECE (10 equal-width bins) after recalibration at
most 0.03 on the shared real sets with at least 1,000 gold items and in the simulation scenarios of
docs/study.md, for every method, and never worse than before on the small sets.

- real sets (``crowdstat.io.datasets``): 20% of the gold as honeypots (``honeypot_split``, seeds
  0..splits-1, honeypot items first as in experiments/real_data.py), scored on the other 80%;
- simulations: the scenarios of docs/study.md exp2 (12 and 24 honeypot programs) and exp4 (6
  adversaries, 6 two-coin optimists, fatigue d = 0.01; 12 honeypot programs), their populations,
  sizes and seeds, ``--replicates`` replicates each, scored on the non-honeypot lines;
- methods: majority, em1, em2, proximal (latent; and supervised, centred, the default), sequential (defaults,
  lam = 1), auto; one fit each with
  ``calibrate="auto"`` and ``x64=True``: ``posterior_raw`` is "before", ``posterior`` "after";
  ``auto`` chooses the map (none, temperature, platt, affine, isotonic) by held-out log-loss on the
  honeypots (``calibration.select_map``); each cell records every candidate's held-out score;
- ``floor``: the ECE a perfectly calibrated predictor with the "after" posteriors would show on
  the same number of lines (mean over 200 draws of y ~ Bernoulli(P)): the noise level of ECE itself.

Each (data set, split or replicate, method) is cached as JSON under experiments/cache/calibration/
(a rerun only computes what is missing; the folder is named after :data:`RULE`, so cells of an older
``auto`` rule are never reused); a full run writes experiments/results/calibration.json and the two
tables of docs/calibration.md (between the calibration-table markers), --quick / custom runs write
under experiments/cache/calibration/. Tables: printed, and by --report-only from the results.
--small-sets N / --large-sets N: the same cells on N splits of the small sets (ECE after - before
paired per split) or of the large sets of --sets (ECE after against 0.03, with the interval of its
mean), written to experiments/results/calibration_{small,large}.json and their tables in the doc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crowdstat  # noqa: E402
from crowdstat.estimators import calibration as C  # noqa: E402
from crowdstat.io import datasets  # noqa: E402
from crowdstat.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402

METHODS = {
    "majority": ("majority", {}),
    "em1": ("em1", {}),
    "em2": ("em2", {}),
    "proximal latent": ("proximal", {"latent": True}),
    # the default with honeypots since issue 17: supervised, centred on each annotator's own record, gamma by cv
    "proximal": ("proximal", {}),
    "sequential": ("sequential", {"keep_trajectory": False}),
    "auto": ("auto", {}),
}
REAL_SETS = ["bluebirds", "welinder_ducks", "rte", "possent", "zencrowd_all", "sp", "jn_product", "trec2011"]
BIG_GOLD = 1000
TARGET = 0.03
SIM_SETTINGS = dict(n_programs=60, lines_per_program=5, annotators_per_item=5, design="program", honeypot_placement="first")
SCENARIOS = {
    "exp2, 12 honeypot programs": ("expert:2@0.9,novice:5@0.7,spammer:3,adversary:2@0.3", 2, 0.2),
    "exp2, 24 honeypot programs": ("expert:2@0.9,novice:5@0.7,spammer:3,adversary:2@0.3", 2, 0.4),
    "exp4, 6 adversaries": ("expert:2@0.9,novice:6@0.7,adversary:6@0.25", 4, 0.2),
    "exp4, 6 two-coin optimists": ("expert:2@0.9,novice:4@0.75,twocoin:6@0.95/0.5", 1004, 0.2),
    "exp4, fatigue d = 0.01": ("expert:2@0.95~0.01,novice:6@0.75", 2004, 0.2),
}
CACHE = ROOT / "experiments" / "cache" / "calibration"
#: the ``auto`` rule the cells were computed with (names the cache folder of the cells)
RULE = "select-heldout-logloss-affine"
DOC = ROOT / "docs" / "calibration.md"
MARKERS = {
    which: (f"<!-- calibration-table:{which}:start (experiments/calibration.py) -->", f"<!-- calibration-table:{which}:end -->")
    for which in ("real", "simulated")
}
#: --small-sets N: the sets with < BIG_GOLD gold items on N splits, paired after - before per split;
#: --large-sets N: the large sets (--sets, default all of them) on N splits, ECE after against the target
MANY = {
    kind: (
        ROOT / "experiments" / "results" / f"calibration_{kind}.json",
        (f"<!-- calibration-table:{kind}:start (experiments/calibration.py --{kind}-sets) -->", f"<!-- calibration-table:{kind}:end -->"),
    )
    for kind in ("small", "large")
}
#: --cached-only: summarize the cells already computed, compute nothing (the missing ones are listed)
CACHED_ONLY = {"on": False, "missing": []}


def ece_floor(p: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated predictor with posteriors ``p`` (y ~ Bernoulli(p))."""
    rng = np.random.default_rng(seed)
    return float(np.mean([C.ece(p, np.where(rng.random(p.size) < p, 1, -1)) for _ in range(draws)]))


#: the two-parameter (and one-parameter) map families whose in-sample limit the tables report
LIMIT_FAMILIES = ("temperature", "platt", "affine")


def family_limit(p: np.ndarray, y: np.ndarray) -> float:
    """The smallest ECE of the evaluation lines that a map of :data:`LIMIT_FAMILIES`, fitted by maximum
    likelihood on these very lines (their truth; in-sample, so optimistic), gives their raw posteriors ``p``:
    what the families could reach with the evaluation lines' truth, not only the honeypots'. An after-ECE
    above the target where this is below it is the map's sampling error from the honeypots; where this is
    above it too, no such map has the right shape. nan with one truth class among the lines."""
    if np.all(y > 0) or np.all(y < 0):
        return float("nan")
    return min(C.ece(C.fit_map(k, p, y)(p), y) for k in LIMIT_FAMILIES)


def score(res, truth: np.ndarray, rows: np.ndarray) -> dict:
    """Before / after metrics of the lines ``rows`` (``truth``: their truth, +1/-1)."""
    after = res.lines["posterior"].to_numpy(np.float64)[rows]
    before = res.lines["posterior_raw"].to_numpy(np.float64)[rows] if "posterior_raw" in res.lines else after
    cal = res.diagnostics.get("calibration", {})
    out = {"kind": cal.get("kind"), "n_honeypot_lines": cal.get("n_honeypot_lines"), "n_eval": int(rows.size)}
    for tag, p in (("before", before), ("after", after)):
        out[f"ece_{tag}"] = C.ece(p, truth)
        out[f"log_loss_{tag}"] = C.log_loss(p, truth)
        out[f"accuracy_{tag}"] = float(np.mean((p > 0.5) == (truth > 0)))
    out["floor"] = ece_floor(after)
    out["limit"] = family_limit(before, truth)
    out["crossfit"] = {k: cal[k] for k in ("ece_before", "ece_after", "log_loss_before", "log_loss_after") if k in cal}
    sel = cal.get("selection")
    if sel:  # auto's choice: every candidate's held-out log-loss on the honeypots
        out["selection"] = {k: v["log_loss"] for k, v in sel["candidates"].items()}
    return out


def run_fit(table, method: str):
    name, extra = METHODS[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = crowdstat.fit(table, method=name, calibrate="auto", x64=True, **extra)
    return res, time.perf_counter() - t0


def cached(key: str, compute) -> dict:
    path = CACHE / f"cells-{RULE}" / f"{key}.json"
    if path.exists():
        cell = json.loads(path.read_text())
        if "limit" in cell:  # cells written before the limit column are computed again
            return cell
    if CACHED_ONLY["on"]:
        CACHED_ONLY["missing"].append(key)
        return None
    out = compute()
    atomic_write_json(path, out, parents=True)
    return out


def real_cells(name: str, splits: int, methods, bar) -> list[dict]:
    votes, truth, info = datasets.load(name)
    rows = []
    for seed in range(splits):
        hp, ev = datasets.honeypot_split(truth, 0.2, seed)
        table = crowdstat.read_votes(datasets.honeypots_first(votes, hp), truth=hp)
        for m in methods:

            def compute(table=table, ev=ev, m=m):
                res, sec = run_fit(table, m)
                lines = res.lines[["program", "line"]].reset_index().merge(ev, on=["program", "line"], how="inner")
                if len(lines) != len(ev):
                    raise RuntimeError(f"{name}: {len(ev) - len(lines)} evaluation items have no posterior")
                return {**score(res, lines["truth"].to_numpy(), lines["index"].to_numpy()), "seconds": sec}

            cell = cached(f"real__{name}__{seed}__{m.replace(' ', '_')}", compute)
            if cell is not None:
                rows.append({"data": name, "kind_of_data": "real", "n_gold": info["n_gold"], "split": seed, "method": m, **cell})
            bar.update()
    return rows


def sim_cells(scenario: str, replicates: int, methods, bar) -> list[dict]:
    import importlib

    study = importlib.import_module("_study")
    pop, seed, frac = SCENARIOS[scenario]
    sims = study.replicates(seed, replicates, pop, honeypot_fraction=frac, **SIM_SETTINGS)
    rows = []
    for r, sim in enumerate(sims):
        table = crowdstat.read_votes(sim.votes, truth=sim.truth)
        for m in methods:

            def compute(table=table, sim=sim, m=m):
                res, sec = run_fit(table, m)
                lines = res.lines[["program", "line"]].reset_index().merge(sim.true_lines, on=["program", "line"])
                lines = lines[np.asarray(table.arrays.truth)[lines["index"].to_numpy()] == 0]
                rows_, truth_ = lines["index"].to_numpy(), lines["truth"].to_numpy()
                out = {**score(res, truth_, rows_), "seconds": sec}
                # the lines themselves (a few hundred), for the ECE pooled over replicates
                out["p_after"] = res.lines["posterior"].to_numpy(np.float64)[rows_].tolist()
                out["truth_eval"] = truth_.astype(int).tolist()
                return out

            # v2: the cells keep their lines (pooled ECE); the v1 cells without them are not reused
            key = f"sim__{scenario}__{replicates}__{r}__{m}__v2".replace(" ", "_").replace(",", "").replace("=", "")
            cell = cached(key, compute)
            if cell is not None:
                rows.append({"data": scenario, "kind_of_data": "simulated", "split": r, "method": m, **cell})
            bar.update()
    return rows


def interval(v) -> dict:
    from crowdstat.study.metrics import replicate_interval

    iv = replicate_interval(np.asarray(v, np.float64), bounds=(0.0, 1.0))
    return {"mean": float(iv["mean"]), "lo": float(iv["lo"]), "hi": float(iv["hi"]), "n": int(iv["n"])}


def summarize(rows: list[dict]) -> list[dict]:
    df = pd.DataFrame(rows)
    out = []
    for (data, m), g in df.groupby(["data", "method"], sort=False):
        s = {"data": data, "method": m, "kind_of_data": g["kind_of_data"].iloc[0], "n_gold": g.get("n_gold", pd.Series([None])).iloc[0]}
        for k in ("ece_before", "ece_after", "floor", "limit", "log_loss_before", "log_loss_after", "accuracy_before", "accuracy_after"):
            s[k] = interval(g[k]) if k.startswith(("ece", "floor", "limit", "accuracy")) else {"mean": float(g[k].mean())}
        if "p_after" in g and g["p_after"].notna().all():
            # one ECE over the lines of every replicate: the calibration of the procedure in the scenario,
            # measured on 10x the lines (floor: a perfectly calibrated predictor on the same pooled lines)
            p = np.concatenate([np.asarray(x, np.float64) for x in g["p_after"]])
            y = np.concatenate([np.asarray(x) for x in g["truth_eval"]])
            s["ece_after_pooled"] = C.ece(p, y)
            s["floor_pooled"] = ece_floor(p)
            s["n_pooled"] = int(p.size)
        s["maps"] = g["kind"].value_counts().to_dict()
        s["n_honeypot_lines"] = float(g["n_honeypot_lines"].mean())
        s["seconds"] = float(g["seconds"].mean())
        out.append(s)
    return out


def _f(x, nd=3):
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _iv(d):
    return f"{_f(d['mean'])} [{_f(d['lo'])}, {_f(d['hi'])}]"


def table(summary: list[dict], which: str) -> str:
    """The markdown before/after table of the real (``which="real"``) or simulated cells."""
    limit = which == "real"  # in-sample on a replicate's 180-240 lines the limit is mostly over-fit: real sets only
    head = "| data | method | maps | ECE before | ECE after | floor | " + ("2-param limit | " if limit else "")
    head += "log-loss before → after | accuracy before → after | check |"
    if which == "simulated":
        head += " ECE after, pooled (floor) | pooled check |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        if s["kind_of_data"] != which:
            continue
        big = which == "simulated" or (s["n_gold"] or 0) >= BIG_GOLD
        ok = s["ece_after"]["mean"] <= TARGET if big else s["ece_after"]["mean"] <= s["ece_before"]["mean"]
        rule = "<= 0.03" if big else "after <= before"
        maps = ", ".join(f"{k} {v}" for k, v in s["maps"].items())
        name = s["data"] + (f" ({int(s['n_gold'])} gold)" if which == "real" else "")
        cells = [
            name,
            s["method"],
            maps,
            _iv(s["ece_before"]),
            _iv(s["ece_after"]),
            _f(s["floor"]["mean"]),
            *([_f(s["limit"]["mean"])] if limit else []),
            f"{_f(s['log_loss_before']['mean'])} → {_f(s['log_loss_after']['mean'])}",
            f"{_f(s['accuracy_before']['mean'])} → {_f(s['accuracy_after']['mean'])}",
            f"{'met' if ok else 'MISSED'} ({rule})",
        ]
        if which == "simulated":
            pooled = s.get("ece_after_pooled")
            if pooled is None:
                cells += ["—", "—"]
            else:
                verdict = "met" if pooled <= TARGET else "MISSED"
                cells += [f"{_f(pooled)} ({_f(s['floor_pooled'])}, {s['n_pooled']} lines)", f"{verdict} (<= 0.03)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc_tables(summary: list[dict], path: Path = DOC) -> None:
    """Replace the two tables between the calibration-table markers of docs/calibration.md (atomic write)."""
    text = path.read_text()
    for which, (start, end) in MARKERS.items():
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            raise SystemExit(f"{path}: the markers {start!r} ... {end!r} are missing; the tables were not written")
        text = text[: i + len(start)] + "\n\n" + table(summary, which) + "\n\n" + text[j:]
    atomic_write_text(path, text)


def paired(rows: list[dict]) -> list[dict]:
    """Per (set, method): ECE and log-loss after - before on the same split, mean with a 95% interval
    (percentile bootstrap for ECE, in [-1, 1]; Student t for log-loss), and the means themselves."""
    from crowdstat.study.metrics import replicate_interval

    out = []
    for (data, m), g in pd.DataFrame(rows).groupby(["data", "method"], sort=False):
        g = g.sort_values("split")
        d_ece = replicate_interval((g["ece_after"] - g["ece_before"]).to_numpy(np.float64), bounds=(-1.0, 1.0))
        d_ll = replicate_interval((g["log_loss_after"] - g["log_loss_before"]).to_numpy(np.float64))
        rec = {"data": data, "method": m, "n_gold": int(g["n_gold"].iloc[0]), "splits": len(g), "maps": g["kind"].value_counts().to_dict()}
        for k in ("ece_before", "ece_after", "log_loss_before", "log_loss_after"):
            rec[k] = float(g[k].mean())
        after = replicate_interval(g["ece_after"].to_numpy(np.float64), bounds=(0.0, 1.0))
        rec["ece_after_iv"] = {k: float(after[k]) for k in ("mean", "lo", "hi")}
        rec["floor"] = float(g["floor"].mean())
        rec["d_ece"] = {k: float(d_ece[k]) for k in ("mean", "lo", "hi")}
        rec["d_log_loss"] = {k: float(d_ll[k]) for k in ("mean", "lo", "hi")}
        out.append(rec)
    return out


def small_table(rows: list[dict]) -> str:
    """The small sets' paired table: the check (after <= before in the means) and whether a difference is measurable."""
    head = "| data | method | maps | ECE before → after | ECE after - before [95%] | log-loss before → after | "
    head += "log-loss after - before [95%] | check | the difference |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        d = r["d_ece"]
        verdict = "lower" if d["hi"] < 0 else ("HIGHER" if d["lo"] > 0 else "not measurable (interval holds 0)")
        maps = ", ".join(f"{k} {v}" for k, v in r["maps"].items())
        dl = r["d_log_loss"]
        lines.append(
            f"| {r['data']} ({r['n_gold']} gold) | {r['method']} | {maps} | {_f(r['ece_before'])} → {_f(r['ece_after'])} | "
            f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] | {_f(r['log_loss_before'])} → {_f(r['log_loss_after'])} | "
            f"{dl['mean']:+.3f} [{dl['lo']:+.3f}, {dl['hi']:+.3f}] | "
            f"{'met' if r['ece_after'] <= r['ece_before'] else 'MISSED'} (after <= before) | {verdict} |"
        )
    return "\n".join(lines)


def large_table(rows: list[dict]) -> str:
    """The large sets' table on many splits: ECE after with the interval of its mean against the 0.03 target."""
    head = "| data | method | maps | ECE before | ECE after [95%] | floor | log-loss before → after | check | against 0.03 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        a = r["ece_after_iv"]
        verdict = "below" if a["hi"] < TARGET else ("ABOVE" if a["lo"] > TARGET else "not measurable (interval holds 0.03)")
        maps = ", ".join(f"{k} {v}" for k, v in r["maps"].items())
        lines.append(
            f"| {r['data']} ({r['n_gold']} gold) | {r['method']} | {maps} | {_f(r['ece_before'])} | "
            f"{a['mean']:.4f} [{a['lo']:.4f}, {a['hi']:.4f}] | {_f(r['floor'])} | {_f(r['log_loss_before'])} → {_f(r['log_loss_after'])} | "
            f"{'met' if a['mean'] <= TARGET else 'MISSED'} (<= 0.03) | {verdict} |"
        )
    return "\n".join(lines)


def write_many_table(kind: str, rows: list[dict], splits: int, path: Path = DOC) -> None:
    text = path.read_text()
    start, end = MANY[kind][1]
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: the markers {start!r} ... {end!r} are missing; the table was not written")
    body = f"Command: `.venv/bin/python experiments/calibration.py --{kind}-sets {splits}` "
    body += f"({splits} seeded splits per set, seeds 0..{splits - 1}).\n\n"
    tab = small_table(rows) if kind == "small" else large_table(rows)
    atomic_write_text(path, text[: i + len(start)] + "\n\n" + body + tab + "\n\n" + text[j:])


def many_splits(kind: str, splits: int, report_only: bool, sets: list[str] | None) -> int:
    """--small-sets / --large-sets: the sets of that size (large: --sets, default all) on
    ``splits`` splits, every method (cells cached as usual); the paired table into docs/calibration.md."""
    path = MANY[kind][0]
    if report_only:
        res = json.loads(path.read_text())
    else:
        from tqdm.auto import tqdm

        large = [s for s in REAL_SETS if len(datasets.load(s)[1]) >= BIG_GOLD]
        if kind == "small":
            sets = [s for s in REAL_SETS if s not in large]
        else:
            sets = sets or large
            if set(sets) - set(large):
                raise SystemExit(f"--large-sets: {sorted(set(sets) - set(large))} are not sets with >= {BIG_GOLD} gold items")
        bar = tqdm(total=len(METHODS) * len(sets) * splits, desc=f"calibration, {kind} sets", unit="fit")
        rows = [r for s in sets for r in real_cells(s, splits, list(METHODS), bar)]
        bar.close()
        res = {"meta": {"splits": splits, "sets": sets, "rule": RULE, "date": time.strftime("%Y-%m-%d")}, "paired": paired(rows)}
        atomic_write_text(path, json.dumps(res, indent=1) + "\n")
    write_many_table(kind, res["paired"], res["meta"]["splits"])
    print(small_table(res["paired"]) if kind == "small" else large_table(res["paired"]))
    return 0


FIGURE = ROOT / "docs" / "figures" / "calibration_ece.png"


def plot(summary: list[dict], path: Path = FIGURE) -> None:
    """ECE before (open) and after (filled) recalibration per data set and method, with the noise floor
    (grey dash) and the 0.03 target; simulations: the ECE pooled over the replicates (docs/calibration.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(s["method"] for s in summary))
    colors = dict(zip(methods, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True, gridspec_kw={"width_ratios": [8, 5]})
    for ax, kind in zip(axes, ("real", "simulated"), strict=True):
        rows = [s for s in summary if (s["kind_of_data"] == "real") == (kind == "real")]
        datas = list(dict.fromkeys(s["data"] for s in rows))
        width = 0.8 / len(methods)
        for s in rows:
            x = datas.index(s["data"]) - 0.4 + (methods.index(s["method"]) + 0.5) * width
            after = s["ece_after"]["mean"] if kind == "real" else s["ece_after_pooled"]
            floor = s["floor"]["mean"] if kind == "real" else s["floor_pooled"]
            c = colors[s["method"]]
            ax.plot([x, x], [s["ece_before"]["mean"], after], color=c, lw=0.8, alpha=0.6)
            ax.scatter([x], [s["ece_before"]["mean"]], facecolors="none", edgecolors=[c], s=22, lw=0.9)
            ax.scatter([x], [after], color=c, s=22, label=s["method"] if datas.index(s["data"]) == 0 else None)
            ax.plot([x - width / 2, x + width / 2], [floor, floor], color="0.55", lw=1.2)
        ax.axhline(0.03, color="crimson", ls="--", lw=1, label="target 0.03" if kind == "real" else None)
        ax.set_xticks(range(len(datas)))
        labels = [f"{d}\n({int(next(s['n_gold'] for s in rows if s['data'] == d))} gold)" for d in datas] if kind == "real" else datas
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7.5)
        ax.set_yscale("log")
        ax.set_title(
            "real sets: mean ECE over 5 splits" if kind == "real" else "simulations: ECE pooled over 10 replicates (before: per replicate)",
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].set_ylabel("ECE (10 bins), eval lines")
    axes[0].legend(fontsize=7, ncol=4, loc="lower left")
    title = "Recalibration from honeypots (calibrate='auto'): open = raw posteriors, filled = after the map, grey = noise floor"
    fig.suptitle(title, fontsize=9.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 splits / replicates, small sets and 2 scenarios")
    ap.add_argument("--sets", help="comma-separated real sets (default: the 8 binary sets)")
    ap.add_argument("--scenarios", type=int, help="the first N simulation scenarios (default: all)")
    ap.add_argument("--splits", type=int, default=None)
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--methods", help="comma-separated (default: all six)")
    ap.add_argument(
        "--isotonic-min-per-class",
        type=int,
        help="sensitivity run: auto's isotonic guard (calibration.ISOTONIC_MIN_PER_CLASS) set to N; written under the cache only",
    )
    ap.add_argument(
        "--small-sets",
        type=int,
        metavar="N",
        help="the sets with < 1,000 gold items on N splits, ECE after - before paired per split "
        "(experiments/results/calibration_small.json, its table in docs/calibration.md)",
    )
    ap.add_argument(
        "--large-sets",
        type=int,
        metavar="N",
        help="the sets with >= 1,000 gold items (or those of --sets) on N splits, ECE after against 0.03 "
        "(experiments/results/calibration_large.json, its table in docs/calibration.md)",
    )
    ap.add_argument("--report-only", action="store_true", help="print the tables of the results already written")
    ap.add_argument("--cached-only", action="store_true", help="summarize the cached cells only (a run cut short); lists the missing")
    args = ap.parse_args(argv)
    CACHED_ONLY["on"] = args.cached_only
    for kind, n in (("small", args.small_sets), ("large", args.large_sets)):
        if n is not None:
            if n < 3:
                ap.error(f"--{kind}-sets: at least 3 splits (an interval needs 3)")
            return many_splits(kind, n, args.report_only, args.sets.split(",") if args.sets else None)
    global RULE
    if args.isotonic_min_per_class is not None:  # a sensitivity run: its own cells, never the results or the docs
        C.ISOTONIC_MIN_PER_CLASS = args.isotonic_min_per_class
        RULE = f"{RULE}-isotonic-from-{args.isotonic_min_per_class}"
    settings = (args.sets, args.scenarios, args.splits, args.replicates, args.methods, args.isotonic_min_per_class)
    custom = args.quick or any(x is not None for x in settings)
    out_path = ROOT / "experiments" / "results" / "calibration.json"
    if custom:
        out_path = CACHE / ("quick.json" if args.isotonic_min_per_class is None else f"{RULE}.json")
    if args.report_only:
        res = json.loads(out_path.read_text())
        print(table(res["summary"], "real") + "\n\n" + table(res["summary"], "simulated"))
        if not custom:
            plot(res["summary"])
            print(f"wrote {FIGURE.relative_to(ROOT)}")
        return 0
    sets = args.sets.split(",") if args.sets else (["bluebirds", "rte"] if args.quick else REAL_SETS)
    scen = list(SCENARIOS)[: args.scenarios if args.scenarios is not None else (2 if args.quick else None)]
    splits = args.splits or (2 if args.quick else 5)
    reps = args.replicates or (2 if args.quick else 10)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=len(methods) * (len(sets) * splits + len(scen) * reps), desc="calibration", unit="fit")
    rows = []
    for s in scen:
        rows += sim_cells(s, reps, methods, bar)
    for name in sets:
        rows += real_cells(name, splits, methods, bar)
    bar.close()
    summary = summarize(rows)
    meta = {
        "missing_cells": CACHED_ONLY["missing"],
        "splits": splits,
        "replicates": reps,
        "sets": sets,
        "scenarios": {s: SCENARIOS[s] for s in scen},
        "methods": methods,
    }
    meta.update(
        seconds=time.perf_counter() - t0, nice=os.nice(0), load=os.getloadavg(), cores=os.cpu_count(), date=time.strftime("%Y-%m-%d")
    )
    meta.update(rule=RULE, isotonic_min_per_class=C.ISOTONIC_MIN_PER_CLASS)
    cells = [{k: v for k, v in r.items() if k not in ("p_after", "truth_eval")} for r in rows]  # the lines stay in the cache
    text = json.dumps({"meta": meta, "summary": summary, "cells": cells}, indent=1, default=float) + "\n"
    atomic_write_text(out_path, text, parents=True)
    print(table(summary, "real") + "\n\n" + table(summary, "simulated"))
    print(f"wrote {out_path.relative_to(ROOT)}")
    if not custom and not CACHED_ONLY["missing"]:
        write_doc_tables(summary)
        plot(summary)
        print(f"wrote the tables of {DOC.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
