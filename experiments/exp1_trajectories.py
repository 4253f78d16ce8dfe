"""Experiment 1: weight trajectories of the sequential update (eq. 8) for lam in {1, 0.1, 0.01}.

    .venv/bin/python experiments/exp1_trajectories.py [--quick] [--seed 1]

Simulates replicates (split + vmap), runs ``crowdstat.fit(method="sequential", lam=...)`` on each,
and draws the weights w_i after every task against the true logits logit(p_i): the drift that
docs/math.md (Sequential update) describes (linear growth with a constant pbar on honeypots, geometric growth from |l_j| on the
other lines). Writes docs/figures/exp1_trajectories.png and experiments/results/exp1_trajectories.{json,csv}.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from _study import FIGURES, markdown, plt, replicates, summarize, write_results

from crowdstat.study.compare import compare

POP = "expert:2@0.95,reliable:2@0.85,novice:3@0.7,spammer:3,adversary:2@0.3"
LAMS = [1.0, 0.1, 0.01]


def _figure(traj, kinds, true_p, R, seed):
    """One panel per lam (median over replicates per annotator kind, 10-90% band), plus max|w| growth."""
    P = plt()
    fig, axes = P.subplots(1, 4, figsize=(19, 4.6))
    colors = {"expert": "tab:green", "reliable": "tab:olive", "novice": "tab:blue", "spammer": "tab:gray", "adversary": "tab:red"}
    n_hp = int(round(0.2 * 120))
    for ax, lam in zip(axes, LAMS):
        T = np.stack(traj[lam])  # (R, tasks, m)
        x = np.arange(1, T.shape[1] + 1)
        for kind, col in colors.items():
            idx = np.flatnonzero(kinds == kind)
            vals = T[:, :, idx].transpose(1, 0, 2).reshape(T.shape[1], -1)
            ax.plot(x, np.median(vals, 1), color=col, lw=1.6, label=f"{kind} (p={true_p[idx[0]]:.2f})")
            ax.fill_between(x, np.quantile(vals, 0.1, 1), np.quantile(vals, 0.9, 1), color=col, alpha=0.15, lw=0)
            tp = np.clip(true_p[idx[0]], 1e-6, 1 - 1e-6)
            ax.axhline(np.log(tp / (1 - tp)), color=col, ls="--", lw=0.9)
        ax.axvline(n_hp, color="k", lw=0.6, ls=":")
        ax.set_yscale("symlog", linthresh=2)
        ax.set_title(f"eq. 8, lam = {lam}: w_i after each task", fontsize=10)
        ax.set_xlabel(f"task (first {n_hp} are honeypots)")
        ax.set_ylabel("w = logit(p)  (symlog; dashed = true logit)")
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[3]
    for lam, ls in zip(LAMS, ["-", "--", ":"]):
        T = np.stack(traj[lam])
        mx = np.max(np.abs(T), axis=2)  # (R, tasks)
        x = np.arange(1, mx.shape[1] + 1)
        ax.plot(x, np.median(mx, 0), "k", ls=ls, label=f"lam = {lam}")
        ax.fill_between(x, mx.min(0), mx.max(0), color="k", alpha=0.1, lw=0)
    ax.axhline(np.log(0.95 / 0.05), color="tab:green", ls="--", lw=0.9, label="true max |logit p|")
    ax.axvline(n_hp, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_title("max_i |w_i| (median, min-max over replicates)", fontsize=10)
    ax.set_xlabel("task")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Sequential update drift: {POP}; 120 programs x 6 lines, 24 honeypot programs first; {R} replicates (seed {seed})", fontsize=10
    )
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "exp1_trajectories.png", dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates instead of 20")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replicates", type=int, default=None)
    args = ap.parse_args(argv)
    R = args.replicates or (5 if args.quick else 20)
    settings = dict(n_programs=120, lines_per_program=6, honeypot_fraction=0.2, honeypot_placement="first")
    sims = replicates(args.seed, R, POP, **settings)
    specs = [f"sequential:lam={lam}" for lam in LAMS]
    rows, traj = [], {lam: [] for lam in LAMS}
    true_p = sims[0].reliability["p"].to_numpy()
    kinds = sims[0].reliability["kind"].to_numpy()
    for r, sim in enumerate(sims):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmp = compare(sim.votes, sim.truth, sim.true_lines, sim.reliability, methods=specs)
        for lam, spec in zip(LAMS, specs):
            fit = cmp.fits[spec]
            w_traj = fit.trajectory.to_numpy(np.float64)  # (tasks, m)
            traj[lam].append(w_traj)
            w = fit.annotators["weight"].to_numpy(np.float64)
            m = cmp.metrics.set_index("method").loc[spec]
            n_hp_tasks = int(sim.truth["program"].nunique())
            rows.append(
                {
                    "lam": lam,
                    "replicate": r,
                    "accuracy": m["accuracy"],
                    "log_loss": m["log_loss"],
                    "ece": m["ece"],
                    "detection_auc": m["detection_auc"],
                    "reliability_rmse": m["reliability_rmse"],
                    "max_abs_w_after_honeypots": float(np.max(np.abs(w_traj[n_hp_tasks - 1]))),
                    "max_abs_w_final": float(np.max(np.abs(w))),
                    "spearman_w_vs_true_p": float(pd.Series(w).rank().corr(pd.Series(true_p).rank())),
                }
            )
    df = pd.DataFrame(rows)
    metrics = [
        "accuracy",
        "log_loss",
        "ece",
        "detection_auc",
        "reliability_rmse",
        "max_abs_w_after_honeypots",
        "max_abs_w_final",
        "spearman_w_vs_true_p",
    ]
    summ = summarize(df, ["lam"], metrics)

    _figure(traj, kinds, true_p, R, args.seed)
    write_results(
        "exp1_trajectories",
        {
            "seed": args.seed,
            "replicates": R,
            "population": POP,
            "settings": settings,
            "lams": LAMS,
            "summary": summ,
            "markdown": markdown(summ, ["lam"] + metrics, interval_metrics=metrics),
        },
        {"replicates": df, "summary": summ},
    )
    print(markdown(summ, ["lam"] + metrics, interval_metrics=metrics))


if __name__ == "__main__":
    main()
