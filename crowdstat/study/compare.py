"""Run several estimators on one data set (through :func:`crowdstat.fit`) and score them.

    crowdstat compare VOTES --truth T --true-lines TL [--true-annotators A] \\
        --methods majority,sequential,proximal,em1,em2,bayes --out DIR

Method specs: a method name (:data:`crowdstat.estimators.METHODS`), optionally with parameters
after colons, e.g. ``sequential:lam=0.1:w_max=10`` or ``proximal:gamma=5%``. Each value is read by
the type of the parameter's config field (:func:`crowdstat.estimators.registry.parse_param`:
``lam`` a float, ``maxiter`` an int, ``intercept`` ``true``/``false``, ``gamma`` a number or a
string such as ``5%``); an unknown parameter is a TypeError, a value of the wrong type a
ValueError, both before anything is fitted. The label of a spec in the tables is the spec itself.

Scoring (docs/study.md): line metrics are computed on the lines whose truth the estimator did
**not** see (``true_lines`` minus the honeypot lines of ``truth``): accuracy (decision
P > tau, tau = 0.5), log-loss, Brier, ECE (10 equal-width bins). With true annotator
reliabilities (``annotator, reliability`` [, ``kind``]; ``p``, the earlier name, is read too): RMSE of
the estimated reliabilities, and the ROC AUC
of flagging the bad annotators (``kind`` spammer/adversary, or p <= 1/2 without ``kind``) by low
estimated reliability. Wall time is the seconds of the ``fit`` call (reading + JIT compilation
included: a first call of a shape compiles).

Outputs of :func:`write_outputs`: ``metrics.csv``, ``metrics.md``, ``lines.csv`` (truth and one
posterior column per method), ``annotators.csv`` (true p and one reliability column per method),
``reliability_diagram.png``, ``reliabilities.png`` (with true annotators), ``compare.json``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crowdstat.estimators.registry import METHODS, REGISTRY, parse_param

__all__ = ["MethodUnavailable", "available", "parse_method", "Comparison", "compare", "write_outputs", "BAD_KINDS"]

BAD_KINDS = ("spammer", "adversary")


class MethodUnavailable(ValueError):
    """A requested method is not implemented in this installation (e.g. a baseline not landed yet)."""


def available(method: str) -> tuple[bool, str]:
    """(is ``method`` usable here, reason if not): known to the registry and its module imports."""
    if method not in REGISTRY:
        return False, f"unknown method {method!r}; crowdstat.fit knows {METHODS}"
    return REGISTRY[method].available()


def parse_method(spec: str) -> tuple[str, dict]:
    """``"sequential:lam=0.1:w_max=10"`` -> ("sequential", {"lam": 0.1, "w_max": 10.0}).

    Values are coerced by the parameter's config field type; for a method the registry does not
    know they stay strings (:func:`available` then reports the method).
    """
    parts = [p for p in spec.strip().split(":")]
    name, params = parts[0].strip(), {}
    if not name:
        raise ValueError(f"method spec {spec!r}: empty method name")
    for p in parts[1:]:
        if "=" not in p:
            raise ValueError(f"method spec {spec!r}: expected key=value after ':', got {p!r}")
        k, v = (x.strip() for x in p.split("=", 1))
        params[k] = parse_param(name, k, v) if name in REGISTRY else v
    return name, params


@dataclass
class Comparison:
    """Result of :func:`compare`: one metrics row per method spec, plus the fitted tables."""

    metrics: pd.DataFrame
    lines: pd.DataFrame  # program, line, truth, honeypot, one posterior column per method
    annotators: pd.DataFrame | None  # annotator, true p (if given), one reliability column per method
    fits: dict = field(default_factory=dict, repr=False)
    diagrams: dict = field(default_factory=dict, repr=False)


def _frame(x, what):
    if x is None or isinstance(x, pd.DataFrame):
        return x
    from crowdstat.io.tables import read_frame

    return read_frame(x, what)[0]


def _line_truth(table, true_lines) -> tuple[pd.MultiIndex, np.ndarray]:
    """(program, line) key of the table's lines and their truth (+1 / -1) from ``true_lines``."""
    from crowdstat.io.tables import VoteTableError, _integers, parse_labels

    tl = _frame(true_lines, "true lines")
    if tl is None:
        raise ValueError("compare: true_lines (program, line, truth for every line) is required to score the methods")
    missing = {"program", "line", "truth"} - set(tl.columns)
    if missing:
        raise ValueError(f"compare: true_lines is missing column(s) {sorted(missing)}")
    programs = table.programs[np.asarray(table.arrays.line_program)].astype(str)
    key = pd.MultiIndex.from_arrays([programs, table.line_numbers.astype(np.int64)])
    problems: list = []
    rows = np.arange(1, len(tl) + 1)
    tl_lab = parse_labels(tl["truth"], rows, "truth", problems)
    tl_line = _integers(tl["line"], rows, "line", problems, minimum=0)  # never rounded nor wrapped (issue 15)
    if problems:
        raise VoteTableError("true_lines" if isinstance(true_lines, pd.DataFrame) else str(true_lines), problems)
    tl_idx = pd.Series(
        tl_lab.astype(np.int64),
        index=pd.MultiIndex.from_arrays([tl["program"].astype(str).to_numpy(), tl_line]),
    )
    if tl_idx.index.has_duplicates:
        raise ValueError(f"compare: true_lines has duplicate (program, line) {tl_idx.index[tl_idx.index.duplicated()][0]}")
    t = tl_idx.reindex(key)
    if t.isna().any():
        bad = key[np.flatnonzero(t.isna().to_numpy())[0]]
        raise ValueError(f"compare: true_lines has no truth for line {bad} of the vote table")
    return key, t.to_numpy().astype(np.int64)


