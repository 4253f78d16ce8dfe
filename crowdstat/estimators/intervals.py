"""Intervals of the annotator reliabilities and the line posteriors (docs/math.md, "Intervals").

``crowdstat.fit(..., interval=0.9)`` calls :func:`attach` after the point fit. For em1, em2 and proximal
it reports, by default (``interval_method="laplace"``, :data:`LAPLACE_METHODS`), the **Laplace
approximation of the posterior**: :func:`crowdstat.estimators.laplace.laplace_intervals`, whose module
describes the models, the mode and the intervals. Why not the percentile bootstrap that came first (it
doubles the small-sample bias of EM, its worlds are deterministic when a reliability is fitted at the
boundary, and for the L1 fit it measures the shrinkage's noise, not the uncertainty of p):
docs/study.md, "Interval coverage", with the simulated coverage of both.

sequential refuses (:data:`SEQUENTIAL_REFUSAL`): its weights are an online score, not an estimate with
a sampling distribution. Majority vote gets none (its "reliability" is agreement with the majority, not
a model parameter); bayes reports its NUTS credible intervals (level ``credible``) in the same columns.

The **parametric bootstrap** (:func:`bootstrap`, ``interval_method="bootstrap"``) stays as the reference
it was compared with:

1. The fitted generative model: per annotator a sensitivity and a specificity (em2: its own; the
   one-coin methods: both = the fitted reliability), and a class prior pi.
2. ``n_boot`` replicates with the same vote structure (NumPy generator ``boot_seed``): free lines draw
   y* ~ Bernoulli(pi), honeypot lines keep their truth, every vote slot draws its label.
3. Refits, vmapped (:func:`refit_vmapped`; :func:`refit_loop` is the one-fit-per-replicate reference).
4. Per line, each replicate's posterior of the observed votes (:func:`observed_posteriors`).
5. Percentile intervals (:func:`percentile`), widened to contain the estimate.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdstat.estimators.laplace import _logit, _sigmoid, laplace_intervals
from crowdstat.estimators.registry import REGISTRY
from crowdstat.estimators.result import EstimatorFit

__all__ = [
    "BOOT_METHODS",
    "LAPLACE_METHODS",
    "SEQUENTIAL_REFUSAL",
    "Replicates",
    "generative_model",
    "draw_labels",
    "refit_loop",
    "refit_vmapped",
    "observed_posteriors",
    "percentile",
    "bootstrap",
    "attach",
]

#: the methods with a parametric bootstrap (:func:`bootstrap`, kept as the reference the Laplace intervals
#: are compared with in experiments/coverage.py)
BOOT_METHODS = ("em1", "em2", "proximal", "sequential")
#: the methods whose ``interval`` columns come from :func:`crowdstat.estimators.laplace.laplace_intervals`
#: (unless ``interval_method="bootstrap"``)
LAPLACE_METHODS = ("em1", "em2", "proximal")


class Replicates(NamedTuple):
    """Refitted parameters, leading axis = replicate (float64, host)."""

    reliability: np.ndarray  # shape=(B, m), the method's reliability column
    sensitivity: np.ndarray  # shape=(B, m), P(vote +1 | correct) (one-coin methods: = reliability)
    specificity: np.ndarray  # shape=(B, m), P(vote -1 | wrong)
    vote_pos: np.ndarray  # shape=(B, m), what a +1 vote adds to a line's logit
    vote_neg: np.ndarray  # shape=(B, m), what a -1 vote adds to a line's logit
    prior_logit: np.ndarray  # shape=(B,), the prior logit of the line posteriors


def generative_model(method: str, est: EstimatorFit, truth: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(sensitivity, specificity, class prior) of the fitted model that the replicates are drawn from."""
    if method == "em2":
        sens = np.asarray(est.annotator_columns["sensitivity"], np.float64)
        spec = np.asarray(est.annotator_columns["specificity"], np.float64)
    else:
        sens = spec = _sigmoid(est.weight) if method in ("proximal", "sequential") else np.asarray(est.reliability, np.float64)
    if "class_prior" in est.diagnostics:
        pi = float(est.diagnostics["class_prior"])
    else:
        free = np.asarray(truth) == 0
        post = np.asarray(est.posterior, np.float64)
        pi = float(np.mean(post[free])) if free.any() else float(np.mean(post))
    clip = lambda p: np.clip(p, delta, 1 - delta)  # noqa: E731
    return clip(sens), clip(spec), float(clip(pi))


