"""Target (a) of issue 17 on many splits: the default one-shot fit against OCLV on the same splits.

    .venv/bin/python experiments/anchor_splits.py [--sets a,b] [--splits N] [--report-only]

Target (a) compares the default one-shot fit's mean accuracy over 5 splits with the published OCLV(b)
anchor of shared/datasets/ANCHORS.md, itself a mean over 10 seeded splits whose seeds and split
procedure are not published. Where the split-to-split standard deviation is large (bluebirds: 0.045
over 10 splits, so 0.014 for the mean) that comparison measures the splits as much as the methods.
This script draws N splits (``crowdstat.io.datasets.honeypot_split``, seeds 0..N-1; seeds 0-4 are
docs/real_data.md's acceptance splits) and on each one computes, on the same 80% of the gold:

- ``default``: ``crowdstat.fit(method="proximal")`` at its defaults (supervised, centred, gamma by
  5-fold held-out honeypot log-likelihood), x64;
- ``oclv``: ANCHORS.md's one-coin logit-weighted vote, written here from its definition in plain NumPy
  (p_w = (correct + 1) / (total + 2) on the honeypots, P = sigmoid(sum eps * logit p_w), 1 iff
  P > 1/2): an implementation independent of crowdstat;
- ``oclv_crowdstat``: crowdstat's centred fit at gamma = 100%, which docs/real_data.md says is that
  vote; the report counts the splits where its predictions equal the NumPy ones;
- ``majority``: plain majority vote, ties to 0, as ANCHORS.md's "plain MV on same eval items".

The report gives, per set, the paired difference default - oclv with a 95% bootstrap interval over
splits (target (a) on the same splits), and where the published OCLV(b) lies among means of 10
splits drawn from these N: the share of 10-split means at or above it. Results are cached per
(set, split) in ``experiments/results/anchor_splits.json``; the table goes into docs/real_data.md
between the ANCHOR-SPLITS markers and the figure into docs/figures/anchor_splits.png.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crowdstat  # noqa: E402
from crowdstat.io import datasets  # noqa: E402
from crowdstat.io.atomic import atomic_write_text  # noqa: E402
from crowdstat.study.metrics import replicate_interval  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "anchor_splits.json"
FIGURE = ROOT / "docs" / "figures" / "anchor_splits.png"
SETS = ["bluebirds", "welinder_ducks", "rte", "jn_product", "possent", "sp", "zencrowd_all", "trec2011"]
TOL = 0.005
GROUP = 10  # ANCHORS.md's OCLV(b) is a mean over 10 splits
DRAWS = 20_000  # 10-split groups drawn (without replacement inside a group) to place the published figure


def oclv_predictions(votes: pd.DataFrame, hp: pd.DataFrame, ev: pd.DataFrame) -> np.ndarray:
    """ANCHORS.md's OneCoinLogitVote, from its definition: predicted labels (+1/-1) of ``ev``'s programs."""
    truth = dict(zip(hp["program"], hp["truth"], strict=True))
    on_hp = votes[votes["program"].isin(truth)]
    correct = (on_hp["label"].to_numpy() == on_hp["program"].map(truth).to_numpy()).astype(float)
    per = pd.DataFrame({"w": on_hp["annotator"].to_numpy(), "c": correct}).groupby("w")["c"].agg(["sum", "count"])
    p = (per["sum"] + 1.0) / (per["count"] + 2.0)
    logit = np.log(p / (1.0 - p))
    on_ev = votes[votes["program"].isin(set(ev["program"]))]
    w = on_ev["annotator"].map(logit).fillna(0.0).to_numpy()  # a worker with no honeypot vote: weight 0
    score = pd.Series(on_ev["label"].to_numpy() * w).groupby(on_ev["program"].to_numpy()).sum()
    score = score.reindex(ev["program"].to_numpy()).fillna(0.0).to_numpy()
    return np.where(score > 0, 1, -1)  # exact ties go to 0 (-1 here), as in ANCHORS.md


def majority_predictions(votes: pd.DataFrame, ev: pd.DataFrame) -> np.ndarray:
    on_ev = votes[votes["program"].isin(set(ev["program"]))]
    s = on_ev.groupby("program")["label"].sum().reindex(ev["program"].to_numpy()).fillna(0).to_numpy()
    return np.where(s > 0, 1, -1)


def fit_predictions(table, ev: pd.DataFrame, **kw) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = crowdstat.fit(table, x64=True, **kw)
    post = res.lines.groupby("program")["posterior"].first().reindex(ev["program"].to_numpy())
    if post.isna().any():
        raise RuntimeError(f"{int(post.isna().sum())} evaluation items have no posterior")
    sel = res.diagnostics.get("selection") or {}
    return np.where(post.to_numpy(np.float64) > 0.5, 1, -1), {"gamma": sel.get("chosen", {}).get("gamma")}


def run_split(votes: pd.DataFrame, truth: pd.DataFrame, seed: int) -> dict:
    hp, ev = datasets.honeypot_split(truth, 0.2, seed)
    table = crowdstat.read_votes(datasets.honeypots_first(votes, hp), truth=hp)
    y = ev["truth"].to_numpy()
    t0 = time.perf_counter()
    default, info = fit_predictions(table, ev, method="proximal")
    seconds = time.perf_counter() - t0
    same, _ = fit_predictions(table, ev, method="proximal", gamma="100%")
    oclv = oclv_predictions(votes, hp, ev)
    return {
        "default": float(np.mean(default == y)),
        "oclv": float(np.mean(oclv == y)),
        "oclv_crowdstat": float(np.mean(same == y)),
        "oclv_identical": bool(np.array_equal(same, oclv)),
        "majority": float(np.mean(majority_predictions(votes, ev) == y)),
        "gamma": info["gamma"],
        "seconds_default": seconds,
    }


def published_sd(path: Path) -> dict:
    """The sd over 10 splits that ANCHORS.md's full table gives for OCLV(b), per set."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\| (\w+) \| OneCoinLogitVote \(b\).*?\| ([0-9.]+) \|.*sd=([0-9.]+)", line)
        if m:
            out[m.group(1)] = float(m.group(3))
    return out


