"""The affine map as an ``auto`` candidate, checked on simulations no other study used.

    .venv/bin/python experiments/calibration_affine.py [--replicates 10] [--offset 1000] [--methods em2,sequential]
    .venv/bin/python experiments/calibration_affine.py --report-only

``affine`` (g(p) = b + a p, docs/calibration.md) was added to ``calibrate="auto"``'s candidates after
trec2011's reliability diagram had been seen (em2's saturated posteriors are wrong at a fixed rate at
both ends). To check it on data that did not suggest it, this script draws the five simulation
scenarios of experiments/calibration.py with replicate seeds shifted by ``--offset`` (1000: seeds no
study of this repository uses), fits each method once with its 5 cross-fitted refits, and applies
``auto``'s rule twice to the same held-out posteriors: with the candidates before (none, temperature,
platt, isotonic) and with affine among them. Scored on the lines without truth: ECE (10 bins) per
replicate and pooled over the replicates of a scenario, log-loss and accuracy; the differences (with
- without) get a 95% Student-t interval over the cells. Written to
experiments/results/calibration_affine.json and the generated block of docs/calibration.md (another
configuration: experiments/cache/calibration_affine/custom.json, and no page).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import crowdstat  # noqa: E402
from crowdstat import api  # noqa: E402
from crowdstat.estimators import calibration as C  # noqa: E402
from crowdstat.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crowdstat.study.metrics import replicate_interval  # noqa: E402

study = importlib.import_module("calibration")  # experiments/calibration.py: its methods and scenarios

#: the calibration study's methods (experiments/calibration.py) but auto, whose candidates are these
METHODS = {k: v for k, v in study.METHODS.items() if k != "auto"}
#: auto's candidates before the affine map joined them
WITHOUT = tuple(k for k in C.CANDIDATES if k != "affine")
OUT = ROOT / "experiments" / "results" / "calibration_affine.json"
#: where a run other than the committed configuration (10 replicates, offset 1000, every method) writes
CUSTOM = ROOT / "experiments" / "cache" / "calibration_affine" / "custom.json"
DOC = ROOT / "docs" / "calibration.md"
MARKERS = ("<!-- calibration-affine:start (experiments/calibration_affine.py) -->", "<!-- calibration-affine:end -->")


def apply_rule(kinds, held, t, folds, full, rows) -> tuple[str, np.ndarray]:
    """``calibrate="auto"``'s choice among ``kinds`` (isotonic only with 20 lines of each class) and the
    mapped full-fit posteriors of ``rows``."""
    hp = np.concatenate(folds)
    n_pos = int((t[hp] > 0).sum())
    allowed = C.auto_candidates(n_pos, hp.size - n_pos)[0]
    kind = C.select_map(C.map_scores([k for k in kinds if k in allowed], held, t, folds))
    g = C.CalibrationMap("none") if kind == "none" else C.fit_map(kind, held[hp], t[hp])
    return kind, g(full[rows])


def bin_sums(p: np.ndarray, y: np.ndarray) -> dict:
    """Per ECE bin (:data:`crowdstat.estimators.calibration.N_BINS` equal-width): lines, sum of P, lines
    right. ECE pooled over cells is sum_b |sum y_b - sum p_b| / sum n_b, so these sums are all it needs."""
    b = np.clip((p * C.N_BINS).astype(np.int64), 0, C.N_BINS - 1)
    return {
        "n": np.bincount(b, minlength=C.N_BINS).tolist(),
        "p": np.bincount(b, p, C.N_BINS).tolist(),
        "y": np.bincount(b, (y > 0).astype(np.float64), C.N_BINS).tolist(),
    }


def pooled_ece(sums: list[dict]) -> float:
    n, p, y = (np.sum([s[k] for s in sums], 0) for k in ("n", "p", "y"))
    return float(np.abs(y - p).sum() / n.sum())


def cell(table, true_lines, method: str) -> dict:
    name, extra = METHODS[method]
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    folds = C.honeypot_folds(lp, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = crowdstat.fit(table, method=name, x64=True, **extra)
        held = C.heldout_posteriors(api._refit(table, name, extra, {"x64": True}), t, folds)
    lines = res.lines[["program", "line"]].reset_index().merge(true_lines, on=["program", "line"])
    lines = lines[t[lines["index"].to_numpy()] == 0]
    rows, y = lines["index"].to_numpy(), lines["truth"].to_numpy()
    full = res.lines["posterior"].to_numpy(np.float64)
    out: dict = {"n_lines": int(y.size)}
    for tag, kinds in (("without", WITHOUT), ("with", C.CANDIDATES)):
        kind, p = apply_rule(kinds, held, t, folds, full, rows)
        out[tag] = {"kind": kind, "ece": C.ece(p, y), "log_loss": C.log_loss(p, y), "accuracy": float(np.mean((p > 0.5) == (y > 0)))}
        out[tag]["bins"] = bin_sums(p, y)
    return out


def run(replicates: int, offset: int, methods: list[str]) -> list[dict]:
    from tqdm.auto import tqdm

    draw = importlib.import_module("_study")
    bar = tqdm(total=len(study.SCENARIOS) * replicates * len(methods), desc="affine check", unit="fit")
    rows = []
    for scen, (pop, seed, frac) in study.SCENARIOS.items():
        for r, sim in enumerate(draw.replicates(seed + offset, replicates, pop, honeypot_fraction=frac, **study.SIM_SETTINGS)):
            table = crowdstat.read_votes(sim.votes, truth=sim.truth)
            for m in methods:
                rows.append({"scenario": scen, "replicate": r, "method": m, **cell(table, sim.true_lines, m)})
                bar.update()
    bar.close()
    return rows


def _iv(v) -> str:
    iv = replicate_interval(np.asarray(v, np.float64), bounds=None)
    return f"{float(iv['mean']):+.4f} [{float(iv['lo']):+.4f}, {float(iv['hi']):+.4f}]"


def report(res: dict) -> str:
    rows = res["rows"]
    keys = list(dict.fromkeys((r["scenario"], r["method"]) for r in rows))  # scenario order, then METHODS order
    out = [
        f"Command: `.venv/bin/python experiments/calibration_affine.py` ({res['replicates']} replicates per scenario, "
        f"seeds shifted by {res['offset']}). Per cell: mean over the replicates (ECE per replicate; pooled: one ECE "
        "over the lines of all replicates); maps: what `auto` chose with affine among the candidates.",
        "",
        "| scenario | method | ECE without → with | pooled ECE without → with | log-loss without → with | maps (with) |",
        "|---|---|---|---|---|---|",
    ]
    for scen, m in keys:
        cs = [r for r in rows if r["scenario"] == scen and r["method"] == m]
        pooled = {tag: pooled_ece([r[tag]["bins"] for r in cs]) for tag in ("without", "with")}
        mean = {tag: {k: float(np.mean([r[tag][k] for r in cs])) for k in ("ece", "log_loss")} for tag in ("without", "with")}
        kinds: dict = {}
        for r in cs:
            kinds[r["with"]["kind"]] = kinds.get(r["with"]["kind"], 0) + 1
        out.append(
            f"| {scen} | {m} | {mean['without']['ece']:.3f} → {mean['with']['ece']:.3f} | {pooled['without']:.3f} → {pooled['with']:.3f} | "
            f"{mean['without']['log_loss']:.3f} → {mean['with']['log_loss']:.3f} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            + " |"
        )
    out += [
        "",
        "Per method over the scenarios (with - without, mean [95% t-interval over the cells]):",
        "",
        "| method | cells | ECE | log-loss | accuracy | map changed |",
        "|---|---|---|---|---|---|",
    ]
    for m in dict.fromkeys(r["method"] for r in rows):
        cs = [r for r in rows if r["method"] == m]
        d = {k: [r["with"][k] - r["without"][k] for r in cs] for k in ("ece", "log_loss", "accuracy")}
        n_changed = sum(r["with"]["kind"] != r["without"]["kind"] for r in cs)
        out.append(f"| {m} | {len(cs)} | {_iv(d['ece'])} | {_iv(d['log_loss'])} | {_iv(d['accuracy'])} | {n_changed} |")
    d = {k: [r["with"][k] - r["without"][k] for r in rows] for k in ("ece", "log_loss", "accuracy")}
    changed = sum(r["with"]["kind"] != r["without"]["kind"] for r in rows)
    out += [
        "",
        f"Over all {len(rows)} cells (with - without, mean [95% t-interval over cells]): ECE {_iv(d['ece'])}, "
        f"log-loss {_iv(d['log_loss'])}, accuracy {_iv(d['accuracy'])}; the map changed in {changed} cells.",
    ]
    return "\n".join(out)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    start, end = MARKERS
    i, j = doc.index(start), doc.index(end)
    atomic_write_text(DOC, doc[: i + len(start)] + "\n\n" + text + "\n\n" + doc[j:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--offset", type=int, default=1000, help="added to the scenarios' seeds (1000: replicates no other study draws)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
    ap.add_argument("--report-only", action="store_true", help="redraw the table from the committed results")
    args = ap.parse_args(argv)
    if args.report_only:
        import json

        res = json.loads(OUT.read_text())
    else:
        methods = args.methods.split(",")
        bad = [m for m in methods if m not in METHODS]
        if bad:
            ap.error(f"--methods: unknown {', '.join(bad)} (expected some of {', '.join(METHODS)})")
        res = {"replicates": args.replicates, "offset": args.offset, "rows": run(args.replicates, args.offset, methods)}
        committed = args.replicates == 10 and args.offset == 1000 and methods == list(METHODS)
        atomic_write_json(OUT if committed else CUSTOM, res, parents=True)
        print(f"wrote {(OUT if committed else CUSTOM).relative_to(ROOT)}", file=sys.stderr)
    text = report(res)
    print(text)
    if res["offset"] == 1000 and res["replicates"] == 10 and len({r["method"] for r in res["rows"]}) == len(METHODS):
        write_doc(text)  # the committed configuration only
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
