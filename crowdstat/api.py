"""``crowdstat.fit``: a vote table in, line posteriors, annotator reliabilities and rewards out.

The façade validates parameters on the host, builds the shared :class:`~crowdstat._typing.VoteArrays`
once, runs one jitted estimator and maps the results back to the original ids.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdstat import __version__
from crowdstat.io.rewards import SCHEMA_VERSION, write_rewards
from crowdstat.io.atomic import atomic_write_text
from crowdstat.io.atomic import atomic_write_dir as save_dir_atomically
from crowdstat.io.frames import pylists, ragged, write_csv
from crowdstat.io.tables import VoteTable, read_votes

__all__ = ["METHODS", "FitResult", "fit", "parse_gamma", "save_dir_atomically"]

from crowdstat.estimators import METHODS

_DEFAULTS: dict[str, dict[str, Any]] = {
    "common": {"prior": 0.5, "tau": 0.5, "delta": 1e-6, "x64": False, "progress": False},
    "majority": {},
    "sequential": {"lam": 1.0, "nu": 0.7, "pbar_honeypot": 0.99, "w_max": math.inf, "keep_trajectory": None},
    "proximal": {
        "gamma": "1%",
        "accelerated": True,
        "solver": "auto",
        "tol": None,
        "maxiter": 10000,
        "intercept": False,
        "latent": None,
        "stepsize": None,
        "nu": 0.7,
        "max_outer": 100,
    },
    # Baselines (crowdstat/baselines): parameters are passed through to the baseline's function.
    "em1": {"maxiter": 100, "tol": 1e-6},
    "em2": {"maxiter": 100, "tol": 1e-6},
    "bayes": {"num_warmup": 500, "num_samples": 500, "num_chains": 2, "a": 2.0, "b": 1.0, "seed": 0, "credible": 0.9},
}

_TRAJECTORY_AUTO_LIMIT = 20_000_000  # floats (80 MB in float32)

# method -> (module, function) for baselines; each returns crowdstat.estimators.result.BaselineFit and is
# called as fn(table.arrays, dtype=..., prior=..., delta=..., **method_params).
_BASELINES = {
    "em1": ("crowdstat.estimators.dawid_skene", "em_one_coin"),
    "em2": ("crowdstat.estimators.dawid_skene", "em_two_coin"),
    "bayes": ("crowdstat.estimators.bayes", "nuts"),
}


def parse_gamma(gamma) -> tuple[float, bool]:
    """``0.3`` -> (0.3, absolute); ``"5%"`` -> (0.05, fraction of gamma_max)."""
    if isinstance(gamma, str):
        s = gamma.strip()
        try:
            if s.endswith("%"):
                v = float(s[:-1]) / 100.0
                rel = True
            else:
                v = float(s)
                rel = False
        except ValueError:
            raise ValueError(f"gamma: expected a number (absolute) or 'X%' (percent of gamma_max), got {gamma!r}") from None
    else:
        v, rel = float(gamma), False
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"gamma: expected a finite value >= 0, got {gamma!r}")
    return v, rel


def _check_params(method: str, params: dict) -> dict:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    allowed = {**_DEFAULTS["common"], **_DEFAULTS[method]}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"fit(method={method!r}) got unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    p = {**allowed, **params}

    def prob(name, lo_open=True, hi_open=True, lo=0.0, hi=1.0):
        v = p[name]
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not (isinstance(v, (int, float)) and ok):
            raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")

    prob("delta", hi=0.5)
    prob("prior")
    prob("tau", lo_open=False, hi_open=False)
    if method == "sequential":
        prob("nu")
        prob("pbar_honeypot", lo=0.5, lo_open=False, hi_open=False)
        if not (isinstance(p["lam"], (int, float)) and p["lam"] >= 0 and math.isfinite(p["lam"])):
            raise ValueError(f"lam: expected a finite number >= 0, got {p['lam']!r}")
        if not (isinstance(p["w_max"], (int, float)) and p["w_max"] > 0):
            raise ValueError(f"w_max: expected a number > 0 (inf = no clipping), got {p['w_max']!r}")
    if method == "proximal":
        parse_gamma(p["gamma"])
        prob("nu")
        if p["tol"] is not None and not (isinstance(p["tol"], (int, float)) and p["tol"] > 0):
            raise ValueError(f"tol: expected a number > 0, got {p['tol']!r}")
        if not (isinstance(p["maxiter"], int) and p["maxiter"] > 0):
            raise ValueError(f"maxiter: expected an integer > 0, got {p['maxiter']!r}")
        if p["stepsize"] is not None and not (isinstance(p["stepsize"], (int, float)) and p["stepsize"] > 0):
            raise ValueError(f"stepsize: expected a number > 0, got {p['stepsize']!r}")
    return p


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
            {"schema_version": SCHEMA_VERSION, **dict(zip(names, row)), "tau": tau, "method": self.method}
            for row in zip(*cols.values())
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

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write lines.csv, annotators.csv, rewards.jsonl, fit.json (and trajectory.csv for sequential) atomically."""

        def write(tmp: Path) -> None:
            write_csv(self.lines, tmp / "lines.csv")
            write_csv(self.annotators, tmp / "annotators.csv")
            write_rewards(tmp / "rewards.jsonl", self.reward_records())
            if self.trajectory is not None:
                write_csv(self.trajectory.reset_index(), tmp / "trajectory.csv")
            atomic_write_text(tmp / "fit.json", json.dumps(self.fit_record(), indent=2, allow_nan=False) + "\n")

        return save_dir_atomically(out_dir, write)