def draw_labels(arrays, sens, spec, pi: float, n_boot: int, seed: int | np.random.Generator) -> np.ndarray:
    """``n_boot`` label vectors (int8, shape (n_boot, n_votes)) drawn from the model; the vote slots are the table's.

    ``seed``: an int, or a NumPy generator to continue (the chunks of :func:`bootstrap`)."""
    rng = np.random.default_rng(seed)
    truth = np.asarray(arrays.truth)
    line = np.asarray(arrays.line)
    ann = np.asarray(arrays.annotator)
    n_lines = truth.shape[0]
    y = np.where(rng.random((n_boot, n_lines)) < pi, 1, -1)
    y = np.where(truth != 0, truth, y)  # honeypot lines keep their truth
    yv = y[:, line]
    p_pos = np.where(yv > 0, np.asarray(sens)[ann], 1.0 - np.asarray(spec)[ann])  # P(vote +1)
    lab = np.where(rng.random(yv.shape) < p_pos, 1, -1).astype(np.int8)
    return np.where(np.asarray(arrays.label) != 0, lab, 0).astype(np.int8)  # empty slots stay empty


# ---------------------------------------------------------------------------------------------
# refits


def _one_coin_reps(w, prior_logit) -> Replicates:
    w = np.asarray(w, np.float64)
    p = _sigmoid(w)
    return Replicates(p, p, p, w, -w, np.broadcast_to(np.asarray(prior_logit, np.float64), w.shape[:1]).copy())


def _em_reps(alpha, beta, pi, delta: float, two_coin: bool) -> Replicates:
    """Replicates of Dawid-Skene parameters; the vote log-odds are those of its E-step (clipped probabilities)."""
    alpha = np.asarray(alpha, np.float64)
    beta = np.asarray(beta, np.float64)
    a, b = np.clip(alpha, delta, 1 - delta), np.clip(beta, delta, 1 - delta)
    rel = 0.5 * (alpha + beta) if two_coin else beta
    pos = np.log(b) - np.log1p(-a)
    neg = np.log1p(-b) - np.log(a)
    return Replicates(rel, beta, alpha, pos, neg, _logit(np.clip(np.asarray(pi, np.float64), delta, 1 - delta)))


def _reps_from_fit(method: str, est: EstimatorFit, delta: float) -> Replicates:
    """One refit's parameters as a one-replicate :class:`Replicates`."""
    if method in ("em1", "em2"):
        if method == "em2":
            alpha, beta = est.annotator_columns["specificity"], est.annotator_columns["sensitivity"]
        else:
            alpha = beta = est.reliability
        return _em_reps(np.asarray(alpha)[None], np.asarray(beta)[None], [est.diagnostics["class_prior"]], delta, method == "em2")
    return _one_coin_reps(np.asarray(est.weight)[None], [est.prior_logit])


def _stack(reps: list[Replicates]) -> Replicates:
    return Replicates(*(np.concatenate(xs) for xs in zip(*reps)))


def refit_loop(table, method: str, cfg, common, dtype, labels: np.ndarray, progress: bool = False) -> Replicates:
    """The reference: the registry's implementation once per replicate (a Python loop over label vectors)."""
    impl = REGISTRY[method].load()
    cfg = _replicate_cfg(table, method, cfg)
    common = dataclasses.replace(common, progress=False)
    out = []
    for lab in _progress(labels, progress, method):
        t = dataclasses.replace(table, arrays=table.arrays._replace(label=lab))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(_reps_from_fit(method, impl(t, cfg, common, dtype), float(common.delta)))
    return _stack(out)


def _progress(xs, on: bool, method: str):
    if not on:
        return xs
    from tqdm.auto import tqdm

    return tqdm(xs, desc=f"bootstrap ({method})", unit="replicate")


