"""One-shot reliability estimate: L1-regularised logistic regression by proximal gradient (MATH.md).

Eq. (7) is a logistic model whose features are the votes and whose weights are the annotators'
logits. On training lines with known truth (honeypots), with E (n x m) the votes and q the soft
labels (q = (1 + t) / 2 for truths t = +-1):

    f(w, b) = sum_j [ q_j softplus(-z_j) + (1 - q_j) softplus(z_j) ] + gamma ||w||_1,   z = E w + b
    grad_w  = E^T (sigmoid(z) - q),   grad_b = sum_j (sigmoid(z_j) - q_j)
    L       = ||[E, 1]||_2^2 / 4     (the 1 column only with an intercept)

E is never formed: E w and E^T v are segment sums over the vote list. ISTA takes w <- S(w - eta
grad, eta gamma) with eta in (0, 2/L); FISTA (default) uses eta = 1/L with momentum and the
adaptive gradient restart of O'Donoghue & Candes (2015). The solver stops when the relative
duality gap of :mod:`crowdstat.estimators.l1.dual` falls below ``tol`` (checked every ``check_every`` steps).
``gamma`` and the warm start are runtime arguments, so one compiled solve vmaps over gamma grids
and replicates, and :func:`path` scans a warm-started regularisation path.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat.estimators.l1 import dual as _dual
from crowdstat._typing import VoteArrays
from crowdstat.estimators.l1.problem import soft_threshold

__all__ = [
    "L1Data",
    "ProxState",
    "training_data",
    "matvec",
    "rmatvec",
    "objective",
    "gradient",
    "gamma_max",
    "lipschitz",
    "solve",
    "path",
    "SOLVERS",
    "resolve_solver",
    "vote_pairs",
    "default_tol",
    "em_one_coin",
]


class L1Data(NamedTuple):
    """The training problem as a sparse vote list (rows = training lines)."""

    row: jax.Array  # shape=(n_votes,), int32, training row of each vote (sorted)
    annotator: jax.Array  # shape=(n_votes,), int32
    label: jax.Array  # shape=(n_votes,), float, +-1 (0 for padding)
    q: jax.Array  # shape=(n_rows,), float, soft label P(line correct) of each row
    row_mask: jax.Array  # shape=(n_rows,), bool, False for padding rows
    # shape=(2, n_pairs), int32: for every row, each unordered pair of its votes (u, v) with
    # annotator[u] < annotator[v], sorted by (annotator[u], annotator[v]). The Newton solver builds
    # the Hessian E^T D E from it with one sorted segment sum; None when there would be too many
    # pairs or too many annotators for the dense Hessian (Newton then falls back to FISTA).
    pairs: jax.Array | None = None


class ProxState(NamedTuple):
    w: jax.Array  # shape=(m,)
    b: jax.Array  # shape=(), intercept (0 and fixed without one)
    y_w: jax.Array  # shape=(m,), FISTA extrapolation point
    y_b: jax.Array  # shape=()
    t: jax.Array  # shape=(), FISTA momentum parameter
    iter_num: jax.Array  # shape=(), int32
    objective: jax.Array  # shape=(), f(w, b) at the last check
    dual_value: jax.Array  # shape=(), D at the last check
    gap: jax.Array  # shape=()
    rel_gap: jax.Array  # shape=()


def default_tol(dtype) -> float:
    """Relative duality gap at which :func:`solve` stops, by dtype (see docs/math.md)."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def training_data(votes: VoteArrays, dtype=jnp.float32, rows: np.ndarray | None = None, q: np.ndarray | None = None) -> L1Data:
    """Restrict votes to training lines (default: the honeypot lines, q from their truth)."""
    truth = np.asarray(votes.truth)
    if rows is None:
        rows = np.flatnonzero(truth != 0)
    rows = np.asarray(rows)
    if q is None:
        q = (1.0 + truth[rows]) / 2.0
    remap = np.full(truth.shape[0], -1, np.int64)
    remap[rows] = np.arange(rows.shape[0])
    line = np.asarray(votes.line)
    keep = remap[line] >= 0
    r = remap[line[keep]]
    order = np.argsort(r, kind="stable")
    r_sorted = r[order]
    return L1Data(
        row=jnp.asarray(r_sorted.astype(np.int32)),
        annotator=jnp.asarray(np.asarray(votes.annotator)[keep][order]),
        label=jnp.asarray(np.asarray(votes.label)[keep][order], dtype),
        q=jnp.asarray(q, dtype),
        row_mask=jnp.ones(rows.shape[0], bool),
        pairs=vote_pairs(r_sorted, np.asarray(votes.annotator)[keep][order], rows.shape[0]),
    )


