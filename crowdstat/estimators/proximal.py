"""The "proximal" method: the one-shot L1-logistic reliability estimate (docs/math.md, "One-shot L1-logistic").

:func:`fit` turns a vote table and the method's parameters into an :class:`EstimatorFit`:

- supervised (the default when there is honeypot truth): the L1-logistic regression of the
  honeypot lines' truth on their votes (:mod:`crowdstat.estimators.l1.solve`), certified by the
  relative duality gap;
- latent (``latent=True``, or automatic without truth): L1-penalised one-coin EM over all lines
  (:mod:`crowdstat.estimators.l1.latent`), honeypot lines clamped to their truth (semi-supervised).

The supervised fit is centred (``center="separable"``, the default): the L1 penalty shrinks each
weight towards the annotator's own honeypot record, logit((agreements + 1) / (votes + 2)), instead of
towards 0 (``center="zero"``, the paper's estimate). An annotator with few honeypot votes then keeps
the weight its record supports instead of being zeroed; the penalised part corrects the separable
estimate where the joint fit has the evidence (docs/math.md, "Centred fit").

Choices from the data (:func:`_select`): ``gamma="cv"`` takes the percentage of gamma_max of
:data:`~crowdstat.estimators.registry.GAMMA_CV_GRID` (centred: also 100%) with the best 5-fold held-out
honeypot log-likelihood; with ``latent=None`` and partial truth the grid holds both variants (the best
pair). The default ``gamma=None`` is "cv" on the supervised variant's grid when there are at least 5
honeypot programs; else 100% for the centred fit (each annotator's own record), 1% for the paper's
fit and the latent EM.

The weights w are the annotators' logits of eq. (7); the line posteriors follow from them with
the fitted intercept as prior logit when ``intercept=True``, else logit(prior).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat.estimators import calibration
from crowdstat.estimators.l1 import latent as _latent
from crowdstat.estimators.l1 import problem as _problem
from crowdstat.estimators.l1 import solve as _solve
from crowdstat.estimators.posterior import line_posteriors
from crowdstat.estimators.registry import GAMMA_CV_GRID, GAMMA_CV_GRID_CENTRED, is_gamma_cv, parse_gamma
from crowdstat.estimators.result import EstimatorFit

__all__ = ["CV_FOLDS", "DEFAULT_GAMMA", "centre_of", "fit", "latent_diagnostics", "supervised_diagnostics"]

#: gamma of the default (``gamma=None``) where it cannot be cross-validated (latent, or < 5 honeypot programs),
#: per centre: the centred fit then keeps each annotator's own record (100%: no joint correction that the
#: data could not check; at 1% it would be close to the unpenalised logistic MLE), the paper's fit and the
#: latent EM take 1%
DEFAULT_GAMMA = {"separable": "100%", "zero": "1%", "latent": "1%"}

#: folds over honeypot programs of ``gamma="cv"``
CV_FOLDS = calibration.FOLDS

_SOLVER_NAMES = {"newton": "proximal Newton", "fista": "FISTA", "ista": "ISTA"}
# Jitted: one fused kernel. Run op by op, the prior-logit addition and the sigmoid can round
# differently in the last bit from the jitted posterior kernels crowdstat has always reported.
_line_posteriors = jax.jit(line_posteriors)


def fit(table, cfg, common, dtype) -> EstimatorFit:
    """Fit the proximal estimator to a vote table.

    Parameters
    ----------
    table : crowdstat.io.tables.VoteTable
    cfg : the method's parameters
        ``gamma`` (a number is absolute, ``"X%"`` is X percent of gamma_max), ``accelerated``,
        ``solver``, ``tol`` (None: :func:`~crowdstat.estimators.l1.solve.default_tol`), ``maxiter``,
        ``intercept``, ``latent`` (None: latent when the table has no honeypot truth; with ``gamma="cv"``
        and partial truth, chosen with gamma),
        ``stepsize`` (None: 1/L), ``nu`` (the latent EM's starting reliability), ``max_outer``.
    common : the shared parameters
        ``prior``, ``delta`` are read here (``tau``, ``x64``, ``progress`` are the caller's).
    dtype : jnp.float32 or jnp.float64
        The compute dtype; float64 needs the caller to run under ``jax.enable_x64``.

    Returns
    -------
    EstimatorFit with the line posteriors, weights, reliabilities sigmoid(w) (float64) and the
    diagnostics (supervised: the certificate and the solver's figures; latent: the EM's).
    Warns (UserWarning) when the solver or the EM stopped before converging.
    """
    tol = cfg.tol if cfg.tol is not None else _solve.default_tol(dtype)
    latent, gamma, selection = _select(table, cfg, common, dtype, tol)
    w, prior_logit, posterior, diagnostics, warning = _fit_once(table, cfg, common, dtype, tol, latent, gamma)
    if selection is not None:
        diagnostics["selection"] = selection
    if warning is not None:
        # stacklevel: _fit_supervised / _fit_latent return the message; from here, the caller of crowdstat.fit.
        warnings.warn(warning, stacklevel=4)
    w = np.asarray(w)
    reliability = 0.5 * (1.0 + np.tanh(0.5 * w.astype(np.float64)))  # stable sigmoid
    return EstimatorFit(posterior=posterior, weight=w, reliability=reliability, diagnostics=diagnostics, prior_logit=float(prior_logit))


def _fit_once(table, cfg, common, dtype, tol: float, latent: bool, gamma_spec):
    """One fit of the chosen variant at ``gamma_spec``: (w, prior_logit, line posteriors, diagnostics, warning or None)."""
    prior_logit = math.log(common.prior) - math.log1p(-common.prior)
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    if latent:
        w, prior_logit, diagnostics, warning = _fit_latent(arrays, table.n_annotators, cfg, common, dtype, prior_logit, tol, gamma_spec)
    else:
        w, prior_logit, diagnostics, warning = _fit_supervised(table, cfg, common, dtype, prior_logit, tol, gamma_spec)
    posterior = np.asarray(_line_posteriors(w, arrays, jnp.asarray(prior_logit, dtype)))
    return w, prior_logit, posterior, diagnostics, warning


def centre_of(cfg) -> str:
    """The supervised fit's centre: ``cfg.center``, or "separable" by default."""
    return cfg.center if cfg.center is not None else "separable"


def _n_honeypot_programs(table) -> int:
    truth = np.asarray(table.arrays.truth)
    return int(np.unique(np.asarray(table.arrays.line_program)[truth != 0]).shape[0])


def _candidates(table, cfg) -> tuple[list[bool], list]:
    """The variants (latent or not) and the gammas the data choose among (one of each: nothing to choose)."""
    n_hp = table.n_honeypots
    if cfg.gamma is None:  # the default: cv on the supervised fit's own grid where it can be, else DEFAULT_GAMMA
        latent = bool(cfg.latent) if cfg.latent is not None else n_hp == 0
        if latent or _n_honeypot_programs(table) < CV_FOLDS:
            return [latent], [DEFAULT_GAMMA["latent" if latent else centre_of(cfg)]]
        return [False], list(GAMMA_CV_GRID_CENTRED if centre_of(cfg) == "separable" else GAMMA_CV_GRID)
    cv = is_gamma_cv(cfg.gamma)
    if cv and n_hp == 0:
        raise ValueError("gamma='cv' needs honeypot truth to cross-validate on (none given): give --truth, or a gamma such as 1%")
    if cfg.latent is not None:
        variants = [bool(cfg.latent)]
    elif cv and n_hp < table.n_lines:  # partial truth: the semi-supervised fit is a candidate too
        variants = [False, True]
    else:  # no truth: latent; truth (with a fixed gamma, or on every line): supervised
        variants = [n_hp == 0]
    if not cv:
        return variants, [cfg.gamma]
    centred = [g for g in GAMMA_CV_GRID_CENTRED if g not in GAMMA_CV_GRID] if centre_of(cfg) == "separable" else []
    return variants, list(GAMMA_CV_GRID) + centred


def _select(table, cfg, common, dtype, tol: float):
    """(latent, gamma, record or None): the variant and gamma of the fit, chosen from the data where the
    configuration leaves a choice (``gamma="cv"``; with ``latent=None`` and partial truth, the variant too).

    Every candidate is scored by the mean held-out log-likelihood of the honeypot truth, K-fold over
    honeypot programs (:func:`crowdstat.estimators.calibration.honeypot_folds` and
    :func:`~crowdstat.estimators.calibration.heldout_posteriors`, the folds of ``method="auto"``); the
    best is refitted on all the truth by the caller. With fewer than K honeypot programs ``gamma="cv"``
    is an error.
    """
    variants, gammas = _candidates(table, cfg)
    if len(variants) * len(gammas) == 1:
        return variants[0], gammas[0], None
    truth = np.asarray(table.arrays.truth)
    folds = calibration.honeypot_folds(table.arrays.line_program, truth, CV_FOLDS)
    if len(folds) < CV_FOLDS:
        raise ValueError(
            f"gamma='cv' needs at least {CV_FOLDS} programs with honeypot truth ({CV_FOLDS}-fold cross-validation), got {len(folds)}"
        )
    lines = np.concatenate(folds)
    scores = []
    for latent in variants:
        for g in gammas:
            if latent and g not in GAMMA_CV_GRID:  # 100% is the centred supervised fit's; the latent EM has no centre
                continue

            def refit(t, latent=latent, g=g):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return _fit_once(_with_truth(table, t), cfg, common, dtype, tol, latent, g)[2]

            held = calibration.heldout_posteriors(refit, truth, folds)
            per_fold = [-calibration.log_loss(held[f], truth[f]) for f in folds]
            scores.append(
                {
                    "latent": latent,
                    "gamma": g,
                    "heldout_loglik": -calibration.log_loss(held[lines], truth[lines]),
                    "se": float(np.std(per_fold, ddof=1) / math.sqrt(len(folds))),
                }
            )
    best = max(scores, key=lambda r: r["heldout_loglik"])  # the first of equals: supervised, smaller gamma
    # The one-standard-error rule (Hastie, Tibshirani & Friedman, sec. 7.10; glmnet's lambda.1se): the
    # largest gamma of the best's variant whose score is within one standard error (over folds) of the
    # best. Seven noisy scores on a few hundred honeypot lines: the argmax over-fits the choice, and
    # near-ties (separable honeypots) would pick the least shrunk, worst-conditioned fit.
    near = [r for r in scores if r["latent"] == best["latent"] and r["heldout_loglik"] >= best["heldout_loglik"] - best["se"]]
    top = max(near, key=lambda r: parse_gamma(r["gamma"])[0])
    why = (
        f"largest gamma within one standard error of the largest mean held-out log-likelihood of the honeypot truth "
        f"({CV_FOLDS}-fold over honeypot programs; best {best['gamma']}{' latent' if best['latent'] else ''})"
    )
    if cfg.gamma is None:
        why += " (gamma=None, the default: cv on the supervised fit's grid)"
    record = {
        "chosen": {"latent": top["latent"], "gamma": top["gamma"]},
        "why": why,
        "scores": scores,
        "best": {"latent": best["latent"], "gamma": best["gamma"]},
    }
    if len(gammas) > 1:
        record["gamma_grid"] = gammas
    return top["latent"], top["gamma"], record


def _with_truth(table, truth: np.ndarray):
    return dataclasses.replace(table, arrays=table.arrays._replace(truth=truth))


def _fit_latent(arrays, m: int, cfg, common, dtype, prior_logit: float, tol: float, gamma_spec):
    """The latent-truth variant: L1-penalised one-coin EM from w_i = logit(nu) (docs/math.md explains the choice).

    Returns (w, prior_logit, diagnostics, warning message or None).
    """
    delta = float(common.delta)
    gamma_val, rel = parse_gamma(gamma_spec)
    logit_cap = math.log1p(-delta) - math.log(delta)
    nu = min(max(cfg.nu, delta), 1 - delta)
    w0 = jnp.full(m, math.log(nu) - math.log1p(-nu), dtype)
    gmax = float(_latent.latent_gamma_max(arrays, w0, prior_logit))
    gamma = gamma_val * gmax if rel else gamma_val
    stop = max(tol, 1e-24) ** 0.5  # floor 1e-12 on the weight change (crowdstat.online uses the same rule)
    w, _, it, change = _latent.latent_em(
        arrays,
        w0,
        jnp.asarray(gamma, dtype),
        jnp.asarray(prior_logit, dtype),
        jnp.asarray(logit_cap, dtype),
        jnp.asarray(stop, dtype),
        max_outer=int(cfg.max_outer),
    )
    diagnostics, warning = latent_diagnostics(gamma, gmax, it, change, stop)
    return w, prior_logit, diagnostics, warning


def latent_diagnostics(gamma, gmax, it, change, stop) -> tuple[dict, str | None]:
    """fit.json's diagnostics of a latent solve, and the not-converged warning or None (shared with crowdstat.online)."""
    diagnostics = {
        "variant": "latent (one-coin EM, L1-penalised M-step)",
        "gamma": gamma,
        "gamma_max": gmax,
        "iterations": int(it),
        "last_change": float(change),
        "converged": bool(float(change) <= stop),
    }
    warning = None
    if not diagnostics["converged"]:
        warning = f"proximal (latent): EM stopped after {int(it)} iterations with max weight change {float(change):.3g}"
    return diagnostics, warning


def _step(cfg, solver: str, data, m: int, intercept: bool):
    """(eta, L): no step size for Newton (its direction and a line search); else L by power iterations and
    eta = ``stepsize`` or 1/L, checked to lie in (0, 2/L) for ISTA."""
    if solver == "newton":
        return 1.0, None
    lip = float(_problem.lipschitz(data, m, intercept))
    eta = cfg.stepsize if cfg.stepsize is not None else 1.0 / lip
    if solver == "ista" and not 0 < eta < 2.0 / lip:
        raise ValueError(f"stepsize: ISTA needs eta in (0, 2/L) = (0, {2.0 / lip:.6g}), got {eta}")
    return eta, lip


def _fit_supervised(table, cfg, common, dtype, prior_logit: float, tol: float, gamma_spec):
    """The L1-logistic on the honeypot lines, solved to the relative duality gap ``tol``.

    Returns (w, prior_logit, diagnostics, warning message or None); prior_logit is the fitted
    intercept when ``cfg.intercept``.
    """
    m = table.n_annotators
    gamma_val, rel = parse_gamma(gamma_spec)
    data = _problem.training_data(table.arrays, dtype)
    n_training_lines = int(data.q.shape[0])
    solver = _solve.resolve_solver(cfg.solver, data, m, bool(cfg.accelerated))  # from the real sizes
    data = _problem.pad_to_bucket(data, m)  # one compile for nearby sizes (the folds of gamma="cv")
    centre = None
    if centre_of(cfg) == "separable":
        centre = _problem.separable_centre(data, m)
        data = _problem.with_centre(data, centre)
    intercept = bool(cfg.intercept)
    gmax = float(_problem.gamma_max(data, m, intercept))
    gamma = gamma_val * gmax if rel else gamma_val
    eta, lip = _step(cfg, solver, data, m, intercept)
    b0 = _problem.b_at_zero(data, float(common.delta)) if intercept else jnp.asarray(0.0, dtype)
    st = _solve.solve(
        data,
        jnp.asarray(gamma, dtype),
        jnp.zeros(m, dtype),
        b0,
        jnp.asarray(eta, dtype),
        jnp.asarray(tol, dtype),
        accelerated=bool(cfg.accelerated),
        intercept=intercept,
        maxiter=int(cfg.maxiter),
        solver="fista" if solver == "ista" else solver,
    )
    w = st.w if centre is None else centre + st.w
    diagnostics, warning = supervised_diagnostics(
        st, solver, tol, gamma, gmax, lip, eta, intercept, n_training_lines, np.asarray(w), centre
    )
    return w, (float(st.b) if intercept else prior_logit), diagnostics, warning


def supervised_diagnostics(
    st, solver: str, tol, gamma, gmax, lip, eta, intercept: bool, n_training_lines: int, w, centre=None
) -> tuple[dict, str | None]:
    """fit.json's diagnostics of a supervised solve (state ``st`` of the solver; ``w`` the real annotators'
    weights; ``centre`` the separable centre of a centred fit, the real annotators'), and the
    not-converged warning or None; shared with the streaming update (crowdstat.online)."""
    converged = bool(float(st.rel_gap) <= tol)
    diagnostics = {
        "variant": "supervised (honeypot lines)",
        "centre": "zero" if centre is None else "separable",
        "solver": _SOLVER_NAMES[solver],
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
        "n_training_lines": n_training_lines,
        "n_filtered_out": int(np.sum(w == 0)),
    }
    if centre is not None:
        # annotators whose weight the penalty left at their separable estimate (d = 0)
        diagnostics["n_at_centre"] = int(np.sum(np.asarray(st.w)[: np.asarray(w).shape[0]] == 0))
    warning = None
    if not converged:
        warning = f"proximal: not converged after {int(st.iter_num)} iterations (relative gap {float(st.rel_gap):.3g} > tol {tol:.3g})"
        # a near-separable fit (objective near 0): the certificate itself is rounding, not a distance to the optimum
        eps = float(np.finfo(np.asarray(st.gap).dtype).eps)
        floor = 4.0 * max(n_training_lines, 1) * eps
        diagnostics["at_rounding_floor"] = bool(float(st.gap) <= floor)
        if diagnostics["at_rounding_floor"]:
            warning += (
                f": the absolute gap {float(st.gap):.2g} on an objective of {float(st.objective):.3g} is at the rounding floor of "
                f"{np.asarray(st.gap).dtype} ({n_training_lines} lines); x64=True (--x64) certifies it"
            )
    return diagnostics, warning