def _replicate_cfg(table, method: str, cfg, est: EstimatorFit | None = None):
    """The method's parameters for a replicate. proximal keeps the variant the point fit used (from
    ``est``'s diagnostics when given) and, where the point fit chose gamma from the data (``gamma="cv"``),
    that gamma as an absolute value: the selection is not repeated per replicate. sequential drops its
    trajectory."""
    if method == "proximal":
        from crowdstat.estimators.proximal import centre_of
        from crowdstat.estimators.registry import parse_gamma

        latent, gamma = cfg.latent, cfg.gamma
        if est is not None and "variant" in est.diagnostics:
            latent = str(est.diagnostics["variant"]).startswith("latent")
        elif not isinstance(latent, bool):
            latent = table.n_honeypots == 0
        try:
            fixed = math.isfinite(parse_gamma(gamma)[0])
        except ValueError:
            fixed = False
        if not fixed and gamma is None and est is None:  # the default: cross-validated only where it can be
            from crowdstat.estimators.proximal import _candidates

            variants, gammas = _candidates(table, dataclasses.replace(cfg, latent=latent))
            if len(gammas) == 1:
                gamma, fixed = gammas[0], True
        if not fixed:  # chosen from the data ("cv"): the point fit's absolute gamma
            if est is None:
                raise ValueError(f"proximal: gamma={gamma!r} is chosen from the data; the bootstrap needs the point fit to fix it")
            gamma = float(est.diagnostics["gamma"])
        center = None if latent else str(est.diagnostics.get("centre", centre_of(cfg))) if est is not None else cfg.center
        return dataclasses.replace(cfg, latent=latent, gamma=gamma, center=center)
    if method == "sequential":
        return dataclasses.replace(cfg, keep_trajectory=False)
    return cfg


def refit_vmapped(table, method: str, cfg, common, dtype, labels: np.ndarray) -> Replicates:
    """All replicates at once: the method's jitted kernel under ``jax.vmap`` over the label vectors."""
    delta = float(common.delta)
    arrays = jax.tree.map(jnp.asarray, table.arrays)
    labs = jnp.asarray(labels)
    if method in ("em1", "em2"):
        two = method == "em2"
        args = (
            jnp.asarray(common.prior, dtype),
            jnp.asarray(delta, dtype),
            jnp.asarray(cfg.maxiter, jnp.int32),
            jnp.asarray(cfg.tol, dtype),
        )
        s = _em_batch(arrays, labs, *args, m=table.n_annotators, two_coin=two)
        return _em_reps(s.alpha, s.beta, s.pi, delta, two)
    if method == "sequential":
        return _sequential_vmapped(table, cfg, common, dtype, labels)
    if method == "proximal":
        w, prior_logit = _proximal_vmapped(table, _replicate_cfg(table, method, cfg), common, dtype, labs)
        return _one_coin_reps(w, prior_logit)
    raise ValueError(f"interval: no bootstrap for method {method!r}; expected one of {BOOT_METHODS}")


def _sequential_vmapped(table, cfg, common, dtype, labels: np.ndarray) -> Replicates:
    from crowdstat.estimators import sequential as seq

    delta = float(common.delta)
    blocks = seq.task_blocks(table.arrays)
    # Where each vote sits in the task blocks: the blocks of a table whose labels are the vote numbers.
    n = labels.shape[1]
    vote_id = np.zeros(blocks.label.shape, np.int64)
    filled = seq.task_blocks(table.arrays._replace(label=np.ones(n, np.int8))).label != 0
    vote_id[filled] = np.arange(n)  # task_blocks fills in vote order: row-major over (task, position)
    block_labels = np.where(filled[None], labels[:, vote_id], 0).astype(np.int8)
    sp = seq.make_params(cfg.lam, cfg.pbar_honeypot, cfg.w_max, delta, common.prior, dtype)
    w0 = seq.init(table.n_annotators, cfg.nu, delta, cfg.w_max, dtype).w
    w = _sequential_batch(jax.tree.map(jnp.asarray, blocks), jnp.asarray(block_labels), w0, sp)
    return _one_coin_reps(w, np.full(labels.shape[0], float(sp.prior_logit)))


