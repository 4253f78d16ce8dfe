"""Coverage of the intervals of ``crowdstat.fit(..., interval=0.9)`` by simulation; docs/study.md, "Interval coverage".

    .venv/bin/python experiments/coverage.py [--quick] [--datasets R] [--seed 17] [--out DIR] [--plot-only]

For each method (em1, em2, proximal supervised, proximal latent; sequential refuses ``interval``) and
data-set size (20 and 80 programs of 6 lines, 4 annotators per program, 20% honeypot programs first),
R simulated data sets each get one fit with nominal 90% intervals (the Laplace approximation of the
posterior, crowdstat.estimators.laplace.laplace_intervals). What is covered:

- per annotator: the simulated annotator's true reliability p (one-coin population, 8 annotators,
  p = 0.95 ... 0.6); for em2 (two-coin population) its true sensitivity and specificity, and the
  balanced accuracy (sens + spec) / 2 that em2's ``reliability`` column estimates;
- per line (lines without honeypot truth): the *oracle posterior*, the method's own posterior formula
  evaluated on the observed votes at the true annotator parameters: EM: the Dawid-Skene E-step with the
  true p (em2: sens / spec) and the true class prior pi = 1 - 0.5 x 0.4 = 0.8; proximal (both
  variants): sigmoid(logit(p0) + sum_i label_ij logit(p_i)) with the fit's p0 = 1/2.

Coverage = the fraction of intervals that contain their target, with a Wilson 95% interval over all
intervals and a 95% bootstrap interval over data sets (intervals of one data set are not independent;
the data-set bootstrap is the honest one). Nothing is tuned: the defaults of every method are used.
A full run writes experiments/results/coverage.json, docs/figures/coverage.png and the table of
docs/study.md (between its coverage-table markers); --quick and other sizes write under
experiments/cache/coverage/; --plot-only redraws the figure (and the docs table) from the results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crowdstat  # noqa: E402
from crowdstat.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crowdstat.study import simulate as S  # noqa: E402

NAME = "coverage"
RESULTS = ROOT / "experiments" / "results" / f"{NAME}.json"
FIGURE = ROOT / "docs" / "figures" / f"{NAME}.png"
CACHE = ROOT / "experiments" / "cache" / NAME

LEVEL = 0.9
P_ONE = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6]
SENS = [0.95, 0.9, 0.85, 0.8, 0.9, 0.7, 0.95, 0.75]
SPEC = [0.9, 0.7, 0.85, 0.6, 0.95, 0.8, 0.5, 0.75]
PI_TRUE = 0.8  # P(line correct) in both scenarios
SIM = {"lines_per_program": 6, "annotators_per_item": 4, "honeypot_fraction": 0.2}
#: scenario -> (truth model of crowdstat.study.simulate, program counts)
SCENARIOS = {
    # every program "buggy", every line wrong with probability 0.2 independently: the methods' model
    "independent lines": ({"p_buggy_program": 1.0, "p_wrong_line_if_buggy": 0.2}, (20, 80)),
    # the simulator's default: half the programs buggy, 40% of their lines wrong (wrong lines cluster)
    "clustered bugs": ({"p_buggy_program": 0.5, "p_wrong_line_if_buggy": 0.4}, (80,)),
}
#: label -> (method, extra parameters, population)
METHODS = {
    "em1": ("em1", {}, "one-coin"),
    "em2": ("em2", {}, "two-coin"),
    "proximal": ("proximal", {}, "one-coin"),
    "proximal latent": ("proximal", {"latent": True}, "one-coin"),
}
#: the interval construction measured (recorded in the results)
INTERVAL_KIND = (
    "Laplace approximation of the posterior: Beta(1, 1) priors on every probability, Gaussian on the logit scale "
    "at the posterior mode, lines by the delta method, widened to contain the estimate (crowdstat.estimators.intervals)"
)
DOC = ROOT / "docs" / "study.md"
TABLE_START, TABLE_END = "<!-- coverage-table:start (experiments/coverage.py) -->", "<!-- coverage-table:end -->"


def population(kind: str) -> S.Population:
    if kind == "one-coin":
        return S.one_coin(P_ONE)
    pop = S.one_coin(np.full(len(SENS), 0.8))
    return pop._replace(sens=np.asarray(SENS, np.float32), spec=np.asarray(SPEC, np.float32))


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def cluster_interval(hits: list[np.ndarray], seed: int, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the pooled coverage, resampling whole data sets."""
    k = np.array([h.sum() for h in hits], np.float64)
    n = np.array([h.size for h in hits], np.float64)
    idx = np.random.default_rng(seed).integers(0, len(hits), (n_boot, len(hits)))
    cov = k[idx].sum(1) / np.maximum(n[idx].sum(1), 1)
    lo, hi = np.quantile(cov, [0.025, 0.975])
    return float(lo), float(hi)


