"""The per-method state of :class:`crowdstat.online.OnlineFit` and its update on a merged batch.

Every model runs the estimator's own kernels on the padded arrays of
:class:`~crowdstat.online._store.VoteStore` (so a kernel compiles once per doubling of the
table, not once per batch) and returns the :class:`~crowdstat.estimators.result.EstimatorFit`
that the full refit returns:

- :class:`EMModel` (em1, em2): Dawid-Skene EM from the previous line posteriors (new lines: their
  majority-vote fraction, honeypots clamped), to the refit's stopping rule;
- :class:`ProximalModel`: the supervised L1-logistic from the previous weights (and intercept), to
  the refit's duality-gap tolerance, or the latent L1-penalised EM from the previous weights;
- :class:`SequentialModel`: eq. 8 over the new tasks only, from the previous weights.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators import dawid_skene as _ds
from crowdstat.estimators import posterior as _post
from crowdstat.estimators import proximal as _prox
from crowdstat.estimators import sequential as _seq
from crowdstat.estimators.l1 import latent as _latent
from crowdstat.estimators.l1 import problem as _problem
from crowdstat.estimators.l1 import solve as _solve
from crowdstat.estimators.registry import TRAJECTORY_AUTO_LIMIT, parse_gamma
from crowdstat.estimators.result import EstimatorFit
from crowdstat.online._store import Merge, VoteStore, capacity

__all__ = ["EMModel", "ProximalModel", "SequentialModel", "MODELS"]

_posteriors = jax.jit(_post.line_posteriors)


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class EMModel:
    """em1 / em2: the state is the line posteriors q of the last fit."""

    def __init__(self, method: str, cfg, common):
        self.two_coin = method == "em2"
        self.cfg, self.common = cfg, common
        self.q: np.ndarray | None = None  # shape=(n_lines,), float64

    def state(self) -> dict:
        return {} if self.q is None else {"q": self.q}

    def restore(self, arrays: dict) -> None:
        self.q = arrays.get("q")

    def step(self, store: VoteStore, merge: Merge, dev: VoteArrays, m_cap: int, dtype) -> EstimatorFit:
        n = store.n_lines
        delta = float(self.common.delta)
        q_start = None
        if self.q is not None:  # warm start: earlier lines keep q, new lines start at their majority-vote fraction
            q0 = np.zeros(dev.truth.shape[0], np.float64)
            q0[merge.old_to_new] = self.q
            pos = np.bincount(merge.vote_line, weights=(merge.vote_label > 0).astype(np.float64), minlength=n)
            cnt = np.bincount(merge.vote_line, minlength=n)
            q0[merge.new_lines] = pos[merge.new_lines] / np.maximum(cnt[merge.new_lines], 1)
            q_start = jnp.asarray(q0, dtype)
        s = _ds.run(
            dev,
            jnp.asarray(self.common.prior, dtype),
            jnp.asarray(delta, dtype),
            jnp.asarray(self.cfg.maxiter, jnp.int32),
            jnp.asarray(self.cfg.tol, dtype),
            q_start,
            jnp.asarray(n, jnp.int32),
            m=m_cap,
            two_coin=self.two_coin,
            polish=self.cfg.tol == 0,  # as the refit (crowdstat.estimators.dawid_skene._fit)
        )
        m = store.n_annotators
        self.q = np.asarray(s.q, np.float64)[:n].copy()
        alpha = np.asarray(s.alpha)[:m]
        beta = np.asarray(s.beta)[:m]
        a64 = np.clip(alpha.astype(np.float64), delta, 1 - delta)
        b64 = np.clip(beta.astype(np.float64), delta, 1 - delta)
        rel_c = np.clip(b64 if not self.two_coin else 0.5 * (a64 + b64), delta, 1 - delta)
        weight = np.log(rel_c) - np.log1p(-rel_c)
        it, gain, ll = int(s.iter_num), float(s.gain), float(s.log_likelihood)
        converged = bool(gain <= self.cfg.tol * max(1.0, abs(ll)))
        grad_norm = float(s.grad_norm)
        name = "em_two_coin" if self.two_coin else "em_one_coin"
        diagnostics = {
            "model": "two-coin Dawid-Skene (EM)" if self.two_coin else "one-coin Dawid-Skene (EM)",
            "iterations": it,
            "log_likelihood": ll,
            "last_gain": gain if math.isfinite(gain) else None,
            "converged": converged,
            "class_prior": float(s.pi),
            "gradient_norm": grad_norm if math.isfinite(grad_norm) else None,
            "newton_steps": int(s.newton_steps),
            "n_honeypot_lines_clamped": int(np.count_nonzero(store.truth.view())),
            "warm_start": q_start is not None,
        }
        if not converged:
            rel_gain = gain / max(1.0, abs(ll))
            warnings.warn(
                f"{name}: EM stopped at maxiter={self.cfg.maxiter} with relative log-likelihood gain {rel_gain:.3g} >= tol={self.cfg.tol}",
                stacklevel=4,
            )
        cols = {"sensitivity": beta.astype(np.float64), "specificity": alpha.astype(np.float64)} if self.two_coin else {}
        return EstimatorFit(
            posterior=np.asarray(s.q)[:n],
            weight=weight.astype(np.dtype(jnp.dtype(dtype).name)),
            reliability=beta if not self.two_coin else 0.5 * (alpha + beta),
            diagnostics=diagnostics,
            annotator_columns=cols,
        )


class ProximalModel:
    """proximal: the state is the weights w (and the intercept b) of the last fit."""

    def __init__(self, method: str, cfg, common):
        self.cfg, self.common = cfg, common
        self.w: np.ndarray | None = None  # shape=(m,), float64
        self.b: float | None = None
        self.l1_caps = (0, 0, 0)  # padded votes, rows and pairs of the training problem (they only grow)

    def state(self) -> dict:
        return {} if self.w is None else {"w": self.w, "b": np.asarray(self.b if self.b is not None else np.nan)}

    def restore(self, arrays: dict) -> None:
        self.w = arrays.get("w")
        b = arrays.get("b")
        self.b = None if b is None or not np.isfinite(b) else float(b)

    def _start(self, m_cap: int, fill: float, dtype):
        w0 = np.zeros(m_cap, np.float64)
        k = 0 if self.w is None else self.w.shape[0]
        if k:
            w0[:k] = self.w
        return w0, k

    def step(self, store: VoteStore, merge: Merge, dev: VoteArrays, m_cap: int, dtype) -> EstimatorFit:
        cfg, common = self.cfg, self.common
        prior_logit = _logit(common.prior)
        tol = cfg.tol if cfg.tol is not None else _solve.default_tol(dtype)
        # The refit's choice of variant and gamma (K-fold refits when latent=None meets partial truth, or gamma="cv").
        latent, gamma_spec, selection = _prox._select(store.table(), cfg, common, dtype, tol)
        m = store.n_annotators
        if latent:
            w, prior_logit, diagnostics = self._latent(dev, m, m_cap, prior_logit, tol, dtype, gamma_spec)
        else:
            w, prior_logit, diagnostics = self._supervised(store, m, m_cap, prior_logit, tol, dtype, gamma_spec)
        if selection is not None:
            diagnostics["selection"] = selection
        posterior = np.asarray(_posteriors(jnp.asarray(w, dtype), dev, jnp.asarray(prior_logit, dtype)))[: store.n_lines]
        w = np.asarray(w)[:m]
        self.w = w.astype(np.float64)
        diagnostics["warm_start"] = diagnostics.pop("_warm")
        reliability = 0.5 * (1.0 + np.tanh(0.5 * w.astype(np.float64)))
        return EstimatorFit(posterior=posterior, weight=w, reliability=reliability, diagnostics=diagnostics, prior_logit=float(prior_logit))

    def _latent(self, dev: VoteArrays, m: int, m_cap: int, prior_logit: float, tol: float, dtype, gamma_spec):
        delta = float(self.common.delta)
        gamma_val, rel = parse_gamma(gamma_spec)
        logit_cap = math.log1p(-delta) - math.log(delta)
        nu = min(max(self.cfg.nu, delta), 1 - delta)
        w_nu = jnp.where(jnp.arange(m_cap) < m, _logit(nu), 0.0).astype(dtype)
        pl = jnp.asarray(prior_logit, dtype)
        a, n = _latent.agreements(_latent.e_step(w_nu, dev, pl), dev, m_cap)
        a_np, n_np = np.asarray(a), np.asarray(n)
        gmax = float(np.max(np.abs(2 * a_np[:m] - n_np[:m]), initial=0.0)) / 2  # the refit's latent_gamma_max (real annotators)
        gamma = gamma_val * gmax if rel else gamma_val
        fixed = _latent.m_step(a, n - a, jnp.asarray(gamma, dtype), jnp.asarray(logit_cap, dtype))  # the slots past m never move
        w0, k = self._start(m_cap, _logit(nu), dtype)
        w0[k:m] = _logit(nu)
        w0[m:] = np.asarray(fixed)[m:]
        stop = max(tol, 1e-24) ** 0.5  # the rule of crowdstat.estimators.proximal._fit_latent
        w, _, it, change = _latent.latent_em(
            dev,
            jnp.asarray(w0, dtype),
            jnp.asarray(gamma, dtype),
            pl,
            jnp.asarray(logit_cap, dtype),
            jnp.asarray(stop, dtype),
            max_outer=int(self.cfg.max_outer),
        )
        diagnostics, warning = _prox.latent_diagnostics(gamma, gmax, it, change, stop)
        diagnostics["_warm"] = k > 0
        if warning:
            warnings.warn(warning, stacklevel=4)
        self.b = None
        return w, prior_logit, diagnostics

    def _supervised(self, store: VoteStore, m: int, m_cap: int, prior_logit: float, tol: float, dtype, gamma_spec):
        cfg = self.cfg
        train = _training(store.arrays())
        data, self.l1_caps = _pad_l1(train, m_cap, self.l1_caps, dtype)
        centre = None
        if _prox.centre_of(cfg) == "separable":  # the refit's centre, from the same training votes (padding has label 0)
            centre = _problem.separable_centre(data, m_cap)
            data = _problem.with_centre(data, centre)
        intercept = bool(cfg.intercept)
        gamma_val, rel = parse_gamma(gamma_spec)
        gmax = float(_problem.gamma_max(data, m_cap, intercept))
        gamma = gamma_val * gmax if rel else gamma_val
        # the refit's choice (from the real sizes: the padded ones can tip the shape rules)
        solver = _solve.resolve_solver(cfg.solver, cast(Any, train), m, bool(cfg.accelerated))
        eta, lip = 1.0, None
        if solver != "newton":
            lip = float(_problem.lipschitz(data, m_cap, intercept))
            # no honeypot votes yet (an early batch): the objective is flat in w, any step size will do
            eta = cfg.stepsize if cfg.stepsize is not None else (1.0 / lip if lip > 0 else 1.0)
            if solver == "ista" and not 0 < eta < 2.0 / lip:
                raise ValueError(f"stepsize: ISTA needs eta in (0, 2/L) = (0, {2.0 / lip:.6g}), got {eta}")
        w0, k = self._start(m_cap, 0.0, dtype)
        if centre is not None:  # the solver's unknown is d = w - centre: warm start from the last w
            w0 = w0 - np.asarray(centre, np.float64) if k else np.zeros_like(w0)
        if not intercept:
            b0 = 0.0
        elif self.b is not None and k:
            b0 = self.b
        else:
            b0 = float(_problem.b_at_zero(data, float(self.common.delta)))
        st = _solve.solve(
            data,
            jnp.asarray(gamma, dtype),
            jnp.asarray(w0, dtype),
            jnp.asarray(b0, dtype),
            jnp.asarray(eta, dtype),
            jnp.asarray(tol, dtype),
            accelerated=bool(cfg.accelerated),
            intercept=intercept,
            maxiter=int(cfg.maxiter),
            solver="fista" if solver == "ista" else solver,
        )
        w = st.w if centre is None else centre + st.w
        diagnostics, warning = _prox.supervised_diagnostics(
            st, solver, tol, gamma, gmax, lip, eta, intercept, int(np.count_nonzero(store.truth.view())), np.asarray(w)[:m], centre
        )
        diagnostics["_warm"] = k > 0
        if warning:
            warnings.warn(warning, stacklevel=4)
        self.b = float(st.b) if intercept else None
        return w, (float(st.b) if intercept else prior_logit), diagnostics


def _room(n: int, cap: int) -> int:
    """``cap`` while it holds n + 1 entries, else a power of two with room to double (compiles once per doubling)."""
    return cap if n + 1 <= cap else capacity(2 * (n + 1))


class _Training(NamedTuple):
    """The fields of :class:`~crowdstat.estimators.l1.problem.L1Data`, as host arrays."""

    row: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    q: np.ndarray
    row_mask: np.ndarray
    pairs: np.ndarray | None


def _training(votes: VoteArrays) -> _Training:
    """:func:`crowdstat.estimators.l1.problem.training_data` (the honeypot lines, q from their truth) on the host:
    NumPy arrays, so that nothing compiles for its unpadded shapes."""
    truth = np.asarray(votes.truth)
    rows = np.flatnonzero(truth != 0)
    remap = np.full(truth.shape[0], -1, np.int64)
    remap[rows] = np.arange(rows.shape[0])
    line = np.asarray(votes.line)
    keep = remap[line] >= 0
    r = remap[line[keep]]
    order = np.argsort(r, kind="stable")
    r_sorted = r[order].astype(np.int32)
    ann = np.asarray(votes.annotator)[keep][order]
    pairs = _problem.vote_pairs(r_sorted, ann, rows.shape[0])
    q = (1.0 + truth[rows]) / 2.0
    label = np.asarray(votes.label)[keep][order]
    return _Training(r_sorted, ann, label, q, np.ones(rows.shape[0], bool), None if pairs is None else np.asarray(pairs))


def _pad_l1(data: _Training, m_cap: int, caps: tuple[int, int, int], dtype) -> tuple[_problem.L1Data, tuple[int, int, int]]:
    """The training problem padded to power-of-two rows and votes (label-0 votes on a masked row by the
    last annotator slot), so that the solver compiles once per doubling; and the padded sizes."""
    nv, nr = int(data.label.shape[0]), int(data.q.shape[0])
    cv, cr = _room(nv, caps[0]), _room(nr, caps[1])
    cp = caps[2]

    def pad(x, n, fill, as_dtype=None):
        x = np.asarray(x)
        out = np.full(n, fill, as_dtype or x.dtype)
        out[: x.shape[0]] = x
        return jnp.asarray(out)

    fdt = np.dtype(jnp.dtype(dtype).name)

    pairs = None
    if data.pairs is not None:
        p = np.asarray(data.pairs)
        cp = _room(p.shape[1], cp)
        full = np.full((2, cp), cv - 1, np.int32)
        full[:, : p.shape[1]] = p
        pairs = jnp.asarray(full)
    padded = _problem.L1Data(
        row=pad(data.row, cv, cr - 1),
        annotator=pad(data.annotator, cv, m_cap - 1),
        label=pad(data.label, cv, 0, fdt),
        q=pad(data.q, cr, 0.5, fdt),
        row_mask=pad(data.row_mask, cr, False),
        pairs=pairs,
    )
    return padded, (cv, cr, cp)


class SequentialModel:
    """sequential: the state is the weights after the last task, and the trajectory while it is kept."""

    def __init__(self, method: str, cfg, common):
        self.cfg, self.common = cfg, common
        self.w: np.ndarray | None = None  # shape=(m,)
        self.n_tasks = 0
        self.n_moved = 0
        self.keep = cfg.keep_trajectory is not False
        self.traj: list[np.ndarray] = []  # per batch, (tasks, annotators at the time)
        self.task_program: list[np.ndarray] = []  # per batch, the program code of each task

    def state(self) -> dict:
        out = {"n_tasks": np.asarray(self.n_tasks), "n_moved": np.asarray(self.n_moved), "keep": np.asarray(self.keep)}
        if self.w is not None:
            out["w"] = self.w
        if self.keep and self.traj:
            out["trajectory"] = self.trajectory_matrix(self.w.shape[0] if self.w is not None else 0)
            out["task_program"] = np.concatenate(self.task_program)
        return out

    def restore(self, arrays: dict) -> None:
        self.w = arrays.get("w")
        self.n_tasks, self.n_moved = int(arrays["n_tasks"]), int(arrays["n_moved"])
        self.keep = bool(arrays["keep"])
        self.traj = [arrays["trajectory"]] if "trajectory" in arrays else []
        self.task_program = [arrays["task_program"]] if "task_program" in arrays else []

    def w0(self) -> float:
        """The starting weight of every annotator (sequential.init)."""
        delta = float(self.common.delta)
        nu = min(max(self.cfg.nu, delta), 1 - delta)
        return float(np.clip(_logit(nu), -self.cfg.w_max, self.cfg.w_max))

    def trajectory_matrix(self, m: int) -> np.ndarray:
        """The weights after every task (an annotator's weight before its first vote is the start value)."""
        rows = [np.concatenate([t, np.full((t.shape[0], m - t.shape[1]), self.w0(), t.dtype)], axis=1) for t in self.traj]
        return np.concatenate(rows) if rows else np.zeros((0, m))

    def step(self, store: VoteStore, merge: Merge, dev: VoteArrays, m_cap: int, dtype, batch_arrays: VoteArrays) -> EstimatorFit:
        cfg, common = self.cfg, self.common
        m = store.n_annotators
        delta = float(common.delta)
        w0 = np.full(m_cap, self.w0(), np.float64)
        if self.w is not None:
            w0[: self.w.shape[0]] = self.w
        tb = _seq.task_blocks(batch_arrays)
        n_t = int(tb.label.shape[0])
        cap = capacity(n_t)

        def pad(x):
            return x if x.ndim < 2 else np.concatenate([x, np.zeros((cap - n_t, *x.shape[1:]), x.dtype)])

        blocks = jax.tree.map(lambda x: jnp.asarray(pad(x)), tb)
        sp = _seq.make_params(cfg.lam, cfg.pbar_honeypot, cfg.w_max, delta, common.prior, dtype)
        n_total = self.n_tasks + n_t
        if cfg.keep_trajectory is None and self.keep and n_total * m > TRAJECTORY_AUTO_LIMIT:
            self.keep, self.traj, self.task_program = False, [], []
            warnings.warn(
                f"sequential: not keeping the weight trajectory ({n_total} tasks x {m} annotators); pass keep_trajectory=True to force it",
                stacklevel=4,
            )
        state, info = _seq.run(blocks, jnp.asarray(w0, dtype), sp, keep_trajectory=self.keep)
        w_all = state.w
        self.w = np.asarray(w_all)[:m].astype(np.float64)
        self.n_tasks = n_total
        self.n_moved += int(np.asarray(info.n_updates)[:n_t].sum())
        if self.keep:
            self.traj.append(np.asarray(info.w)[:n_t, :m])
            self.task_program.append(np.asarray(merge.batch_program, np.int64))
        prior_logit = _logit(common.prior)
        post = np.asarray(_post.posteriors(w_all, dev, jnp.asarray(prior_logit, dtype)))[: store.n_lines]
        diagnostics = {
            "tasks": self.n_tasks,
            "votes_that_moved_a_weight": self.n_moved,
            "max_abs_weight": float(np.max(np.abs(self.w), initial=0.0)),
        }
        if not np.all(np.isfinite(self.w)):
            warnings.warn("sequential: weights overflowed to inf/nan (lam too large without w_max?)", stacklevel=4)
        w = np.asarray(w_all)[:m]
        return EstimatorFit(posterior=post, weight=w, reliability=_post.reliability(w), diagnostics=diagnostics, prior_logit=prior_logit)


MODELS = {"em1": EMModel, "em2": EMModel, "proximal": ProximalModel, "sequential": SequentialModel}
