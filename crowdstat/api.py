"""``crowdstat.fit``: a vote table in, line posteriors, annotator reliabilities and rewards out.

The façade builds the method's configuration from the keyword parameters (validated on the host
by the config dataclasses of :mod:`crowdstat.estimators.registry`), reads the vote table once,
runs the method the registry names and maps the results back to the original ids. The rewards of
every method come from its line posteriors through one kernel,
:func:`crowdstat.estimators.posterior.rewards`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crowdstat import __version__
from crowdstat.estimators import calibration
from crowdstat.estimators.registry import METHODS, REGISTRY, describe_params, make_configs, parse_gamma
from crowdstat.io.atomic import atomic_write_dir as save_dir_atomically
from crowdstat.io.atomic import atomic_write_text
from crowdstat.io.frames import pylists, ragged, write_csv
from crowdstat.io.rewards import SCHEMA_VERSION, write_rewards
from crowdstat.io.tables import VoteTable, read_votes

__all__ = ["METHODS", "FitResult", "fit", "parse_gamma", "save_dir_atomically"]


@dataclass
class FitResult:
    """What :func:`fit` returns. Tables use the original ids.

    Attributes
    ----------
    lines : DataFrame
        ``program, line, posterior, n_votes`` in program order, then line order.
    annotators : DataFrame
        ``annotator, weight, reliability`` (weight = logit(reliability)), order of first appearance.
    rewards : DataFrame
        ``program, reward, reward_soft, n_lines, n_annotated, coverage, lines, posteriors``.
    trajectory : DataFrame or None
        Sequential only: weights after each task (index = program, columns = annotator).
    params : dict
        Parameters used (defaults filled in).
    diagnostics : dict
        Estimator diagnostics (proximal: objective, dual_value, gap, rel_gap, iterations, ...).
    """

    method: str
    lines: pd.DataFrame
    annotators: pd.DataFrame
    rewards: pd.DataFrame
    params: dict
    diagnostics: dict
    trajectory: pd.DataFrame | None = None
    table: VoteTable | None = field(default=None, repr=False)
    inputs: tuple = field(default=(), repr=False)  # the input files fit() read (never replaced by save)

    def reward_records(self) -> list[dict]:
        """The rows of ``rewards.jsonl`` (schema in docs/formats.md)."""
        tau = float(self.params["tau"])
        rw = self.rewards
        # Whole columns to Python values at once (NumPy / Arrow), not value by value.
        cols = {
            "program": [str(x) for x in rw["program"].tolist()],
            "reward": np.asarray(rw["reward"], np.float64).tolist(),
            "reward_soft": np.asarray(rw["reward_soft"], np.float64).tolist(),
            "n_lines": np.asarray(rw["n_lines"], np.int64).tolist(),
            "n_annotated": np.asarray(rw["n_annotated"], np.int64).tolist(),
            "coverage": np.asarray(rw["coverage"], np.float64).tolist(),
            "lines": pylists(rw["lines"], int),
            "posteriors": pylists(rw["posteriors"], float),
        }
        names = list(cols)
        return [
            {"schema_version": SCHEMA_VERSION, **dict(zip(names, row)), "tau": tau, "method": self.method} for row in zip(*cols.values())
        ]

    def fit_record(self) -> dict:
        t = self.table
        sizes = {}
        if t is not None:
            sizes = {
                "n_votes": t.n_votes,
                "n_lines": t.n_lines,
                "n_programs": t.n_programs,
                "n_annotators": t.n_annotators,
                "n_honeypot_lines": t.n_honeypots,
            }
        params = {k: (v if not (isinstance(v, float) and math.isinf(v)) else "inf") for k, v in self.params.items()}
        return {
            "method": self.method,
            "params": params,
            "version": __version__,
            "rewards_schema_version": SCHEMA_VERSION,
            "sizes": sizes,
            "diagnostics": self.diagnostics,
        }

    def save(self, out_dir: str | os.PathLike, *, force: bool = False, inputs=None, extra=None) -> Path:
        """Write lines.csv, annotators.csv, rewards.jsonl, fit.json (and trajectory.csv for sequential) atomically.

        ``extra``: a function of the temporary directory that writes more files into it (the
        streaming state of :mod:`crowdstat.online`).

        ``out_dir`` gets the manifest of ``crowdstat fit``; a non-empty directory that is not an
        earlier output of it is refused unless ``force``, the current directory, a file and a
        directory holding one of ``inputs`` (default: the files :func:`fit` read) always
        (:class:`crowdstat.io.atomic.OutputDirError`, a ValueError; docs/cli.md "Output directories").
        """

        def write(tmp: Path) -> None:
            write_csv(self.lines, tmp / "lines.csv")
            write_csv(self.annotators, tmp / "annotators.csv")
            write_rewards(tmp / "rewards.jsonl", self.reward_records())
            if self.trajectory is not None:
                write_csv(self.trajectory.reset_index(), tmp / "trajectory.csv")
            atomic_write_text(tmp / "fit.json", json.dumps(self.fit_record(), indent=2, allow_nan=False) + "\n")
            if extra is not None:
                extra(tmp)

        inputs = self.inputs if inputs is None else inputs
        return save_dir_atomically(out_dir, write, tool="crowdstat fit", force=force, inputs=inputs)


def fit(votes, truth=None, method: str = "auto", programs=None, **params) -> FitResult:
    """Fit an estimator to a vote table.

    Parameters
    ----------
    votes : path or DataFrame
        ``program, line, annotator, label`` (CSV, Parquet, JSONL or DataFrame; docs/formats.md).
    truth : path or DataFrame, optional
        Honeypot truth ``program, line, truth``.
    method : str
        ``"auto"`` (the default): the one of em1, em2 and proximal (latent) that best predicts held-out
        honeypot truth (5-fold over honeypot programs) after the calibration map each would get, and
        calibrated by default (``calibrate="auto"``: the held-out posteriors are already there), or
        without enough honeypots the EM model with the smaller BIC, leaving out a collapsed fit (class
        prior within 1e-3 of 0 or 1); ``diagnostics["auto"]`` says what was compared. (Before 0.2 the default was
        ``sequential``, whose defaults give degenerate 0/1 posteriors.) Or one of
        ``crowdstat.estimators.METHODS`` (docs/math.md, docs/baselines.md):

    <methods>
    programs : path or DataFrame, optional
        ``program, n_lines`` for coverage.
    **params
        The method's parameters and the common ones, as ``name = default: meaning``; they are the
        fields of the config dataclasses in ``crowdstat.estimators.REGISTRY``. An unknown name
        raises TypeError, a bad value ValueError.

    <params>

    Returns
    -------
    FitResult
    """
    if method == "auto":
        return _fit_auto(votes, truth, programs, params)
    common, cfg = make_configs(method, params)
    t0 = time.perf_counter()
    table = votes if isinstance(votes, VoteTable) else read_votes(votes, truth=truth, programs=programs)
    t_read = time.perf_counter() - t0
    import jax

    with jax.enable_x64(bool(common.x64)):
        res = _fit_table(table, method, common, cfg)
    if common.calibrate != "none":
        _calibrate(res, table, common, method, params)
    res.inputs = tuple(x for x in (votes, truth, programs) if isinstance(x, (str, os.PathLike)))
    res.diagnostics["seconds_read"] = t_read
    res.diagnostics["seconds_total"] = time.perf_counter() - t0
    return res


#: the methods ``method="auto"`` chooses among, with the parameters it gives them
AUTO_CANDIDATES: dict[str, dict] = {"em1": {}, "em2": {}, "proximal": {"latent": True}}
#: folds (over honeypot programs) of the held-out comparison; fewer honeypot programs than this: BIC
AUTO_FOLDS = 5
#: the BIC comparison leaves out an EM fit whose class prior is within this of 0 or 1 (a collapsed fit)
AUTO_COLLAPSED_PRIOR = 1e-3


def _with_truth(table: VoteTable, truth: np.ndarray) -> VoteTable:
    return dataclasses.replace(table, arrays=table.arrays._replace(truth=truth))


def _refit(table: VoteTable, method: str, extra: dict, common: dict):
    """truth array -> the line posteriors of ``method`` fitted with it (never recalibrated, warnings silenced)."""

    def refit(truth: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(_with_truth(table, truth), method=method, **extra, **{**common, "calibrate": "none", "interval": None})
        return res.lines["posterior"].to_numpy(np.float64)

    return refit


def _heldout_posteriors(table: VoteTable, method: str, extra: dict, common: dict, folds: list[np.ndarray]) -> np.ndarray:
    """Posterior of each fold's lines from a fit without that fold's truth (nan off the folds)."""
    return calibration.heldout_posteriors(_refit(table, method, extra, common), table.arrays.truth, folds)


def _heldout_loglik(table: VoteTable, method: str, extra: dict, common: dict, folds: list[np.ndarray], heldout=None) -> float:
    """Mean log-likelihood of the honeypot truth of each fold's lines, fitted without that fold's truth
    (P clipped to [1e-6, 1 - 1e-6]); ``heldout``: those posteriors, already computed."""
    lines = np.concatenate(folds) if folds else np.zeros(0, np.int64)
    h = _heldout_posteriors(table, method, extra, common, folds) if heldout is None else heldout
    return -calibration.log_loss(h[lines], np.asarray(table.arrays.truth)[lines]) if lines.size else 0.0


def _calibrate(res: FitResult, table: VoteTable, common, method: str, params: dict, heldout=None, extra=None) -> None:
    """``calibrate``: replace ``res``'s posteriors of the lines without truth (and its rewards) by the
    cross-fitted recalibration of :func:`crowdstat.estimators.calibration.recalibrate`, in place; the
    method's own posteriors stay in ``lines["posterior_raw"]``, the map in ``diagnostics["calibration"]``."""
    import jax
    import jax.numpy as jnp

    from crowdstat.estimators import posterior

    a = table.arrays
    raw = res.lines["posterior"].to_numpy(np.float64)
    refit = _refit(table, method, extra or {}, params)
    new, record = calibration.recalibrate(common.calibrate, raw, a.truth, a.line_program, refit, heldout)
    res.diagnostics["calibration"] = record
    if new is None:
        warnings.warn(f"{res.method}: {record['why']}", stacklevel=3)
        return
    dtype = jnp.float64 if common.x64 else jnp.float32
    with jax.enable_x64(bool(common.x64)):
        rw = posterior.rewards(jnp.asarray(new, dtype), jax.tree.map(jnp.asarray, a), jnp.asarray(common.tau, dtype))
        fresh = _result(table, res.method, res.params, res.annotators["weight"], res.annotators["reliability"], new, rw, {}, None)
    res.lines.insert(res.lines.columns.get_loc("posterior") + 1, "posterior_raw", raw)
    res.lines["posterior"] = new
    for k, v in calibration.map_intervals({c: res.lines[c] for c in res.lines.columns}, record, a.truth).items():
        res.lines[k] = v
    res.rewards = fresh.rewards