def fit(votes, truth=None, method: str = "sequential", programs=None, **params) -> FitResult:
    """Fit an estimator to a vote table.

    Parameters
    ----------
    votes : path or DataFrame
        ``program, line, annotator, label`` (CSV, Parquet, JSONL or DataFrame; docs/formats.md).
    truth : path or DataFrame, optional
        Honeypot truth ``program, line, truth``.
    method : {"majority", "sequential", "proximal", "em1", "em2", "bayes"}
        ``em1`` / ``em2``: one- / two-coin Dawid-Skene EM; ``bayes``: one-coin full Bayes by NUTS
        (docs/baselines.md).
    programs : path or DataFrame, optional
        ``program, n_lines`` for coverage.
    **params
        Common: ``prior`` (p0 = 0.5), ``tau`` (0.5), ``delta`` (1e-6), ``x64`` (False),
        ``progress`` (False; a tqdm bar over tasks for long sequential runs).
        sequential (eq. 8): ``lam`` (1), ``nu`` (0.7), ``pbar_honeypot`` (0.99), ``w_max`` (inf),
        ``keep_trajectory`` (None = keep it while n_tasks x n_annotators <= 2e7).
        proximal: ``gamma`` (``"1%"``: a number is absolute, ``"X%"`` is X percent of gamma_max),
        ``solver`` ("auto" = proximal Newton where it applies, else FISTA; "newton"; "fista"),
        ``accelerated`` (True = FISTA, False = ISTA, for the first-order solvers), ``tol`` (relative duality gap; 1e-5 in
        float32, 1e-10 in float64), ``maxiter`` (10000), ``intercept`` (False), ``stepsize``
        (None = 1/L), ``latent`` (None = automatic when there is no truth), ``nu``, ``max_outer``.
        em1 / em2: ``maxiter`` (100), ``tol`` (1e-6, relative log-likelihood gain).
        bayes: ``num_warmup`` (500), ``num_samples`` (500), ``num_chains`` (2), ``a``, ``b``
        (Beta(2, 1) prior on reliabilities), ``seed`` (0), ``credible`` (0.9).

    Returns
    -------
    FitResult
    """
    p = _check_params(method, params)
    t0 = time.perf_counter()
    table = votes if isinstance(votes, VoteTable) else read_votes(votes, truth=truth, programs=programs)
    t_read = time.perf_counter() - t0
    import jax

    with jax.enable_x64(bool(p["x64"])):
        res = _fit_table(table, method, p)
    res.diagnostics["seconds_read"] = t_read
    res.diagnostics["seconds_total"] = time.perf_counter() - t0
    return res


