"""Experiment 4: robustness to adversaries and to two-coin (asymmetric) annotators.

    .venv/bin/python experiments/exp4_robustness.py [--quick] [--seed 4] [--out DIR] [--plot-only]

(a) 2 experts (p = 0.9) + 6 novices (0.7) + a adversaries (p = 0.25), a in {0, 2, 4, 6};
(b) 2 experts + 4 novices (0.75) + c two-coin "optimists" (sens 0.95 = rarely flag a correct line,
spec 0.5 = miss half the bugs), c in {0, 3, 6};
(c) fatigue: 2 experts (p = 0.95) who tire, ``expert:2@0.95~d`` with d in {0, 0.01, 0.03} per vote
cast (each casts ~190 votes: at d = 0.01 they end near p = 0.57), + 6 novices (0.75).
60 programs x 5 lines, 5 annotators per program, 12 honeypot programs first. Methods: majority,
sequential (lam = 0.1), proximal (gamma = 1%), em1, em2 (bayes left out for time: see exp2).
A full run writes docs/figures/exp4_robustness.png and experiments/results/exp4_robustness*.{json,csv};
--quick / non-default sizes write under experiments/cache/exp4_robustness/, --out DIR under DIR.
--plot-only redraws the figure from the results.
"""

from __future__ import annotations

import argparse

import pandas as pd
from _study import (
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

from crowdstat.study.plotting import figure_legend, log_axis, new_figure, save_figure, series_style, style_axes

NAME = "exp4_robustness"
METHODS = ["majority", "sequential:lam=0.1", "proximal:gamma=1%:center=zero", "em1", "em2"]
ADV = [0, 2, 4, 6]
TWO = [0, 3, 6]
DECAY = [0.0, 0.01, 0.03]


XLABELS = {
    "adversaries": "adversaries (p = 0.25) added to\n2 experts + 6 novices (annotators)",
    "twocoin": "two-coin optimists (sens 0.95, spec 0.5) added to\n2 experts + 4 novices (annotators)",
    "fatigue": "fatigue rate d of the 2 experts (per vote cast;\np = 0.95 at vote 0) + 6 novices",
}
YLABELS = {
    "accuracy": "line accuracy (fraction)",
    "log_loss": "log-loss (nats per line, log scale)",
    "reliability_rmse": "reliability RMSE (probability)",
}


def _figure(summ: pd.DataFrame, meta: dict, path) -> None:
    """Columns: adversaries, two-coin, fatigue; rows: accuracy and log-loss (fatigue: reliability RMSE); methods dodged."""
    fig, axes = new_figure(2, 3, figsize=(17, 9))
    panels = [("adversaries", "accuracy"), ("twocoin", "accuracy"), ("fatigue", "accuracy")]
    panels += [("adversaries", "log_loss"), ("twocoin", "log_loss"), ("fatigue", "reliability_rmse")]
    meths = list(summ["method"].unique())
    for ax, (sweep, m) in zip(axes.ravel(), panels):
        s = summ[summ["sweep"] == sweep]
        levels = sorted(s["level"].unique())
        pos = {v: k for k, v in enumerate(levels)}  # the sweep's levels at equal spacing (fatigue's 0, 0.01, 0.03 are not)
        step = 0.35 / max(len(meths) - 1, 1)
        for j, meth in enumerate(meths):
            g = s[s["method"] == meth]
            x = g["level"].map(pos).to_numpy() + step * (j - (len(meths) - 1) / 2)
            yerr = [g[m] - g[m + "_lo"], g[m + "_hi"] - g[m]]
            ax.errorbar(x, g[m], yerr=yerr, ms=4, capsize=2, lw=1.2, label=meth, **series_style(j))
        style_axes(ax, XLABELS[sweep], YLABELS[m])
        ax.set_xticks(range(len(levels)), [f"{v:g}" for v in levels])
        if m == "log_loss":
            log_axis(ax)
    figure_legend(fig, axes[0, 0], where="right", title="method")
    fig.suptitle(
        f"Robustness (5 annotators per program, 12/60 honeypot programs); mean and "
        f"{meta.get('intervals', '95% Student-t interval')}\nover {meta['replicates']} replicates "
        f"(seeds {meta['seed']}, {meta['seed_twocoin']}, {meta['seed_fatigue']})",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates instead of 20")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--replicates", type=int, default=None)
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.replicates is not None or args.seed != 4)
    if args.plot_only:
        redraw(NAME, out, _figure, "summary")
        return
    R = args.replicates or (5 if args.quick else 20)
    methods, missing = usable(METHODS)
    settings = dict(n_programs=60, lines_per_program=5, honeypot_fraction=0.2, annotators_per_item=5, design="program")
    frames = []
    for a in ADV:
        pop = "expert:2@0.9,novice:6@0.7" + (f",adversary:{a}@0.25" if a else "")
        sims = replicates(args.seed, R, pop, **settings)
        frames.append(score_all(sims, methods, progress_desc=f"{a} adversaries", sweep="adversaries", level=a, population=pop))
    for c in TWO:
        pop = "expert:2@0.9,novice:4@0.75" + (f",twocoin:{c}@0.95/0.5" if c else "")
        sims = replicates(args.seed + 1000, R, pop, **settings)
        frames.append(score_all(sims, methods, progress_desc=f"{c} two-coin", sweep="twocoin", level=c, population=pop))
    for d in DECAY:
        pop = f"expert:2@0.95~{d},novice:6@0.75"
        sims = replicates(args.seed + 2000, R, pop, **settings)
        frames.append(score_all(sims, methods, progress_desc=f"fatigue {d}", sweep="fatigue", level=d, population=pop))
    df = pd.concat(frames, ignore_index=True)
    df["method"] = df["method"].map(short)
    metrics = ["accuracy", "log_loss", "ece", "reliability_rmse", "detection_auc"]
    summ = summarize(df, ["sweep", "level", "method"], metrics)

    cols = ["sweep", "level", "method", "accuracy", "log_loss", "ece", "reliability_rmse", "detection_auc"]
    md = markdown(summ, cols, interval_metrics=metrics)
    write_results(
        NAME,
        {
            "intervals": INTERVALS,
            "seed": args.seed,
            "seed_twocoin": args.seed + 1000,
            "seed_fatigue": args.seed + 2000,
            "replicates": R,
            "settings": settings,
            "methods": methods,
            "methods_missing": missing,
            "summary": summ,
            "markdown": md,
        },
        {"replicates": df, "summary": summ},
        out,
    )
    meta, (summ_read,) = read_results(NAME, out, "summary")  # draw from what was written: --plot-only draws the same
    _figure(summ_read, meta, figure_path(out, NAME))
    print(md)


if __name__ == "__main__":
    main()
