"""Experiment 2: accuracy and calibration (log-loss, ECE, Brier) against the number of honeypots.

    .venv/bin/python experiments/exp2_honeypots.py [--quick] [--seed 2] [--out DIR] [--plot-only]

Every method of the study (majority, sequential lam=1 and 0.1, proximal gamma=1%, em1, em2, bayes
when available) on the same replicates, for honeypot fractions 0 .. 40% of the programs (placed
first). With 0 honeypots proximal runs its latent variant and sequential learns from the crowd's
majority only. Metrics on the non-honeypot lines. Also the honeypots needed to reach a target
accuracy (crowdstat.study.metrics.honeypots_needed). A full run writes docs/figures/exp2_honeypots.png
and experiments/results/exp2_honeypots*.{json,csv}; --quick / non-default sizes write under
experiments/cache/exp2_honeypots/, --out DIR under DIR. --plot-only redraws the figure from the results.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _study import (
    ALL_METHODS,
    INTERVALS,
    add_output_args,
    figure_path,
    markdown,
    outputs,
    read_results,
    redraw,
    replicates,
    score_all,
    short,
    summarize,
    usable,
    write_results,
)

from crowdstat.study.metrics import honeypots_needed
from crowdstat.study.plotting import figure_legend, log_axis, new_figure, save_figure, series_style, style_axes

NAME = "exp2_honeypots"
POP = "expert:2@0.9,novice:5@0.7,spammer:3,adversary:2@0.3"
FRACTIONS = [0.0, 0.05, 0.1, 0.2, 0.4]
N_PROGRAMS = 60
TARGETS = [0.85, 0.9]


def _figure(summ: pd.DataFrame, meta: dict, path) -> None:
    """Accuracy, log-loss and ECE against the honeypot programs; one series per method, dodged, with 95% intervals (meta["intervals"])."""
    fig, axes = new_figure(1, 3, figsize=(16, 4.8))
    axes = axes[0]
    meths = list(summ["method"].unique())
    grid = sorted(summ["n_honeypot_programs"].unique())
    n = meta["settings"]["n_programs"]
    for j, meth in enumerate(meths):
        g = summ[summ["method"] == meth]
        st = series_style(j)
        for ax, m in zip(axes, ["accuracy", "log_loss", "ece"]):
            x = g["n_honeypot_programs"].to_numpy() + 0.3 * (j - (len(meths) - 1) / 2)
            yerr = [g[m] - g[m + "_lo"], g[m + "_hi"] - g[m]]
            ax.errorbar(x, g[m], yerr=yerr, ms=4, capsize=2, lw=1.2, label=meth, **st)
    labels = [
        ("line accuracy (fraction, non-honeypot lines)", "accuracy"),
        ("log-loss (nats per line, log scale)", "log-loss"),
        ("ECE (probability, 10 equal-width bins)", "expected calibration error"),
    ]
    for ax, (ylabel, title) in zip(axes, labels):
        style_axes(ax, f"honeypot programs (of {n}, {meta['settings']['lines_per_program']} lines each)", ylabel, title)
        ax.set_xticks(grid)
    log_axis(axes[1])
    figure_legend(fig, axes[0], where="right", title="method")
    fig.suptitle(
        f"Accuracy and calibration vs honeypots: {meta['population']}, {meta['settings']['annotators_per_item']} annotators per program\n"
        f"mean and {meta.get('intervals', '95% Student-t interval')}\nover {meta['replicates']} replicates "
        f"(bayes: {meta['bayes_replicates']}; seed {meta['seed']})",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates (bayes on 2) instead of 20 (bayes on 5)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--bayes-replicates", type=int, default=None)
    add_output_args(ap)
    args = ap.parse_args(argv)
    custom = args.replicates is not None or args.bayes_replicates is not None or args.seed != 2
    out = outputs(NAME, args, custom=custom)
    if args.plot_only:
        redraw(NAME, out, _figure, "summary")
        return
    R = args.replicates or (5 if args.quick else 20)
    RB = min(R, args.bayes_replicates or (2 if args.quick else 5))
    methods, missing = usable(ALL_METHODS)
    fast = [m for m in methods if not m.startswith("bayes")]
    slow = [m for m in methods if m.startswith("bayes")]
    settings = dict(n_programs=N_PROGRAMS, lines_per_program=5, annotators_per_item=5, design="program", honeypot_placement="first")
    frames = []
    for frac in FRACTIONS:
        # The same seed for every fraction: the same programs and votes, only the honeypot set grows.
        sims = replicates(args.seed, R, POP, honeypot_fraction=frac, **settings)
        n_hp = int(round(frac * N_PROGRAMS))
        frames.append(score_all(sims, fast, progress_desc=f"{n_hp} honeypots", n_honeypot_programs=n_hp))
        if slow:
            frames.append(score_all(sims[:RB], slow, progress_desc=f"{n_hp} honeypots (bayes)", n_honeypot_programs=n_hp))
    df = pd.concat(frames, ignore_index=True)
    df["method"] = df["method"].map(short)
    metrics = ["accuracy", "log_loss", "ece", "brier", "seconds"]
    summ = summarize(df, ["method", "n_honeypot_programs"], metrics)

    # honeypots needed per replicate and method
    grid = np.array([int(round(f * N_PROGRAMS)) for f in FRACTIONS])
    need_rows = []
    for meth, g in df.groupby("method", sort=False):
        acc = g.pivot(index="replicate", columns="n_honeypot_programs", values="accuracy")[grid].to_numpy()
        for tgt in TARGETS:
            need = np.asarray(honeypots_needed(grid, acc, tgt), np.float64)
            need_rows.append(
                {
                    "method": meth,
                    "target_accuracy": tgt,
                    "replicates": len(need),
                    "reached_in": int(np.isfinite(need).sum()),
                    "median_honeypot_programs": float(np.nanmedian(need)) if np.isfinite(need).any() else float("nan"),
                    "per_replicate": [None if not np.isfinite(v) else int(v) for v in need],
                }
            )
    need_df = pd.DataFrame(need_rows)

    cols = ["method", "n_honeypot_programs", "n_replicates", "accuracy", "log_loss", "ece", "brier"]
    md = markdown(summ, cols, interval_metrics=["accuracy", "log_loss", "ece", "brier"])
    write_results(
        NAME,
        {
            "intervals": INTERVALS,
            "seed": args.seed,
            "replicates": R,
            "bayes_replicates": RB,
            "population": POP,
            "settings": settings,
            "honeypot_fractions": FRACTIONS,
            "methods": methods,
            "methods_missing": missing,
            "summary": summ,
            "honeypots_needed": need_df,
            "markdown": md,
        },
        {"replicates": df, "summary": summ, "honeypots_needed": need_df},
        out,
    )
    meta, (summ_read,) = read_results(NAME, out, "summary")  # draw from what was written: --plot-only draws the same
    _figure(summ_read, meta, figure_path(out, NAME))
    print(md)
    print(need_df.drop(columns=["per_replicate"]).to_string(index=False))


if __name__ == "__main__":
    main()
