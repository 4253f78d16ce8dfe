"""Experiment 3: the L1 regularisation path of the one-shot estimator, vmapped over replicates.

    .venv/bin/python experiments/exp3_l1_path.py [--quick] [--seed 3] [--out DIR] [--plot-only]

For each replicate: the honeypot training problem (crowdstat.estimators.l1.problem.training_data), gamma_max and
L; then ``proximal.path`` (warm starts, from gamma_max down a geometric grid) under ``jax.vmap``
over the replicates (one compiled program for all). Reports which annotators are filtered out
(w = 0) or turned negative as gamma grows, against who the spammers/adversaries really are, the
line accuracy / log-loss of the eq. 7 posteriors along the path (non-honeypot lines), and the
relative duality gap certificate at every point. Float64. A full run writes docs/figures/exp3_l1_path.png
and experiments/results/exp3_l1_path*.{json,csv}; --quick writes under experiments/cache/exp3_l1_path/quick,
--out DIR under DIR. --plot-only redraws the figure from the results (..._path, _replicate0, _gaps.csv).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from _study import add_output_args, figure_path, markdown, outputs, read_results, redraw, replicates, write_results

from crowdstat.estimators import posterior
from crowdstat.estimators.l1 import problem
from crowdstat.estimators.l1 import solve as px
from crowdstat.io.tables import read_votes
from crowdstat.study import metrics as M
from crowdstat.study.metrics import replicate_interval
from crowdstat.study.plotting import PALETTE, kind_style, legend_outside, new_figure, save_figure, style_axes

NAME = "exp3_l1_path"
POP = "expert:3@0.9,novice:4@0.7,spammer:4,adversary:2@0.3"
BAD = ("spammer", "adversary")


TOL = 1e-10


def _solve_paths(tables, m: int, rel_grid):
    """Every replicate's path, one vmapped call: (W (R, G, m), rel_gap, iters, gamma_max, L, seconds). Needs x64."""
    dt = jnp.float64
    datas = [problem.training_data(t.arrays, dt) for t in tables]
    gmax = np.array([float(problem.gamma_max(d, m)) for d in datas])
    lips = np.array([float(problem.lipschitz(d, m)) for d in datas])
    stack = lambda xs: jax.tree.map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *xs)  # noqa: E731
    data = stack(datas)
    gammas = jnp.asarray(gmax[:, None] * rel_grid[None, :], dt)

    def one(d, g, eta):
        return px.path(d, g, jnp.zeros(m, dt), jnp.zeros((), dt), eta, TOL, maxiter=20000)

    t0 = time.perf_counter()
    states = jax.jit(jax.vmap(one))(data, gammas, jnp.asarray(1.0 / lips, dt))
    W = np.asarray(states.w)  # (R, G, m)
    seconds = time.perf_counter() - t0
    return W, np.asarray(states.rel_gap), np.asarray(states.iter_num), gmax, lips, seconds


def _score_paths(tables, sims, W):
    """Eq. 7 posteriors along the path, scored on the non-honeypot lines (vmap over gamma, loop over replicates)."""
    R, G = W.shape[:2]
    acc = np.zeros((R, G))
    ll = np.zeros((R, G))
    for r, (t, s) in enumerate(zip(tables, sims)):
        arr = jax.tree.map(jnp.asarray, t.arrays)
        tl = s.true_lines.set_index(["program", "line"])["truth"]
        key = list(zip(t.programs[np.asarray(t.arrays.line_program)], t.line_numbers))
        truth = jnp.asarray(tl.loc[key].to_numpy())
        mask = jnp.asarray(np.asarray(t.arrays.truth) == 0)
        post = jax.vmap(lambda w, arr=arr: posterior.line_posteriors(w, arr))(jnp.asarray(W[r]))
        acc[r] = np.asarray(jax.vmap(lambda p, truth=truth, mask=mask: M.line_accuracy(p, truth, mask=mask))(post))
        ll[r] = np.asarray(jax.vmap(lambda p, truth=truth, mask=mask: M.log_loss(p, truth, mask=mask))(post))
    return acc, ll