def summarize(recs: list[dict], published: float | None) -> dict:
    A = {k: np.array([r[k] for r in recs], np.float64) for k in ("default", "oclv", "oclv_crowdstat", "majority")}
    diff = A["default"] - A["oclv"]
    out = {k: replicate_interval(v, bounds=(0.0, 1.0)) for k, v in A.items()}
    out["diff"] = replicate_interval(diff, bounds=(-1.0, 1.0))
    out["n"] = len(recs)
    out["identical"] = int(sum(r["oclv_identical"] for r in recs))
    out["published"] = published
    if published is not None and len(recs) >= GROUP:
        rng = np.random.default_rng(0)
        idx = np.argsort(rng.random((DRAWS, len(recs))), axis=1)[:, :GROUP]
        means = A["oclv"][idx].mean(axis=1)
        out["share_at_or_above"] = float(np.mean(means >= published - 1e-12))
        out["group_means_q"] = [float(q) for q in np.quantile(means, [0.025, 0.5, 0.975])]
        out["default_minus_published"] = float(A["default"].mean() - published)
    return out


def _iv(x: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(x['mean'])} [{f.format(x['lo'])}, {f.format(x['hi'])}]"


def report(results: dict, anchors: dict, sds: dict, sets: list[str], splits: int) -> tuple[str, dict]:
    S = {}
    for s in sets:
        recs = [results["runs"].get(f"{s}|{k}") for k in range(splits)]
        if all(r is not None for r in recs):
            S[s] = summarize(recs, anchors.get(s, {}).get("OCLV(b) 20%hp"))
    L = ["<!-- Generated by experiments/anchor_splits.py; edit the script, not this block. -->"]
    L.append(
        f"Command: `.venv/bin/python experiments/anchor_splits.py` ({results.get('date')}, {splits} seeded splits per set, "
        "seeds 0..N-1, float64, CPU). Accuracy on the 80% of the gold that are not honeypots, mean over the splits "
        "[95% percentile-bootstrap interval]; **default - OCLV**: the paired difference on the same splits; "
        "**published OCLV(b)** (sd over its 10 splits): ANCHORS.md; **10-split means of OCLV**: the 2.5%, 50% and "
        "97.5% quantiles of the mean over 10 of these splits drawn at random, and the share of them at or above the "
        "published figure; **OCLV = crowdstat**: splits where crowdstat's gamma = 100% fit predicts exactly as the "
        "NumPy transcription of ANCHORS.md's formula.\n"
    )
    L.append(
        "| dataset | majority | OCLV | default | default - OCLV | (a) paired | published OCLV(b) (sd) "
        "| 10-split means of OCLV | share >= published | default - published | OCLV = crowdstat |"
    )
    L.append("|" + "---|" * 11)
    for s in sets:
        if s not in S:
            L.append(f"| {s} | not run |" + " |" * 9)
            continue
        x = S[s]
        d = x["diff"]["mean"]
        pub = x["published"]
        pub_txt = f"{pub:.3f} ({sds.get(s, float('nan')):.3f})" if pub is not None else "—"
        q = x.get("group_means_q")
        L.append(
            f"| {s} | {_iv(x['majority'])} | {_iv(x['oclv'])} | {_iv(x['default'])} | {_iv(x['diff'], True)} | "
            f"{'met' if d >= -TOL else 'MISSED'} | {pub_txt} | "
            + (f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}" if q else "—")
            + f" | {x.get('share_at_or_above', float('nan')):.2f} | {x.get('default_minus_published', float('nan')):+.3f}"
            + f" | {x['identical']} of {x['n']} |"
        )
    return "\n".join(L) + "\n", S


