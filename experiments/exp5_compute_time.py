"""Experiment 5: wall time per method against data size (first call with JIT compilation, then steady state).

    .venv/bin/python experiments/exp5_compute_time.py [--quick] [--seed 5]

12 annotators (the exp1 population), 6 lines per program, everyone labels everything, 20%
honeypots; n_programs in {50, 200, 800} (quick: {50, 200}), i.e. 3600 .. 57600 votes. For each size
and method: the first ``crowdstat.fit`` call on an already-read table (includes compilation), then
the median of 3 further calls on 3 other replicates of the same shape (steady state). bayes (NUTS,
1 chain, 300 + 300) only on the smallest size. Float32. The machine is 2 CPU cores shared with
other jobs: times are indicative only (load average recorded in the JSON).
Writes docs/figures/exp5_compute_time.png and experiments/results/exp5_compute_time.{json,csv}.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
from _study import ALL_METHODS, FIGURES, markdown, plt, replicates, short, usable, write_results

import crowdstat
from crowdstat.io.tables import read_votes
from crowdstat.study.compare import parse_method

POP = "expert:2@0.95,reliable:2@0.85,novice:3@0.7,spammer:3,adversary:2@0.3"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
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
    P = plt()
    fig, axes = P.subplots(1, 2, figsize=(12, 4.4))
    for meth, g in df.groupby("method", sort=False):
        axes[0].plot(g["n_votes"], g["first_call_s"], "o-", label=meth)
        axes[1].errorbar(
            g["n_votes"],
            g["steady_median_s"],
            yerr=[g["steady_median_s"] - g["steady_min_s"], g["steady_max_s"] - g["steady_median_s"]],
            marker="o",
            capsize=2,
            label=meth,
        )
    for ax, t in zip(axes, ["first call (includes JIT compilation)", "steady state: median (min-max) of 3 calls, same shape"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("votes")
        ax.set_ylabel("wall seconds of crowdstat.fit")
        ax.set_title(t, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Compute time per method (12 annotators, 6 lines/program; 2 shared CPU cores, load "
        f"~{df['load_avg_1min'].mean():.0f}; seed {args.seed})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(FIGURES / "exp5_compute_time.png", dpi=100)
    md = markdown(df, ["method", "n_programs", "n_votes", "first_call_s", "steady_median_s", "steady_min_s", "steady_max_s"])
    write_results(
        "exp5_compute_time",
        {"seed": args.seed, "population": POP, "sizes": sizes, "methods": methods, "methods_missing": missing, "table": df, "markdown": md},
        {"table": df},
    )
    print(md)


if __name__ == "__main__":
    main()