@partial(jax.jit, static_argnames=("m", "two_coin"))
def _em_batch(votes, labs, prior, delta, maxiter, tol, *, m: int, two_coin: bool):
    """:func:`crowdstat.estimators.dawid_skene.run` on every label vector of ``labs`` (one compiled program)."""
    from crowdstat.estimators import dawid_skene

    return jax.vmap(lambda lab: dawid_skene.run(votes._replace(label=lab), prior, delta, maxiter, tol, m=m, two_coin=two_coin))(labs)


@jax.jit
def _sequential_batch(blocks, labs, w0, params):
    """Final weights of eq. (8) (:func:`crowdstat.estimators.sequential.run`) for every block label array of ``labs``."""
    from crowdstat.estimators import sequential as seq

    return jax.vmap(lambda lab: seq.run(blocks._replace(label=lab), w0, params, keep_trajectory=False)[0].w)(labs)


@partial(jax.jit, static_argnames=("relative", "max_outer"))
def _latent_batch(votes, labs, w0, gamma, prior_logit, cap, stop, *, relative: bool, max_outer: int):
    """The latent proximal EM (:func:`crowdstat.estimators.l1.latent.latent_em`) per label vector; ``relative``:
    ``gamma`` is a fraction of each replicate's gamma_max."""
    from crowdstat.estimators.l1 import latent as _latent

    def one(lab):
        a = votes._replace(label=lab)
        g = gamma * _latent.latent_gamma_max(a, w0, prior_logit) if relative else gamma
        return _latent.latent_em(a, w0, g.astype(w0.dtype), prior_logit, cap, stop, max_outer=max_outer)[0]

    return jax.vmap(one)(labs)


@partial(jax.jit, static_argnames=("m", "relative", "intercept", "accelerated", "maxiter", "solver", "fixed_step", "centred"))
def _supervised_batch(
    data, labs, gamma, b0, stepsize, tol, *, m, relative, intercept, accelerated, maxiter, solver, fixed_step, centred=False
):
    """The supervised L1-logistic (:func:`crowdstat.estimators.l1.solve.solve`) per training-label vector; (w, b).
    ``centred``: each replicate's own separable centre (the problem in d = w - centre)."""
    from crowdstat.estimators.l1 import problem as _problem
    from crowdstat.estimators.l1 import solve as _solve

    dtype = data.q.dtype

    def one(lab):
        d = data._replace(label=lab)
        centre = _problem.separable_centre(d, m) if centred else jnp.zeros(m, dtype)
        if centred:
            d = _problem.with_centre(d, centre)
        g = gamma * _problem.gamma_max(d, m, intercept) if relative else gamma
        if solver == "newton" or fixed_step:
            eta = stepsize
        else:
            eta = 1.0 / _problem.lipschitz(d, m, intercept)
        st = _solve.solve(
            d,
            g.astype(dtype),
            jnp.zeros(m, dtype),
            b0,
            eta.astype(dtype),
            tol,
            accelerated=accelerated,
            intercept=intercept,
            maxiter=maxiter,
            solver="fista" if solver == "ista" else solver,
        )
        return centre + st.w, st.b

    return jax.vmap(one)(labs)


