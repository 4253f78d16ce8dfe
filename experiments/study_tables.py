"""Print the markdown tables of docs/study.md from the results of the runs (default: the committed experiments/results).

    .venv/bin/python experiments/study_tables.py exp2|exp4|exp5 [--results DIR]

``--results DIR``: the folder a run wrote (its ``--out``, or experiments/cache/<experiment>/quick).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

R = Path(__file__).resolve().parent / "results"


def ci(r, m, d=3):
    return f"{r[m]:.{d}f} [{r[m + '_lo']:.{d}f}, {r[m + '_hi']:.{d}f}]"


def exp2():
    s = pd.read_csv(R / "exp2_honeypots_summary.csv")
    grid = sorted(s["n_honeypot_programs"].unique())
    print("| method | " + " | ".join(f"{g} honeypot programs" for g in grid) + " |")
    print("|---|" + "---|" * len(grid))
    for meth, g in s.groupby("method", sort=False):
        g = g.set_index("n_honeypot_programs")
        n = int(g["n_replicates"].iloc[0])
        print(
            f"| {meth} ({n} reps) | "
            + " | ".join(f"{g.loc[x, 'accuracy']:.3f} / {g.loc[x, 'log_loss']:.2f} / {g.loc[x, 'ece']:.3f}" for x in grid)
            + " |"
        )
    print()
    print("| method | " + " | ".join(f"{g}" for g in grid) + " |")
    print("|---|" + "---|" * len(grid))
    for meth, g in s.groupby("method", sort=False):
        g = g.set_index("n_honeypot_programs")
        print(f"| {meth} | " + " | ".join(ci(g.loc[x], "accuracy") for x in grid) + " |")
    print()
    need = pd.read_csv(R / "exp2_honeypots_honeypots_needed.csv")
    print(need.drop(columns=["per_replicate"]).to_string(index=False))


def exp4():
    s = pd.read_csv(R / "exp4_robustness_summary.csv")
    meths = list(s["method"].unique())
    for metric in ("accuracy", "log_loss", "reliability_rmse", "detection_auc"):
        print(f"\n{metric}\n| setting | " + " | ".join(meths) + " |")
        print("|---|" + "---|" * len(meths))
        for (sw, lv), g in s.groupby(["sweep", "level"], sort=False):
            g = g.set_index("method")
            print(f"| {sw} {lv:g} | " + " | ".join(ci(g.loc[m], metric) for m in meths) + " |")


def exp5():
    print(json.loads((R / "exp5_compute_time.json").read_text())["markdown"])


def main(argv=None) -> None:
    global R
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=["exp2", "exp4", "exp5"])
    ap.add_argument("--results", default=str(R), help="folder of the results (default: the committed experiments/results)")
    args = ap.parse_args(argv)
    R = Path(args.results)
    {"exp2": exp2, "exp4": exp4, "exp5": exp5}[args.experiment]()


if __name__ == "__main__":
    main()
