"""Where the calibration map is applied: to the full fit (crowdstat's rule) or to the K cross-fitted refits.

    .venv/bin/python experiments/calibration_ensemble.py [--sets a,b] [--methods proximal,em2] [--splits 3]

``calibrate=`` fits its map g on held-out posteriors, each from a refit that did not see that fold's
truth (K = 5 folds of honeypot programs), then applies g to the posteriors of the fit on *all* the
honeypots. For a method whose confidence grows with the honeypots (supervised proximal) the full
fit's posteriors are more extreme than those g was fitted on. The alternative measured here is
scikit-learn's ``CalibratedClassifierCV(ensemble=True)`` applied to crowdstat's folds: the mean over
the K refits of g(refit posterior). Protocol of experiments/calibration.py (20% of the gold as
honeypots, seeds 0..splits-1, scored on the other 80%); g is ``calibrate="auto"``'s choice.
Printed per (set, method): ECE (10 bins), accuracy and log-loss of both, means over the splits;
written to experiments/results/calibration_ensemble.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crowdstat  # noqa: E402
from crowdstat.estimators import calibration as C  # noqa: E402
from crowdstat.io import datasets  # noqa: E402
from crowdstat.io.atomic import atomic_write_json  # noqa: E402

METHODS = {"proximal": {}, "em2": {}, "em1": {}, "sequential": {"keep_trajectory": False}}
SETS = ["bluebirds", "welinder_ducks", "rte", "possent", "zencrowd_all", "sp", "jn_product", "trec2011"]
OUT = ROOT / "experiments" / "results" / "calibration_ensemble.json"


def one(table, ev: pd.DataFrame, method: str) -> dict:
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    folds = C.honeypot_folds(lp, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = crowdstat.fit(table, method=method, x64=True, **METHODS[method])
        refits = []
        for lines in folds:
            masked = t.copy()
            masked[lines] = 0
            tab = dataclasses.replace(table, arrays=table.arrays._replace(truth=masked))
            refits.append(crowdstat.fit(tab, method=method, x64=True, **METHODS[method]).lines["posterior"].to_numpy(np.float64))
    held = np.full(t.shape, np.nan)
    for lines, p in zip(folds, refits, strict=True):
        held[lines] = p[lines]
    hp = np.concatenate(folds)
    n_pos = int((t[hp] > 0).sum())
    kind = C.select_map(C.map_scores(C.auto_candidates(n_pos, hp.size - n_pos)[0], held, t, folds))
    g = C.CalibrationMap("none") if kind == "none" else C.fit_map(kind, held[hp], t[hp])
    lines = full.lines[["program", "line"]].reset_index().merge(ev, on=["program", "line"], how="inner")
    idx, y = lines["index"].to_numpy(), lines["truth"].to_numpy()
    p_full = g(full.lines["posterior"].to_numpy(np.float64)[idx])
    p_ens = np.mean([g(p[idx]) for p in refits], axis=0)
    out = {"map": kind}
    for name, p in (("full", p_full), ("ensemble", p_ens)):
        out[name] = {"ece": C.ece(p, y), "accuracy": float(np.mean(np.where(p > 0.5, 1, -1) == y)), "log_loss": C.log_loss(p, y)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--splits", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name in args.sets.split(","):
        votes, truth, _ = datasets.load(name)
        for seed in range(args.splits):
            hp, ev = datasets.honeypot_split(truth, 0.2, seed)
            table = crowdstat.read_votes(datasets.honeypots_first(votes, hp), truth=hp)
            for m in args.methods.split(","):
                rows.append({"data": name, "split": seed, "method": m, **one(table, ev, m)})
                r = rows[-1]
                scores = (f"{k} {r[k]['ece']:.3f} {r[k]['accuracy']:.4f} {r[k]['log_loss']:.3f}" for k in ("full", "ensemble"))
                print(name, m, seed, r["map"], *scores, flush=True)
    print("\n| set | method | ECE full | ECE ensemble | accuracy full | accuracy ensemble | log-loss full | log-loss ensemble |")
    print("|---|---|---|---|---|---|---|---|")
    df = pd.DataFrame(rows)
    for (name, m), g in df.groupby(["data", "method"], sort=False):
        cells = [np.mean([r[k][q] for r in g.to_dict("records")]) for q in ("ece", "accuracy", "log_loss") for k in ("full", "ensemble")]
        print(f"| {name} | {m} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    atomic_write_json(OUT, {"splits": args.splits, "rows": rows}, parents=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
