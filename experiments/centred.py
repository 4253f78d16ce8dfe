"""The centred proximal fit (the new default) against the paper's fit on the simulation scenarios of docs/study.md.

    .venv/bin/python experiments/centred.py [--quick] [--replicates N] [--out DIR] [--report-only]

Three fits of ``method="proximal"`` (docs/math.md, "Centred fit"), through ``crowdstat.study.compare``:

- ``proximal``: the default (``center="separable"``, ``gamma=None``: 5-fold cv over 0.1% .. 30% and
  100% of gamma_max with >= 5 honeypot programs, one-standard-error rule; else 100%);
- ``proximal:gamma=1%:center=zero``: the paper's fit (the old default; the "proximal" of docs/study.md);
- ``proximal:gamma=100%``: the separable estimate alone (w_i = logit((a_i + 1) / (n_i + 2))).

Scenarios (their populations, sizes and seeds, copied from experiments/exp2_honeypots.py and
experiments/exp4_robustness.py; ``--replicates`` replicates each, 20 by default as there): exp2 with
3, 6, 12 and 24 of 60 honeypot programs (5, 10, 20, 40%; with 3 the default falls back to 100%, no cv);
exp4 with 6 adversaries, 6 two-coin optimists, fatigue d = 0.01 (12 honeypot programs). Metrics on
the non-honeypot lines: accuracy, log-loss, ECE (10 bins), reliability RMSE; mean and 95% interval
over replicates (``_study.summarize``), and the paired difference per replicate (default minus the
paper's fit; default minus the separable estimate) with a percentile-bootstrap interval over replicates.

A full run (default sizes) writes experiments/results/centred.json, docs/figures/centred.png and the
generated block of docs/centred.md; --quick (5 replicates) or --replicates N writes under
experiments/cache/centred/<quick|custom>/ (--out DIR: under DIR) and never touches the page.
--report-only redraws the figure and the page block from the results already written (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _study import INTERVALS, ROOT, add_output_args, cpu_note, fmt, markdown, outputs, replicates, summarize

from crowdstat.io.atomic import atomic_write_text
from crowdstat.study.compare import compare
from crowdstat.study.plotting import figure_legend, log_axis, new_figure, save_figure, series_style, style_axes

NAME = "centred"
PAGE = ROOT / "docs" / "centred.md"
BEGIN, END = "<!-- BEGIN CENTRED -->", "<!-- END CENTRED -->"
DEFAULT, PAPER, SEPARABLE = "proximal", "proximal:gamma=1%:center=zero", "proximal:gamma=100%"
METHODS = [DEFAULT, PAPER, SEPARABLE]
LABELS = {DEFAULT: "default (centred, cv gamma)", PAPER: "paper (zero, 1%)", SEPARABLE: "separable alone (100%)"}
METRICS = ["accuracy", "log_loss", "ece", "reliability_rmse"]
LOWER_IS_BETTER = {"log_loss", "ece", "reliability_rmse"}

# exp2_honeypots.py: POP, N_PROGRAMS = 60, its settings, seed 2 for every fraction
EXP2_POP = "expert:2@0.9,novice:5@0.7,spammer:3,adversary:2@0.3"
EXP2 = dict(n_programs=60, lines_per_program=5, annotators_per_item=5, design="program", honeypot_placement="first")
# exp4_robustness.py: its settings; seeds 4 (adversaries), 4 + 1000 (two-coin), 4 + 2000 (fatigue)
EXP4 = dict(n_programs=60, lines_per_program=5, honeypot_fraction=0.2, annotators_per_item=5, design="program")
SCENARIOS = {
    "exp2, 3 honeypot programs": (EXP2_POP, 2, {**EXP2, "honeypot_fraction": 0.05}),
    "exp2, 6 honeypot programs": (EXP2_POP, 2, {**EXP2, "honeypot_fraction": 0.1}),
    "exp2, 12 honeypot programs": (EXP2_POP, 2, {**EXP2, "honeypot_fraction": 0.2}),
    "exp2, 24 honeypot programs": (EXP2_POP, 2, {**EXP2, "honeypot_fraction": 0.4}),
    "exp4, 6 adversaries": ("expert:2@0.9,novice:6@0.7,adversary:6@0.25", 4, EXP4),
    "exp4, 6 two-coin optimists": ("expert:2@0.9,novice:4@0.75,twocoin:6@0.95/0.5", 1004, EXP4),
    "exp4, fatigue d = 0.01": ("expert:2@0.95~0.01,novice:6@0.75", 2004, EXP4),
}
BOOT = 9999  # bootstrap resamples of the paired differences (numpy, seed 0)


def chosen_gamma(res) -> str:
    """The gamma the default fit used: cv's choice, or the fallback (fewer than 5 honeypot programs)."""
    d = res.diagnostics
    sel = d.get("selection") or {}
    if sel.get("chosen"):
        return str(sel["chosen"]["gamma"])
    frac = float(d["gamma"]) / float(d["gamma_max"]) if d.get("gamma_max") else float("nan")
    return f"{100 * frac:.3g}% (no cv)"


