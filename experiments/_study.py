"""Shared helpers of the simulation study (experiments/exp*.py; docs/study.md).

Every experiment: simulates replicates with ``crowdstat.study.simulate.simulate_replicates`` (one key
split + vmap), fits each method through ``crowdstat.study.compare.compare`` (i.e. ``crowdstat.fit``),
and reports means with 95% intervals over replicates (``crowdstat.study.metrics.replicate_interval``: bootstrap inside [0, 1]
for bounded metrics, Student-t otherwise; none below 3 replicates).
Seeds are recorded in every JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "results"  # the committed results: written only by a full run without --out
FIGURES = ROOT / "docs" / "figures"  # the committed figures (same rule)
CACHE = ROOT / "experiments" / "cache"  # default home of quick / custom-sized runs: experiments/cache/<name>/<quick|custom>/

from crowdstat.study import simulate as S  # noqa: E402
from crowdstat.study.compare import available, compare  # noqa: E402
from crowdstat.study.metrics import replicate_interval  # noqa: E402

# The method specs of the study (crowdstat.study.compare syntax). Bayes runs with reduced NUTS settings.
ALL_METHODS = [
    "majority",
    "sequential:lam=1",
    "sequential:lam=0.1",
    "proximal:gamma=1%:center=zero",
    "em1",
    "em2",
    "bayes:num_warmup=300:num_samples=300:num_chains=1",
]
SHORT = {
    "bayes:num_warmup=300:num_samples=300:num_chains=1": "bayes",
    "proximal:gamma=1%:center=zero": "proximal",
}


def short(spec: str) -> str:
    return SHORT.get(spec, spec)


def usable(methods, skip=()) -> tuple[list[str], list[str]]:
    """(methods available in this installation, [missing ones with the reason])."""
    ok, missing = [], []
    for m in methods:
        name = m.split(":")[0]
        if name in skip:
            continue
        good, why = available(name)
        (ok if good else missing).append(m if good else f"{m}: {why}")
    return ok, missing


def replicates(seed: int, n: int, population, **kw) -> list:
    """``n`` simulated data sets (one key split + vmap) as host tables."""
    pop = S.parse_population(population) if isinstance(population, str) else population
    arr = S.simulate_replicates(seed, n, pop, **kw)
    return [S.to_frames(S.replicate(arr, i), pop) for i in range(n)]


def score_all(sims, methods, progress_desc=None, **extra) -> pd.DataFrame:
    """compare() on every replicate; one row per (replicate, method) with ``extra`` columns."""
    from tqdm.auto import tqdm

    rows = []
    it = enumerate(sims)
    if progress_desc:
        it = tqdm(list(it), desc=progress_desc, unit="rep", leave=False)
    for r, sim in it:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmp = compare(sim.votes, sim.truth if len(sim.truth) else None, sim.true_lines, sim.reliability, methods=methods)
        df = cmp.metrics.copy()
        df["replicate"] = r
        for k, v in extra.items():
            df[k] = v
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


#: how summarize's intervals are made (recorded in each result's meta, shown in figure titles;
#: results written before it say nothing: they hold Student-t intervals)
INTERVALS = "95% interval (percentile bootstrap for metrics in [0, 1], Student-t otherwise; none below 3 replicates)"
#: metrics that live in [0, 1]: their intervals are bootstrap intervals inside [0, 1]
#: (crowdstat.study.metrics.replicate_interval); the others (log-loss, seconds) get t-intervals
UNIT_METRICS = {"accuracy", "ece", "brier", "reliability_rmse", "detection_auc", "auc", "recall_bad", "false_flag_good"}


def summarize(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and 95% interval over replicates of each metric, per group (bounded metrics: bootstrap in [0, 1])."""
    out = []
    for keys, g in df.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = dict(zip(by, keys))
        row["n_replicates"] = int(g["replicate"].nunique())
        for m in metrics:
            ri = replicate_interval(g[m].to_numpy(np.float64), bounds=(0.0, 1.0) if m in UNIT_METRICS else None)
            row[m] = ri["mean"]
            row[f"{m}_lo"] = ri["lo"]
            row[f"{m}_hi"] = ri["hi"]
        out.append(row)
    return pd.DataFrame(out)


