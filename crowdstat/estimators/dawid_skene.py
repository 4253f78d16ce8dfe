"""Dawid-Skene by EM: one-coin and two-coin (sensitivity / specificity), binary truth (docs/baselines.md).

Model (binary truth y_j in {correct = +1, wrong = -1}, class prior pi = P(y_j = +1)):

- one-coin:  P(label_ij = y_j) = p_i                      (one parameter per annotator)
- two-coin:  beta_i  = P(label_ij = +1 | y_j = +1)  (sensitivity: says "correct" on a correct line)
             alpha_i = P(label_ij = -1 | y_j = -1)  (specificity: says "wrong" on a wrong line)

  "correct" (+1) is the positive class, as in the population SPEC of docs/formats.md, so the
  ``sensitivity`` / ``specificity`` annotator columns are beta_i / alpha_i.

  One-coin is two-coin with alpha_i = beta_i = p_i, so both share one E-step.

E-step (log space, one segment sum over the vote list sorted by line):

    lc_j = log pi     + sum_{i votes on j} [label = +1] log beta_i  + [label = -1] log(1 - beta_i)
    lw_j = log(1-pi)  + sum_{i votes on j} [label = -1] log alpha_i + [label = +1] log(1 - alpha_i)
    q_j  = P(y_j = +1 | votes) = sigmoid(lc_j - lw_j)

Honeypot lines (``truth != 0``) are **clamped** to their truth: q_j = (1 + t_j) / 2, and their
log-likelihood term is the joint log p(votes_j, y_j = t_j) instead of the marginal
logsumexp(lc_j, lw_j). This is semi-supervised Dawid-Skene: EM then maximises the likelihood
of the votes on every line and of the known truths, and the log-likelihood is still monotone.

M-step (closed form, expected counts as segment sums over annotators):

    pi      = mean_j q_j                               (honeypot lines included, with q_j in {0, 1})
    one-coin: p_i   = sum_j P(label_ij agrees with y_j) / n_i
    two-coin: beta_i  = sum_j q_j [label_ij = +1] / sum_j q_j
              alpha_i = sum_j (1 - q_j) [label_ij = -1] / sum_j (1 - q_j)

(sums over the votes of annotator i; a zero denominator gives 1/2). Every probability is
clipped to [delta, 1 - delta] before its log. Initialisation as crowd-kit: q_j = the fraction
of "correct" votes on line j (majority-vote posterior; honeypots clamped), then M-step, E-step.
``prior`` is not used by the EM updates except as the documented starting value of pi in the
state (the first M-step replaces it).

Stopping: after each (M, E) cycle, the observed-data log-likelihood L (sum over lines) is
compared with the previous one; EM stops when the gain L_new - L_old < tol * max(1, |L_new|)
(a *relative* gain, so that the rule means the same on 100 and on 100,000 lines and in
float32), or after ``maxiter`` cycles. ``converged`` is False when maxiter was reached.

A vote slot with label 0 is empty (no vote): it adds nothing to either step, so callers can pad the
vote arrays to a fixed shape (one compilation for a growing vote set: :mod:`crowdstat.allocate`'s
study reveals votes into a fixed grid of slots). :func:`crowdstat.io.tables.read_votes` never makes one.

The driver is one jitted ``lax.while_loop`` over the pure :func:`update`. :func:`em_one_coin` and
:func:`em_two_coin` take vote arrays; :func:`fit_one_coin` and :func:`fit_two_coin` are the
registry's entry points (``crowdstat.fit(method="em1" | "em2")``, parameters in
:class:`~crowdstat.estimators.registry.EMConfig`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import CommonConfig, EMConfig
from crowdstat.estimators.result import EstimatorFit, check_inputs

__all__ = ["DSState", "init", "update", "e_step", "m_step", "run", "em_one_coin", "em_two_coin", "fit_one_coin", "fit_two_coin"]


class DSState(NamedTuple):
    """EM state: parameters, the E-step they produced, and progress."""

    q: jax.Array  # shape=(n_lines,), P(line correct | votes) from the current parameters
    pi: jax.Array  # shape=(), class prior P(correct)
    alpha: jax.Array  # shape=(m,), specificity P(says wrong | wrong)  (one-coin: = p)
    beta: jax.Array  # shape=(m,), sensitivity P(says correct | correct) (one-coin: = p)
    log_likelihood: jax.Array  # shape=(), observed-data log-likelihood at (pi, alpha, beta)
    gain: jax.Array  # shape=(), log-likelihood gain of the last cycle (inf before the first)
    iter_num: jax.Array  # shape=(), int32, completed (M, E) cycles


def _log_clip(x, delta):
    x = jnp.clip(x, delta, 1.0 - delta)
    return jnp.log(x), jnp.log1p(-x)


def _real(n_lines: int, n_real):
    """Mask of the real lines: all (None), or the first ``n_real`` (the padded arrays of :mod:`crowdstat.online`)."""
    return None if n_real is None else jnp.arange(n_lines) < n_real


def e_step(votes: VoteArrays, pi, alpha, beta, delta, n_real=None):
    """Posterior q_j and the observed-data log-likelihood (honeypot lines clamped).

    ``n_real`` (optional, runtime): only the first ``n_real`` lines count in the log-likelihood; the
    lines after them are padding lines (no votes), as in :mod:`crowdstat.online`.

    Returns
    -------
    q : Float[Array, "n_lines"]
    log_likelihood : Float[Array, ""]
    """
    n_lines = votes.line_program.shape[0]
    pos = votes.label > 0
    cast = votes.label != 0  # label 0: an empty slot (padding), no vote
    la, l1a = _log_clip(alpha, delta)
    lb, l1b = _log_clip(beta, delta)
    lpi, l1pi = _log_clip(pi, delta)
    a = votes.annotator
    c_correct = jnp.where(cast, jnp.where(pos, lb[a], l1b[a]), 0.0)
    c_wrong = jnp.where(cast, jnp.where(pos, l1a[a], la[a]), 0.0)
    seg = partial(jax.ops.segment_sum, segment_ids=votes.line, num_segments=n_lines, indices_are_sorted=True)
    lc = lpi + seg(c_correct)
    lw = l1pi + seg(c_wrong)
    t = votes.truth
    q = jnp.where(t > 0, 1.0, jnp.where(t < 0, 0.0, jax.nn.sigmoid(lc - lw))).astype(lc.dtype)
    ll_line = jnp.where(t > 0, lc, jnp.where(t < 0, lw, jnp.logaddexp(lc, lw)))
    real = _real(n_lines, n_real)
    return q, jnp.sum(ll_line if real is None else jnp.where(real, ll_line, 0.0))


def m_step(votes: VoteArrays, q, m: int, two_coin: bool, n_real=None):
    """Closed-form M-step: (pi, alpha, beta) from the line posteriors q (unclipped); pi over the first ``n_real`` lines if given."""
    dtype = q.dtype
    pos = (votes.label > 0).astype(dtype)
    neg = (votes.label < 0).astype(dtype)  # label 0 (an empty slot) is neither
    qv = q[votes.line] * (votes.label != 0).astype(dtype)
    seg = partial(jax.ops.segment_sum, segment_ids=votes.annotator, num_segments=m)
    real = _real(q.shape[0], n_real)
    pi = jnp.mean(q) if real is None else jnp.sum(jnp.where(real, q, 0.0)) / n_real
    half = jnp.asarray(0.5, dtype)

    def ratio(num, den):
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), half)

    if two_coin:
        beta = ratio(seg(qv * pos), seg(qv))
        alpha = ratio(seg((1.0 - qv) * neg), seg((1.0 - qv) * (pos + neg)))
    else:
        agree = pos * qv + neg * (1.0 - qv)
        p = ratio(seg(agree), seg(pos + neg))
        alpha = beta = p
    return pi, alpha, beta


def init(votes: VoteArrays, m: int, prior, delta, two_coin: bool, dtype, q_start=None, n_real=None) -> DSState:
    """Majority-vote start (crowd-kit's): q_j = fraction of "correct" votes, honeypots clamped; then M and E.

    ``q_start`` (optional): start from these line posteriors instead (a warm start, :mod:`crowdstat.online`).
    """
    n_lines = votes.line_program.shape[0]
    if q_start is None:
        pos = (votes.label > 0).astype(dtype)
        seg = partial(jax.ops.segment_sum, segment_ids=votes.line, num_segments=n_lines, indices_are_sorted=True)
        q0 = seg(pos) / jnp.maximum(seg((votes.label != 0).astype(dtype)), 1.0)
    else:
        q0 = jnp.asarray(q_start, dtype)
    t = votes.truth
    q0 = jnp.where(t > 0, 1.0, jnp.where(t < 0, 0.0, q0)).astype(dtype)
    pi, alpha, beta = m_step(votes, q0, m, two_coin, n_real)
    q, ll = e_step(votes, pi, alpha, beta, delta, n_real)
    del prior  # the first M-step sets pi (documented in the module docstring)
    return DSState(q, pi, alpha, beta, ll, jnp.asarray(jnp.inf, dtype), jnp.ones((), jnp.int32))


def update(state: DSState, votes: VoteArrays, m: int, delta, two_coin: bool, n_real=None) -> DSState:
    """One EM cycle: M-step from ``state.q``, then E-step. Pure."""
    pi, alpha, beta = m_step(votes, state.q, m, two_coin, n_real)
    q, ll = e_step(votes, pi, alpha, beta, delta, n_real)
    return DSState(q, pi, alpha, beta, ll, ll - state.log_likelihood, state.iter_num + 1)


@partial(jax.jit, static_argnames=("m", "two_coin"))
def run(votes: VoteArrays, prior, delta, maxiter, tol, q_start=None, n_real=None, *, m: int, two_coin: bool) -> DSState:
    """Jitted driver: ``init`` then ``update`` in a ``lax.while_loop`` until the relative gain < tol or maxiter.

    ``maxiter``, ``tol``, ``delta`` and ``prior`` are runtime arguments (no retrace when they change).
    """
    dtype = jnp.asarray(delta).dtype
    s0 = init(votes, m, prior, delta, two_coin, dtype, q_start, n_real)

    def cond(s):
        return (s.iter_num < maxiter) & ~(s.gain < tol * jnp.maximum(1.0, jnp.abs(s.log_likelihood)))

    return jax.lax.while_loop(cond, lambda s: update(s, votes, m, delta, two_coin, n_real), s0)


def _fit(arrays: VoteArrays, dtype, prior, delta, cfg: EMConfig, two_coin: bool) -> EstimatorFit:
    name = "em_two_coin" if two_coin else "em_one_coin"
    check_inputs(arrays, dtype, prior, delta, name)
    maxiter, tol = cfg.maxiter, cfg.tol
    m = int(np.max(np.asarray(arrays.annotator))) + 1
    votes = VoteArrays(*(jnp.asarray(x) for x in arrays))
    s = run(
        votes,
        jnp.asarray(prior, dtype),
        jnp.asarray(delta, dtype),
        jnp.asarray(maxiter, jnp.int32),
        jnp.asarray(tol, dtype),
        m=m,
        two_coin=two_coin,
    )
    alpha = np.clip(np.asarray(s.alpha, np.float64), delta, 1 - delta)
    beta = np.clip(np.asarray(s.beta, np.float64), delta, 1 - delta)
    rel = beta if not two_coin else 0.5 * (alpha + beta)
    rel_c = np.clip(rel, delta, 1 - delta)
    weight = np.log(rel_c) - np.log1p(-rel_c)
    it = int(s.iter_num)
    gain = float(s.gain)
    ll = float(s.log_likelihood)
    converged = bool(gain < tol * max(1.0, abs(ll)))
    diagnostics = {
        "model": "two-coin Dawid-Skene (EM)" if two_coin else "one-coin Dawid-Skene (EM)",
        "iterations": it,
        "log_likelihood": ll,
        "last_gain": gain if math.isfinite(gain) else None,
        "converged": converged,
        "class_prior": float(s.pi),
        "n_honeypot_lines_clamped": int(np.count_nonzero(np.asarray(arrays.truth))),
    }
    if not converged:
        import warnings

        warnings.warn(
            f"{name}: EM stopped at maxiter={maxiter} with relative log-likelihood gain {gain / max(1.0, abs(ll)):.3g} >= tol={tol}",
            stacklevel=3,
        )
    ann_cols = {"sensitivity": np.asarray(s.beta, np.float64), "specificity": np.asarray(s.alpha, np.float64)} if two_coin else {}
    return EstimatorFit(
        posterior=np.asarray(s.q),
        weight=weight.astype(np.dtype(jnp.dtype(dtype).name)),
        reliability=np.asarray(s.beta if not two_coin else 0.5 * (s.alpha + s.beta)),
        diagnostics=diagnostics,
        annotator_columns=ann_cols,
        line_columns={},
    )


def em_one_coin(arrays: VoteArrays, cfg: EMConfig | None = None, *, dtype, prior, delta) -> EstimatorFit:
    """One-coin Dawid-Skene by EM, with an estimated class prior (module docstring for the model).

    Parameters
    ----------
    arrays : VoteArrays
        Votes (numpy or JAX arrays); honeypot lines (``truth != 0``) are clamped to their truth.
    cfg : EMConfig, optional
        ``maxiter``, ``tol``: at most ``maxiter`` EM cycles; stop when the log-likelihood gain
        < tol * max(1, |L|). None: ``EMConfig()``'s defaults.
    dtype : jnp.float32 or jnp.float64
        Compute dtype (float64 needs ``jax.enable_x64``).
    prior : float in (0, 1)
        Starting value of the class prior pi (replaced by the first M-step).
    delta : float
        Probabilities are clipped to [delta, 1 - delta] before any log / logit.

    Returns
    -------
    EstimatorFit
        posterior = P(line correct | votes); reliability = p_i; weight = logit(p_i) (clipped);
        diagnostics: model, iterations, log_likelihood, last_gain, converged, class_prior.
    """
    return _fit(arrays, dtype, prior, delta, cfg or EMConfig(), two_coin=False)


def em_two_coin(arrays: VoteArrays, cfg: EMConfig | None = None, *, dtype, prior, delta) -> EstimatorFit:
    """Two-coin Dawid-Skene by EM (sensitivity beta_i, specificity alpha_i), estimated class prior.

    Parameters are those of :func:`em_one_coin`.

    Returns
    -------
    EstimatorFit
        posterior = P(line correct | votes); reliability = balanced accuracy (alpha_i + beta_i) / 2;
        weight = its logit (clipped); annotator_columns ``sensitivity`` (beta_i = P(says +1 |
        correct)) and ``specificity`` (alpha_i = P(says -1 | wrong)); diagnostics as one-coin.
    """
    return _fit(arrays, dtype, prior, delta, cfg or EMConfig(), two_coin=True)


def fit_one_coin(table, cfg: EMConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="em1")``: :func:`em_one_coin` on a :class:`~crowdstat.io.tables.VoteTable`."""
    return em_one_coin(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta))


def fit_two_coin(table, cfg: EMConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="em2")``: :func:`em_two_coin` on a :class:`~crowdstat.io.tables.VoteTable`."""
    return em_two_coin(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta))