def _proximal_vmapped(table, cfg, common, dtype, labs) -> tuple[jax.Array, jax.Array]:
    """(w, prior logit) of every replicate: the latent EM or the supervised L1-logistic, as :mod:`.proximal` runs them."""
    from crowdstat.estimators.l1 import problem as _problem
    from crowdstat.estimators.l1 import solve as _solve
    from crowdstat.estimators.proximal import centre_of
    from crowdstat.estimators.registry import parse_gamma

    m, delta = table.n_annotators, float(common.delta)
    gamma_val, rel = parse_gamma(cfg.gamma)
    tol = cfg.tol if cfg.tol is not None else _solve.default_tol(dtype)
    prior_logit = jnp.asarray(math.log(common.prior) - math.log1p(-common.prior), dtype)
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    if cfg.latent:
        nu = min(max(cfg.nu, delta), 1 - delta)
        w0 = jnp.full(m, math.log(nu) - math.log1p(-nu), dtype)
        cap, stop = f(math.log1p(-delta) - math.log(delta)), f(max(tol, 1e-12) ** 0.5)
        arrays = jax.tree.map(jnp.asarray, table.arrays)
        w = _latent_batch(arrays, labs, w0, f(gamma_val), prior_logit, cap, stop, relative=rel, max_outer=int(cfg.max_outer))
        return w, jnp.full(labs.shape[0], prior_logit)
    data = _problem.training_data(table.arrays, dtype)
    # the training votes of training_data, in its order: the honeypot lines' votes, sorted by row (stable)
    truth, line = np.asarray(table.arrays.truth), np.asarray(table.arrays.line)
    keep = truth[line] != 0
    rows = np.cumsum(truth != 0) - 1
    order = np.argsort(rows[line[keep]], kind="stable")
    train = labs[:, np.flatnonzero(keep)[order]].astype(dtype)
    intercept = bool(cfg.intercept)
    solver = _solve.resolve_solver(cfg.solver, data, m, bool(cfg.accelerated))
    b0 = _problem.b_at_zero(data, delta) if intercept else f(0.0)
    w, b = _supervised_batch(
        data,
        train,
        f(gamma_val),
        b0,
        f(cfg.stepsize if cfg.stepsize is not None else 1.0),
        f(tol),
        m=m,
        relative=rel,
        intercept=intercept,
        accelerated=bool(cfg.accelerated),
        maxiter=int(cfg.maxiter),
        solver=solver,
        fixed_step=cfg.stepsize is not None,
        centred=centre_of(cfg) == "separable",
    )
    return w, (b if intercept else jnp.full(labs.shape[0], prior_logit))


# ---------------------------------------------------------------------------------------------
# per-line values and intervals


def observed_posteriors(arrays, reps: Replicates, clamp: bool) -> np.ndarray:
    """Posterior of every line of the *observed* votes under each replicate's parameters, shape (B, n_lines).

    ``clamp``: honeypot lines are their truth (the EM methods), else their votes decide (eq. 7).
    """
    line = np.asarray(arrays.line)
    ann = np.asarray(arrays.annotator)
    lab = np.asarray(arrays.label)
    truth = np.asarray(arrays.truth)
    n_lines = truth.shape[0]
    contrib = np.where(lab > 0, reps.vote_pos[:, ann], np.where(lab < 0, reps.vote_neg[:, ann], 0.0))
    per_line = np.zeros((n_lines, contrib.shape[0]))
    np.add.at(per_line, line, contrib.T)  # segment sum over each line's votes
    post = _sigmoid(per_line.T + reps.prior_logit[:, None])
    if clamp:
        post = np.where(truth > 0, 1.0, np.where(truth < 0, 0.0, post))
    return post