def _path_table(W, kinds, bad, rel_grid, acc, ll, rel_gap, iters) -> pd.DataFrame:
    """One row per gamma: who is filtered out / flagged, the scores and the certificate."""
    R = W.shape[0]
    zero = W == 0
    neg = W < 0
    flagged = W <= 0  # filtered out or adversarial
    rows = []
    for gi, rg in enumerate(rel_grid):
        row = {"gamma_over_gamma_max": rg}
        for kind in ["expert", "novice", "spammer", "adversary"]:
            idx = kinds == kind
            row[f"zero_frac_{kind}"] = float(zero[:, gi, idx].mean())
            row[f"neg_frac_{kind}"] = float(neg[:, gi, idx].mean())
        tp = (flagged[:, gi] & bad).sum(1)
        fp = (flagged[:, gi] & ~bad).sum(1)
        row["recall_bad"] = float(np.mean(tp / bad.sum()))
        row["false_flag_good"] = float(np.mean(fp / (~bad).sum()))
        auc = [float(M.roc_auc(-W[r, gi], bad)) for r in range(R)]
        row["auc_bad_by_w"] = float(np.mean(auc))
        for name, arr in (("accuracy", acc[:, gi]), ("log_loss", ll[:, gi])):
            ri = replicate_interval(arr, bounds=(0.0, 1.0) if name == "accuracy" else None)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = ri["mean"], ri["lo"], ri["hi"]
        row["rel_gap_max"] = float(rel_gap[:, gi].max())
        row["iterations_mean"] = float(iters[:, gi].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _figure_tables(W, kinds, annotators, rel_grid, rel_gap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the figure needs beyond the path table: replicate 0's weights along the path, and every replicate's gap."""
    G, m = W.shape[1], W.shape[2]
    w0 = pd.DataFrame(
        {
            "gamma_over_gamma_max": np.repeat(rel_grid, m),
            "annotator": np.tile(annotators, G),
            "kind": np.tile(kinds, G),
            "w": W[0].reshape(-1),
        }
    )
    R = rel_gap.shape[0]
    gaps = pd.DataFrame(
        {"replicate": np.repeat(np.arange(R), G), "gamma_over_gamma_max": np.tile(rel_grid, R), "rel_gap": rel_gap.reshape(-1)}
    )
    return w0, gaps


def _figure(path_df: pd.DataFrame, w0: pd.DataFrame, gaps: pd.DataFrame, meta: dict, path) -> None:
    """Replicate 0's path, who is filtered, the scores and the certificate along gamma (2 x 2 panels, gamma decreasing)."""
    fig, axes = new_figure(2, 2, figsize=(14, 9))
    axes = axes.ravel()
    g = path_df["gamma_over_gamma_max"].to_numpy()
    xlabel = "gamma / gamma_max (log scale; weaker penalty to the right)"
    ax = axes[0]
    seen: set = set()
    for _ann, a in w0.groupby("annotator", sort=False):
        kind = a["kind"].iloc[0]
        ax.plot(a["gamma_over_gamma_max"], a["w"], color=kind_style(kind)["color"], lw=1.3, label=None if kind in seen else kind)
        seen.add(kind)
    ax.axhline(0, color="k", lw=0.6)
    style_axes(ax, xlabel, "weight w_i (log-odds)", "L1 path of replicate 0 (warm starts from gamma_max)")
    legend_outside(ax, "right", title="annotator kind")
    ax = axes[1]
    for kind in ["expert", "novice", "spammer", "adversary"]:
        col = kind_style(kind)["color"]
        ax.plot(g, path_df[f"zero_frac_{kind}"], color=col, lw=1.6, label=f"{kind}: w = 0")
        ax.plot(g, path_df[f"neg_frac_{kind}"], color=col, lw=1.2, ls="--", label=f"{kind}: w < 0")
    style_axes(
        ax,
        xlabel,
        f"fraction of the annotators of the kind\n(over {meta['replicates']} replicates)",
        "filtered out (w = 0) / flagged (w < 0)",
    )
    legend_outside(ax, "right", ncol=1)
    ax = axes[2]
    ax.plot(g, path_df["accuracy"], color=PALETTE[0], label="line accuracy (left axis)")
    ax.fill_between(g, path_df["accuracy_lo"], path_df["accuracy_hi"], color=PALETTE[0], alpha=0.15, lw=0)
    ax2 = ax.twinx()
    ax2.plot(g, path_df["log_loss"], color=PALETTE[1], ls="--", label="log-loss (right axis)")
    ax2.fill_between(g, path_df["log_loss_lo"], path_df["log_loss_hi"], color=PALETTE[1], alpha=0.15, lw=0)
    ax2.set_ylabel("log-loss (nats per line)", color=PALETTE[1])
    ax2.spines["top"].set_visible(False)
    style_axes(ax, xlabel, "line accuracy (fraction, non-honeypot lines)", "eq. 7 posteriors along the path (mean, 95% CI)")
    ax.yaxis.label.set_color(PALETTE[0])
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    legend_outside(ax, "below", handles=h1 + h2, labels=l1 + l2, ncol=2, bbox_to_anchor=(0.5, -0.2))
    ax = axes[3]
    for _, r in gaps.groupby("replicate"):
        ax.plot(r["gamma_over_gamma_max"], np.maximum(r["rel_gap"], 1e-18), color=PALETTE[4], lw=0.7, alpha=0.5)
    ax.plot([], [], color=PALETTE[4], lw=0.7, label="one replicate")
    ax.axhline(meta["tol"], color="k", ls="--", lw=0.8, label=f"tolerance {meta['tol']:g}")
    ax.set_yscale("log")
    style_axes(ax, xlabel, "relative duality gap at the returned w", "certificate along the path (floored at 1e-18)")
    legend_outside(ax, "right")
    for ax in axes:
        ax.set_xscale("log")
        ax.invert_xaxis()
    st = meta["settings"]
    fig.suptitle(
        f"L1 path: {meta['population']}; {st['n_programs']} programs x {st['lines_per_program']} lines, "
        f"{round(st['honeypot_fraction'] * st['n_programs'])} honeypot programs; {meta['replicates']} replicates vmapped "
        f"(seed {meta['seed']}), float64",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 replicates, 20 gammas instead of 40 and 40")
    ap.add_argument("--seed", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.seed != 3)
    if args.plot_only:
        redraw(NAME, out, _figure, "path", "replicate0", "gaps")
        return
    R, G = (8, 20) if args.quick else (40, 40)
    settings = dict(n_programs=60, lines_per_program=5, honeypot_fraction=0.2, honeypot_placement="first")
    sims = replicates(args.seed, R, POP, **settings)
    kinds = sims[0].reliability["kind"].to_numpy()
    true_p = sims[0].reliability["p"].to_numpy()
    bad = np.isin(kinds, BAD)
    m = len(kinds)
    rel_grid = np.geomspace(1.0, 1e-3, G)
    with jax.enable_x64(True):
        tables = [read_votes(s.votes, truth=s.truth) for s in sims]
        assert all(list(t.annotators) == list(sims[0].reliability["annotator"]) for t in tables)
        W, rel_gap, iters, gmax, lips, seconds = _solve_paths(tables, m, rel_grid)
        acc, ll = _score_paths(tables, sims, W)
    path_df = _path_table(W, kinds, bad, rel_grid, acc, ll, rel_gap, iters)
    best = path_df.loc[path_df["log_loss"].idxmin()]
    best_acc = path_df.loc[path_df["accuracy"].idxmax()]
    w0, gaps = _figure_tables(W, kinds, sims[0].reliability["annotator"].to_numpy(), rel_grid, rel_gap)
    cols = [
        "gamma_over_gamma_max",
        "zero_frac_expert",
        "zero_frac_novice",
        "zero_frac_spammer",
        "neg_frac_adversary",
        "recall_bad",
        "false_flag_good",
        "accuracy",
        "log_loss",
        "rel_gap_max",
        "iterations_mean",
    ]
    md = markdown(path_df.iloc[:: max(1, G // 10)], cols, interval_metrics=["accuracy", "log_loss"])
    write_results(
        NAME,
        {
            "seed": args.seed,
            "replicates": R,
            "population": POP,
            "settings": settings,
            "gamma_grid_relative": rel_grid,
            "gamma_max": gmax,
            "lipschitz": lips,
            "tol": TOL,
            "seconds_vmapped_paths": seconds,
            "max_rel_gap": float(rel_gap.max()),
            "all_converged": bool((rel_gap <= TOL).all()),
            "best_log_loss_at": float(best["gamma_over_gamma_max"]),
            "best_accuracy_at": float(best_acc["gamma_over_gamma_max"]),
            "path": path_df,
            "markdown": md,
            "true_p": true_p,
        },
        {"path": path_df, "replicate0": w0, "gaps": gaps},
        out,
    )
    meta, tabs = read_results(NAME, out, "path", "replicate0", "gaps")  # draw from what was written: --plot-only draws the same
    _figure(*tabs, meta, figure_path(out, NAME))
    print(md)
    print(
        f"paths of {R} replicates x {G} gammas in {seconds:.1f} s (one vmapped call, compile included); "
        f"max relative gap {rel_gap.max():.2e}"
    )
    print(f"best log-loss at gamma = {best['gamma_over_gamma_max']:.3g} gamma_max; best accuracy at {best_acc['gamma_over_gamma_max']:.3g}")
    unconverged = int((rel_gap > TOL).sum())
    if unconverged:  # never silent: the page and the JSON say so too (all_converged, max_rel_gap, rel_gap_max per gamma)
        print(
            f"WARNING: {unconverged} of {rel_gap.size} (replicate, gamma) fits stopped with a relative duality gap above "
            f"tol = {TOL:g} (max {rel_gap.max():.2e}); the certificate does not hold there",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