def score(sims, scenario: str, bar) -> pd.DataFrame:
    """compare() of the three fits on every replicate (as _study.score_all), plus the default's chosen gamma."""
    rows = []
    for r, sim in enumerate(sims):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmp = compare(sim.votes, sim.truth if len(sim.truth) else None, sim.true_lines, sim.reliability, methods=METHODS)
        df = cmp.metrics.copy()
        df["replicate"] = r
        df["scenario"] = scenario
        df["chosen_gamma"] = np.where(df["method"] == DEFAULT, chosen_gamma(cmp.fits[DEFAULT]), "")
        rows.append(df)
        bar.update()
    return pd.concat(rows, ignore_index=True)


def paired(df: pd.DataFrame, other: str) -> list[dict]:
    """Per scenario and metric: default minus ``other`` per replicate; mean, bootstrap 95% interval, wins / losses / ties."""
    out = []
    rng = np.random.default_rng(0)
    for scen, g in df.groupby("scenario", sort=False):
        for m in METRICS:
            w = g.pivot(index="replicate", columns="method", values=m)
            d = (w[DEFAULT] - w[other]).to_numpy(np.float64)
            d = d[np.isfinite(d)]
            row = {
                "scenario": scen,
                "versus": other,
                "metric": m,
                "n": int(d.size),
                "mean": float("nan"),
                "lo": float("nan"),
                "hi": float("nan"),
            }
            if d.size:
                row["mean"] = float(d.mean())
                if d.size >= 3:
                    boot = d[rng.integers(0, d.size, (BOOT, d.size))].mean(axis=1)
                    row["lo"], row["hi"] = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
                better = d < 0 if m in LOWER_IS_BETTER else d > 0
                worse = d > 0 if m in LOWER_IS_BETTER else d < 0
                row.update(default_better=int(better.sum()), default_worse=int(worse.sum()), ties=int((d == 0).sum()))
            out.append(row)
    return out


def verdict(p: dict) -> str:
    """'better' / 'worse' for the default when the interval excludes 0, else 'tie' (interval contains 0)."""
    if not np.isfinite(p["lo"]):
        return "no interval"
    if p["lo"] > 0 or p["hi"] < 0:
        good = (p["hi"] < 0) if p["metric"] in LOWER_IS_BETTER else (p["lo"] > 0)
        return "**default better**" if good else "**default worse**"
    return "tie"


