"""``make demo``: simulate a small crowd, fit the paper's estimators, print a summary, write a plot.

    python -m crowdstat.demo --out demo-output

Fits majority vote, the sequential update (eq. 8) at three step sizes and the proximal estimator
with and without honeypot truth, so that the plot shows how lam drives the sequential weights
against the one-shot L1-logistic ones. ``crowdstat compare`` runs every method of
:data:`crowdstat.estimators.METHODS` instead (docs/study.md).

Writes ``OUT/data/{votes,truth,true_lines}.csv`` (the embedded default data set, simulated with a
fixed seed), one ``crowdstat fit`` output directory per fit under ``OUT/fits/``, a summary
table ``OUT/summary.csv`` and ``OUT/trajectories.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["main", "DEFAULT_P"]

# 12 annotators: 2 experts, 3 novices, 3 spammers (p = 1/2), 2 adversaries, 2 decent.
DEFAULT_P = [0.95, 0.92, 0.8, 0.75, 0.7, 0.5, 0.5, 0.5, 0.3, 0.25, 0.85, 0.65]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo-output")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--programs", type=int, default=120)
    args = ap.parse_args(argv)

    import crowdstat as cs
    from crowdstat.study.plotting import plot_trajectories
    from crowdstat.study.simulate import simulate_votes

    out = Path(args.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    sim = simulate_votes(args.seed, DEFAULT_P, n_programs=args.programs, lines_per_program=6, honeypot_fraction=0.2)
    sim.votes.to_csv(out / "data" / "votes.csv", index=False)
    sim.truth.to_csv(out / "data" / "truth.csv", index=False)
    sim.true_lines.to_csv(out / "data" / "true_lines.csv", index=False)
    print(
        f"simulated {len(sim.votes)} votes: {args.programs} programs x 6 lines, {len(DEFAULT_P)} annotators, "
        f"{sim.truth['program'].nunique()} honeypot programs (seed {args.seed})"
    )

    fits: dict[str, tuple[str, dict[str, Any]]] = {
        "majority": ("majority", {}),
        "sequential lam=1": ("sequential", {"lam": 1.0}),
        "sequential lam=0.1": ("sequential", {"lam": 0.1}),
        "sequential lam=0.01": ("sequential", {"lam": 0.01}),
        "proximal": ("proximal", {}),  # the default: centred on each annotator's own record, gamma by cv
        "proximal paper gamma=1%": ("proximal", {"gamma": "1%", "center": "zero"}),  # the paper's L1-logistic
        "proximal latent (no truth)": ("proximal", {"gamma": "1%", "latent": True}),
    }
    results, rows = {}, []
    truth_all = sim.true_lines.set_index(["program", "line"])["truth"]
    true_p = sim.reliability["p"].to_numpy()
    for name, (method, params) in fits.items():
        t0 = time.perf_counter()
        res = cs.fit(out / "data" / "votes.csv", truth=out / "data" / "truth.csv", method=method, **params)
        dt = time.perf_counter() - t0
        res.save(out / "fits" / name.replace(" ", "_").replace("=", "").replace("%", "pct").replace("(", "").replace(")", ""))
        results[name] = res
        lines = res.lines.set_index(["program", "line"])
        t = truth_all.loc[lines.index].to_numpy()
        pred = np.where(lines["posterior"].to_numpy() > 0.5, 1, -1)
        post = np.clip(lines["posterior"].to_numpy(), 1e-12, 1 - 1e-12)
        y = (t > 0).astype(float)
        ll = -np.mean(y * np.log(post) + (1 - y) * np.log(1 - post))
        rel = res.annotators["reliability"].to_numpy()
        rows.append(
            {
                "method": name,
                "line accuracy": np.mean(pred == t),
                "log-loss": ll,
                "reliability RMSE": float(np.sqrt(np.mean((rel - true_p) ** 2))),
                "max |w|": float(np.max(np.abs(res.annotators["weight"]))),
                "seconds": dt,
            }
        )
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "summary.csv", index=False)
    rel_tab = pd.DataFrame({"annotator": sim.reliability["annotator"], "true p": true_p})
    for name in ("majority", "sequential lam=1", "sequential lam=0.01", "proximal", "proximal paper gamma=1%"):
        rel_tab[name] = results[name].annotators["reliability"].to_numpy()
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print("\nEstimated reliabilities (p = sigmoid(w)):")
        print(rel_tab.to_string(index=False))
        print("\nLine-level results against the simulated truth:")
        print(summary.to_string(index=False))
    d = results["proximal"].diagnostics
    print(
        f"\nproximal (default): centred on each annotator's own honeypot record, gamma {d['selection']['chosen']['gamma']} of "
        f"gamma_max by 5-fold cross-validation; objective {d['objective']:.6g}, dual {d['dual_value']:.6g}, relative gap "
        f"{d['rel_gap']:.2e}; {d['n_at_centre']} annotators left at their own record"
    )
    d = results["proximal paper gamma=1%"].diagnostics
    print(
        f"proximal paper (center=zero, gamma=1%): relative gap {d['rel_gap']:.2e}, {d['iterations']} {d['solver']} iterations; "
        f"{d['n_filtered_out']} annotators filtered out (w = 0)"
    )
    print(
        "Note: with lam = 1 the sequential weights grow with every vote (docs/math.md: the update feeds on |l_j|); "
        "compare the panels of the plot."
    )
    plot_trajectories(
        {k.replace("sequential ", ""): results[k] for k in ("sequential lam=1", "sequential lam=0.1", "sequential lam=0.01")},
        {
            "proximal (honeypots)": results["proximal"],
            "proximal latent": results["proximal latent (no truth)"],
            "majority": results["majority"],
        },
        true_p=true_p,
        path=out / "trajectories.png",
        title="Sequential (eq. 8) weight trajectories vs one-shot L1-logistic weights (dotted: true logit p)",
    )
    print(f"\nwrote {out / 'summary.csv'}, {out / 'trajectories.png'} and fits under {out / 'fits'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