def _fit_table(table: VoteTable, method: str, p: dict) -> FitResult:
    import jax
    import jax.numpy as jnp

    from crowdstat.estimators import posterior as post_mod

    dtype = jnp.float64 if p["x64"] else jnp.float32
    delta = float(p["delta"])
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    m = table.n_annotators
    prior_logit = math.log(p["prior"]) - math.log1p(-p["prior"])
    diagnostics: dict[str, Any] = {}
    trajectory = None
    t0 = time.perf_counter()

    extra_ann: dict = {}
    extra_line: dict = {}
    if method in _BASELINES:
        import importlib

        mod, fn = _BASELINES[method]
        base_params = {k: p[k] for k in _DEFAULTS[method]}
        bf = getattr(importlib.import_module(mod), fn)(table.arrays, dtype=dtype, prior=p["prior"], delta=delta, **base_params)
        post = np.asarray(bf.posterior)
        rw = post_mod.rewards(jnp.asarray(post, dtype), arrays, jnp.asarray(p["tau"], dtype))
        w, rel = np.asarray(bf.weight), np.asarray(bf.reliability)
        diagnostics.update(bf.diagnostics)
        extra_ann, extra_line = dict(bf.annotator_columns), dict(bf.line_columns)
    elif method == "majority":
        from crowdstat.estimators.majority import majority

        post, rel, w = majority(arrays, jnp.zeros(m, dtype), jnp.asarray(delta, dtype))
        rw = post_mod.rewards(post, arrays, jnp.asarray(p["tau"], dtype))
        post, w, rel = np.asarray(post), np.asarray(w), np.asarray(rel)
    else:
        if method == "sequential":
            from crowdstat.estimators import sequential as seq

            if table.n_honeypots == 0:
                warnings.warn("sequential: no honeypot truth given; reliabilities are learned from the crowd's own majority only", stacklevel=3)
            blocks = jax.tree.map(jnp.asarray, seq.task_blocks(table.arrays))
            sp = seq.make_params(p["lam"], p["pbar_honeypot"], p["w_max"], delta, p["prior"], dtype)
            st0 = seq.init(m, p["nu"], delta, p["w_max"], dtype)
            keep = p["keep_trajectory"]
            if keep is None:  # auto: keep the (n_tasks x n_annotators) trajectory while it stays small
                keep = table.n_programs * m <= _TRAJECTORY_AUTO_LIMIT
                if not keep:
                    warnings.warn(
                        f"sequential: not keeping the weight trajectory ({table.n_programs} tasks x {m} annotators); "
                        "pass keep_trajectory=True to force it",
                        stacklevel=3,
                    )
            w, traj, n_upd = _run_sequential_chunked(seq, blocks, st0.w, sp, bool(keep), bool(p["progress"]))
            if keep:
                trajectory = pd.DataFrame(traj, index=pd.Index(table.programs, name="program"), columns=table.annotators)
            diagnostics.update(
                {"tasks": int(table.n_programs), "votes_that_moved_a_weight": int(n_upd.sum()), "max_abs_weight": float(jnp.max(jnp.abs(w)))}
            )
            if not np.all(np.isfinite(np.asarray(w))):
                warnings.warn("sequential: weights overflowed to inf/nan (lam too large without w_max?)", stacklevel=3)
        else:
            w, prior_logit = _fit_proximal(table, arrays, p, dtype, prior_logit, diagnostics)
        _, post, rw = post_mod.posteriors_and_rewards(w, arrays, jnp.asarray(prior_logit, dtype), jnp.asarray(p["tau"], dtype))
        post = np.asarray(post)
        w = np.asarray(w)
        rel = 0.5 * (1.0 + np.tanh(0.5 * w.astype(np.float64)))  # stable sigmoid
    diagnostics["seconds_fit"] = time.perf_counter() - t0
    diagnostics["dtype"] = str(jnp.dtype(dtype))
    res = _result(table, method, p, w, rel, post, rw, diagnostics, trajectory)
    for k, v in extra_ann.items():
        res.annotators[k] = np.asarray(v)
    for k, v in extra_line.items():
        res.lines[k] = np.asarray(v)
    return res


_SEQ_CHUNK = 4096  # tasks per compiled scan call when showing progress