def oracle_posteriors(sim: S.Simulation, res, method: str) -> pd.DataFrame:
    """Per line: the method's posterior formula on the observed votes at the true parameters (module docstring)."""
    rel = sim.reliability.set_index("annotator")
    v = sim.votes
    sens = rel.loc[v["annotator"], "sens"].to_numpy(np.float64)
    spec = rel.loc[v["annotator"], "spec"].to_numpy(np.float64)
    pos = v["label"].to_numpy() > 0
    if method in ("em1", "em2"):
        contrib = np.where(pos, np.log(sens) - np.log1p(-spec), np.log1p(-sens) - np.log(spec))
        prior_logit = math.log(PI_TRUE) - math.log1p(-PI_TRUE)
    else:
        w = np.log(sens) - np.log1p(-sens)  # one-coin population: sens = spec = p
        contrib = np.where(pos, w, -w)
        p0 = float(res.params["prior"])
        prior_logit = math.log(p0) - math.log1p(-p0)
    logit = pd.Series(contrib).groupby([v["program"].to_numpy(), v["line"].to_numpy()]).sum() + prior_logit
    out = logit.rename("logit").reset_index()
    out.columns = ["program", "line", "logit"]
    out["oracle"] = 1 / (1 + np.exp(-out["logit"]))
    return out


