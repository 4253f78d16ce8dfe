"""Experiment 5: wall time per method against data size (first call with JIT compilation, then steady state).

    .venv/bin/python experiments/exp5_compute_time.py [--quick] [--seed 5] [--out DIR] [--plot-only]

12 annotators (the exp1 population), 6 lines per program, everyone labels everything, 20%
honeypots; n_programs in {50, 200, 800} (quick: {50, 200}), i.e. 3600 .. 57600 votes. For each size
and method: the first ``crowdstat.fit`` call on an already-read table (includes compilation), then
the median of 3 further calls on 3 other replicates of the same shape (steady state). bayes (NUTS,
1 chain, 300 + 300) only on the smallest size. Float32. The machine is 2 CPU cores shared with
other jobs: times are indicative only (load average recorded in the JSON).
A full run writes docs/figures/exp5_compute_time.png and experiments/results/exp5_compute_time*.{json,csv};
--quick writes under experiments/cache/exp5_compute_time/quick, --out DIR under DIR. --plot-only redraws the figure.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
from _study import (
    ALL_METHODS,
    add_output_args,
    figure_path,
    markdown,
    outputs,
    read_results,
    redraw,
    replicates,
    short,
    usable,
    write_results,
)

import crowdstat
from crowdstat.io.tables import read_votes
from crowdstat.study.compare import parse_method
from crowdstat.study.plotting import figure_legend, log_axis, new_figure, save_figure, series_style, style_axes

NAME = "exp5_compute_time"
POP = "expert:2@0.95,reliable:2@0.85,novice:3@0.7,spammer:3,adversary:2@0.3"


def _figure(df: pd.DataFrame, meta: dict, path) -> None:
    """First call (with compilation) and steady state (median, min-max of 3 calls) against the votes, log-log."""
    fig, axes = new_figure(1, 2, figsize=(13, 4.6))
    axes = axes[0]
    for j, (meth, g) in enumerate(df.groupby("method", sort=False)):
        st = series_style(j)
        axes[0].plot(g["n_votes"], g["first_call_s"], label=meth, **st)
        yerr = [g["steady_median_s"] - g["steady_min_s"], g["steady_max_s"] - g["steady_median_s"]]
        axes[1].errorbar(g["n_votes"], g["steady_median_s"], yerr=yerr, capsize=2, label=meth, **st)
    votes = sorted(df["n_votes"].unique())
    titles = ["first call (includes JIT compilation)", "steady state: median (min-max) of 3 calls, same shape"]
    for ax, t in zip(axes, titles):
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.set_xticks(votes, [f"{v:,}" for v in votes])
        style_axes(ax, "votes in the table (log scale)", "wall time of crowdstat.fit (seconds, log scale)", t)
    figure_legend(fig, axes[0], where="right", title="method")
    fig.suptitle(
        f"Compute time per method (12 annotators, 6 lines/program; 2 shared CPU cores, mean load {df['load_avg_1min'].mean():.0f}; "
        f"seed {meta['seed']}): indicative only",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=5)
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.seed != 5)
    if args.plot_only:
        redraw(NAME, out, _figure, "table")
        return
    sizes = [50, 200] if args.quick else [50, 200, 800]
    methods, missing = usable(ALL_METHODS)
    rows = []
    for n in sizes:
        sims = replicates(args.seed, 4, POP, n_programs=n, lines_per_program=6, honeypot_fraction=0.2)
        tables = [read_votes(s.votes, truth=s.truth) for s in sims]
        for spec in methods:
            if spec.startswith("bayes") and n != sizes[0]:
                continue
            name, params = parse_method(spec)
            times = []
            for t in tables:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    crowdstat.fit(t, method=name, **params)
                times.append(time.perf_counter() - t0)
            rows.append(
                {
                    "method": short(spec),
                    "n_programs": n,
                    "n_votes": int(tables[0].n_votes),
                    "first_call_s": times[0],
                    "steady_median_s": float(np.median(times[1:])),
                    "steady_min_s": float(np.min(times[1:])),
                    "steady_max_s": float(np.max(times[1:])),
                    "load_avg_1min": os.getloadavg()[0],
                }
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    md = markdown(df, ["method", "n_programs", "n_votes", "first_call_s", "steady_median_s", "steady_min_s", "steady_max_s"])
    write_results(
        NAME,
        {"seed": args.seed, "population": POP, "sizes": sizes, "methods": methods, "methods_missing": missing, "table": df, "markdown": md},
        {"table": df},
        out,
    )
    meta, (table,) = read_results(NAME, out, "table")  # draw from what was written: --plot-only draws the same
    _figure(table, meta, figure_path(out, NAME))
    print(md)


if __name__ == "__main__":
    main()
