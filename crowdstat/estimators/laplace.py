"""The Laplace approximation of the posterior: the default intervals of em1, em2 and proximal (docs/math.md, "Intervals").

:func:`laplace_intervals` is what :func:`crowdstat.estimators.intervals.attach` reports for
``crowdstat.fit(..., interval=0.9)`` with ``interval_method="laplace"``. The method's model
(:data:`LAPLACE_KINDS`: one-coin / two-coin Dawid-Skene with the latent truth summed out, the one-coin
model with the prior fixed for proximal's latent variant, eq. (7)'s logistic likelihood of the honeypot
truths for the supervised variant) with a Beta(1, 1) prior on every probability, on the logit scale
(:func:`log_posterior`); its mode (damped Newton from the point fit, :func:`laplace`) and the inverse
``jax.hessian`` there. Annotators: sigmoid(mode +- z sd) (em2's balanced accuracy by the delta method);
lines: the line's posterior logit, linear in the one-coin parameters (linearised for em2,
:func:`line_logit_moments`), sigmoid(mean +- z sd); widened to contain the point estimate, clipped to
[0, 1]. The parametric bootstrap it replaced, and the simulated coverage of both:
:mod:`crowdstat.estimators.intervals`, docs/study.md, "Interval coverage".
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat.estimators.result import EstimatorFit

__all__ = [
    "LAPLACE_KINDS",
    "LaplaceFit",
    "laplace_kind",
    "log_posterior",
    "laplace",
    "line_logit_moments",
    "laplace_intervals",
]

#: the models whose posterior :func:`laplace` approximates; parameter layout of theta in brackets
#: one_coin: Dawid-Skene one-coin, latent truth [w (m), c];  two_coin: [b = logit sens (m), a = logit spec (m), c];
#: one_coin_fixed_prior: one-coin with c fixed (proximal latent) [w (m)];  logistic: eq. (7) on the honeypot lines
#: (proximal supervised, center="zero") [w (m)] or [w (m), b] with an intercept;  separable: each annotator's own
#: honeypot votes, Bernoulli(p_i) per vote (proximal supervised, centred, no intercept) [w (m)]: its mode is the
#: centre logit((a_i + 1) / (n_i + 2)) exactly
LAPLACE_KINDS = ("one_coin", "two_coin", "one_coin_fixed_prior", "logistic", "separable")


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)


class LaplaceFit(NamedTuple):
    """The Gaussian approximation N(mode, cov) of the posterior of theta (float64, host)."""

    kind: str
    mode: np.ndarray  # shape=(d,), the posterior mode (MAP)
    cov: np.ndarray  # shape=(d, d), the inverse Hessian of -log posterior at the mode
    prior_logit: float  # the fixed prior logit of the line posteriors (nan where c is a parameter)
    iterations: int
    converged: bool


def laplace_kind(method: str, est: EstimatorFit, cfg) -> str:
    """The model of :data:`LAPLACE_KINDS` that ``method`` fits (proximal: the variant of the point fit)."""
    if method == "em1":
        return "one_coin"
    if method == "em2":
        return "two_coin"
    if method == "proximal":
        if str(est.diagnostics.get("variant", "")).startswith("latent"):
            return "one_coin_fixed_prior"
        if est.diagnostics.get("centre") == "separable" and not bool(getattr(cfg, "intercept", False)):
            return "separable"
        return "logistic"
    raise ValueError(f"interval: no Laplace approximation for method {method!r}; expected em1, em2 or proximal")


def _n_params(kind: str, m: int, intercept: bool) -> int:
    return {"one_coin": m + 1, "two_coin": 2 * m + 1, "one_coin_fixed_prior": m, "logistic": m + int(intercept), "separable": m}[kind]


def _log_beta11(x):
    """Log density of a uniform (Beta(1, 1)) probability sigmoid(x) on the logit scale (the Jacobian included)."""
    return jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)


def log_posterior(theta, votes, prior_logit, *, kind: str, m: int, intercept: bool = False):
    """log p(theta | votes) up to a constant: the method's log-likelihood plus a Beta(1, 1) prior on every
    probability of theta (reliabilities, sensitivities, specificities, the class prior sigmoid(c), the
    intercept).

    The mixture kinds sum the latent truth out of every line without truth (honeypot lines clamped, as the
    EM E-step does); ``logistic`` is eq. (7)'s conditional likelihood of the honeypot truths given their
    votes, the supervised fit's loss (offset 0 without an intercept, as :func:`crowdstat.estimators.l1.problem.objective`).
    ``separable`` (the centred supervised fit) is the one-coin likelihood of each annotator's own honeypot
    votes, a vote agreeing with its line's truth with probability p_i: the posterior of p_i is
    Beta(a_i + 1, n_i - a_i + 1), whose logit-scale mode is the fit's centre.
    Empty slots (label 0) add nothing. Pure and differentiable: :func:`laplace` takes its Hessian by
    ``jax.hessian``."""
    n_lines = votes.truth.shape[0]
    cast = votes.label != 0
    pos = votes.label > 0
    a = votes.annotator
    seg = partial(jax.ops.segment_sum, segment_ids=votes.line, num_segments=n_lines)
    t = votes.truth
    if kind == "separable":  # each honeypot vote is Bernoulli(p_i) of agreeing with the truth, annotators apart
        agree = jnp.where(cast & (t[votes.line] != 0), votes.label * t[votes.line], 0.0)
        ll = jnp.sum(jnp.where(agree != 0, jax.nn.log_sigmoid(agree * theta[:m][a]), 0.0))
        return ll + jnp.sum(_log_beta11(theta))
    if kind == "logistic":
        w = theta[:m]
        b = theta[m] if intercept else jnp.zeros((), theta.dtype)
        z = b + seg(jnp.where(cast, jnp.where(pos, w[a], -w[a]), 0.0))
        ll = jnp.sum(jnp.where(t != 0, jax.nn.log_sigmoid(jnp.where(t > 0, z, -z)), 0.0))
        return ll + jnp.sum(_log_beta11(theta))
    if kind == "two_coin":
        sens_l, spec_l, c = theta[:m], theta[m : 2 * m], theta[2 * m]
    else:
        sens_l = spec_l = theta[:m]
        c = theta[m] if kind == "one_coin" else prior_logit
    ls = jax.nn.log_sigmoid
    lp_pos = jnp.where(cast, jnp.where(pos, ls(sens_l[a]), ls(-sens_l[a])), 0.0)  # log P(vote | correct)
    lp_neg = jnp.where(cast, jnp.where(pos, ls(-spec_l[a]), ls(spec_l[a])), 0.0)  # log P(vote | wrong)
    lc = ls(c) + seg(lp_pos)
    lw = ls(-c) + seg(lp_neg)
    ll = jnp.sum(jnp.where(t > 0, lc, jnp.where(t < 0, lw, jnp.logaddexp(lc, lw))))
    return ll + jnp.sum(_log_beta11(theta))


@partial(jax.jit, static_argnames=("kind", "m", "intercept"))
def _value_grad_hess(theta, votes, prior_logit, *, kind: str, m: int, intercept: bool):
    f = lambda th: -log_posterior(th, votes, prior_logit, kind=kind, m=m, intercept=intercept)  # noqa: E731
    return f(theta), jax.grad(f)(theta), jax.hessian(f)(theta)


def _start(kind: str, est: EstimatorFit, m: int, intercept: bool, delta: float) -> np.ndarray:
    """theta of the point fit, probabilities clipped to [1e-4, 1 - 1e-4] (a start away from the flat tails)."""
    lo = max(delta, 1e-4)
    lg = lambda p: _logit(np.clip(np.asarray(p, np.float64), lo, 1 - lo))  # noqa: E731
    pi = est.diagnostics.get("class_prior", 0.5)
    if kind == "two_coin":
        return np.concatenate([lg(est.annotator_columns["sensitivity"]), lg(est.annotator_columns["specificity"]), lg([pi])])
    w = np.clip(np.asarray(est.weight, np.float64), *lg([lo, 1 - lo]))
    if kind == "one_coin":
        return np.concatenate([lg(est.reliability), lg([pi])])
    if kind == "logistic" and intercept:
        return np.concatenate([w, [float(est.prior_logit)]])
    return w


def laplace(table, method: str, cfg, common, est: EstimatorFit, maxiter: int = 200) -> LaplaceFit:
    """The posterior mode of :func:`log_posterior` (damped Newton from the point fit, float64) and the
    inverse Hessian there."""
    kind = laplace_kind(method, est, cfg)
    m, intercept = table.n_annotators, bool(getattr(cfg, "intercept", False)) and kind == "logistic"
    fixed = kind in ("one_coin_fixed_prior", "logistic", "separable") and not intercept
    prior_logit = float(est.prior_logit) if fixed else math.nan
    with jax.enable_x64(True):
        votes = jax.tree.map(jnp.asarray, table.arrays)
        pl = jnp.asarray(0.0 if math.isnan(prior_logit) else prior_logit, jnp.float64)
        vgh = partial(_value_grad_hess, votes=votes, prior_logit=pl, kind=kind, m=m, intercept=intercept)
        theta = _start(kind, est, m, intercept, float(common.delta))
        f, g, h = (np.asarray(x, np.float64) for x in vgh(jnp.asarray(theta)))
        converged, iterations = False, 0
        for it in range(1, maxiter + 1):
            iterations = it
            lam_min = float(np.linalg.eigvalsh(h)[0])
            hp = h if lam_min > 1e-10 else h + (1e-6 - lam_min) * np.eye(h.shape[0])  # not convex here: a damped step
            step = np.linalg.solve(hp, g)
            decrement = float(g @ step)
            if decrement < 1e-12:
                converged = True
                break
            t = 1.0
            for _ in range(60):  # backtracking (Armijo)
                new = theta - t * step
                fn, gn, hn = (np.asarray(x, np.float64) for x in vgh(jnp.asarray(new)))
                if np.isfinite(fn) and fn <= f - 1e-4 * t * decrement:
                    break
                t *= 0.5
            else:
                break
            theta, f, g, h = new, fn, gn, hn
    h = 0.5 * (h + h.T)
    lam, vec = np.linalg.eigh(h)
    cov = (vec / np.maximum(lam, 1e-12)) @ vec.T  # H is positive definite at a mode (the prior's curvature)
    return LaplaceFit(kind, theta, cov, prior_logit, iterations, converged)


def _vote_gradients(lf: LaplaceFit, arrays, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per vote, its term of the line logit and that term's gradient over theta, as (contrib, idx, coef):
    ``idx``/``coef`` of shape (n_votes, 2) (one-coin kinds: the second entry has coefficient 0)."""
    ann = np.asarray(arrays.annotator)
    lab = np.asarray(arrays.label)
    pos, cast = lab > 0, lab != 0
    th = lf.mode
    if lf.kind == "two_coin":
        b, a = th[:m][ann], th[m : 2 * m][ann]
        ls = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731  log sigmoid
        contrib = np.where(pos, ls(b) - ls(-a), ls(-b) - ls(a))
        cb = np.where(pos, _sigmoid(-b), -_sigmoid(b))
        ca = np.where(pos, _sigmoid(a), -_sigmoid(-a))
        idx = np.stack([ann, m + ann], axis=1)
        coef = np.stack([cb, ca], axis=1)
    else:
        sgn = np.where(pos, 1.0, -1.0)
        contrib = sgn * th[:m][ann]
        idx = np.stack([ann, ann], axis=1)
        coef = np.stack([sgn, np.zeros_like(sgn)], axis=1)
    return np.where(cast, contrib, 0.0), idx, np.where(cast[:, None], coef, 0.0), cast