MAX_PAIRS = 2**25  # more vote pairs than this: no ``L1Data.pairs`` (Newton's Hessian would be too big)


def vote_pairs(
    row_sorted: np.ndarray, annotator: np.ndarray, n_rows: int, max_pairs: int = MAX_PAIRS, max_annotators: int | None = None, force: bool = False
):
    """The (2, n_pairs) int32 ``L1Data.pairs`` of votes sorted by row, or None (see L1Data).

    None also when Newton will not need it (few annotators, or the native kernel is available),
    unless ``force``.
    """
    from crowdstat.estimators.l1.newton import DENSE_E_MAX, DENSE_MAX, native_available

    max_annotators = DENSE_MAX - 1 if max_annotators is None else max_annotators
    nv = row_sorted.shape[0]
    if nv == 0:
        return jnp.zeros((2, 0), jnp.int32)
    annotator = np.asarray(annotator, np.int64)
    if int(annotator.max()) + 1 > max_annotators:
        return None
    if not force and int(annotator.max()) + 2 <= DENSE_E_MAX:  # few annotators: Newton uses a dense E instead
        return None
    if not force and native_available():  # the native CD needs no Hessian
        return None
    counts = np.bincount(row_sorted, minlength=n_rows)
    if int(np.sum(counts * (counts - 1) // 2)) > max_pairs:
        return None
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(nv) - start[row_sorted]
    partners = (counts[row_sorted] - pos - 1).astype(np.int64)  # later votes of the same row
    total = int(partners.sum())
    u = np.repeat(np.arange(nv, dtype=np.int64), partners)
    first = np.cumsum(partners) - partners
    v = u + 1 + (np.arange(total, dtype=np.int64) - np.repeat(first, partners))
    swap = annotator[u] > annotator[v]
    u, v = np.where(swap, v, u), np.where(swap, u, v)
    order = np.argsort(annotator[u] * (int(annotator.max()) + 1) + annotator[v], kind="stable")
    return jnp.asarray(np.stack([u[order], v[order]]).astype(np.int32))


def matvec(w, data: L1Data):
    """E w (length n_rows)."""
    return jax.ops.segment_sum(data.label * w[data.annotator], data.row, num_segments=data.q.shape[0], indices_are_sorted=True)


def rmatvec(v, data: L1Data, m: int):
    """E^T v (length m)."""
    return jax.ops.segment_sum(data.label * v[data.row], data.annotator, num_segments=m)


def softplus(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)), stable for any z. jax.nn.softplus goes
    through logaddexp's inf/nan handling, which XLA:CPU runs about 4x slower in float64."""
    return jnp.maximum(z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


def loss_rows(z, q, mask):
    """Per-row loss q softplus(-z) + (1 - q) softplus(z), written as softplus(z) - q z (the same
    function, one log and one exp a row instead of two); 0 on masked rows."""
    return jnp.where(mask, softplus(z) - q * z, 0.0)


def _loss_rows(z, data: L1Data):
    return loss_rows(z, data.q, data.row_mask)


def objective(w, b, data: L1Data, gamma):
    """f(w, b) = sum_j loss_j((E w)_j + b) + gamma ||w||_1."""
    z = matvec(w, data) + b
    return jnp.sum(_loss_rows(z, data)) + gamma * jnp.sum(jnp.abs(w))


def gradient(w, b, data: L1Data):
    """(grad_w, grad_b) of the smooth part."""
    r = jnp.where(data.row_mask, jax.nn.sigmoid(matvec(w, data) + b) - data.q, 0.0)
    return rmatvec(r, data, w.shape[0]), jnp.sum(r)


@partial(jax.jit, static_argnames=("m", "intercept"))
def gamma_max(data: L1Data, m: int, intercept: bool = False):
    """Smallest gamma with w* = 0: ||E^T (sigmoid(b0) - q)||_inf (b0 = 0, or the optimal intercept at w = 0).

    For hard labels without intercept this is MATH.md's ||E^T t||_inf / 2.
    """
    dtype = data.q.dtype
    if intercept:
        n = jnp.sum(data.row_mask)
        qbar = jnp.sum(jnp.where(data.row_mask, data.q, 0.0)) / jnp.maximum(n, 1)
        s0 = qbar
    else:
        s0 = jnp.asarray(0.5, dtype)
    r = jnp.where(data.row_mask, s0 - data.q, 0.0)
    return jnp.max(jnp.abs(rmatvec(r, data, m)), initial=0.0)


def _b_at_zero(data: L1Data, delta=1e-6):
    n = jnp.sum(data.row_mask)
    qbar = jnp.clip(jnp.sum(jnp.where(data.row_mask, data.q, 0.0)) / jnp.maximum(n, 1), delta, 1 - delta)
    return jnp.log(qbar) - jnp.log1p(-qbar)


@partial(jax.jit, static_argnames=("m", "intercept", "iters"))
def lipschitz(data: L1Data, m: int, intercept: bool = False, iters: int = 100):
    """L = ||[E, 1]||_2^2 / 4 by power iteration on E^T E, capped by the bound ||E||_1 ||E||_inf.

    The power estimate approaches ||E||_2^2 from below; a 2% margin is added. The duality gap
    certifies the result whatever the step, so a slightly low L cannot pass silently.
    """
    dtype = data.q.dtype
    v = 1.0 + 0.01 * jnp.arange(m + 1, dtype=dtype) / (m + 1)
    if not intercept:
        v = v.at[m].set(0.0)

    def op(v):
        z = matvec(v[:m], data) + v[m]
        z = jnp.where(data.row_mask, z, 0.0)
        out_w = rmatvec(z, data, m)
        out_b = jnp.sum(z) if intercept else jnp.zeros((), dtype)
        return jnp.concatenate([out_w, out_b[None]])

    def body(_, v):
        u = op(v)
        return u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(dtype).tiny)

    v = jax.lax.fori_loop(0, iters, body, v / jnp.linalg.norm(v))
    lam = jnp.linalg.norm(op(v))
    # Rigorous cap: ||A||_2^2 <= ||A||_1 ||A||_inf (max column sum x max row sum of |A|).
    col = jax.ops.segment_sum(jnp.abs(data.label), data.annotator, num_segments=m)
    rowsum = jax.ops.segment_sum(jnp.abs(data.label), data.row, num_segments=data.q.shape[0])
    n_rows = jnp.sum(data.row_mask).astype(dtype)
    if intercept:
        col = jnp.concatenate([col, n_rows[None]])
        rowsum = rowsum + 1.0
    cap = jnp.max(col) * jnp.max(rowsum)
    return jnp.maximum(jnp.minimum(1.02 * lam, cap), jnp.finfo(dtype).tiny) / 4.0


def _certificate(w, b, data: L1Data, gamma, intercept: bool):
    z = matvec(w, data) + b
    obj = jnp.sum(_loss_rows(z, data)) + gamma * jnp.sum(jnp.abs(w))
    alpha = jnp.where(data.row_mask, jax.nn.sigmoid(z) - data.q, 0.0)
    m = w.shape[0]
    return _dual.gap(obj, alpha, data.q, lambda a: rmatvec(a, data, m), gamma, intercept, data.row_mask)


SOLVERS = ("auto", "newton", "fista")
AUTO_NEWTON_RATIO = 8  # 'auto' picks Newton only if (m + 1)^2 <= this * n_votes


def resolve_solver(solver: str, data: L1Data, m: int, accelerated: bool = True) -> str:
    """The solver :func:`solve` runs: 'newton', 'fista' or 'ista' (static, from shapes only).

    'auto' (the default) is proximal Newton when ``accelerated`` is set and Newton applies
    (:func:`crowdstat.estimators.l1.newton.hessian_mode`): always with the native CPU kernel (matrix-free
    coordinate descent, any m); with the dense Hessian (no native kernel: m + 1 <= newton.DENSE_MAX
    and ``data.pairs`` or few annotators) only if (m + 1)^2 <= AUTO_NEWTON_RATIO * n_votes (an
    iteration then costs O(m^2), a FISTA step O(n_votes)). Otherwise FISTA (ISTA when
    ``accelerated=False``). 'newton' where it does not apply is an error.
    """
    from crowdstat.estimators.l1 import newton as _newton

    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    mode = _newton.hessian_mode(data, m)
    if solver == "newton":
        if mode is None:
            raise ValueError(
                f"solver='newton' needs the native kernel (CPU), or m + 1 <= {_newton.DENSE_MAX} annotators (got m = {m}) "
                "and L1Data.pairs (built by training_data unless there are too many vote pairs); use solver='fista'"
            )
        return "newton"
    if solver == "auto" and accelerated and mode is not None and (mode == "native" or (m + 1) ** 2 <= AUTO_NEWTON_RATIO * data.label.shape[0]):
        return "newton"
    return "fista" if accelerated else "ista"


@partial(jax.jit, static_argnames=("accelerated", "intercept", "maxiter", "check_every", "solver"))
def solve(
    data: L1Data,
    gamma,
    w0,
    b0,
    stepsize,
    tol,
    *,
    accelerated: bool = True,
    intercept: bool = False,
    maxiter: int = 10000,
    check_every: int = 10,
    solver: str = "auto",
) -> ProxState:
    """Minimise f(w, b) until the relative duality gap is <= tol (or maxiter).

    Parameters
    ----------
    data : L1Data
    gamma : scalar
        L1 weight (runtime: vmappable).
    w0, b0 : warm start (b0 ignored and kept fixed at its value without intercept).
    stepsize : scalar
        eta; 1/L for FISTA, any value in (0, 2/L) for ISTA (unused by Newton).
    tol : scalar
        Relative duality gap to stop at.
    solver : {"auto", "newton", "fista"}
        "newton": proximal Newton (:mod:`crowdstat.estimators.l1.newton`; ``iter_num`` counts outer Newton
        steps); "fista": FISTA, or ISTA with ``accelerated=False``; "auto" (default): Newton when
        it applies (see :func:`resolve_solver`), else FISTA / ISTA.

    Returns
    -------
    ProxState with the solution, ``iter_num`` and the last certificate (objective, dual, gap).
    """
    return _solve(data, gamma, w0, b0, stepsize, tol, accelerated, intercept, maxiter, check_every, solver)


def _solve(data, gamma, w0, b0, stepsize, tol, accelerated, intercept, maxiter, check_every, solver, prep=None):
    dtype = w0.dtype
    gamma = jnp.asarray(gamma, dtype)
    eta = jnp.asarray(stepsize, dtype)
    m = w0.shape[0]
    b0 = jnp.asarray(b0, dtype)
    kind = resolve_solver(solver, data, m, accelerated)
    if kind == "newton":
        from crowdstat.estimators.l1 import newton as _newton

        w, b, it, info, _ = _newton.solve(data, gamma, w0, b0, jnp.asarray(tol, dtype), intercept=intercept, maxiter=maxiter, prep=prep)
        return ProxState(w, b, w, b, jnp.ones((), dtype), it, info.objective, info.dual_value, info.gap, info.rel_gap)

    def prox_step(_, c):
        w, b, yw, yb, t = c
        gw, gb = gradient(yw, yb, data)
        w_new = soft_threshold(yw - eta * gw, eta * gamma)
        b_new = yb - eta * gb if intercept else b
        if not accelerated:
            return w_new, b_new, w_new, b_new, t
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_new
        yw_new = w_new + mom * (w_new - w)
        yb_new = b_new + mom * (b_new - b)
        # Adaptive restart: drop the momentum when it points uphill.
        restart = jnp.vdot(yw - w_new, w_new - w) + (yb - b_new) * (b_new - b) > 0
        t_new = jnp.where(restart, jnp.ones_like(t), t_new)
        yw_new = jnp.where(restart, w_new, yw_new)
        yb_new = jnp.where(restart, b_new, yb_new)
        return w_new, b_new, yw_new, yb_new, t_new

    def cond(s: ProxState):
        return (s.iter_num < maxiter) & (s.rel_gap > tol)

    def body(s: ProxState):
        c = jax.lax.fori_loop(0, check_every, prox_step, (s.w, s.b, s.y_w, s.y_b, s.t))
        w, b, yw, yb, t = c
        info = _certificate(w, b, data, gamma, intercept)
        return ProxState(w, b, yw, yb, t, s.iter_num + check_every, info.objective, info.dual_value, info.gap, info.rel_gap)

    info0 = _certificate(w0, b0, data, gamma, intercept)
    s0 = ProxState(
        w0, b0, w0, b0, jnp.ones((), dtype), jnp.zeros((), jnp.int32), info0.objective, info0.dual_value, info0.gap, info0.rel_gap
    )
    return jax.lax.while_loop(cond, body, s0)


@partial(jax.jit, static_argnames=("accelerated", "intercept", "maxiter", "check_every", "solver"))
def path(data: L1Data, gammas, w0, b0, stepsize, tol, *, accelerated=True, intercept=False, maxiter=10000, check_every=10, solver="auto"):
    """Warm-started regularisation path over ``gammas`` (give them from gamma_max down).

    Returns a ProxState whose fields have a leading axis len(gammas). ``solver`` as in :func:`solve`.
    """

    prep = None
    if resolve_solver(solver, data, w0.shape[0], accelerated) == "newton":
        from crowdstat.estimators.l1 import newton as _newton

        prep = _newton.prepare(data, w0.shape[0], intercept)  # once for the whole path (CSC or pair indices)

    def step(carry, g):
        w, b = carry
        s = _solve(data, g, w, b, stepsize, tol, accelerated, intercept, maxiter, check_every, solver, prep)
        return (s.w, s.b), s

    _, states = jax.lax.scan(step, (w0, jnp.asarray(b0, w0.dtype)), gammas)
    return states


def _closed_form_one_coin(a, d, gamma, logit_cap):
    """argmin_w a softplus(-w) + d softplus(w) + gamma |w| (the single-annotator L1 logistic).

    w* = logit((a - gamma) / (a + d)) if (a - d)/2 > gamma; logit((a + gamma) / (a + d)) if
    (d - a)/2 > gamma; else 0. Clipped to |w| <= logit(1 - delta).
    """
    n = jnp.maximum(a + d, jnp.finfo(a.dtype).tiny)
    pos = (a - d) / 2 > gamma
    neg = (d - a) / 2 > gamma
    p = jnp.where(pos, (a - gamma) / n, jnp.where(neg, (a + gamma) / n, 0.5))
    p = jnp.clip(p, 0.0, 1.0)
    w = jnp.log(p) - jnp.log1p(-p)
    return jnp.clip(jnp.where(pos | neg, w, 0.0), -logit_cap, logit_cap)


@partial(jax.jit, static_argnames=("max_outer",))
def em_one_coin(votes: VoteArrays, w0, gamma, prior_logit, logit_cap, tol, max_outer: int = 100):
    """Latent-truth variant: L1-penalised one-coin EM (see docs/math.md for why not a soft-label refit).

    E-step: q_j = sigmoid(l_j) from eq. (7) with the current w (honeypot lines clamped to truth).
    M-step: per annotator, the L1-logistic regression of "agrees with the truth" on an
    intercept, with expected agreements a_i = sum_j P(vote agrees) and disagreements d_i:
    closed form (:func:`_closed_form_one_coin`). Stops when max |w_new - w| <= tol.

    Returns (w, q_line, n_iter, last_change).
    """
    dtype = w0.dtype
    m = w0.shape[0]
    truth = votes.truth
    lab = votes.label.astype(dtype)

    def estep(w):
        from crowdstat.estimators.posterior import line_logits

        q = jax.nn.sigmoid(line_logits(w, votes, prior_logit))
        return jnp.where(truth != 0, (1.0 + truth.astype(dtype)) / 2.0, q)

    def mstep(q):
        qv = q[votes.line]
        agree = jnp.where(lab > 0, qv, 1.0 - qv)
        a = jax.ops.segment_sum(agree, votes.annotator, num_segments=m)
        n = jax.ops.segment_sum(jnp.ones_like(agree), votes.annotator, num_segments=m)
        return _closed_form_one_coin(a, n - a, gamma, logit_cap)

    def cond(c):
        _, it, change = c
        return (it < max_outer) & (change > tol)

    def body(c):
        w, it, _ = c
        w_new = mstep(estep(w))
        return w_new, it + 1, jnp.max(jnp.abs(w_new - w), initial=0.0)

    w, it, change = jax.lax.while_loop(cond, body, (w0, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype)))
    return w, estep(w), it, change