def _run_sequential_chunked(seq, blocks, w0, params, keep: bool, progress: bool):
    """Run eq. (8); with ``progress`` and many tasks, scan fixed-size chunks and tick a tqdm bar.

    Chunks have one padded size (the last is padded with empty tasks, which are no-ops), so the
    scan compiles once whatever the number of tasks.
    """
    import jax
    import jax.numpy as jnp

    n_tasks = blocks.label.shape[0]
    if not progress or n_tasks <= _SEQ_CHUNK:
        state, info = seq.run(blocks, w0, params, keep_trajectory=keep)
        return state.w, (np.asarray(info.w) if keep else None), np.asarray(info.n_updates)
    from tqdm.auto import tqdm

    w, trajs, upds = w0, [], []
    with tqdm(total=n_tasks, desc="sequential (eq. 8)", unit="task") as bar:
        for start in range(0, n_tasks, _SEQ_CHUNK):
            stop = min(start + _SEQ_CHUNK, n_tasks)
            pad = _SEQ_CHUNK - (stop - start)

            def cut(x, start=start, stop=stop, pad=pad):
                if x.ndim < 2:  # n_lines_block: not per task
                    return x
                part = x[start:stop]
                return jnp.concatenate([part, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else part

            state, info = seq.run(jax.tree.map(cut, blocks), w, params, keep_trajectory=keep)
            w = state.w
            if keep:
                trajs.append(np.asarray(info.w)[: stop - start])
            upds.append(np.asarray(info.n_updates)[: stop - start])
            bar.update(stop - start)
    return w, (np.concatenate(trajs) if keep else None), np.concatenate(upds)


def _fit_proximal(table, arrays, p, dtype, prior_logit, diagnostics):
    import jax.numpy as jnp

    from crowdstat.estimators.l1 import solve as px

    m = table.n_annotators
    delta = float(p["delta"])
    latent = p["latent"] if p["latent"] is not None else table.n_honeypots == 0
    tol = p["tol"] if p["tol"] is not None else px.default_tol(dtype)
    gamma_val, rel = parse_gamma(p["gamma"])
    logit_cap = math.log1p(-delta) - math.log(delta)
    if latent:
        # Latent truth: L1-penalised one-coin EM (docs/math.md explains the choice).
        nu = min(max(p["nu"], delta), 1 - delta)
        w0 = jnp.full(m, math.log(nu) - math.log1p(-nu), dtype)
        # gamma_max of the M-step: the largest |a_i - d_i| / 2 at the first E-step.
        from crowdstat.estimators.posterior import line_logits

        import jax

        q = jax.nn.sigmoid(line_logits(w0, arrays, prior_logit))
        q = jnp.where(arrays.truth != 0, (1.0 + arrays.truth.astype(dtype)) / 2, q)
        qv = q[arrays.line]
        agree = jnp.where(arrays.label > 0, qv, 1 - qv)
        a = jax.ops.segment_sum(agree, arrays.annotator, num_segments=m)
        n = jax.ops.segment_sum(jnp.ones_like(agree), arrays.annotator, num_segments=m)
        gmax = float(jnp.max(jnp.abs(2 * a - n)) / 2)
        gamma = gamma_val * gmax if rel else gamma_val
        w, _, it, change = px.em_one_coin(
            arrays, w0, jnp.asarray(gamma, dtype), jnp.asarray(prior_logit, dtype), jnp.asarray(logit_cap, dtype),
            jnp.asarray(max(tol, 1e-12) ** 0.5, dtype), max_outer=int(p["max_outer"]),
        )
        diagnostics.update(
            {"variant": "latent (one-coin EM, L1-penalised M-step)", "gamma": gamma, "gamma_max": gmax, "iterations": int(it),
             "last_change": float(change), "converged": bool(float(change) <= max(tol, 1e-12) ** 0.5)}
        )
        if not diagnostics["converged"]:
            warnings.warn(f"proximal (latent): EM stopped after {int(it)} iterations with max weight change {float(change):.3g}", stacklevel=4)
        return w, prior_logit
    data = px.training_data(table.arrays, dtype)
    intercept = bool(p["intercept"])
    gmax = float(px.gamma_max(data, m, intercept))
    gamma = gamma_val * gmax if rel else gamma_val
    solver = px.resolve_solver(p["solver"], data, m, bool(p["accelerated"]))
    lip = None
    if solver == "newton":  # no step size: the Newton direction and a line search
        eta = 1.0
    else:  # power iterations for L only where a first-order step needs it
        lip = float(px.lipschitz(data, m, intercept))
        eta = p["stepsize"] if p["stepsize"] is not None else 1.0 / lip
        if solver == "ista" and not 0 < eta < 2.0 / lip:
            raise ValueError(f"stepsize: ISTA needs eta in (0, 2/L) = (0, {2.0 / lip:.6g}), got {eta}")
    b0 = px._b_at_zero(data, delta) if intercept else jnp.asarray(0.0, dtype)
    st = px.solve(
        data, jnp.asarray(gamma, dtype), jnp.zeros(m, dtype), b0, jnp.asarray(eta, dtype), jnp.asarray(tol, dtype),
        accelerated=bool(p["accelerated"]), intercept=intercept, maxiter=int(p["maxiter"]), solver="fista" if solver == "ista" else solver,
    )
    converged = bool(float(st.rel_gap) <= tol)
    diagnostics.update(
        {
            "variant": "supervised (honeypot lines)",
            "solver": {"newton": "proximal Newton", "fista": "FISTA", "ista": "ISTA"}[solver],
            "objective": float(st.objective),
            "dual_value": float(st.dual_value),
            "gap": float(st.gap),
            "rel_gap": float(st.rel_gap),
            "tol": tol,
            "iterations": int(st.iter_num),
            "converged": converged,
            "gamma": gamma,
            "gamma_max": gmax,
            "lipschitz": lip,
            "stepsize": float(eta) if lip is not None else None,
            "intercept": float(st.b) if intercept else 0.0,
            "n_training_lines": int(data.q.shape[0]),
            "n_filtered_out": int(np.sum(np.asarray(st.w) == 0)),
        }
    )
    if not converged:
        warnings.warn(
            f"proximal: not converged after {int(st.iter_num)} iterations (relative gap {float(st.rel_gap):.3g} > tol {tol:.3g})",
            stacklevel=4,
        )
    pl = float(st.b) if intercept else prior_logit
    return st.w, pl


def _result(table: VoteTable, method, p, w, rel, post, rw, diagnostics, trajectory) -> FitResult:
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
    annotators = pd.DataFrame({"annotator": table.annotators, "weight": np.asarray(w, np.float64), "reliability": np.asarray(rel, np.float64)})
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
    params = {k: v for k, v in p.items()}
    return FitResult(method, lines, annotators, rewards, params, diagnostics, trajectory, table)