def line_logit_moments(lf: LaplaceFit, arrays, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every line's posterior logit s_j = c + sum_i (term of vote ij) under N(mode, cov),
    linearised at the mode (exact for the one-coin kinds, where s_j is linear in theta): var_j = g_j' cov g_j,
    summed over the pairs of votes on line j."""
    line = np.asarray(arrays.line)
    n_lines = np.asarray(arrays.truth).shape[0]
    contrib, idx, coef, _ = _vote_gradients(lf, arrays, m)
    c_idx = {"one_coin": m, "two_coin": 2 * m}.get(lf.kind, m if lf.kind == "logistic" and lf.mode.shape[0] > m else None)
    c = lf.mode[c_idx] if c_idx is not None else lf.prior_logit
    mean = np.full(n_lines, c, np.float64)
    np.add.at(mean, line, contrib)
    cov = lf.cov
    # the pairs (v, v') of votes on the same line: votes grouped by line, every vote against its group
    order = np.argsort(line, kind="stable")
    counts = np.bincount(line, minlength=n_lines)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    v = np.repeat(order, counts[line[order]])
    k = np.arange(v.shape[0]) - np.repeat(np.cumsum(counts[line[order]]) - counts[line[order]], counts[line[order]])
    vp = order[start[line[v]] + k]
    pair = np.zeros(v.shape[0])
    for r in range(2):
        for s in range(2):
            pair += coef[v, r] * coef[vp, s] * cov[idx[v, r], idx[vp, s]]
    var = np.zeros(n_lines)
    np.add.at(var, line[v], pair)
    if c_idx is not None:  # the prior logit's own variance and its covariance with the votes' terms
        cross = sum(coef[:, r] * cov[idx[:, r], c_idx] for r in range(2))
        np.add.at(var, line, 2.0 * cross)
        var += cov[c_idx, c_idx]
    return mean, np.maximum(var, 0.0)


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def _widen(lo, hi, estimate):
    est = np.asarray(estimate, np.float64)
    ok = np.isfinite(est)
    lo = np.where(ok, np.minimum(lo, est), lo)
    hi = np.where(ok, np.maximum(hi, est), hi)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


def laplace_intervals(table, method: str, cfg, common, est: EstimatorFit) -> tuple[dict, dict, dict]:
    """The intervals of a fit from :func:`laplace`: (annotator columns, line columns, record for fit.json).

    Annotators: sigmoid(theta_k +- z sd_k) for a reliability, sensitivity or specificity; em2's balanced
    accuracy (sens + spec) / 2 by the delta method on its logit. Lines: sigmoid(mean_j +- z sd_j) of
    :func:`line_logit_moments`; em's honeypot lines are their truth (clamped). All widened to contain the
    point estimate (the posterior mode need not be the fit) and clipped to [0, 1]."""
    t0 = time.perf_counter()
    level = float(common.interval)
    z = _z(level)
    m = table.n_annotators
    lf = laplace(table, method, cfg, common, est)
    sd = np.sqrt(np.maximum(np.diag(lf.cov), 0.0))
    th = lf.mode
    ann, lines = {}, {}

    def band(k, col_est):
        return _widen(_sigmoid(th[k] - z * sd[k]), _sigmoid(th[k] + z * sd[k]), col_est)

    if lf.kind == "two_coin":
        sens_k, spec_k = np.arange(m), m + np.arange(m)
        ann["sensitivity_lower"], ann["sensitivity_upper"] = band(sens_k, est.annotator_columns["sensitivity"])
        ann["specificity_lower"], ann["specificity_upper"] = band(spec_k, est.annotator_columns["specificity"])
        s, c = _sigmoid(th[sens_k]), _sigmoid(th[spec_k])
        r = 0.5 * (s + c)
        gs, gc = 0.5 * s * (1 - s) / (r * (1 - r)), 0.5 * c * (1 - c) / (r * (1 - r))  # d logit(r) / d (b, a)
        var = gs**2 * lf.cov[sens_k, sens_k] + gc**2 * lf.cov[spec_k, spec_k] + 2 * gs * gc * lf.cov[sens_k, spec_k]
        half = z * np.sqrt(np.maximum(var, 0.0))
        ann["reliability_lower"], ann["reliability_upper"] = _widen(_sigmoid(_logit(r) - half), _sigmoid(_logit(r) + half), est.reliability)
    else:
        ann["reliability_lower"], ann["reliability_upper"] = band(np.arange(m), est.reliability)
    ann = {k: ann[k] for k in sorted(ann, key=lambda k: not k.startswith("reliability"))}  # the bootstrap's column order
    mean, var = line_logit_moments(lf, table.arrays, m)
    half = z * np.sqrt(var)
    lo, hi = _sigmoid(mean - half), _sigmoid(mean + half)
    if method in ("em1", "em2"):
        truth = np.asarray(table.arrays.truth)
        lo = np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, lo))
        hi = np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, hi))
    lines["posterior_lower"], lines["posterior_upper"] = _widen(lo, hi, est.posterior)
    if not lf.converged:
        warnings.warn(f"{method}: the posterior mode of the intervals did not converge in {lf.iterations} Newton steps", stacklevel=4)
    record = {
        "level": level,
        "method": "Laplace approximation of the posterior (Beta(1, 1) priors, logit scale), widened to contain the estimate",
        "model": lf.kind,
        "parameters": int(lf.mode.shape[0]),
        "newton_iterations": lf.iterations,
        "converged": lf.converged,
        "replicates": None,
        "seconds": time.perf_counter() - t0,
    }
    return ann, lines, record