def fmt(row, m, digits=3) -> str:
    if np.isnan(row[m + "_lo"]):
        return f"{row[m]:.{digits}f} (no interval: < 3 replicates)"
    return f"{row[m]:.{digits}f} [{row[m + '_lo']:.{digits}f}, {row[m + '_hi']:.{digits}f}]"


def markdown(df: pd.DataFrame, cols: list[str], interval_metrics=(), digits=3) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            if c in interval_metrics:
                cells.append(fmt(r, c, digits))
            elif isinstance(r[c], float):
                cells.append(f"{r[c]:.{digits}g}")
            else:
                cells.append(str(r[c]))
        body.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(body) + "\n"


@dataclass(frozen=True)
class Outputs:
    """Where a run writes: results (JSON / CSV) and figures; ``kind``: the run's size (full, quick or custom)."""

    results: Path
    figures: Path
    kind: str


def add_output_args(ap: argparse.ArgumentParser) -> None:
    """``--out DIR`` and ``--plot-only`` (the options every experiment shares)."""
    ap.add_argument(
        "--out",
        default=None,
        help="write results (JSON/CSV) to DIR and figures to DIR/figures. Default: the committed experiments/results and "
        "docs/figures for a full run; experiments/cache/<experiment>/quick (or /custom with non-default sizes or seed) otherwise",
    )
    ap.add_argument("--plot-only", action="store_true", help="run nothing: redraw the figure from the results already in the output folder")


def outputs(name: str, args, custom: bool = False) -> Outputs:
    """The output folders of experiment ``name``: quick and custom-sized runs never write over the committed files.

    ``kind`` (recorded as ``run_kind`` in the JSON) is the size of the run: quick, custom (non-default sizes or seed) or full.
    """
    kind = "quick" if getattr(args, "quick", False) else "custom" if custom else "full"
    if args.out:
        out = Path(args.out).resolve()
        return Outputs(out, out / "figures", kind)
    if kind == "full":
        return Outputs(RESULTS, FIGURES, kind)
    return Outputs(CACHE / name / kind, CACHE / name / kind / "figures", kind)


def cpu_note() -> str:
    """The machine as it was during the run: cores, niceness of this process (``os.nice(0)``), load average."""
    return f"{os.cpu_count()} CPU cores shared with other jobs; niceness {os.nice(0)}; load average {os.getloadavg()[0]:.1f} at the end"


def write_results(name: str, payload: dict, tables: dict[str, pd.DataFrame] | None = None, out: Outputs | None = None) -> None:
    results = out.results if out is not None else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    import jax

    import crowdstat

    payload = {
        "experiment": name,
        "crowdstat_version": crowdstat.__version__,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_kind": out.kind if out is not None else "full",
        "cpu_note": cpu_note(),
        **payload,
    }
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    for tname, df in (tables or {}).items():
        df.to_csv(results / f"{name}_{tname}.csv", index=False, float_format="%.6g")


def read_results(name: str, out: Outputs, *tables: str) -> tuple[dict, list[pd.DataFrame]]:
    """The JSON and the named CSV tables of a finished run (for --plot-only); a clear error when absent."""
    js = out.results / f"{name}.json"
    paths = [out.results / f"{name}_{t}.csv" for t in tables]
    missing = [str(p) for p in [js, *paths] if not p.exists()]
    if missing:
        raise SystemExit(f"--plot-only: no results to plot: {', '.join(missing)} missing (run the experiment first, same --out/--quick)")
    return json.loads(js.read_text()), [pd.read_csv(p) for p in paths]


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, pd.DataFrame):
        return json.loads(x.to_json(orient="records"))
    return str(x)


def figure_path(out: Outputs, name: str) -> Path:
    out.figures.mkdir(parents=True, exist_ok=True)
    return out.figures / f"{name}.png"


def redraw(name: str, out, figure, *tables: str) -> None:
    """``--plot-only``: draw the figure from the tables already written (the one code path both ways)."""
    meta, tabs = read_results(name, out, *tables)
    figure(*tabs, meta, figure_path(out, name))
    print(f"wrote {figure_path(out, name)} from {out.results}")