def one_dataset(method: str, extra: dict, pop_kind: str, n_programs: int, key: int, truth_kw: dict) -> dict[str, np.ndarray]:
    """Hit vectors (target inside the interval) of one simulated data set, and the interval widths."""
    sim = S.simulate(key, population(pop_kind), n_programs=n_programs, **SIM, **truth_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = crowdstat.fit(sim.votes, truth=sim.truth, method=method, interval=LEVEL, **extra)
    a = res.annotators.merge(sim.reliability, on="annotator")
    out = {}
    targets = (
        {"reliability": a["p"]}
        if method != "em2"
        else {"reliability": (a["sens"] + a["spec"]) / 2, "sensitivity": a["sens"], "specificity": a["spec"]}
    )
    for col, truth in targets.items():
        lo, hi = a[f"{col}_lower"].to_numpy(), a[f"{col}_upper"].to_numpy()
        out[col] = (lo <= truth.to_numpy()) & (truth.to_numpy() <= hi)
        out[f"{col}_width"] = hi - lo
    lines = res.lines.merge(oracle_posteriors(sim, res, method), on=["program", "line"])
    hp = set(sim.truth["program"].astype(str) + ":" + sim.truth["line"].astype(str))
    free = ~(lines["program"].astype(str) + ":" + lines["line"].astype(str)).isin(hp)
    lines = lines[free.to_numpy()]
    lo, hi, o = lines["posterior_lower"].to_numpy(), lines["posterior_upper"].to_numpy(), lines["oracle"].to_numpy()
    out["posterior"] = (lo <= o) & (o <= hi)
    out["posterior_width"] = hi - lo
    return out


def _rows(per: list[dict], scenario: str, label: str, n_programs: int, seed: int, secs: float) -> list[dict]:
    rows = []
    for target in [k for k in per[0] if not k.endswith("_width")]:
        hits = [d[target] for d in per]
        k, n = int(sum(h.sum() for h in hits)), int(sum(h.size for h in hits))
        rows.append(
            {
                "scenario": scenario,
                "method": label,
                "n_programs": n_programs,
                "target": "line posterior (oracle)" if target == "posterior" else f"annotator {target}",
                "coverage": k / n,
                "wilson_95": wilson(k, n),
                "dataset_bootstrap_95": cluster_interval(hits, seed),
                "n_intervals": n,
                "mean_width": float(np.mean(np.concatenate([d[f"{target}_width"] for d in per]))),
                "seconds_per_dataset": secs / len(per),
            }
        )
    return rows


def run(n_datasets: int, seed: int, methods=tuple(METHODS)) -> dict:
    from tqdm.auto import tqdm

    rows = []
    total = len(methods) * sum(len(sizes) for _, sizes in SCENARIOS.values()) * n_datasets
    with tqdm(total=total, desc="coverage", unit="data set") as bar:
        for scenario, (truth_kw, sizes) in SCENARIOS.items():
            for label in methods:
                method, extra, pop_kind = METHODS[label]
                for n_programs in sizes:
                    t0 = time.perf_counter()
                    per = []
                    for r in range(n_datasets):
                        per.append(one_dataset(method, extra, pop_kind, n_programs, seed + 1000 * r, truth_kw))
                        bar.update(1)
                    rows += _rows(per, scenario, label, n_programs, seed, time.perf_counter() - t0)
    return {
        "level": LEVEL,
        "n_datasets": n_datasets,
        "seed": seed,
        "simulation": {
            **SIM,
            "scenarios": {k: v[0] for k, v in SCENARIOS.items()},
            "p_one_coin": P_ONE,
            "sens_two_coin": SENS,
            "spec_two_coin": SPEC,
            "class_prior": PI_TRUE,
        },
        "interval_kind": INTERVAL_KIND,
        "rows": rows,
    }


def table(payload: dict) -> str:
    head = (
        "| scenario | method | programs | target | coverage | Wilson 95% | data-set bootstrap 95% | intervals | mean width |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    body = [
        f"| {r['scenario']} | {r['method']} | {r['n_programs']} | {r['target']} | {r['coverage']:.3f} | "
        f"[{r['wilson_95'][0]:.3f}, {r['wilson_95'][1]:.3f}] | "
        f"[{r['dataset_bootstrap_95'][0]:.3f}, {r['dataset_bootstrap_95'][1]:.3f}] | {r['n_intervals']} | {r['mean_width']:.3f} |"
        for r in payload["rows"]
    ]
    return "\n".join([head, *body])


def write_doc_table(payload: dict, path: Path = DOC) -> None:
    """Replace the table between the coverage-table markers of docs/study.md (atomic write)."""
    text = path.read_text()
    i, j = text.find(TABLE_START), text.find(TABLE_END)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: the markers {TABLE_START!r} ... {TABLE_END!r} are missing; the table was not written")
    atomic_write_text(path, text[: i + len(TABLE_START)] + "\n\n" + table(payload) + "\n\n" + text[j:])


def plot(payload: dict, path: Path) -> None:
    from crowdstat.study.plotting import NEUTRAL, legend_outside, new_figure, save_figure, series_style, style_axes

    rows = payload["rows"]
    labels = list(dict.fromkeys(f"{r['method']} / {r['target'].replace('annotator ', '')}" for r in rows))
    series = list(dict.fromkeys((r["scenario"], r["n_programs"]) for r in rows))
    fig, axes = new_figure(figsize=(9, 0.35 * len(labels) + 1.8))
    ax = axes[0, 0]
    for i, (scenario, size) in enumerate(series):
        rs = [r for r in rows if (r["scenario"], r["n_programs"]) == (scenario, size)]
        y = np.array([labels.index(f"{r['method']} / {r['target'].replace('annotator ', '')}") for r in rs]) + 0.2 * (i - 1)
        cov = np.array([r["coverage"] for r in rs])
        lo = np.array([r["dataset_bootstrap_95"][0] for r in rs])
        hi = np.array([r["dataset_bootstrap_95"][1] for r in rs])
        st = series_style(i)
        ax.errorbar(cov, y, xerr=[cov - lo, hi - cov], fmt=st["marker"], color=st["color"], label=f"{scenario}, {size} programs", capsize=2)
    ax.axvspan(0.85, 0.95, color=NEUTRAL, alpha=0.15, label="85-95% (target band)")
    ax.axvline(payload["level"], color=NEUTRAL, linestyle="--", linewidth=1)
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    style_axes(ax, xlabel="coverage of nominal 90% intervals (bars: 95% data-set bootstrap)", title="Interval coverage by simulation")
    legend_outside(ax)
    save_figure(fig, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 data sets per cell (a smoke run, under experiments/cache)")
    ap.add_argument("--datasets", type=int, default=None, help="simulated data sets per method and size (default 40)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path, default=None, help="directory of the results (default: experiments/results for a full run)")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from the saved results")
    args = ap.parse_args(argv)
    full = not args.quick and args.datasets is None and args.seed == 17
    n_datasets = args.datasets or (5 if args.quick else 40)
    out = args.out or (RESULTS.parent if full else CACHE / ("quick" if args.quick else "custom"))
    out.mkdir(parents=True, exist_ok=True)
    res_path, fig_path = out / f"{NAME}.json", (FIGURE if full and args.out is None else out / f"{NAME}.png")
    if args.plot_only:
        payload = json.loads(res_path.read_text())
    else:
        payload = run(n_datasets, args.seed)
        atomic_write_json(res_path, payload)
    plot(payload, fig_path)
    if full and args.out is None:
        write_doc_table(payload)
    print(table(payload))
    print(f"results: {res_path}\nfigure: {fig_path}")


if __name__ == "__main__":
    main()
