"""Experiment 1: weight trajectories of the sequential update (eq. 8) for lam in {1, 0.1, 0.01}.

    .venv/bin/python experiments/exp1_trajectories.py [--quick] [--seed 1] [--out DIR] [--plot-only]

Simulates replicates (split + vmap), runs ``crowdstat.fit(method="sequential", lam=...)`` on each,
and draws the weights w_i after every task against the true logits logit(p_i): the drift that
docs/math.md (Sequential update) describes (linear growth with a constant pbar on honeypots, geometric growth from |l_j| on the
other lines). A full run writes docs/figures/exp1_trajectories.png and experiments/results/exp1_trajectories*.{json,csv};
--quick (or non-default --replicates / --seed) writes under experiments/cache/exp1_trajectories/, --out DIR under DIR
(figure in DIR/figures). --plot-only redraws the figure from the results (..._curves.csv) without running.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from _study import add_output_args, figure_path, markdown, outputs, read_results, redraw, replicates, summarize, write_results

from crowdstat.study.compare import compare
from crowdstat.study.plotting import (
    KIND_COLORS,
    LINESTYLES,
    PALETTE,
    figure_legend,
    kind_style,
    mark_phase_end,
    new_figure,
    save_figure,
    style_axes,
    symlog_axis,
)

NAME = "exp1_trajectories"
POP = "expert:2@0.95,reliable:2@0.85,novice:3@0.7,spammer:3,adversary:2@0.3"
LAMS = [1.0, 0.1, 0.01]


def _curves(traj, kinds) -> pd.DataFrame:
    """What the figure draws, per lam: median and 10-90% band of w per kind and task; median and min-max of max_i |w_i|."""
    rows = []
    for lam in LAMS:
        T = np.stack(traj[lam])  # (R, tasks, m)
        tasks = np.arange(1, T.shape[1] + 1)
        for kind in dict.fromkeys(kinds):
            vals = T[:, :, kinds == kind].transpose(1, 0, 2).reshape(T.shape[1], -1)
            q = np.quantile(vals, [0.5, 0.1, 0.9], axis=1)
            rows.append(pd.DataFrame({"lam": lam, "series": kind, "task": tasks, "median": q[0], "lo": q[1], "hi": q[2]}))
        mx = np.max(np.abs(T), axis=2)  # (R, tasks)
        rows.append(
            pd.DataFrame({"lam": lam, "series": "max_abs_w", "task": tasks, "median": np.median(mx, 0), "lo": mx.min(0), "hi": mx.max(0)})
        )
    return pd.concat(rows, ignore_index=True)


def _figure(curves: pd.DataFrame, meta: dict, path):
    """Three panels (one per lam: median w per annotator kind, 10-90% band), and max_i |w_i| against the truth."""
    fig, axes = new_figure(2, 2, figsize=(13.5, 8.6))
    axes = axes.ravel()
    true_p = meta["true_p_by_kind"]
    n_hp = int(meta["honeypot_tasks"])
    ymax = float(curves.loc[curves["series"] != "max_abs_w", ["lo", "hi"]].abs().to_numpy().max())
    for ax, lam in zip(axes, meta["lams"]):
        c = curves[curves["lam"] == lam]
        for i, (kind, p) in enumerate(true_p.items()):
            g = c[c["series"] == kind]
            st = kind_style(kind, i)
            ax.plot(g["task"], g["median"], color=st["color"], lw=1.6, label=f"{kind} (p = {p:.2f})")
            ax.fill_between(g["task"], g["lo"], g["hi"], color=st["color"], alpha=0.15, lw=0)
            tp = min(max(p, 1e-6), 1 - 1e-6)
            ax.axhline(np.log(tp / (1 - tp)), color=st["color"], ls=(0, (1, 2)), lw=1.0)
        symlog_axis(ax, 2, max_abs=ymax)
        style_axes(
            ax, "task (program, in fit order)", "weight w_i = logit(p_i) (log-odds, symlog)", f"eq. 8 with lam = {lam:g}", integer_x=True
        )
        mark_phase_end(ax, n_hp + 0.5, f"honeypots end (task {n_hp})")
    ax = axes[3]
    for i, lam in enumerate(meta["lams"]):
        g = curves[(curves["lam"] == lam) & (curves["series"] == "max_abs_w")]
        ax.plot(g["task"], g["median"], color=PALETTE[3], ls=LINESTYLES[i], lw=1.4, label=f"max_i |w_i|, lam = {lam:g}")
        ax.fill_between(g["task"], g["lo"], g["hi"], color=PALETTE[3], alpha=0.1, lw=0)
    ax.axhline(np.log(0.95 / 0.05), color=KIND_COLORS["expert"], ls=(0, (1, 2)), lw=1.2, label="true max_i |logit p_i| (expert)")
    ax.set_yscale("log")
    style_axes(
        ax, "task (program, in fit order)", "max_i |w_i| (log-odds, log scale)", "largest |weight|: median, min-max band", integer_x=True
    )
    mark_phase_end(ax, n_hp + 0.5, f"honeypots end (task {n_hp})")
    handles, labels = axes[0].get_legend_handles_labels()
    h3, l3 = ax.get_legend_handles_labels()
    keep = [i for i, lab in enumerate(l3) if lab not in labels]
    figure_legend(
        fig,
        handles=handles + [h3[i] for i in keep],
        labels=labels + [l3[i] for i in keep],
        where="right",
        title="band: 10-90% over replicates\n(max |w|: min-max);\ndotted: true logit p",
        fontsize=8,
    )
    st = meta["settings"]
    fig.suptitle(
        f"Sequential update drift: {meta['population']}\n{st['n_programs']} programs x {st['lines_per_program']} lines, "
        f"{n_hp} honeypot programs first; median over {meta['replicates']} replicates (seed {meta['seed']})",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 replicates instead of 20")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replicates", type=int, default=None)
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.replicates is not None or args.seed != 1)
    if args.plot_only:
        redraw(NAME, out, _figure, "curves")
        return
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

    curves = _curves(traj, kinds)
    write_results(
        NAME,
        {
            "seed": args.seed,
            "replicates": R,
            "population": POP,
            "settings": settings,
            "lams": LAMS,
            "honeypot_tasks": n_hp_tasks,
            "true_p_by_kind": {k: float(true_p[kinds == k][0]) for k in dict.fromkeys(kinds)},
            "summary": summ,
            "markdown": markdown(summ, ["lam"] + metrics, interval_metrics=metrics),
        },
        {"replicates": df, "summary": summ, "curves": curves},
        out,
    )
    meta, (curves,) = read_results(NAME, out, "curves")  # draw from what was written: --plot-only draws the same
    _figure(curves, meta, figure_path(out, NAME))
    print(f"wrote {out.results}/{NAME}*.json/csv and {figure_path(out, NAME)}")
    print(markdown(summ, ["lam"] + metrics, interval_metrics=metrics))


if __name__ == "__main__":
    main()
