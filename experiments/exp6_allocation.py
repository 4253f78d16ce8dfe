"""Experiment 6: adaptive vote allocation (crowdstat.allocate) against uniform allocation at equal budget.

    .venv/bin/python experiments/exp6_allocation.py [--quick] [--seed 6] [--replicates R] [--out DIR] [--plot-only]

Every scenario: 100 programs x 6 lines (a program is buggy with probability 0.5, a line of a buggy
program wrong with probability 0.4), 10 honeypot programs with known truth, a population of 10 or 8
annotators (below). An annotator reviews a whole program (all its lines: one *review* = 6 votes).
Start (both arms alike): every program gets one review from a random annotator and every annotator
one honeypot program. Then rounds of 25 reviews until 16 reviews per program on average (or every annotator has reviewed every
program: 10 or 8 reviews per program):

- **uniform**: 10 % of each round on random unseen honeypot programs, the rest to the programs with
  the fewest reviews (ties at random), each from a random annotator who has not reviewed it;
- **adaptive**: ``crowdstat.allocate.plan`` on the current two-coin EM fit (expected information about
  the lines' truth; 10 % honeypots by information about the annotators), at most 2 x the fair share
  (2 x 25 / m) reviews per annotator per round, programs decided at confidence 0.99 skipped.

Both arms use the same fit (two-coin Dawid-Skene EM with the honeypot truth, ``crowdstat.estimators.
dawid_skene.run`` on a fixed grid of vote slots: one compilation per scenario) and the same vote of
annotator i on line j whenever both ask it (common random numbers; fatigue counts the votes the
annotator actually cast). Measured: line accuracy of the posteriors (> 1/2) on the lines without
truth after each round, against line votes cast (start included), and the votes needed to reach 95 %
and 99 % accuracy. A full run writes docs/figures/exp6_allocation.png and
experiments/results/exp6_allocation*.{json,csv}; --quick / non-default sizes write under
experiments/cache/exp6_allocation/, --out DIR under DIR.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from _study import add_output_args, cpu_note, figure_path, outputs, read_results, redraw, write_results
from tqdm.auto import tqdm

from crowdstat._typing import VoteArrays
from crowdstat.allocate import plan, program_confidence
from crowdstat.estimators import dawid_skene as ds
from crowdstat.study import simulate as S
from crowdstat.study.metrics import replicate_interval
from crowdstat.study.plotting import figure_legend, new_figure, save_figure, series_style, style_axes

NAME = "exp6_allocation"
#: docs/study.md's crowd scenarios, and the RL study's biased crowd (experiments/configs/rl_synthetic.json)
#: without its `examples` rater, whose votes depend on the program text
SCENARIOS = {
    "honest": "expert:3@0.9,novice:7@0.75",
    "spammers": "expert:2@0.9,novice:4@0.75,spammer:4",
    "adversaries": "expert:2@0.9,novice:4@0.75,adversary:4@0.25",
    "two-coin": "expert:2@0.9,novice:4@0.75,twocoin:4@0.95/0.5",
    "tiring": "expert:2@0.95~0.01,novice:6@0.75",
    "biased (RL study)": "expert:2@0.9,novice:2@0.65,lazy:1@0.8,spammer:1,adversary:2@0.2",
}
TARGETS = (0.95, 0.99)
ARMS = ("uniform", "adaptive")


class Crowd:
    """One replicate: truth, the vote oracle (fixed uniforms per slot), and the grid of cast votes."""

    def __init__(self, seed: int, pop: S.Population, n_programs: int, k: int, honeypot_fraction: float):
        sim = S.simulate_arrays(seed, pop, n_programs, k, 0.5, 0.4, honeypot_fraction, 1, "program", "first")
        self.truth = np.asarray(sim.truth).ravel().astype(np.int8)  # (n_lines,)
        self.hp_prog = np.asarray(sim.honeypot)
        self.k, self.P, self.m = k, n_programs, pop.m
        self.line_program = np.repeat(np.arange(n_programs), k)
        self.known = np.where(np.repeat(self.hp_prog, k), self.truth, 0).astype(np.int8)
        self.sens, self.spec, self.decay = (np.asarray(x, np.float64) for x in (pop.sens, pop.spec, pop.decay))
        self.u = np.random.default_rng([seed, 1]).random((len(self.truth), self.m))

    def reset(self):
        self.grid = np.zeros((len(self.truth), self.m), np.int8)
        self.cast = np.zeros(self.m, np.int64)
        self.reviews = np.zeros(self.P, np.int64)

    def review(self, program: int, a: int) -> None:
        for j in range(program * self.k, (program + 1) * self.k):
            f = math.exp(-self.decay[a] * self.cast[a])
            s, c = 0.5 + (self.sens[a] - 0.5) * f, 0.5 + (self.spec[a] - 0.5) * f
            pos = self.u[j, a] < s if self.truth[j] > 0 else self.u[j, a] >= c
            self.grid[j, a] = 1 if pos else -1
            self.cast[a] += 1
        self.reviews[program] += 1


def _fit(c: Crowd):
    n = len(c.truth)
    votes = VoteArrays(
        jnp.asarray(np.repeat(np.arange(n, dtype=np.int32), c.m)),
        jnp.asarray(np.tile(np.arange(c.m, dtype=np.int32), n)),
        jnp.asarray(c.grid.ravel()),
        jnp.asarray(c.line_program.astype(np.int32)),
        jnp.asarray(c.known),
        jnp.full(c.P, c.k, jnp.int32),
    )
    s = ds.run(votes, jnp.asarray(0.5), jnp.asarray(1e-4), jnp.asarray(200, jnp.int32), jnp.asarray(1e-7), m=c.m, two_coin=True)
    return np.asarray(s.q, np.float64), np.asarray(s.beta, np.float64), np.asarray(s.alpha, np.float64)


def _uniform(c: Crowd, rng, budget: int, hp_share: float) -> list[tuple[int, int]]:
    picks = []
    hp = np.flatnonzero(c.hp_prog)
    seen = (c.grid != 0).reshape(c.P, c.k, c.m).any(axis=1)  # (P, m) reviewed
    for _ in range(round(hp_share * budget)):
        pairs = [(p, a) for p in hp for a in range(c.m) if not seen[p, a]]
        if pairs:
            p, a = pairs[rng.integers(len(pairs))]
            picks.append((p, a))
            seen[p, a] = True
    order = np.flatnonzero(~c.hp_prog)
    load = c.reviews.copy()
    while len(picks) < budget:
        cand = [p for p in order if not seen[p].all()]
        if not cand:
            break
        low = min(load[p] for p in cand)
        tied = [p for p in cand if load[p] == low]
        p = tied[rng.integers(len(tied))]
        free = np.flatnonzero(~seen[p])
        a = int(free[rng.integers(len(free))])
        picks.append((p, a))
        seen[p, a] = True
        load[p] += 1
    return picks


def _adaptive(c: Crowd, q, sens, spec, budget: int, hp_share: float, confidence: float) -> list[tuple[int, int]]:
    on = (c.known != 0)[:, None] & (c.grid != 0)  # votes on honeypot lines
    right = ((c.grid == c.known[:, None]) & on).sum(axis=0)
    total = on.sum(axis=0)
    rows, members, _ = plan(
        q,
        c.known,
        c.line_program,
        c.grid != 0,
        sens,
        spec,
        budget,
        unit="program",
        confidence=confidence,
        honeypot_fraction=hp_share,
        per_annotator=max(1, math.ceil(2 * budget / c.m)),
        record=(right, total),
    )
    return [(int(c.line_program[members[i][0]]), a) for i, a, _, _ in rows]


def run_arm(c: Crowd, arm: str, seed: int, rounds: int, batch: int, hp_share: float, confidence: float) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 2])
    c.reset()
    for p in range(c.P):  # the start: one random review per program, one honeypot program per annotator
        c.review(p, int(rng.integers(c.m)))
    hp = np.flatnonzero(c.hp_prog)
    for a in range(c.m):
        p = int(hp[rng.integers(len(hp))])
        if not (c.grid[p * c.k : (p + 1) * c.k, a] != 0).any():
            c.review(p, a)
    rng_arm = np.random.default_rng([seed, 3, ARMS.index(arm)])
    rows = []
    unknown = c.known == 0
    right_line = np.zeros(len(c.truth), np.float64)
    for r in range(rounds + 1):
        q, sens, spec = _fit(c)
        acc = float(np.mean((q[unknown] > 0.5) == (c.truth[unknown] > 0)))
        # the stopping rule's promise: programs it calls decided (every line right with probability >= confidence)
        # against how many of them have every line right (programs without truth only)
        right_line[:] = (q > 0.5) == (c.truth > 0)
        all_right = np.bincount(c.line_program, weights=1.0 - right_line, minlength=c.P) == 0
        decided = (program_confidence(q, c.line_program, c.P) >= confidence) & ~c.hp_prog
        rows.append(
            {
                "round": r,
                "votes": int((c.grid != 0).sum()),
                "accuracy": acc,
                "decided": int(decided.sum()),
                "decided_right": int((decided & all_right).sum()),
            }
        )
        if r == rounds:
            break
        picks = _uniform(c, rng_arm, batch, hp_share) if arm == "uniform" else _adaptive(c, q, sens, spec, batch, hp_share, confidence)
        if not picks:
            break
        for p, a in picks:
            c.review(p, a)
    df = pd.DataFrame(rows)
    df["arm"] = arm
    return df


def votes_needed(curve: pd.DataFrame, target: float) -> float:
    """Votes cast when accuracy first reaches ``target`` (nan when it never does within the budget)."""
    hit = curve[curve["accuracy"] >= target]
    return float(hit["votes"].iloc[0]) if len(hit) else math.nan


def summarize(curves: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for scen, g in curves.groupby("scenario", sort=False):
        for t in TARGETS:
            need = {arm: [] for arm in ARMS}
            for _, h in g.groupby("replicate"):
                for arm in ARMS:
                    need[arm].append(votes_needed(h[h["arm"] == arm], t))
            u, a = np.array(need["uniform"]), np.array(need["adaptive"])
            both = np.isfinite(u) & np.isfinite(a)
            saving = 1.0 - a[both] / u[both]
            # a saving lives in (-inf, 1]: the percentile bootstrap keeps its interval there (a t-interval of
            # 3 replicates reached 1.37)
            iv = replicate_interval(saving, bounds=(-math.inf, 1.0)) if both.sum() else {"mean": math.nan, "lo": math.nan, "hi": math.nan}
            rows.append(
                {
                    "scenario": scen,
                    "target": t,
                    "uniform_votes": float(np.nanmean(u)) if np.isfinite(u).any() else math.nan,
                    "adaptive_votes": float(np.nanmean(a)) if np.isfinite(a).any() else math.nan,
                    "uniform_reached": int(np.isfinite(u).sum()),
                    "adaptive_reached": int(np.isfinite(a).sum()),
                    "replicates": len(u),
                    "saving": float(iv["mean"]),
                    "saving_lo": float(iv["lo"]),
                    "saving_hi": float(iv["hi"]),
                }
            )
    return pd.DataFrame(rows)


def stopping_check(curves: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """The stopping rule against the truth, at each run's last round: of the programs (without truth) that
    the rule calls decided at ``confidence``, the share with every line right; pooled over replicates, with
    a 95 % percentile-bootstrap interval over replicates (inside [0, 1])."""
    rows = []
    for (scen, arm), g in curves.groupby(["scenario", "arm"], sort=False):
        last = g.sort_values("round").groupby("replicate").tail(1)
        d, k = last["decided"].to_numpy(float), last["decided_right"].to_numpy(float)
        share = k.sum() / d.sum() if d.sum() else math.nan
        lo = hi = math.nan
        if d.sum() and len(d) > 1:
            idx = np.random.default_rng(0).integers(len(d), size=(9999, len(d)))
            ds_, ks_ = d[idx].sum(axis=1), k[idx].sum(axis=1)
            boot = ks_[ds_ > 0] / ds_[ds_ > 0]
            lo, hi = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
        rows.append(
            {
                "scenario": scen,
                "arm": arm,
                "confidence": confidence,
                "decided_per_replicate": float(d.mean()),
                "all_lines_right": float(share),
                "lo": lo,
                "hi": hi,
            }
        )
    return pd.DataFrame(rows)


def _figure(curves: pd.DataFrame, meta: dict, path) -> None:
    scen = list(dict.fromkeys(curves["scenario"]))
    ncol = 3
    fig, axes = new_figure(math.ceil(len(scen) / ncol), ncol, figsize=(16, 4.2 * math.ceil(len(scen) / ncol)))
    for ax, s in zip(np.ravel(axes), scen):
        g = curves[curves["scenario"] == s]
        grid = np.linspace(g["votes"].min(), g["votes"].max(), 60)
        for j, arm in enumerate(ARMS):
            # each replicate on a common grid of votes; after an arm stops asking (every program decided)
            # its accuracy stays where it stopped (np.interp holds the last value)
            acc = np.array([np.interp(grid, h["votes"], h["accuracy"]) for _, h in g[g["arm"] == arm].groupby("replicate")])
            st = series_style(j)
            ax.plot(grid, acc.mean(axis=0), label=arm, color=st["color"], lw=1.6)
            ax.fill_between(grid, acc.min(axis=0), acc.max(axis=0), color=st["color"], alpha=0.15, lw=0)
            ends = g[g["arm"] == arm].groupby("replicate")["votes"].max()
            stopped = ends[ends < g["votes"].max()]
            if len(stopped):
                ax.plot(stopped, np.interp(stopped, grid, acc.mean(axis=0)), ls="none", marker="|", ms=10, color=st["color"])
        for t in TARGETS:
            ax.axhline(t, color="0.6", lw=0.8, ls=":")
        ax.set_title(s, fontsize=10)
        style_axes(ax, "line votes cast (start included)", "line accuracy (fraction)")
    for ax in np.ravel(axes)[len(scen) :]:
        ax.set_visible(False)
    figure_legend(fig, np.ravel(axes)[0], where="right", title="allocation")
    fig.suptitle(
        f"Adaptive vs uniform allocation ({meta['settings']['n_programs']} programs x {meta['settings']['lines']} lines, "
        f"rounds of {meta['settings']['batch']} reviews); mean over {meta['replicates']} replicates, band = min-max;\n"
        "| = an adaptive run ended (every program decided at the confidence or reviewed by every annotator); dotted: 95 % and 99 %",
        fontsize=10,
    )
    save_figure(fig, path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 replicates, 2 scenarios, 40 programs")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--replicates", type=int, default=None)
    add_output_args(ap)
    args = ap.parse_args(argv)
    out = outputs(NAME, args, custom=args.replicates is not None or args.seed != 6)
    if args.plot_only:
        redraw(NAME, out, _figure, "curves")
        return
    R = args.replicates or (3 if args.quick else 10)
    P = 40 if args.quick else 100
    settings = {"n_programs": P, "lines": 6, "honeypot_fraction": 0.1, "batch": 25 if not args.quick else 10, "confidence": 0.99}
    settings["rounds"] = (16 * P - P) // settings["batch"]  # up to 16 reviews per program on average
    scenarios = dict(list(SCENARIOS.items())[-2:]) if args.quick else SCENARIOS
    frames = []
    with jax.enable_x64(True):
        bar = tqdm(total=len(scenarios) * R * len(ARMS), desc=NAME)
        for si, (name, spec) in enumerate(scenarios.items()):
            pop = S.parse_population(spec)
            for r in range(R):
                seed = args.seed * 1000 + si * 100 + r
                crowd = Crowd(seed, pop, P, settings["lines"], settings["honeypot_fraction"])
                for arm in ARMS:
                    df = run_arm(crowd, arm, seed, settings["rounds"], settings["batch"], 0.1, settings["confidence"])
                    df["scenario"], df["replicate"], df["population"] = name, r, spec
                    frames.append(df)
                    bar.update()
        bar.close()
    curves = pd.concat(frames, ignore_index=True)
    summ = summarize(curves)
    stop = stopping_check(curves, settings["confidence"])
    write_results(
        NAME,
        {
            "seed": args.seed,
            "replicates": R,
            "settings": settings,
            "scenarios": scenarios,
            "summary": summ,
            "stopping": stop,
            "cpu": cpu_note(),
        },
        {"curves": curves, "summary": summ, "stopping": stop},
        out,
    )
    meta, (curves_read,) = read_results(NAME, out, "curves")
    _figure(curves_read, meta, figure_path(out, NAME))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summ.to_string(index=False, float_format="{:.3f}".format))
        print(stop.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