def percentile(values: np.ndarray, estimate: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval over axis 0 at ``level`` (nan replicates left out), widened to contain
    ``estimate``; clipped to [0, 1]."""
    v = np.asarray(values, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of only nan: nan bounds
        lo, hi = np.nanquantile(v, [(1 - level) / 2, (1 + level) / 2], axis=0)
    est = np.asarray(estimate, np.float64)
    ok = np.isfinite(est)
    lo = np.where(ok, np.minimum(lo, est), lo)
    hi = np.where(ok, np.maximum(hi, est), hi)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


#: label slots (replicates x votes) per vmapped batch: bounds the memory of the refits on large tables
CHUNK_SLOTS = 1 << 24


def _take(reps: Replicates, n: int) -> Replicates:
    return Replicates(*(x[:n] for x in reps))


def bootstrap(table, method: str, cfg, common, dtype, est: EstimatorFit, *, vmapped: bool = True) -> tuple[dict, dict, dict]:
    """The intervals of a fit: (annotator columns, line columns, record for fit.json).

    Replicates are drawn and refitted in batches of at most :data:`CHUNK_SLOTS` label slots (the last
    batch padded to the same shape, so one compilation serves all); the line values are kept in
    float32 (n_boot x n_lines x 4 bytes).
    """
    t0 = time.perf_counter()
    level, n_boot, seed = float(common.interval), int(common.n_boot), int(common.boot_seed)
    sens, spec, pi = generative_model(method, est, table.arrays.truth, float(common.delta))
    k = max(1, min(n_boot, CHUNK_SLOTS // max(table.arrays.n_votes, 1)))
    rng = np.random.default_rng(seed)
    refit = refit_vmapped if vmapped else refit_loop
    cfg = _replicate_cfg(table, method, cfg, est)
    parts, posts = [], []
    for start in _progress(range(0, n_boot, k), bool(common.progress) and n_boot > k, method):
        size = min(k, n_boot - start)
        labels = draw_labels(table.arrays, sens, spec, pi, size, rng)
        if size < k:  # pad to the batch shape (no recompilation), keep the first `size`
            labels = np.concatenate([labels, np.repeat(labels[:1], k - size, axis=0)])
        reps = _take(refit(table, method, cfg, common, dtype, labels), size)
        parts.append(reps)
        posts.append(observed_posteriors(table.arrays, reps, clamp=method in ("em1", "em2")).astype(np.float32))
    reps = _stack(parts)
    post = np.concatenate(posts)
    ann, lines = {}, {}
    ann["reliability_lower"], ann["reliability_upper"] = percentile(reps.reliability, est.reliability, level)
    if method == "em2":
        for name, vals in (("sensitivity", reps.sensitivity), ("specificity", reps.specificity)):
            ann[f"{name}_lower"], ann[f"{name}_upper"] = percentile(vals, est.annotator_columns[name], level)
    lines["posterior_lower"], lines["posterior_upper"] = percentile(post, est.posterior, level)
    n_bad = int(np.sum(~np.isfinite(reps.reliability).all(axis=1)))
    if n_bad:
        warnings.warn(
            f"{method}: {n_bad} of {n_boot} bootstrap refits gave non-finite reliabilities (left out of the intervals)", stacklevel=4
        )
    record = {
        "level": level,
        "method": "parametric bootstrap, percentile (widened to contain the estimate)",
        "replicates": n_boot,
        "seed": seed,
        "class_prior_drawn": pi,
        "replicates_not_finite": n_bad,
        "seconds": time.perf_counter() - t0,
    }
    return ann, lines, record


#: the refusal of sequential (one line: the CLI prints it as the error)
SEQUENTIAL_REFUSAL = (
    "sequential: no intervals (--interval): its weights (eq. 8) are an online score that grows with the number of "
    "tasks, not an estimate of logit(p) with a sampling distribution (with the defaults they saturate and every "
    "bootstrap replicate is the same fit); use em1, em2 or proximal for intervals"
)


def attach(table, method: str, cfg, common, dtype, est: EstimatorFit) -> EstimatorFit:
    """``est`` with its interval columns and ``diagnostics["intervals"]`` (the hook of :func:`crowdstat.fit`)."""
    if method == "bayes":
        ann = {"reliability_lower": est.annotator_columns["ci_low"], "reliability_upper": est.annotator_columns["ci_high"]}
        lines = {"posterior_lower": est.line_columns["ci_low"], "posterior_upper": est.line_columns["ci_high"]}
        record = {"level": float(cfg.credible), "method": "NUTS equal-tailed credible interval (level = credible)", "replicates": None}
        if not math.isclose(float(cfg.credible), float(common.interval)):
            warnings.warn(
                f"bayes: intervals are its credible intervals at credible={cfg.credible}, not interval={common.interval}", stacklevel=4
            )
    elif method == "sequential":
        raise ValueError(SEQUENTIAL_REFUSAL)
    elif method in LAPLACE_METHODS and getattr(common, "interval_method", "laplace") == "bootstrap":
        ann, lines, record = bootstrap(table, method, cfg, common, dtype, est)
    elif method in LAPLACE_METHODS:
        ann, lines, record = laplace_intervals(table, method, cfg, common, est)
    else:
        why = "its reliability is agreement with the majority, not a model parameter" if method == "majority" else "no bootstrap for it yet"
        record = {"level": float(common.interval), "method": None, "note": f"no intervals for {method}: {why}"}
        warnings.warn(f"{method}: no intervals ({why})", stacklevel=4)
        ann, lines = {}, {}
    return dataclasses.replace(
        est,
        annotator_columns={**est.annotator_columns, **ann},
        line_columns={**est.line_columns, **lines},
        diagnostics={**est.diagnostics, "intervals": record},
    )