def report(res: dict) -> str:
    """The generated block of docs/centred.md (tables) from the results."""
    meta = res["meta"]
    summ = pd.DataFrame(res["summary"])
    summ["fit"] = summ["method"].map(LABELS)
    L = [
        "<!-- Generated by experiments/centred.py; edit the script, not this block. -->",
        f"Run: {meta['date_utc'][:10]}, {meta['replicates']} replicates per scenario ({meta['run_kind']} run), "
        f"{meta['seconds']:.0f} s on {meta['cpu_note']}. Mean over replicates [{meta['intervals']}]; "
        "metrics on the non-honeypot lines.\n",
    ]
    cols = ["scenario", "fit", "accuracy", "log_loss", "ece", "reliability_rmse"]
    L.append(markdown(summ[cols + [f"{m}_{s}" for m in METRICS for s in ("lo", "hi")]], cols, interval_metrics=METRICS))
    L.append("Gamma chosen by the default (cv), count of replicates per choice:\n")
    for scen, ch in res["chosen_gamma"].items():
        L.append(f"- {scen}: " + ", ".join(f"{k} x{v}" for k, v in ch.items()))
    for other, title in ((PAPER, "the paper's fit (zero, 1%)"), (SEPARABLE, "the separable estimate alone (100%)")):
        L.append(
            f"\nPaired difference, default minus {title}, per replicate: mean [95% percentile-bootstrap interval over "
            f"replicates, {BOOT} resamples]; replicates where the default is better / worse / equal; verdict: "
            "better or worse when the interval excludes 0, else tie.\n"
        )
        L.append("| scenario | metric | default − other | better / worse / equal | verdict |")
        L.append("|---|---|---|---|---|")
        for p in res["paired"]:
            if p["versus"] != other:
                continue
            iv = fmt({"d": p["mean"], "d_lo": p["lo"], "d_hi": p["hi"]}, "d", 4)
            counts = f"{p.get('default_better', 0)} / {p.get('default_worse', 0)} / {p.get('ties', 0)}"
            L.append(f"| {p['scenario']} | {p['metric']} | {iv} | {counts} | {verdict(p)} |")
    return "\n".join(L) + "\n"


def tick(scenario: str) -> str:
    """A short x tick label: 'exp2, 12 honeypot programs' -> 'exp2 / 12/60 / honeypot / programs' on four lines."""
    exp, what = scenario.split(", ", 1)
    what = what.replace(" honeypot programs", "/60\nhoneypot\nprograms").replace(" ", "\n", 1)
    return f"{exp}\n{what}"


def figure(res: dict, path: Path) -> None:
    """Top: accuracy and log-loss of the three fits per scenario; bottom: paired differences (default minus the others)."""
    summ = pd.DataFrame(res["summary"])
    pair = pd.DataFrame(res["paired"])
    scen = list(dict.fromkeys(summ["scenario"]))
    x0 = np.arange(len(scen))
    fig, axes = new_figure(2, 2, figsize=(16, 9.5))
    for col, m in enumerate(["accuracy", "log_loss"]):
        ax = axes[0, col]
        for j, meth in enumerate(METHODS):
            g = summ[summ["method"] == meth].set_index("scenario").loc[scen]
            st = series_style(j)
            ax.errorbar(
                x0 + 0.2 * (j - 1),
                g[m],
                yerr=[g[m] - g[m + "_lo"], g[m + "_hi"] - g[m]],
                ms=5,
                capsize=2,
                lw=0,
                elinewidth=1.2,
                label=LABELS[meth],
                **{**st, "linestyle": "none"},
            )
        style_axes(ax, None, "line accuracy (fraction)" if m == "accuracy" else "log-loss (nats per line, log scale)", m.replace("_", "-"))
        if m == "log_loss":
            log_axis(ax)
        ax = axes[1, col]
        for j, other in enumerate([PAPER, SEPARABLE], start=1):
            g = pair[(pair["versus"] == other) & (pair["metric"] == m)].set_index("scenario").loc[scen]
            ax.errorbar(
                x0 + 0.15 * (2 * j - 3),
                g["mean"],
                yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]],
                ms=5,
                capsize=2,
                lw=0,
                elinewidth=1.2,
                label=f"default − {LABELS[other]}",
                **{**series_style(j + 2), "linestyle": "none"},
            )
        ax.axhline(0.0, color="0.4", lw=0.8)
        unit = "accuracy difference (fraction)" if m == "accuracy" else "log-loss difference (nats per line)"
        better = "above 0: default better" if m == "accuracy" else "below 0: default better"
        style_axes(ax, None, unit, f"paired {m.replace('_', '-')} difference per replicate ({better})")
    for ax in axes.ravel():
        ax.set_xticks(x0, [tick(s) for s in scen], fontsize=8)
    figure_legend(
        fig,
        handles=axes[0, 0].get_legend_handles_labels()[0] + axes[1, 0].get_legend_handles_labels()[0],
        labels=axes[0, 0].get_legend_handles_labels()[1] + axes[1, 0].get_legend_handles_labels()[1],
        where="right",
        title="fit",
    )
    meta = res["meta"]
    fig.suptitle(
        f"proximal: centred default vs the paper's fit vs the separable estimate (docs/study.md exp2 / exp4 scenarios)\n"
        f"mean over {meta['replicates']} replicates with {meta['intervals']};\npaired differences: percentile bootstrap over replicates",
        fontsize=10,
    )
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save_figure(fig, tmp, dpi=100)
    os.replace(tmp, path)


