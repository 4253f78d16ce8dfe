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
compared with the previous one; EM stops when the gain L_new - L_old <= tol * max(1, |L_new|)
(a *relative* gain, so that the rule means the same on 100 and on 100,000 lines and in
float32), or after ``maxiter`` cycles. ``converged`` is False when maxiter was reached.

``tol = 0`` asks for the fixed point, and the gain alone cannot give it: L is quadratic at its
maximum, so a gain at float noise (eps |L|) leaves the parameters O(sqrt(eps / (1 - rate)))
away, where EM's rate (the spectral radius of its Jacobian, 1 - the smallest eigenvalue of
I_c^-1 I_obs, complete and observed information) is 0.9-0.99 on ordinary two-coin crowds: two runs
from different starts (a warm start and a refit) then stop ~1e-6 apart in the posteriors, on a
likelihood that is not flat (tests/crowdstat/test_online.py). So with ``tol = 0`` the fits
(``run(..., polish=True)``), once EM has stopped by its rule or with a gain at float noise
(<= 64 eps max(1, |L|)), **polish** the parameters by Newton steps on L over the free ones (strictly
inside (delta, 1 - delta) and informed by some vote; the others stay where EM put them). The
derivatives are closed form (Louis' identity): grad L = sum_j E[s_j | votes_j] and
I_obs = I_c - sum_j q_j (1 - q_j) d_j d_j', with s_j the complete-data score of line j,
d_j = s_j(y = +1) - s_j(y = -1) and I_c diagonal. Each step solves I_obs x = grad L by conjugate
gradients preconditioned by I_c (Hessian-vector products are two segment sums) and is kept only
when L does not drop below float noise and the gradient norm falls (at most ``NEWTON_STEPS``
steps). The gradient is exact to float rounding, so the polished point is the maximum to ~eps,
the same from any start in its basin. The state reports ``grad_norm`` = sqrt(g' I_c^-1 g) over the
free parameters (diagnostics ``gradient_norm``; None where there was no polish) and ``newton_steps``.

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

__all__ = [
    "DSState",
    "NEWTON_STEPS",
    "init",
    "update",
    "e_step",
    "m_step",
    "log_likelihood",
    "newton_polish",
    "run",
    "em_one_coin",
    "em_two_coin",
    "fit_one_coin",
    "fit_two_coin",
]

#: at most this many Newton steps polish a ``tol = 0`` fit (module docstring); two or three are kept in practice
NEWTON_STEPS = 6
_CG_MAXITER = 200  # conjugate-gradient iterations per Newton step, at most (and at most twice the parameter count)


class DSState(NamedTuple):
    """EM state: parameters, the E-step they produced, and progress."""

    q: jax.Array  # shape=(n_lines,), P(line correct | votes) from the current parameters
    pi: jax.Array  # shape=(), class prior P(correct)
    alpha: jax.Array  # shape=(m,), specificity P(says wrong | wrong)  (one-coin: = p)
    beta: jax.Array  # shape=(m,), sensitivity P(says correct | correct) (one-coin: = p)
    log_likelihood: jax.Array  # shape=(), observed-data log-likelihood at (pi, alpha, beta)
    gain: jax.Array  # shape=(), log-likelihood gain of the last cycle (inf before the first)
    iter_num: jax.Array  # shape=(), int32, completed (M, E) cycles
    grad_norm: jax.Array  # shape=(), sqrt(g' I_c^-1 g) over the free parameters after the polish (nan: no polish)
    newton_steps: jax.Array  # shape=(), int32, Newton steps kept by the tol = 0 polish


def _log_clip(x, delta):
    x = jnp.clip(x, delta, 1.0 - delta)
    return jnp.log(x), jnp.log1p(-x)


def _real(n_lines: int, n_real):
    """Mask of the real lines: all (None), or the first ``n_real`` (the padded arrays of :mod:`crowdstat.online`)."""
    return None if n_real is None else jnp.arange(n_lines) < n_real


def _line_logs(votes: VoteArrays, pi, alpha, beta, delta):
    """lc_j = log p(votes_j, y_j = +1) and lw_j = log p(votes_j, y_j = -1) (module docstring)."""
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
    return lpi + seg(c_correct), l1pi + seg(c_wrong)


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
    lc, lw = _line_logs(votes, pi, alpha, beta, delta)
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
    nan, zero = jnp.asarray(jnp.nan, dtype), jnp.zeros((), jnp.int32)
    return DSState(q, pi, alpha, beta, ll, jnp.asarray(jnp.inf, dtype), jnp.ones((), jnp.int32), nan, zero)


def update(state: DSState, votes: VoteArrays, m: int, delta, two_coin: bool, n_real=None) -> DSState:
    """One EM cycle: M-step from ``state.q``, then E-step. Pure."""
    pi, alpha, beta = m_step(votes, state.q, m, two_coin, n_real)
    q, ll = e_step(votes, pi, alpha, beta, delta, n_real)
    gain = ll - state.log_likelihood
    return state._replace(q=q, pi=pi, alpha=alpha, beta=beta, log_likelihood=ll, gain=gain, iter_num=state.iter_num + 1)


# -- the tol = 0 polish: Newton steps on the log-likelihood (module docstring) -------------------------------------


def _pack(pi, alpha, beta, two_coin: bool):
    """theta = (pi, alpha, beta) (two-coin) or (pi, p) (one-coin)."""
    return jnp.concatenate([pi[None], alpha, beta]) if two_coin else jnp.concatenate([pi[None], beta])


def _unpack(theta, m: int, two_coin: bool):
    if two_coin:
        return theta[0], theta[1 : 1 + m], theta[1 + m :]
    return theta[0], theta[1:], theta[1:]


def log_likelihood(theta, votes: VoteArrays, m: int, delta, two_coin: bool, n_real=None):
    """The observed-data log-likelihood L at theta = (pi, alpha, beta) (two-coin) or (pi, p) (one-coin)."""
    pi, alpha, beta = _unpack(theta, m, two_coin)
    return e_step(votes, pi, alpha, beta, delta, n_real)[1]


class _Derivatives(NamedTuple):
    """L, its gradient and what its Hessian-vector products need, at one theta (closed form, module docstring)."""

    log_likelihood: jax.Array  # shape=()
    grad: jax.Array  # shape=(p,), dL/dtheta
    info: jax.Array  # shape=(p,), diagonal complete-data information I_c (at the E-step's q)
    d_pi: jax.Array  # shape=(), d_j's pi component (the same for every line)
    d_vote: jax.Array  # shape=(n_votes, 2), d_j's components per vote: (on the vote's alpha or p, on its beta)
    weight: jax.Array  # shape=(n_lines,), q_j (1 - q_j) on real lines without truth, else 0


def _derivatives(theta, votes: VoteArrays, m: int, delta, two_coin: bool, n_real=None) -> _Derivatives:
    """The derivatives of L by Louis' identity: grad L = sum_j E[s_j | votes_j] and
    -hess L = I_c - sum_j q_j (1 - q_j) d_j d_j', where s_j = q_j s_j(+1) + (1 - q_j) s_j(-1) is the complete-data
    score of line j, d_j = s_j(+1) - s_j(-1) and I_c = E[-hess of the complete log-likelihood] is diagonal.
    Exact where the parameters are inside (delta, 1 - delta) (the clip is the identity there); segment sums only."""
    pi, alpha, beta = _unpack(theta, m, two_coin)
    q, ll = e_step(votes, pi, alpha, beta, delta, n_real)
    dtype = q.dtype
    n_lines = q.shape[0]
    real = jnp.ones(n_lines, dtype) if n_real is None else (jnp.arange(n_lines) < n_real).astype(dtype)
    pos = (votes.label > 0).astype(dtype)
    neg = (votes.label < 0).astype(dtype)  # label 0 (an empty slot): neither, no term
    qv = q[votes.line]
    clip = partial(jnp.clip, min=delta, max=1.0 - delta)
    p, a, b = clip(pi), clip(alpha)[votes.annotator], clip(beta)[votes.annotator]
    s_pos = pos / b - neg / (1.0 - b)  # d/d beta of log p(vote | correct)   (one-coin: d/dp)
    s_neg = neg / a - pos / (1.0 - a)  # d/d alpha of log p(vote | wrong)    (one-coin: d/dp)
    i_pos = pos / b**2 + neg / (1.0 - b) ** 2
    i_neg = neg / a**2 + pos / (1.0 - a) ** 2
    g_pi = jnp.sum(real * (q / p - (1.0 - q) / (1.0 - p)))
    i_pi = jnp.sum(real * (q / p**2 + (1.0 - q) / (1.0 - p) ** 2))
    # one segment sum for all four per-annotator sums: (gradient, information) x (alpha, beta)
    cols = jnp.stack([(1.0 - qv) * s_neg, qv * s_pos, (1.0 - qv) * i_neg, qv * i_pos], axis=1)
    per_ann = jax.ops.segment_sum(cols, votes.annotator, num_segments=m)
    if two_coin:
        grad = jnp.concatenate([g_pi[None], per_ann[:, 0], per_ann[:, 1]])
        info = jnp.concatenate([i_pi[None], per_ann[:, 2], per_ann[:, 3]])
        d_vote = jnp.stack([-s_neg, s_pos], axis=1)
    else:
        grad = jnp.concatenate([g_pi[None], per_ann[:, 0] + per_ann[:, 1]])
        info = jnp.concatenate([i_pi[None], per_ann[:, 2] + per_ann[:, 3]])
        d_vote = jnp.stack([s_pos - s_neg, jnp.zeros_like(s_pos)], axis=1)
    weight = real * jnp.where(votes.truth != 0, 0.0, q * (1.0 - q)).astype(dtype)
    return _Derivatives(ll, grad, info, 1.0 / p + 1.0 / (1.0 - p), d_vote, weight)


def _information_times(d: _Derivatives, v, votes: VoteArrays, m: int, two_coin: bool):
    """(-hess L) v = I_c v - sum_j weight_j d_j (d_j' v) (:func:`_derivatives`)."""
    n_lines = d.weight.shape[0]
    v_a, v_b = (v[1 : 1 + m], v[1 + m :]) if two_coin else (v[1:], jnp.zeros_like(v[1:]))
    per_vote = d.d_vote[:, 0] * v_a[votes.annotator] + d.d_vote[:, 1] * v_b[votes.annotator]
    u = d.weight * (d.d_pi * v[0] + jax.ops.segment_sum(per_vote, votes.line, num_segments=n_lines, indices_are_sorted=True))
    per_ann = jax.ops.segment_sum(u[votes.line][:, None] * d.d_vote, votes.annotator, num_segments=m)
    back = [(d.d_pi * jnp.sum(u))[None], per_ann[:, 0]]
    if two_coin:
        back.append(per_ann[:, 1])
    return d.info * v - jnp.concatenate(back)


def _newton_direction(grad, info, free, hvp, maxiter: int):
    """Preconditioned (by I_c) conjugate gradients for I_observed x = grad over the free parameters.

    Returns (x, ok): ok is False when a direction of non-positive curvature showed up (not a maximum there).
    """
    eps = jnp.finfo(grad.dtype).eps
    inv = jnp.where(free, 1.0 / jnp.where(free, info, 1.0), 0.0)
    r = grad
    z = inv * r
    rz0 = jnp.vdot(r, z)
    stop = jnp.sqrt(eps * rz0)  # a relative residual of sqrt(eps): Newton then still converges quadratically

    def cond(c):
        k, _, _, _, rz, ok = c
        return (k < maxiter) & ok & (jnp.sqrt(rz) > stop)

    def body(c):
        k, x, r, p, rz, _ = c
        ap = hvp(p)
        pap = jnp.vdot(p, ap)
        ok = pap > 0
        step = jnp.where(ok, rz / jnp.where(ok, pap, 1.0), 0.0)
        x, r = x + step * p, r - step * ap
        z = inv * r
        rz_new = jnp.vdot(r, z)
        return k + 1, x, r, z + (rz_new / jnp.where(rz > 0, rz, 1.0)) * p, rz_new, ok

    c = (jnp.zeros((), jnp.int32), jnp.zeros_like(grad), r, z, rz0, jnp.isfinite(rz0))
    _, x, _, _, _, ok = jax.lax.while_loop(cond, body, c)
    return x, ok


def newton_polish(state: DSState, votes: VoteArrays, m: int, delta, two_coin: bool, n_real=None, max_steps=NEWTON_STEPS) -> DSState:
    """Newton steps on L from the EM point ``state`` (module docstring), and its ``grad_norm``. Pure.

    The parameters that are not free (at a clip bound, or uninformed: an annotator without votes,
    padding) stay as EM left them.
    """
    dtype = state.q.dtype
    theta0 = _pack(state.pi, state.alpha, state.beta, two_coin)
    derive = partial(_derivatives, votes=votes, m=m, delta=delta, two_coin=two_coin, n_real=n_real)
    d0 = derive(theta0)
    free = (d0.info > 0) & jnp.isfinite(d0.info) & (theta0 > delta) & (theta0 < 1.0 - delta)
    fm = free.astype(dtype)

    def norm(d):
        return jnp.sqrt(jnp.sum(jnp.where(free, d.grad**2 / jnp.where(free, d.info, 1.0), 0.0)))

    slack = 64 * jnp.finfo(dtype).eps * jnp.maximum(1.0, jnp.abs(d0.log_likelihood))  # float noise of L
    cg_maxiter = min(2 * int(theta0.shape[0]), _CG_MAXITER)

    def cond(c):
        return c[3] & (c[2] < max_steps)

    def body(c):
        theta, d, steps, _ = c
        x, ok = _newton_direction(d.grad * fm, d.info, free, lambda v: _information_times(d, v * fm, votes, m, two_coin) * fm, cg_maxiter)
        new = theta + x * fm
        inside = jnp.all(~free | ((new > delta) & (new < 1.0 - delta)))
        d_new = derive(new)
        gn, gn_new = norm(d), norm(d_new)
        keep = ok & inside & jnp.isfinite(d_new.log_likelihood) & (d_new.log_likelihood >= d.log_likelihood - slack) & (gn_new < gn)
        theta, d = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (new, d_new), (theta, d))
        return theta, d, steps + keep.astype(jnp.int32), keep & (gn_new < 0.5 * gn)  # on while the decrease is Newton's, not noise

    go = (norm(d0) > 0) & jnp.any(free)
    theta, d, steps, _ = jax.lax.while_loop(cond, body, (theta0, d0, jnp.zeros((), jnp.int32), go))
    pi, alpha, beta = _unpack(theta, m, two_coin)
    q, ll = e_step(votes, pi, alpha, beta, delta, n_real)
    moved = steps > 0
    return state._replace(
        q=jnp.where(moved, q, state.q),
        pi=pi,
        alpha=alpha,
        beta=beta,
        log_likelihood=jnp.where(moved, ll, state.log_likelihood),
        grad_norm=norm(d),
        newton_steps=steps,
    )


@partial(jax.jit, static_argnames=("m", "two_coin", "polish"))
def run(
    votes: VoteArrays, prior, delta, maxiter, tol, q_start=None, n_real=None, *, m: int, two_coin: bool, polish: bool = False
) -> DSState:
    """Jitted driver: ``init`` then ``update`` in a ``lax.while_loop`` until the relative gain <= tol or maxiter.

    ``polish`` (static; the fits pass ``tol == 0``): then Newton steps on L (:func:`newton_polish`) when EM stopped by
    its rule or with a gain at float noise, not at ``maxiter`` while still climbing. ``maxiter``, ``tol``,
    ``delta`` and ``prior`` are runtime arguments (no retrace when they change).
    """
    dtype = jnp.asarray(delta).dtype
    s0 = init(votes, m, prior, delta, two_coin, dtype, q_start, n_real)

    def cond(s):
        return (s.iter_num < maxiter) & ~(s.gain <= tol * jnp.maximum(1.0, jnp.abs(s.log_likelihood)))

    s = jax.lax.while_loop(cond, lambda s: update(s, votes, m, delta, two_coin, n_real), s0)
    if not polish:
        return s
    scale = jnp.maximum(1.0, jnp.abs(s.log_likelihood))
    done = (s.gain <= tol * scale) | (s.gain <= 64 * jnp.finfo(dtype).eps * scale)
    # a cond, not a mask: at maxiter (EM still climbing) the polish costs nothing (grad_norm stays nan)
    return jax.lax.cond(done, lambda s: newton_polish(s, votes, m, delta, two_coin, n_real), lambda s: s, s)


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
        polish=tol == 0,
    )
    alpha = np.clip(np.asarray(s.alpha, np.float64), delta, 1 - delta)
    beta = np.clip(np.asarray(s.beta, np.float64), delta, 1 - delta)
    rel = beta if not two_coin else 0.5 * (alpha + beta)
    rel_c = np.clip(rel, delta, 1 - delta)
    weight = np.log(rel_c) - np.log1p(-rel_c)
    it = int(s.iter_num)
    gain = float(s.gain)
    ll = float(s.log_likelihood)
    converged = bool(gain <= tol * max(1.0, abs(ll)))
    grad_norm = float(s.grad_norm)
    diagnostics = {
        "model": "two-coin Dawid-Skene (EM)" if two_coin else "one-coin Dawid-Skene (EM)",
        "iterations": it,
        "log_likelihood": ll,
        "last_gain": gain if math.isfinite(gain) else None,
        "converged": converged,
        "class_prior": float(s.pi),
        "gradient_norm": grad_norm if math.isfinite(grad_norm) else None,
        "newton_steps": int(s.newton_steps),
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
