"""The one-shot L1-logistic problem on the training lines (docs/math.md, "One-shot L1-logistic").

Eq. (7) is a logistic model whose features are the votes and whose weights are the annotators'
logits. On training lines with known truth (honeypots), with E (n x m) the votes and q the soft
labels (q = (1 + t) / 2 for truths t = +-1):

    f(w, b) = sum_j [ q_j softplus(-z_j) + (1 - q_j) softplus(z_j) ] + gamma ||w||_1,   z = E w + b
    grad_w  = E^T (sigmoid(z) - q),   grad_b = sum_j (sigmoid(z_j) - q_j)
    L       = ||[E, 1]||_2^2 / 4     (the 1 column only with an intercept)

E is never formed: E w and E^T v are segment sums over the vote list (:class:`L1Data`). This
module holds the problem only; the solvers are :mod:`~crowdstat.estimators.l1.fista` and
:mod:`~crowdstat.estimators.l1.newton`, chosen by :mod:`~crowdstat.estimators.l1.solve`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays

__all__ = [
    "L1Data",
    "training_data",
    "MAX_PAIRS",
    "DENSE_MAX",
    "DENSE_E_MAX",
    "native_available",
    "vote_pairs",
    "matvec",
    "rmatvec",
    "predictor",
    "residual",
    "separable_centre",
    "pad_to_bucket",
    "with_centre",
    "softplus",
    "loss_rows",
    "objective",
    "gradient",
    "gamma_max",
    "b_at_zero",
    "lipschitz",
    "soft_threshold",
]

# Limits of proximal Newton's Hessian (:mod:`~crowdstat.estimators.l1.newton`). They live here
# because they decide whether :func:`training_data` builds ``L1Data.pairs``.
DENSE_MAX = 4096  # largest m + 1 with the dense Hessian (4097^2 float64 = 134 MB)
DENSE_E_MAX = 64  # up to this m + 1, H = E_dense^T D E_dense (a matmul) instead of the pair scatter
MAX_PAIRS = 2**25  # more vote pairs than this: no ``L1Data.pairs`` (Newton's Hessian would be too big)


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
    # shape=(n_rows,), float: a fixed part of each row's logit, E w_c for a centre w_c (the fit is
    # then of d = w - w_c, and the penalty gamma ||d||_1 shrinks w towards w_c); None = 0.
    offset: jax.Array | None = None


def native_available() -> bool:
    """Whether the native Newton CD kernels (crowdstat/_native/newton_cd.cc) are built and registered.

    Only on the CPU backend, and not with ``CROWDSTAT_NATIVE=0``; built on first use into the
    same per-user cache as the other kernels of :mod:`crowdstat._native`. With them Newton needs
    no Hessian, so :func:`training_data` skips ``L1Data.pairs``.
    """
    from crowdstat import _native  # lazy: compiles the kernels on first use

    targets = {f"crowdstat_{n.lower()}_{sfx.lower()}": f"Crowdstat{n}{sfx}" for n in ("Csc", "NewtonCd") for sfx in ("F32", "F64")}
    return _native.register("newton_cd.cc", targets, "Newton coordinate-descent")


def training_data(votes: VoteArrays, dtype=jnp.float32, rows: np.ndarray | None = None, q: np.ndarray | None = None) -> L1Data:
    """Restrict votes to training lines (default: the honeypot lines, q from their truth). No offset:
    :func:`with_centre` adds one."""
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


def vote_pairs(
    row_sorted: np.ndarray,
    annotator: np.ndarray,
    n_rows: int,
    max_pairs: int = MAX_PAIRS,
    max_annotators: int | None = None,
    force: bool = False,
):
    """The (2, n_pairs) int32 ``L1Data.pairs`` of votes sorted by row, or None (see L1Data).

    None also when Newton will not need it (few annotators, or the native kernel is available),
    unless ``force``.
    """
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


def separable_centre(data: L1Data, m: int):
    """Each annotator's own logit from its training votes alone: logit((a_i + 1) / (n_i + 2)).

    a_i is the (soft) number of training votes of annotator i that agree with the label (a vote +1
    agrees with probability q, a vote -1 with 1 - q), n_i its number of training votes: the posterior
    mean of a Beta(1, 1) reliability, the supervised one-coin estimate that treats annotators
    separately (the one-coin logit-weighted vote of shared/datasets/ANCHORS.md). 0 for annotators
    without training votes (and for padding votes, whose label is 0). Traceable (the bootstrap runs
    it under ``jax.vmap``); the data's dtype.
    """
    cast = (data.label != 0).astype(data.q.dtype)
    q = data.q[data.row]
    agree = jnp.where(data.label > 0, q, 1.0 - q) * cast
    a = jax.ops.segment_sum(agree, data.annotator, num_segments=m)
    n = jax.ops.segment_sum(cast, data.annotator, num_segments=m)
    return jnp.log1p(a) - jnp.log1p(n - a)


def pad_to_bucket(data: L1Data, m: int) -> L1Data:
    """``data`` with its rows and votes padded to the next power of two (at least 8): masked rows (q = 1/2)
    and label-0 votes on the last padded row. Problems of nearby sizes (the folds of a cross-validation)
    then share one compiled solver. Nothing changes in the solution: masked rows add nothing to the
    loss, the gradient or the certificate, and label-0 votes nothing to E w or E^T v. Not with
    ``pairs`` (returned unchanged)."""
    if data.pairs is not None:
        return data
    n_rows, n_votes = int(data.q.shape[0]), int(data.label.shape[0])
    cr, cv = (max(8, 1 << max(0, n).bit_length()) for n in (n_rows, n_votes))  # > n: room for the padding row

    def pad(x, n, fill):
        return jnp.concatenate([x, jnp.full((n - x.shape[0],), fill, x.dtype)])

    out = data._replace(
        row=pad(data.row, cv, cr - 1),
        annotator=pad(data.annotator, cv, m - 1),
        label=pad(data.label, cv, 0),
        q=pad(data.q, cr, 0.5),
        row_mask=pad(data.row_mask, cr, False),
    )
    return out if data.offset is None else out._replace(offset=pad(data.offset, cr, 0))


def with_centre(data: L1Data, centre) -> L1Data:
    """``data`` with offset E centre: the problem in d = w - centre."""
    centre = jnp.asarray(centre, data.q.dtype)
    return data._replace(offset=jnp.where(data.row_mask, matvec(centre, data), 0.0))


def predictor(w, b, data: L1Data):
    """z = E w + b (+ the offset, when there is one)."""
    z = matvec(w, data) + b
    return z if data.offset is None else z + data.offset


def matvec(w, data: L1Data):
    """E w (length n_rows)."""
    return jax.ops.segment_sum(data.label * w[data.annotator], data.row, num_segments=data.q.shape[0], indices_are_sorted=True)


def rmatvec(v, data: L1Data, m: int):
    """E^T v (length m)."""
    return jax.ops.segment_sum(data.label * v[data.row], data.annotator, num_segments=m)


def softplus(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)), stable for any z.

    Written out because ``jax.nn.softplus`` goes through logaddexp's inf/nan handling, which is
    slower on XLA:CPU in float64.
    """
    return jnp.maximum(z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


def loss_rows(z, q, mask):
    """Per-row loss q softplus(-z) + (1 - q) softplus(z), written as log1p(exp(-|z|)) + q max(-z, 0)
    + (1 - q) max(z, 0) (the same function, one log and one exp a row instead of two, and no
    cancellation: softplus(z) - q z loses every digit of a loss near 0 when q = 1 and z is large,
    where the centred fit's rows live); 0 on masked rows."""
    return jnp.where(mask, jnp.log1p(jnp.exp(-jnp.abs(z))) + q * jnp.maximum(-z, 0.0) + (1.0 - q) * jnp.maximum(z, 0.0), 0.0)


def residual(z, q):
    """sigmoid(z) - q, written as (1 - q) sigmoid(z) - q sigmoid(-z): exact for hard labels, where
    sigmoid(z) - 1 would round to 0 in float32 once z > 17."""
    return (1.0 - q) * jax.nn.sigmoid(z) - q * jax.nn.sigmoid(-z)


def objective(w, b, data: L1Data, gamma):
    """f(w, b) = sum_j loss_j((E w)_j + b + offset_j) + gamma ||w||_1."""
    z = predictor(w, b, data)
    return jnp.sum(loss_rows(z, data.q, data.row_mask)) + gamma * jnp.sum(jnp.abs(w))


def gradient(w, b, data: L1Data):
    """(grad_w, grad_b) of the smooth part."""
    r = jnp.where(data.row_mask, residual(predictor(w, b, data), data.q), 0.0)
    return rmatvec(r, data, w.shape[0]), jnp.sum(r)


@partial(jax.jit, static_argnames=("m", "intercept"))
def gamma_max(data: L1Data, m: int, intercept: bool = False):
    """Smallest gamma with w* = 0: ||E^T (sigmoid(b0 + offset) - q)||_inf (b0 = 0, or the optimal intercept at w = 0).

    For hard labels without intercept and offset this is ||E^T t||_inf / 2 (docs/math.md, "gamma_max").
    """
    if intercept and data.offset is None:
        n = jnp.sum(data.row_mask)
        qbar = jnp.sum(jnp.where(data.row_mask, data.q, 0.0)) / jnp.maximum(n, 1)
        r = qbar - data.q
    else:
        z0 = jnp.zeros_like(data.q) if data.offset is None else data.offset
        r = residual(z0 + b_at_zero(data) if intercept else z0, data.q)
    r = jnp.where(data.row_mask, r, 0.0)
    return jnp.max(jnp.abs(rmatvec(r, data, m)), initial=0.0)


def b_at_zero(data: L1Data, delta=1e-6):
    """The optimal intercept at w = 0: logit(mean q), the mean clipped to [delta, 1 - delta].

    With an offset, the root of sum_j (sigmoid(b + offset_j) - q_j) = 0 by 60 safeguarded Newton
    steps from logit(mean q) (the loss is convex in b; steps are clipped to +-5). The warm start of
    the intercept (and the b0 of :func:`gamma_max` with an intercept).
    """
    n = jnp.sum(data.row_mask)
    qbar = jnp.clip(jnp.sum(jnp.where(data.row_mask, data.q, 0.0)) / jnp.maximum(n, 1), delta, 1 - delta)
    b0 = jnp.log(qbar) - jnp.log1p(-qbar)
    if data.offset is None:
        return b0
    lim = jnp.log1p(-delta) - jnp.log(delta)

    def newton(_, b):
        s = jax.nn.sigmoid(b + data.offset)
        g = jnp.sum(jnp.where(data.row_mask, residual(b + data.offset, data.q), 0.0))
        h = jnp.sum(jnp.where(data.row_mask, s * (1.0 - s), 0.0))
        return jnp.clip(b - jnp.clip(g / jnp.maximum(h, jnp.finfo(b.dtype).tiny), -5.0, 5.0), -lim - 50.0, lim + 50.0)

    return jax.lax.fori_loop(0, 60, newton, b0)


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


def soft_threshold(x, thresh):
    """S_t(x) = sign(x) * max(|x| - t, 0): the prox of t * ||.||_1."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - thresh, 0.0)
