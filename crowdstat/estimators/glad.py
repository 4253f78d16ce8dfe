"""GLAD (Whitehill et al. 2009): annotator ability x line difficulty, by EM with a gradient M-step (docs/baselines.md).

Model (binary truth y_j in {correct = +1, wrong = -1}; crowd-kit 1.4.2's parametrisation):

    P(label_ij = y_j | alpha_i, beta_j) = sigmoid(alpha_i * exp(beta_j))

alpha_i in R is the ability of annotator i (alpha_i < 0: adversarial, 0: guessing); exp(beta_j) > 0 is
the paper's inverse difficulty of line j (beta_j is its log, so that it is unconstrained). Priors:
alpha_i ~ N(mu_alpha, 1), beta_j ~ N(mu_beta, 1) (crowd-kit: mu_alpha = mu_beta = 1); the class prior
P(y_j = +1) = ``prior`` is fixed (crowd-kit: uniform over the labels, i.e. 1/2).

E-step (the log-odds are a sum over the line's votes, one segment sum):

    q_j = P(y_j = +1 | votes) = sigmoid( logit(prior) + sum_{i votes on j} label_ij * alpha_i exp(beta_j) )

(log sigmoid(x) - log sigmoid(-x) = x). Honeypot lines (``truth != 0``) are clamped to their truth.

M-step: maximise the expected complete-data log-posterior

    Q(alpha, beta) = sum_votes [ r_v log sigmoid(x_v) + (1 - r_v) log sigmoid(-x_v) ]
                     + sum_i log N(alpha_i; mu_alpha, 1) + sum_j log N(beta_j; mu_beta, 1)

with x_v = alpha_i exp(beta_j) and r_v = P(label_v = y_j) (q_j for a "+1" vote, 1 - q_j for a "-1"),
by L-BFGS (``optax.lbfgs``, zoom line search) from the current point, at most ``m_step_maxiter``
iterations, stopping once max |grad Q| < ``m_step_tol``. crowd-kit runs scipy's nonlinear conjugate
gradient with the same two settings (25 iterations, gtol 1e-2): a different inner optimiser, the same
fixed points (generalised EM).

Loop (crowd-kit's): start at alpha = mu_alpha, beta = mu_beta; then at most ``maxiter`` times
E-step, M-step, objective Q / (2 n_votes) (crowd-kit's per-row scale: it melts every vote into one row
per label); stop when that objective gained less than ``tol``. The first cycle always runs (crowd-kit
compares it with the unscaled start value). The posteriors returned come from a last E-step at the
final parameters (crowd-kit returns those of the E-step before its last M-step; at convergence the two
agree to within its ``tol``).

Outputs: ``reliability`` of annotator i = the mean over the lines i voted on of sigmoid(alpha_i
exp(beta_j)) (its expected accuracy on its own lines); ``weight`` = its logit. Annotator column
``ability`` (alpha_i); line column ``inverse_difficulty`` (exp(beta_j), the paper's beta_j).

:func:`glad` takes vote arrays; :func:`fit` is the registry's entry point (``crowdstat.fit(method="glad")``,
parameters in :class:`~crowdstat.estimators.registry.GLADConfig`).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import CommonConfig, GLADConfig
from crowdstat.estimators.result import EstimatorFit, check_inputs

__all__ = ["GladState", "e_step", "objective", "m_step", "run", "glad", "fit"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class GladState(NamedTuple):
    """EM state of GLAD."""

    alpha: jax.Array  # shape=(m,), annotator abilities
    beta: jax.Array  # shape=(n_lines,), log inverse difficulties
    q: jax.Array  # shape=(n_lines,), P(line correct | votes) of the last E-step
    value: jax.Array  # shape=(), Q / (2 n_votes) after the last M-step (-inf before the first)
    gain: jax.Array  # shape=(), gain of ``value`` in the last cycle (inf before the first)
    iter_num: jax.Array  # shape=(), int32, completed EM cycles
    m_iters: jax.Array  # shape=(), int32, L-BFGS iterations summed over the M-steps


def _clamp(q, truth):
    return jnp.where(truth > 0, 1.0, jnp.where(truth < 0, 0.0, q)).astype(q.dtype)


def e_step(votes: VoteArrays, alpha, beta, prior_logit):
    """q_j = sigmoid(logit(prior) + sum_votes label * alpha_i exp(beta_j)), honeypots clamped."""
    n_lines = votes.line_program.shape[0]
    x = alpha[votes.annotator] * jnp.exp(beta[votes.line])
    s = jax.ops.segment_sum(votes.label.astype(x.dtype) * x, votes.line, num_segments=n_lines, indices_are_sorted=True)
    return _clamp(jax.nn.sigmoid(prior_logit + s), votes.truth)


def objective(params, votes: VoteArrays, q, mu_alpha, mu_beta):
    """Q(alpha, beta): expected complete-data log-likelihood of the votes plus the Gaussian log-priors."""
    alpha, beta = params
    x = alpha[votes.annotator] * jnp.exp(beta[votes.line])
    qv = q[votes.line]
    r = jnp.where(votes.label > 0, qv, 1.0 - qv)
    ll = jnp.sum(r * jax.nn.log_sigmoid(x) + (1.0 - r) * jax.nn.log_sigmoid(-x))
    lp = -0.5 * jnp.sum((alpha - mu_alpha) ** 2) - 0.5 * jnp.sum((beta - mu_beta) ** 2)
    return ll + lp - _LOG_SQRT_2PI * (alpha.shape[0] + beta.shape[0])


def m_step(params, votes: VoteArrays, q, mu_alpha, mu_beta, maxiter, gtol):
    """L-BFGS on -Q from ``params``: at most ``maxiter`` steps, until max |grad| < ``gtol``. Returns (params, steps)."""

    def f(p):
        return -objective(p, votes, q, mu_alpha, mu_beta)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def gmax(g):
        return jnp.maximum(jnp.max(jnp.abs(g[0])), jnp.max(jnp.abs(g[1])))

    def cond(c):
        p, state, k, gm = c
        return (k < maxiter) & (gm >= gtol)

    def body(c):
        p, state, k, _ = c
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
        p = optax.apply_updates(p, updates)
        return p, state, k + 1, gmax(optax.tree_utils.tree_get(state, "grad"))  # the line search's gradient at the new p

    g0 = jax.grad(f)(params)
    p, _, k, _ = jax.lax.while_loop(cond, body, (params, opt.init(params), jnp.zeros((), jnp.int32), gmax(g0)))
    return p, k


@partial(jax.jit, static_argnames=("m",))
def run(votes: VoteArrays, mu_alpha, mu_beta, prior_logit, maxiter, tol, m_maxiter, m_tol, *, m: int) -> GladState:
    """Jitted EM driver (module docstring); every setting but the number of annotators ``m`` is a runtime argument."""
    dtype = jnp.asarray(mu_alpha).dtype
    n_lines = votes.line_program.shape[0]
    n_rows = 2.0 * votes.line.shape[0]
    alpha0 = jnp.full((m,), mu_alpha, dtype)
    beta0 = jnp.full((n_lines,), mu_beta, dtype)
    s0 = GladState(
        alpha0,
        beta0,
        e_step(votes, alpha0, beta0, prior_logit),
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )

    def cond(s):
        return (s.iter_num < maxiter) & (s.gain >= tol)

    def body(s):
        q = e_step(votes, s.alpha, s.beta, prior_logit)
        (alpha, beta), k = m_step((s.alpha, s.beta), votes, q, mu_alpha, mu_beta, m_maxiter, m_tol)
        value = objective((alpha, beta), votes, q, mu_alpha, mu_beta) / n_rows
        return GladState(alpha, beta, q, value, value - s.value, s.iter_num + 1, s.m_iters + k)

    s = jax.lax.while_loop(cond, body, s0)
    return s._replace(q=e_step(votes, s.alpha, s.beta, prior_logit))


def glad(arrays: VoteArrays, cfg: GLADConfig | None = None, *, dtype, prior, delta) -> EstimatorFit:
    """GLAD by EM (module docstring).

    Parameters
    ----------
    arrays : VoteArrays
        Votes; honeypot lines (``truth != 0``) are clamped to their truth.
    cfg : GLADConfig, optional
        ``maxiter``, ``tol`` (EM), ``m_step_maxiter``, ``m_step_tol`` (L-BFGS), ``alpha_mean``, ``beta_mean``
        (prior means). None: ``GLADConfig()``'s defaults (crowd-kit's).
    dtype : jnp.float32 or jnp.float64
    prior : float in (0, 1)
        The fixed class prior P(line correct).
    delta : float
        The reliabilities are clipped to [delta, 1 - delta] before their logit.

    Returns
    -------
    EstimatorFit
        posterior, reliability (expected accuracy on the annotator's lines), weight (its logit);
        annotator column ``ability``, line column ``inverse_difficulty``; diagnostics ``iterations``,
        ``objective``, ``last_gain``, ``converged``, ``m_step_iterations``.
    """
    cfg = cfg or GLADConfig()
    check_inputs(arrays, dtype, prior, delta, "glad")
    m = int(np.max(np.asarray(arrays.annotator))) + 1
    votes = VoteArrays(*(jnp.asarray(x) for x in arrays))
    d = partial(jnp.asarray, dtype=dtype)
    s = run(
        votes,
        d(cfg.alpha_mean),
        d(cfg.beta_mean),
        d(math.log(prior) - math.log1p(-prior)),
        jnp.asarray(cfg.maxiter, jnp.int32),
        d(cfg.tol),
        jnp.asarray(cfg.m_step_maxiter, jnp.int32),
        d(cfg.m_step_tol),
        m=m,
    )
    alpha = np.asarray(s.alpha, np.float64)
    inv_diff = np.exp(np.asarray(s.beta, np.float64))
    a, ln = np.asarray(arrays.annotator), np.asarray(arrays.line)
    p_vote = 0.5 * (1.0 + np.tanh(0.5 * alpha[a] * inv_diff[ln]))
    rel = np.bincount(a, p_vote, minlength=m) / np.maximum(np.bincount(a, minlength=m), 1)
    rel_c = np.clip(rel, delta, 1 - delta)
    gain = float(s.gain)
    converged = bool(gain < cfg.tol)
    if not converged:
        warnings.warn(f"glad: EM stopped at maxiter={cfg.maxiter} with objective gain {gain:.3g} >= tol={cfg.tol}", stacklevel=3)
    out_dt = np.dtype(jnp.dtype(dtype).name)
    return EstimatorFit(
        posterior=np.asarray(s.q),
        weight=(np.log(rel_c) - np.log1p(-rel_c)).astype(out_dt),
        reliability=rel.astype(out_dt),
        diagnostics={
            "model": f"GLAD: P(right) = sigmoid(alpha_i exp(beta_j)), alpha ~ N({cfg.alpha_mean}, 1), beta ~ N({cfg.beta_mean}, 1); EM",
            "iterations": int(s.iter_num),
            "objective": float(s.value),
            "last_gain": gain if math.isfinite(gain) else None,
            "converged": converged,
            "m_step_iterations": int(s.m_iters),
            "n_honeypot_lines_clamped": int(np.count_nonzero(np.asarray(arrays.truth))),
        },
        annotator_columns={"ability": alpha},
        line_columns={"inverse_difficulty": inv_diff},
    )


def fit(table, cfg: GLADConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="glad")``: :func:`glad` on a :class:`~crowdstat.io.tables.VoteTable`."""
    return glad(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta))
