"""Proximal Newton (newGLMNET-style) for the L1-logistic of :mod:`crowdstat.estimators.l1.problem` (docs/math.md).

Outer iteration k at (w, b), z = E w + b, s = sigmoid(z), alpha = s - q (masked rows 0):

    g = [E, 1]^T alpha,   H = [E, 1]^T diag(s (1 - s)) [E, 1]        (coordinate m is the intercept)
    d = argmin_d  g^T d + 1/2 d^T H d + gamma ||w + d_w||_1          (cyclic coordinate descent)
    (w, b) <- (w, b) + a d,   a = 2^-l the first with  f(new) <= f(old) + sigma a Delta,
    Delta = g^T d + gamma (||w + d_w||_1 - ||w||_1)  (< 0 unless d = 0)

stopping on the relative duality gap of :mod:`crowdstat.estimators.l1.dual`, exactly as the FISTA solver. The
coordinate descent (CD) runs on the working set {i : w_i != 0 or |g_i| > gamma} (plus the
intercept). Three ways to run it, chosen from static information (:func:`hessian_mode`):

- 'dense_e' (m + 1 <= 64): E dense, H = E^T D E a matmul, CD in a jitted loop over H's rows;
- 'native' (the CPU default): liblinear's matrix-free column-wise CD as a C++ kernel called
  through the XLA FFI (``crowdstat/_native/newton_cd.cc``), any m; H is never formed;
- 'pairs' (no native kernel, m + 1 <= DENSE_MAX): the dense (m + 1)^2 Hessian in float32 from one
  sorted segment sum over the pairs of votes of each row (``L1Data.pairs``), CD in a jitted loop.

Everything else (gradient, line search, certificate) is jitted XLA with static shapes inside one
``while_loop``: no host round trips. Without the native kernel and above DENSE_MAX annotators
:func:`crowdstat.estimators.l1.solve.solve` falls back to FISTA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crowdstat.estimators.l1 import dual as _dual
from crowdstat.estimators.l1.problem import (
    DENSE_E_MAX,
    DENSE_MAX,
    loss_rows,
    matvec,
    native_available,
    predictor,
    residual,
    rmatvec,
    soft_threshold,
)

__all__ = ["DENSE_MAX", "DENSE_E_MAX", "HESSIAN_DTYPE", "hessian_mode", "native_available", "prepare", "hessian", "solve"]

#: floor of the IRLS weights sigmoid(z)(1 - sigmoid(z)) in the Hessian, as glmnet floors them at 1e-5: an
#: annotator whose votes all sit on rows predicted almost surely (the centred fit's, |z| ~ 20-30) would give
#: the CD a diagonal of ~1e-12 and a step of -g / 1e-12. A safeguard: on the one flat valley measured
#: (bluebirds, docs/math.md) it changed nothing; the stall rule below is what ends that solve. Only the
#: direction changes; the line search and the duality gap still decide.
_DW_FLOOR = 1e-5

_DENSE_E_CELLS = 2**25  # 'dense_e' only if n_rows x (m + 1) stays below this
_SIGMA = 0.01  # Armijo constant of the line search
# H is built and stored in float32 whatever the data's dtype: it only shapes the step (the model
# gradient G, the line search and the certificate stay in the data's dtype), and half the bytes
# make the Hessian build and the O(m)-per-coordinate row reads of the CD faster.
HESSIAN_DTYPE = jnp.float32
_MAX_HALVINGS = 40
_STALL_ITERS = 50  # Newton steps that do not halve the relative gap: the solve gives up (a flat valley)


def hessian_mode(data, m: int, native: bool | None = None) -> str | None:
    """'native', 'dense_e', 'pairs' or None (Newton not applicable), from static information only.

    'dense_e' for few annotators (m + 1 <= DENSE_E_MAX: H = E^T D E as a matmul); else 'native'
    (the CPU default when the kernel builds: matrix-free column-wise CD in C++, any m); else the
    dense Hessian from the vote pairs ('pairs', m + 1 <= DENSE_MAX and L1Data.pairs).
    """
    j1 = m + 1
    n = data.q.shape[0]
    if j1 <= DENSE_E_MAX and n * j1 <= _DENSE_E_CELLS:
        return "dense_e"
    if native is None:
        native = native_available()
    if native:
        return "native"
    pairs = getattr(data, "pairs", None)
    if j1 > DENSE_MAX:
        return None
    if pairs is None and n * j1 <= _DENSE_E_CELLS:
        return "dense_e"
    return "pairs" if pairs is not None else None


def _suffix(dtype) -> str:
    d = jnp.dtype(dtype)
    if d == jnp.float32:
        return "f32"
    if d == jnp.float64:
        return "f64"
    raise TypeError(f"the native Newton kernels take float32 or float64, got {d}")


def prepare(data, m: int, intercept: bool, native: bool | None = None):
    """The loop-invariant part of the Hessian (index arithmetic on the pair list, or the dense E).

    Computed once per solve, or once per path (:func:`crowdstat.estimators.l1.solve.path` passes it
    to every gamma's solve), outside the Newton loop.
    """
    mode = hessian_mode(data, m, native)
    dtype = data.q.dtype
    j1 = m + 1
    if mode == "native":
        nv = data.label.shape[0]
        out = (jax.ShapeDtypeStruct((m + 1,), jnp.int32), jax.ShapeDtypeStruct((nv,), jnp.int32), jax.ShapeDtypeStruct((nv,), dtype))
        col_ptr, crow, cval = jax.ffi.ffi_call(f"crowdstat_csc_{_suffix(dtype)}", out, vmap_method="sequential")(
            data.row.astype(jnp.int32), data.annotator.astype(jnp.int32), data.label.astype(dtype)
        )
        return {"col_ptr": col_ptr, "crow": crow, "cval": cval}
    if mode == "dense_e":
        e = jnp.zeros((data.q.shape[0], j1), dtype).at[data.row, data.annotator].add(data.label)
        if intercept:
            e = e.at[:, m].set(1.0)
        return {"e": e.astype(HESSIAN_DTYPE)}
    if mode == "pairs":
        u, v = data.pairs[0], data.pairs[1]
        return {
            "seg": data.annotator[u] * j1 + data.annotator[v],  # sorted: the pairs are sorted by annotators
            "prow": data.row[u],
            "sign": (data.label[u] * data.label[v]).astype(HESSIAN_DTYPE),
        }
    raise ValueError(f"newton: needs m + 1 <= {DENSE_MAX} and L1Data.pairs (use crowdstat.estimators.l1.problem.training_data)")


def hessian(prep, data, m: int, intercept: bool, dw):
    """H = [E, 1]^T diag(dw) [E, 1], (m + 1) x (m + 1), in HESSIAN_DTYPE (the 1 column only with an intercept)."""
    j1 = m + 1
    dw = dw.astype(HESSIAN_DTYPE)
    if "e" in prep:
        e = prep["e"]
        return (e * dw[:, None]).T @ e
    # Off-diagonal: each unordered pair of a row's votes once, in the upper triangle (U); the
    # annotators of a row are distinct, so H = U + U^T + diag.
    up = jax.ops.segment_sum(dw[prep["prow"]] * prep["sign"], prep["seg"], num_segments=j1 * j1, indices_are_sorted=True).reshape(j1, j1)
    dr = dw[data.row]
    lab = data.label.astype(HESSIAN_DTYPE)
    diag = jax.ops.segment_sum(dr * lab * lab, data.annotator, num_segments=j1)
    h = up + up.T + jnp.diag(diag)
    if intercept:
        col = jax.ops.segment_sum(dr * lab, data.annotator, num_segments=j1)
        col = col.at[m].set(jnp.sum(dw))
        h = h.at[:, m].set(col).at[m, :].set(col)
    return h


_UNROLL = 4
_KAPPA_SCALE, _KAPPA_MIN, _KAPPA_MAX = 1.0, 1e-3, 0.1


def _cd(h, g, x, pen, active, max_sweeps: int, inner_tol):
    """Cyclic CD on  g^T d + 1/2 d^T H d + sum_i pen_i |x_i + d_i|  over the active coordinates.

    The model gradient G = g + H d is kept up to date (one row of H a coordinate). Coordinates are
    visited in blocks of _UNROLL (the padding entries past the active count do nothing).
    """
    dtype = g.dtype
    j1 = g.shape[0]
    idx = jnp.nonzero(active, size=j1 + _UNROLL, fill_value=0)[0]
    n_act = jnp.sum(active).astype(jnp.int32)
    n_blocks = (n_act + _UNROLL - 1) // _UNROLL
    hd = jnp.diagonal(h).astype(dtype) + 1e-12

    def block(kb, c):
        d, gm, chg = c
        for r in range(_UNROLL):
            k = kb * _UNROLL + r
            i = idx[k]
            u = x[i] + d[i]
            hii = hd[i]
            znew = soft_threshold(u - gm[i] / hii, pen[i] / hii)
            delta = jnp.where(k < n_act, znew - u, 0.0)
            d = d.at[i].add(delta)
            gm = gm + delta * jax.lax.dynamic_index_in_dim(h, i, keepdims=False).astype(dtype)
            chg = jnp.maximum(chg, jnp.abs(delta))
        return d, gm, chg

    def sweep_cond(c):
        _, _, sw, chg, first = c
        return (sw < max_sweeps) & ((sw == 0) | (chg > inner_tol * first))

    def sweep(c):
        d, gm, sw, _, first = c
        d, gm, chg = jax.lax.fori_loop(0, n_blocks, block, (d, gm, jnp.zeros((), dtype)))
        first = jnp.where(sw == 0, chg, first)
        return d, gm, sw + 1, chg, first

    d0 = jnp.zeros(j1, dtype)
    d, _, sw, _, _ = jax.lax.while_loop(sweep_cond, sweep, (d0, g, jnp.zeros((), jnp.int32), jnp.zeros((), dtype), jnp.zeros((), dtype)))
    return d, sw


def _direction(prep, data, m: int, intercept: bool, dw, g, x, pen, active, kappa, max_sweeps: int, n_rows: int):
    """The Newton direction d (length m + 1, the intercept last), E d_w + d_b and the CD sweeps taken."""
    dtype = g.dtype
    if "col_ptr" in prep:  # native: matrix-free column-wise CD, returns A d too
        out = (jax.ShapeDtypeStruct((m + 1,), dtype), jax.ShapeDtypeStruct((n_rows,), dtype), jax.ShapeDtypeStruct((1,), jnp.int32))
        params = jnp.stack([kappa.astype(dtype), jnp.asarray(max_sweeps, dtype)])
        d, ed, sw = jax.ffi.ffi_call(f"crowdstat_newtoncd_{_suffix(dtype)}", out, vmap_method="sequential")(
            prep["col_ptr"], prep["crow"], prep["cval"], dw, g, x, pen, active.astype(jnp.int8), params
        )
        return d, ed, sw[0]
    h = hessian(prep, data, m, intercept, dw)
    d, sw = _cd(h, g, x, pen, active, max_sweeps, kappa)
    db = d[m] if intercept else jnp.zeros((), dtype)
    return d, matvec(d[:m], data) + db, sw


def _accept(a, ch, decrease, noise):
    """Armijo; or, at a full step whose predicted decrease is below rounding, no increase beyond
    rounding (there the Armijo test only compares noise)."""
    return (ch <= _SIGMA * a * decrease) | ((a == 1.0) & (-decrease <= noise) & (ch <= noise))


def _line_search(z, ed, w, dw_, loss0, q, mask, gamma, decrease, noise):
    """Halve a from 1 until :func:`_accept` (at most _MAX_HALVINGS times): (a, f change, row losses at a).

    The change of f is taken term by term (not as a difference of large sums), so that steps near
    the optimum, where the decrease is ~1e-12 of f, are still measured correctly.
    """

    def change(a):
        rows = loss_rows(z + a * ed, q, mask)
        return jnp.sum(rows - loss0) + gamma * jnp.sum(jnp.abs(w + a * dw_) - jnp.abs(w)), rows

    def ls_cond(lc):
        a, ch, _, k = lc
        return (k < _MAX_HALVINGS) & ~_accept(a, ch, decrease, noise)

    def ls_body(lc):
        a, _, _, k = lc
        a = 0.5 * a
        return (a, *change(a), k + 1)

    one = jnp.ones((), w.dtype)
    a, ch, rows_a, _ = jax.lax.while_loop(ls_cond, ls_body, (one, *change(one), jnp.zeros((), jnp.int32)))
    return a, ch, rows_a


def solve(data, gamma, w0, b0, tol, *, intercept: bool, maxiter: int, max_sweeps: int = 50, inner_tol=None, prep=None, native=None):
    """Proximal Newton. Returns (w, b, outer iterations, DualInfo, total CD sweeps).

    Call it through :func:`crowdstat.estimators.l1.solve.solve` (``solver="newton"``). The inner CD
    stops when a sweep moves no coordinate by more than ``inner_tol`` times the first sweep's
    largest move (default: the forcing term clip(sqrt(relative gap), 1e-3, 0.1)), or after
    ``max_sweeps`` sweeps.
    """
    dtype = w0.dtype
    m = w0.shape[0]
    if prep is None:
        prep = prepare(data, m, intercept, native)
    gamma = jnp.asarray(gamma, dtype)
    b0 = jnp.asarray(b0, dtype)
    mask, q = data.row_mask, data.q
    pen = jnp.concatenate([jnp.full(m, gamma, dtype), jnp.zeros(1, dtype)])

    def point(w, b, z=None, rows=None):
        """z, per-row losses, alpha, g_w and the certificate at (w, b) (z = E w + b and the row
        losses computed if not given: in the loop both come from the accepted line-search trial)."""
        z = predictor(w, b, data) if z is None else z
        rows = loss_rows(z, q, mask) if rows is None else rows
        obj = jnp.sum(rows) + gamma * jnp.sum(jnp.abs(w))
        alpha = jnp.where(mask, residual(z, q), 0.0)
        gw = rmatvec(alpha, data, m)
        fn = (lambda a: rmatvec(a, data, m)) if intercept else (lambda a: gw)
        info = _dual.gap(obj, alpha, q, fn, gamma, intercept, mask, data.offset)
        return z, rows, alpha, gw, info

    def cond(c):
        it, rel, stalled = c[2], c[8].rel_gap, c[7]
        return (it < maxiter) & (rel > tol) & ~stalled & (c[11] < _STALL_ITERS)

    def body(c):
        w, b, it, z, loss0, alpha, gw, stalled, info, n_sweeps, best, since = c
        s = jax.nn.sigmoid(z)
        dw = jnp.where(mask, jnp.maximum(s * (1.0 - s), _DW_FLOOR), 0.0)
        gb = jnp.sum(alpha) if intercept else jnp.zeros((), dtype)
        g = jnp.concatenate([gw, gb[None]])
        x = jnp.concatenate([w, b[None]])
        active = jnp.concatenate([(w != 0) | (jnp.abs(gw) > gamma), jnp.full(1, intercept)])
        if inner_tol is None:
            kappa = jnp.clip(_KAPPA_SCALE * jnp.sqrt(info.rel_gap), _KAPPA_MIN, _KAPPA_MAX)
        else:
            kappa = jnp.asarray(inner_tol, dtype)
        d, ed, sw = _direction(prep, data, m, intercept, dw, g, x, pen, active, kappa, max_sweeps, z.shape[0])
        dw_, db = d[:m], (d[m] if intercept else jnp.zeros((), dtype))
        decrease = jnp.vdot(g, d) + gamma * jnp.sum(jnp.abs(w + dw_) - jnp.abs(w))
        noise = 64 * jnp.finfo(dtype).eps * (jnp.abs(info.objective) + 1.0)
        a, ch, rows_a = _line_search(z, ed, w, dw_, loss0, q, mask, gamma, decrease, noise)
        ok = jnp.any(d != 0) & _accept(a, ch, decrease, noise)
        a = jnp.where(ok, a, 0.0)
        w_new = jnp.where(ok, w + a * dw_, w)
        b_new = jnp.where(ok, b + a * db, b)
        # z is updated, not recomputed (E (w + a d) = z + a E d); the returned certificate is
        # recomputed from w after the loop.
        z_new, rows_new, alpha_new, gw_new, info_new = point(w_new, b_new, jnp.where(ok, z + a * ed, z), jnp.where(ok, rows_a, loss0))
        # Stop (rather than loop to maxiter) when no step was taken, or a rounding-level step did
        # not improve the certificate: the gap is then at the floating-point floor.
        stalled = ~ok | ((-decrease <= noise) & (info_new.rel_gap >= info.rel_gap))
        # A flat valley (near-collinear annotators whose difference only rows predicted almost surely
        # see: curvature ~exp(-|z|)) moves the certificate by little per step: stop after
        # _STALL_ITERS steps that do not halve the relative gap (reported as not converged).
        better = info_new.rel_gap < 0.5 * best
        return (
            w_new,
            b_new,
            it + 1,
            z_new,
            rows_new,
            alpha_new,
            gw_new,
            stalled,
            info_new,
            n_sweeps + sw,
            jnp.where(better, info_new.rel_gap, best),
            jnp.where(better, 0, since + 1),
        )

    z0, rows0, alpha0, gw0, info0 = point(w0, b0)
    c0 = (
        w0,
        b0,
        jnp.zeros((), jnp.int32),
        z0,
        rows0,
        alpha0,
        gw0,
        jnp.zeros((), bool),
        info0,
        jnp.zeros((), jnp.int32),
        info0.rel_gap,
        jnp.zeros((), jnp.int32),
    )
    w, b, it, _, _, _, _, _, _, n_sweeps, _, _ = jax.lax.while_loop(cond, body, c0)
    _, _, _, _, info = point(w, b)
    return w, b, it, info, n_sweeps