def _annotator_truth(table, true_annotators) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(true reliability, is bad) per annotator of the table, or (None, None) without ``true_annotators``."""
    ta = _frame(true_annotators, "true annotators")
    if ta is None:
        return None, None
    if "reliability" not in ta.columns and "p" in ta.columns:  # the column's name before issue 20
        ta = ta.rename(columns={"p": "reliability"})
    if not {"annotator", "reliability"} <= set(ta.columns):
        raise ValueError("compare: true_annotators needs columns annotator, reliability (or p, its earlier name)")
    tai = ta.assign(annotator=ta["annotator"].astype(str)).set_index("annotator")
    ids = pd.Index(table.annotators.astype(str))
    if not ids.isin(tai.index).all():
        raise ValueError(f"compare: true_annotators lacks annotator {ids[~ids.isin(tai.index)][0]!r}")
    true_p = pd.to_numeric(tai.loc[ids, "reliability"]).to_numpy(np.float64)
    bad = tai.loc[ids, "kind"].isin(BAD_KINDS).to_numpy() if "kind" in tai.columns else true_p <= 0.5
    return true_p, bad


def _score(spec: str, res, t, eval_mask, true_p, bad) -> tuple[dict, object]:
    """The metrics row of one fit (without seconds and warnings) and its reliability diagram."""
    import jax.numpy as jnp

    from crowdstat.study import metrics as M

    post = res.lines["posterior"].to_numpy(np.float64)
    rel = res.annotators["reliability"].to_numpy(np.float64)
    pj, tj, msk = jnp.asarray(post), jnp.asarray(t), jnp.asarray(eval_mask)
    row = {
        "method": spec,
        "accuracy": float(M.line_accuracy(pj, tj, mask=msk)),
        "log_loss": float(M.log_loss(pj, tj, mask=msk)),
        "brier": float(M.brier(pj, tj, mask=msk)),
        "ece": float(M.expected_calibration_error(pj, tj, mask=msk)),
        "n_eval_lines": int(eval_mask.sum()),
    }
    if true_p is not None:
        row["reliability_rmse"] = float(M.reliability_rmse(jnp.asarray(rel), jnp.asarray(true_p)))
        row["detection_auc"] = float(M.detection_auc(jnp.asarray(rel), jnp.asarray(bad))) if 0 < bad.sum() < len(bad) else float("nan")
    row["max_abs_weight"] = float(np.max(np.abs(res.annotators["weight"].to_numpy(np.float64))))
    return row, M.reliability_diagram(pj, tj, mask=msk)


def compare(
    votes,
    truth=None,
    true_lines=None,
    true_annotators=None,
    methods=("majority", "sequential", "proximal"),
    common=None,
    progress: bool = False,
) -> Comparison:
    """Fit every method spec on the same data and score it (module docstring).

    Parameters
    ----------
    votes, truth : path or DataFrame
        As for :func:`crowdstat.fit` (truth = honeypot lines).
    true_lines : path or DataFrame
        ``program, line, truth`` for every line (the simulated truth).
    true_annotators : path or DataFrame, optional
        ``annotator, p`` [, ``kind``].
    methods : list of method specs
    common : dict, optional
        Parameters for every method (e.g. ``{"x64": True}``).
    progress : bool
        A tqdm bar over the methods.

    Raises
    ------
    MethodUnavailable
        Before fitting anything, if a method is unknown or its module does not import.
    """
    from crowdstat.api import fit
    from crowdstat.io.tables import read_votes

    specs = [(s, *parse_method(s)) for s in methods]
    for _, name, _ in specs:
        ok, why = available(name)
        if not ok:
            raise MethodUnavailable(why)
    table = read_votes(votes, truth=truth)
    key, t = _line_truth(table, true_lines)
    hp = np.asarray(table.arrays.truth) != 0
    eval_mask = ~hp
    true_p, bad = _annotator_truth(table, true_annotators)
    common = dict(common or {})
    rows, fits, diagrams = [], {}, {}
    lines_out = pd.DataFrame({"program": key.get_level_values(0), "line": key.get_level_values(1), "truth": t, "honeypot": hp})
    ann_out = pd.DataFrame({"annotator": table.annotators.astype(str)})
    if true_p is not None:
        ann_out["true_p"] = true_p
        ann_out["bad"] = bad
    it = specs
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(specs, desc="compare", unit="method")
        it = bar
    for spec, name, params in it:
        if bar is not None:
            bar.set_postfix_str(spec)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fit(table, method=name, **{**common, **params})
        seconds = time.perf_counter() - t0
        fits[spec] = res
        row, diagrams[spec] = _score(spec, res, t, eval_mask, true_p, bad)
        row["seconds"] = seconds
        row["warnings"] = "; ".join(sorted({str(w.message)[:120] for w in caught}))
        rows.append(row)
        lines_out[f"posterior[{spec}]"] = res.lines["posterior"].to_numpy(np.float64)
        ann_out[f"reliability[{spec}]"] = res.annotators["reliability"].to_numpy(np.float64)
    return Comparison(pd.DataFrame(rows), lines_out, ann_out, fits, diagrams)


def _markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if c != "warnings"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df[cols].itertuples(index=False):
        cells = []
        for v in r:
            if isinstance(v, float):
                cells.append("nan" if math.isnan(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_outputs(cmp: Comparison, out_dir, meta: dict | None = None, *, force: bool = False, inputs=()) -> Path:
    """Write the tables and figures of a comparison atomically to ``out_dir`` (module docstring).

    ``force`` and ``inputs`` as in :func:`crowdstat.io.atomic.atomic_write_dir` (tool ``crowdstat compare``)."""
    from crowdstat.api import save_dir_atomically
    from crowdstat.study.metrics import plot_reliability_diagram
    from crowdstat.study.plotting import plot_reliabilities

    def writer(tmp: Path):
        cmp.metrics.to_csv(tmp / "metrics.csv", index=False, float_format="%.6g")
        md = "Metrics on the lines whose truth the estimators did not see (honeypot lines excluded).\n\n" + _markdown(cmp.metrics)
        (tmp / "metrics.md").write_text(md)
        cmp.lines.to_csv(tmp / "lines.csv", index=False, float_format="%.9g")
        if cmp.annotators is not None:
            cmp.annotators.to_csv(tmp / "annotators.csv", index=False, float_format="%.9g")
        plot_reliability_diagram(cmp.diagrams, tmp / "reliability_diagram.png", title="Calibration of line posteriors (non-honeypot lines)")
        if cmp.annotators is not None and "true_p" in cmp.annotators:
            plot_reliabilities(cmp.annotators, tmp / "reliabilities.png")
        rec = {"meta": meta or {}, "metrics": json.loads(cmp.metrics.to_json(orient="records"))}
        (tmp / "compare.json").write_text(json.dumps(rec, indent=2) + "\n")

    return save_dir_atomically(out_dir, writer, tool="crowdstat compare", force=force, inputs=inputs)