def write_page(block: str) -> None:
    text = PAGE.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{PAGE}: no {BEGIN} ... {END} markers; the generated block was not written")
    pre, rest = text.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    atomic_write_text(PAGE, pre + BEGIN + "\n" + block + END + post)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates instead of 20")
    ap.add_argument("--replicates", type=int, default=None, help="replicates per scenario (default 20)")
    ap.add_argument("--report-only", action="store_true", help="redraw the figure and the page block from the results, fit nothing")
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.replicates is not None)
    results_path = out.results / f"{NAME}.json"
    fig_path = out.figures / f"{NAME}.png"
    if args.report_only or args.plot_only:
        if not results_path.exists():
            raise SystemExit(f"--report-only: no results at {results_path} (run without it first, same --out/--quick/--replicates)")
        res = json.loads(results_path.read_text())
    else:
        from tqdm.auto import tqdm

        import crowdstat

        R = args.replicates or (5 if args.quick else 20)
        if R < 1:
            raise SystemExit(f"--replicates: expected at least 1, got {R}")
        t0 = time.perf_counter()
        bar = tqdm(total=R * len(SCENARIOS), desc="centred", unit="rep")
        frames = []
        for scen, (pop, seed, settings) in SCENARIOS.items():
            bar.set_postfix_str(scen)
            frames.append(score(replicates(seed, R, pop, **settings), scen, bar))
        bar.close()
        df = pd.concat(frames, ignore_index=True)
        summ = summarize(df, ["scenario", "method"], METRICS)
        chosen = {s: g["chosen_gamma"].value_counts().to_dict() for s, g in df[df["method"] == DEFAULT].groupby("scenario", sort=False)}
        keep = ["scenario", "method", "replicate", "chosen_gamma", *METRICS, "brier", "n_eval_lines", "seconds", "warnings"]
        meta = {
            "experiment": NAME,
            "crowdstat_version": crowdstat.__version__,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_kind": out.kind,
            "replicates": R,
            "seconds": time.perf_counter() - t0,
            "cpu_note": cpu_note(),
            "intervals": INTERVALS,
            "paired_intervals": f"percentile bootstrap of the mean paired difference over replicates ({BOOT} resamples, numpy seed 0)",
            "methods": METHODS,
            "scenarios": {s: {"population": p, "seed": sd, "settings": st} for s, (p, sd, st) in SCENARIOS.items()},
        }
        res = {
            "meta": meta,
            "summary": json.loads(summ.to_json(orient="records")),
            "paired": paired(df, PAPER) + paired(df, SEPARABLE),
            "chosen_gamma": chosen,
            "replicates": json.loads(df[keep].to_json(orient="records")),
        }
        atomic_write_text(results_path, json.dumps(res, indent=1) + "\n", parents=True)
        print(f"wrote {results_path}")
    out.figures.mkdir(parents=True, exist_ok=True)
    figure(res, fig_path)
    block = report(res)
    print(block)
    print(f"wrote {fig_path}")
    if out.kind == "full" and not args.out:
        write_page(block)
        print(f"wrote the generated block of {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