def plot(S: dict, path: Path = FIGURE) -> None:
    """Left: the paired difference default - OCLV per set with its interval and the -0.005 tolerance.
    Right: the published OCLV(b) against the spread of 10-split means of OCLV on these splits."""
    from crowdstat.study import plotting as P

    fig, axes = P.new_figure(1, 2, figsize=(12, 4.2))
    a1, a2 = axes[0]
    sets = list(S)
    y = np.arange(len(sets))[::-1]
    d = [S[s]["diff"] for s in sets]
    a1.errorbar(
        [x["mean"] for x in d],
        y,
        xerr=[[x["mean"] - x["lo"] for x in d], [x["hi"] - x["mean"] for x in d]],
        fmt="o",
        color=P.PALETTE[1],
        capsize=3,
    )
    a1.axvline(0, color=P.NEUTRAL, lw=0.8)
    a1.axvline(-TOL, color=P.NEUTRAL, ls="--", lw=1)
    a1.set_yticks(y, sets)
    P.style_axes(a1, xlabel="accuracy: default one-shot fit - OCLV, same splits", title="target (a), paired (dashed: -0.005)")
    for i, s in enumerate(sets):
        q = S[s].get("group_means_q")
        if not q:
            continue
        a2.plot([q[0] - S[s]["oclv"]["mean"], q[2] - S[s]["oclv"]["mean"]], [y[i], y[i]], color=P.PALETTE[2], lw=4, alpha=0.5)
        a2.plot([S[s]["published"] - S[s]["oclv"]["mean"]], [y[i]], "D", color=P.PALETTE[0], ms=6)
    a2.axvline(0, color=P.NEUTRAL, lw=0.8)
    a2.set_yticks(y, sets)
    P.style_axes(
        a2,
        xlabel="accuracy - mean OCLV over all splits here",
        title="published OCLV(b) (diamond) vs 95% range of 10-split means (bar)",
    )
    P.save_figure(fig, path)


def main(argv=None) -> None:
    from experiments.acceptance import parse_common, write_page

    args, sets, results = parse_common(__doc__, 100, RESULTS, argv)
    if args.splits < GROUP:
        raise SystemExit(f"--splits: at least {GROUP} (the published anchor is a mean over {GROUP} splits)")
    if not args.report_only:
        todo = [(s, k) for s in sets for k in range(args.splits) if f"{s}|{k}" not in results["runs"]]
        loaded: dict = {}
        for s, k in tqdm(todo, desc="anchor splits", unit="split"):
            if s not in loaded:
                loaded = {s: datasets.load(s)}
            votes, truth, _ = loaded[s]
            results["runs"][f"{s}|{k}"] = run_split(votes, truth, k)
            if len(results["runs"]) % 20 == 0:
                atomic_write_text(RESULTS, json.dumps(results, indent=1) + "\n")
        atomic_write_text(RESULTS, json.dumps(results, indent=1) + "\n")
    from experiments.real_data import parse_anchors

    root = datasets.datasets_root()
    anchors, sds = parse_anchors(root / "ANCHORS.md"), published_sd(root / "ANCHORS.md")
    block, S = report(results, anchors, sds, [s for s in SETS if s in sets], args.splits)
    write_page(block, "ANCHOR-SPLITS")
    if S:
        plot(S)
    print(block)


if __name__ == "__main__":
    main()
