"""Experiment 4: robustness to adversaries and to two-coin (asymmetric) annotators.

    .venv/bin/python experiments/exp4_robustness.py [--quick] [--seed 4]

(a) 2 experts (p = 0.9) + 6 novices (0.7) + a adversaries (p = 0.25), a in {0, 2, 4, 6};
(b) 2 experts + 4 novices (0.75) + c two-coin "optimists" (sens 0.95 = rarely flag a correct line,
spec 0.5 = miss half the bugs), c in {0, 3, 6};
(c) fatigue: 2 experts (p = 0.95) who tire, ``expert:2@0.95~d`` with d in {0, 0.01, 0.03} per vote
cast (each casts ~190 votes: at d = 0.01 they end near p = 0.57), + 6 novices (0.75).
60 programs x 5 lines, 5 annotators per program, 12 honeypot programs first. Methods: majority,
sequential (lam = 0.1), proximal (gamma = 1%), em1, em2 (bayes left out for time: see exp2).
Writes docs/figures/exp4_robustness.png and experiments/results/exp4_robustness.{json,csv}.
"""

from __future__ import annotations

import argparse

import pandas as pd
from _study import FIGURES, markdown, plt, replicates, score_all, short, summarize, usable, write_results

METHODS = ["majority", "sequential:lam=0.1", "proximal:gamma=1%", "em1", "em2"]
ADV = [0, 2, 4, 6]
TWO = [0, 3, 6]
DECAY = [0.0, 0.01, 0.03]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates instead of 20")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--replicates", type=int, default=None)
    args = ap.parse_args(argv)
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

    P = plt()
    fig, axes = P.subplots(2, 3, figsize=(17, 9))
    axes = axes.T.ravel()  # columns: adversaries, two-coin, fatigue
    panels = [
        ("adversaries", "accuracy"),
        ("adversaries", "log_loss"),
        ("twocoin", "accuracy"),
        ("twocoin", "log_loss"),
        ("fatigue", "accuracy"),
        ("fatigue", "reliability_rmse"),
    ]
    meths = list(summ["method"].unique())
    for ax, (sweep, m) in zip(axes, panels):
        s = summ[summ["sweep"] == sweep]
        for j, meth in enumerate(meths):
            g = s[s["method"] == meth]
            step = 0.0015 if sweep == "fatigue" else 0.08
            x = g["level"].to_numpy() + step * (j - len(meths) / 2)
            ax.errorbar(x, g[m], yerr=[g[m] - g[m + "_lo"], g[m + "_hi"] - g[m]], marker="o", ms=4, capsize=2, label=meth)
        ax.set_xlabel(
            {
                "adversaries": "adversaries (p = 0.25) added to 2 experts + 6 novices",
                "twocoin": "two-coin optimists (sens 0.95, spec 0.5) + 2 experts + 4 novices",
                "fatigue": "fatigue rate d of the 2 experts (p = 0.95 at vote 0) + 6 novices",
            }[sweep]
        )
        ax.set_ylabel(m.replace("_", "-"))
        if m == "log_loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Robustness (5 annotators per program, 12/60 honeypot programs); mean and 95% t-interval over {R} replicates "
        f"(seeds {args.seed}, {args.seed + 1000}, {args.seed + 2000})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(FIGURES / "exp4_robustness.png", dpi=100)
    cols = ["sweep", "level", "method", "accuracy", "log_loss", "ece", "reliability_rmse", "detection_auc"]
    md = markdown(summ, cols, interval_metrics=metrics)
    write_results(
        "exp4_robustness",
        {
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
    )
    print(md)


if __name__ == "__main__":
    main()