def _fit_auto(votes, truth, programs, params: dict) -> FitResult:
    """``method="auto"``: the candidate of :data:`AUTO_CANDIDATES` that best predicts held-out honeypot truth
    (K-fold over honeypot programs, mean log-likelihood of the held-out lines after the map ``calibrate``
    gives that candidate's held-out posteriors: ``"auto"`` unless the caller says otherwise, since no
    refit is needed), refitted on all the truth and calibrated;
    with fewer than :data:`AUTO_FOLDS` honeypot programs, the EM model (em1 or em2) with the smaller BIC
    (-2 log-likelihood + parameters x log votes), a collapsed fit (class prior within
    :data:`AUTO_COLLAPSED_PRIOR` of 0 or 1) left out unless both are. fit.json's ``diagnostics["auto"]``
    says what was compared and why the choice."""
    table = votes if isinstance(votes, VoteTable) else read_votes(votes, truth=truth, programs=programs)
    common_names = {f.name for f in dataclasses.fields(make_configs("em1", {})[0])}
    bad = sorted(set(params) - common_names)
    if bad:
        raise TypeError(f"fit(method='auto') takes only the common parameters {sorted(common_names)}; got {bad}")
    t = np.asarray(table.arrays.truth)
    lp = np.asarray(table.arrays.line_program)
    hp_programs = np.unique(lp[t != 0])
    held: dict[str, np.ndarray] = {}
    requested = params.get("calibrate")  # None: auto's default, below
    record: dict = {}
    if len(hp_programs) >= AUTO_FOLDS:
        # With held-out posteriors at hand calibration is free, so it is on by default (calibrate="auto"), and each
        # candidate is scored as it would be delivered: after the map calibrate= would give it (docs/calibration.md).
        calibrate = "auto" if requested is None else requested
        skipped = None
        if requested is None:  # the default calibrates only where a map can be fitted, silently otherwise
            kind, skipped = calibration.choose_kind("auto", int((t != 0).sum()), int((t > 0).sum()), len(hp_programs))
            calibrate = "none" if kind is None else calibrate
        folds = calibration.honeypot_folds(lp, t, AUTO_FOLDS)  # seeded; the folds of calibrate= too
        held = {m: _heldout_posteriors(table, m, extra, params, folds) for m, extra in AUTO_CANDIDATES.items()}
        raw = {m: _heldout_loglik(table, m, extra, params, folds, held[m]) for m, extra in AUTO_CANDIDATES.items()}
        scored = {m: calibration.heldout_score(calibrate, held[m], t, folds) for m in AUTO_CANDIDATES}
        scores = {m: s for m, (s, _) in scored.items()}
        chosen = max(scores, key=lambda m: scores[m])
        why = (
            f"largest mean held-out log-likelihood of the honeypot truth ({AUTO_FOLDS}-fold over {len(hp_programs)} honeypot "
            f"programs), {'raw' if calibrate == 'none' else f'after the calibration map calibrate={calibrate!r} gives each candidate'}"
        )
        record = {"scores_raw": raw, "maps": {m: k for m, (_, k) in scored.items()}, "calibrate": calibrate}
        if requested is None and calibrate == "none":
            record["calibrate_why"] = f"auto's default calibration skipped: {skipped}"
    else:
        calibrate = "none" if requested is None else requested
        scores, collapsed = {}, {}
        for m in ("em1", "em2"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = fit(table, method=m, **{**params, "calibrate": "none", "interval": None})  # no bootstrap for a BIC
            k = table.n_annotators * (1 if m == "em1" else 2) + 1
            scores[m] = -2 * float(r.diagnostics["log_likelihood"]) + k * math.log(max(table.n_votes, 2))
            pi = float(r.diagnostics.get("class_prior", 0.5))
            if min(pi, 1 - pi) < AUTO_COLLAPSED_PRIOR:
                collapsed[m] = pi
        ok = [m for m in scores if m not in collapsed] or list(scores)
        chosen = min(ok, key=lambda m: scores[m])
        why = f"smaller BIC of the two EM models ({len(hp_programs)} honeypot programs: too few to hold out {AUTO_FOLDS} folds)"
        if collapsed:  # a class prior on the boundary: BIC's regularity assumptions fail, and every line gets one label
            gone = ", ".join(f"{m} ({p:.4g})" for m, p in collapsed.items())
            why += f"; collapsed (class prior within {AUTO_COLLAPSED_PRIOR:g} of 0 or 1), not compared: {gone}"
    res = fit(table, method=chosen, **AUTO_CANDIDATES[chosen], **{**params, "calibrate": "none"})
    common = make_configs(chosen, {**params, "calibrate": calibrate})[0]
    if common.calibrate != "none":  # the chosen candidate's held-out posteriors serve again
        _calibrate(res, table, common, chosen, params, held.get(chosen), AUTO_CANDIDATES[chosen])
    res.diagnostics["auto"] = {"chosen": chosen, "params": AUTO_CANDIDATES[chosen], "why": why, "scores": scores, **record}
    res.params = {**res.params, "auto": True}
    return res


if fit.__doc__:  # None under python -OO
    fit.__doc__ = fit.__doc__.replace(
        "    <methods>", "\n".join(f"        - ``{m.name}``: {m.summary}" for m in REGISTRY.values())
    ).replace("    <params>", textwrap.indent(describe_params(), " " * 8))


#: |weight| from which an annotator counts as infallible (reliability within 2e-9 of 0 or 1)
SATURATED_WEIGHT = 20.0
#: posteriors within this of 0 or 1 count as collapsed
COLLAPSED_POSTERIOR = 1e-6


def degeneracy_warnings(weight, posterior, truth, w_max: float = math.inf, check_posteriors: bool = True, min_lines: int = 20) -> list[str]:
    """What makes a fit's output degenerate, as messages (empty when none): weights at the ``w_max`` cap or
    beyond :data:`SATURATED_WEIGHT` (annotators treated as never or always wrong), and most posteriors of
    the lines without truth collapsed to 0 or 1 (every reward then 0/1, however few the votes; checked from
    ``min_lines`` such lines on, and not for majority vote, whose "posterior" is the vote share)."""
    w = np.abs(np.asarray(weight, np.float64))
    out = []
    m = int(w.size)
    capped = int(np.sum(w >= w_max * (1 - 1e-6))) if math.isfinite(w_max) else 0
    if capped:
        out.append(f"{capped} of {m} annotators sit at the weight cap w_max = {w_max:g}: the cap, not the votes, sets their reliability")
    big = int(np.sum(w >= SATURATED_WEIGHT))
    if big:
        out.append(
            f"{big} of {m} annotators have |weight| >= {SATURATED_WEIGHT:g} (max {w.max():.3g}): their reliability is within "
            f"2e-9 of 0 or 1, so one vote of theirs decides a line"
        )
    p = np.asarray(posterior, np.float64)[np.asarray(truth) == 0]
    if check_posteriors and p.size >= min_lines:
        frac = float(np.mean((p < COLLAPSED_POSTERIOR) | (p > 1 - COLLAPSED_POSTERIOR)))
        if frac > 0.5:
            out.append(
                f"{frac:.0%} of the {p.size} lines without truth have posteriors within {COLLAPSED_POSTERIOR:g} of 0 or 1: "
                "the posteriors are not calibrated probabilities (reward_soft = reward)"
            )
    return out


def _fit_table(table: VoteTable, method: str, common, cfg) -> FitResult:
    """Run the registry's implementation of ``method`` and compute the rewards from its posteriors."""
    import jax
    import jax.numpy as jnp

    from crowdstat.estimators import posterior

    dtype = jnp.float64 if common.x64 else jnp.float32
    if method == "sequential" and common.interval is not None:  # refused before the fit, not after it
        from crowdstat.estimators.intervals import SEQUENTIAL_REFUSAL

        raise ValueError(SEQUENTIAL_REFUSAL)
    t0 = time.perf_counter()
    est = REGISTRY[method].load()(table, cfg, common, dtype)
    if common.interval is not None:  # Laplace or bootstrap intervals (docs/math.md, "Intervals")
        from crowdstat.estimators import intervals

        est = intervals.attach(table, method, cfg, common, dtype, est)
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    rw = posterior.rewards(jnp.asarray(est.posterior, dtype), arrays, jnp.asarray(common.tau, dtype))
    diagnostics = dict(est.diagnostics)
    diagnostics["seconds_fit"] = time.perf_counter() - t0
    diagnostics["dtype"] = str(jnp.dtype(dtype))
    from crowdstat.estimators import agreement

    diagnostics["agreement"] = agreement.summary(table.arrays)  # Krippendorff's alpha of the votes (docs/baselines.md)
    found = degeneracy_warnings(
        est.weight, est.posterior, np.asarray(table.arrays.truth), getattr(cfg, "w_max", math.inf), check_posteriors=method != "majority"
    )
    if found:
        diagnostics["warnings"] = [*diagnostics.get("warnings", []), *found]
        for msg in found:
            warnings.warn(f"{method}: {msg}", stacklevel=3)
    trajectory = None
    if est.trajectory is not None:
        trajectory = pd.DataFrame(est.trajectory, index=pd.Index(table.programs, name="program"), columns=table.annotators)
    params = {**dataclasses.asdict(common), **dataclasses.asdict(cfg)}
    res = _result(table, method, params, est.weight, est.reliability, est.posterior, rw, diagnostics, trajectory)
    for k, v in est.annotator_columns.items():
        res.annotators[k] = np.asarray(v)
    for k, v in est.line_columns.items():
        res.lines[k] = np.asarray(v)
    return res


def _result(table: VoteTable, method, params, w, rel, post, rw, diagnostics, trajectory) -> FitResult:
    a = table.arrays
    lines = pd.DataFrame(
        {
            # Gathered as Arrow strings (a take on 1 string per program, not 1 Python str per line).
            "program": pd.Series(pd.array(table.programs, dtype="str").take(a.line_program), copy=False),
            "line": table.line_numbers,
            "posterior": np.asarray(post, dtype=np.float64),
            "n_votes": table.n_votes_per_line,
        }
    )
    annotators = pd.DataFrame(
        {"annotator": table.annotators, "weight": np.asarray(w, np.float64), "reliability": np.asarray(rel, np.float64)}
    )
    starts = np.concatenate([[0], np.cumsum(np.bincount(a.line_program, minlength=table.n_programs))])
    post64 = lines["posterior"].to_numpy()
    rewards = pd.DataFrame(
        {
            "program": table.programs,
            # c / k exactly in float64 (c is an integer; the kernel's quotient is in the compute dtype).
            "reward": np.round(np.asarray(rw.reward, np.float64) * np.asarray(rw.n_annotated)) / np.maximum(np.asarray(rw.n_annotated), 1),
            "reward_soft": np.asarray(rw.reward_soft, np.float64),
            "n_lines": np.asarray(a.program_size, np.int64),
            "n_annotated": np.asarray(rw.n_annotated, np.int64),
            "coverage": np.asarray(rw.coverage, np.float64),
            "lines": ragged(starts, table.line_numbers.astype(np.int64)),
            "posteriors": ragged(starts, post64),
        }
    )
    return FitResult(method, lines, annotators, rewards, params, diagnostics, trajectory, table)
