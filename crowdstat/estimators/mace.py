"""MACE (Hovy et al. 2013): each annotator knows the answer or spams from a strategy, by VB or EM (docs/baselines.md).

Model (binary truth y_j in {correct = +1, wrong = -1}, class prior P(y_j = +1) = ``prior``, fixed;
MACE and crowd-kit: uniform, 1/2):

    S_ij ~ Bernoulli(1 - theta_i)               annotator i spams on line j (theta_i: competence)
    label_ij = y_j                     if S_ij = 0
    label_ij ~ Categorical(xi_i)       if S_ij = 1 (xi_i: the annotator's spam strategy)

so P(label_ij = a | y_j = t) = theta_i [a = t] + (1 - theta_i) xi_i(a).

E-step (log space; one segment sum over the vote list for each class t):

    L_j(t) = log P(t) + sum_{i votes on j} log( theta_i [a_ij = t] + (1 - theta_i) xi_i(a_ij) )
    q_j = P(y_j = +1 | votes) = sigmoid(L_j(+1) - L_j(-1))       (honeypot lines clamped to their truth)

and per vote the posterior of "knew it": k_ij = P(y_j = a_ij | votes) theta_i / (theta_i + (1 - theta_i) xi_i(a_ij)).
Expected counts per annotator: K_i = sum_j k_ij, S_i = sum_j (1 - k_ij), X_i(a) = sum_{j: a_ij = a} (1 - k_ij).

M-step, ``inference="em"``: theta_i = (K_i + s) / (K_i + S_i + 2 s), xi_i(a) = (X_i(a) + s) / (X_i(+1) + X_i(-1) + 2 s),
with s = ``smoothing`` (crowd-kit uses 0.01 / n_labels = 0.005 whatever its ``smoothing`` argument says).

Variational M-step, ``inference="vb"`` (the paper's VB with theta_i ~ Beta(alpha, beta) and xi_i ~
Dirichlet(strategy_prior, strategy_prior)): the E-step then reads the sub-normalised weights

    theta_i      -> exp( psi(K_i + alpha) - psi(K_i + S_i + alpha + beta) )
    1 - theta_i  -> exp( psi(S_i + beta)  - psi(K_i + S_i + alpha + beta) )
    xi_i(a)      -> exp( psi(X_i(a) + c) - psi(X_i(+1) + X_i(-1) + 2 c) )

(psi = digamma). crowd-kit gives its ``alpha`` to the spam weight and ``beta`` to the competence; the
paper's Beta(alpha, beta) is on theta_i, as here. Both are 0.5 by default, where the two agree.

Restarts: ``n_restarts`` starts, each ``n_iter`` (M, E) cycles (crowd-kit's: no other stopping
rule), run together under ``vmap``; the restart with the largest log marginal likelihood
sum_j log sum_t exp L_j(t) wins. Start r: competence and strategy weights are uniform on [1, 2.5]
(crowd-kit's ``default_noise = 0.5``), normalised, drawn from ``numpy.random.RandomState(seed + r)``
as (spam, know) and (xi(-1), xi(+1)) pairs; crowd-kit draws from ``RandomState(seed)`` in every restart,
so its restarts are one start repeated (docs/baselines.md).

Outputs: ``reliability`` = the balanced accuracy (sensitivity + specificity) / 2 = (1 + theta_i) / 2,
with sensitivity = theta_i + (1 - theta_i) xi_i(+1) and specificity = theta_i + (1 - theta_i) xi_i(-1)
(VB weights normalised); ``weight`` = its logit; annotator columns ``competence`` (theta_i),
``spam_positive`` (xi_i(+1)), ``sensitivity``, ``specificity``.

:func:`mace` takes vote arrays; :func:`fit` is the registry's entry point (``crowdstat.fit(method="mace")``,
parameters in :class:`~crowdstat.estimators.registry.MACEConfig`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import CommonConfig, MACEConfig
from crowdstat.estimators.result import EstimatorFit, check_inputs

__all__ = ["MaceParams", "init_params", "e_step", "m_step", "run", "mace", "fit"]


class MaceParams(NamedTuple):
    """Log weights of MACE (normalised under EM, sub-normalised under VB)."""

    log_know: jax.Array  # shape=(m,), log theta_i
    log_spam: jax.Array  # shape=(m,), log (1 - theta_i)
    log_xi: jax.Array  # shape=(m, 2), log xi_i(a): column 0 = label -1, column 1 = label +1


class MaceCounts(NamedTuple):
    know: jax.Array  # shape=(m,), K_i
    spam: jax.Array  # shape=(m,), S_i
    strategy: jax.Array  # shape=(m, 2), X_i(-1), X_i(+1)


def init_params(m: int, n_restarts: int, seed: int) -> MaceParams:
    """The starts, stacked on a leading restart axis (drawn with host NumPy, module docstring)."""
    know, spam, xi = [], [], []
    for r in range(n_restarts):
        u = np.random.RandomState(seed + r).uniform(size=(m, 2)) * 1.5 + 1.0
        u = u / u.sum(axis=1, keepdims=True)
        spam.append(np.log(u[:, 0]))
        know.append(np.log(u[:, 1]))
        xi.append(np.log(u))
    return MaceParams(jnp.asarray(np.stack(know)), jnp.asarray(np.stack(spam)), jnp.asarray(np.stack(xi)))


def e_step(votes: VoteArrays, p: MaceParams, log_prior):
    """(q, log marginal likelihood, expected counts). ``log_prior`` = (log P(-1), log P(+1))."""
    n_lines = votes.line_program.shape[0]
    m = p.log_know.shape[0]
    pos = votes.label > 0
    a = votes.annotator
    ls = jnp.where(pos, p.log_xi[a, 1], p.log_xi[a, 0]) + p.log_spam[a]
    lk = p.log_know[a]
    both = jnp.logaddexp(ls, lk)
    seg = partial(jax.ops.segment_sum, segment_ids=votes.line, num_segments=n_lines, indices_are_sorted=True)
    lpos = log_prior[1] + seg(jnp.where(pos, both, ls))
    lneg = log_prior[0] + seg(jnp.where(pos, ls, both))
    t = votes.truth
    q = jnp.where(t > 0, 1.0, jnp.where(t < 0, 0.0, jax.nn.sigmoid(lpos - lneg))).astype(lk.dtype)
    ll = jnp.sum(jnp.where(t > 0, lpos, jnp.where(t < 0, lneg, jnp.logaddexp(lpos, lneg))))
    qv = q[votes.line]
    k = jnp.where(pos, qv, 1.0 - qv) * jnp.exp(lk - both)
    sp = 1.0 - k
    sa = partial(jax.ops.segment_sum, segment_ids=a, num_segments=m)
    posf = pos.astype(k.dtype)
    counts = MaceCounts(sa(k), sa(sp), jnp.stack([sa(sp * (1.0 - posf)), sa(sp * posf)], axis=1))
    return q, ll, counts


def m_step(c: MaceCounts, vb: bool, smoothing, alpha, beta, strategy_prior) -> MaceParams:
    """EM (smoothed normalisation) or VB (digamma weights) from the expected counts."""
    if vb:
        tot = digamma(c.know + c.spam + alpha + beta)
        xs = digamma(jnp.sum(c.strategy, axis=1, keepdims=True) + 2.0 * strategy_prior)
        return MaceParams(digamma(c.know + alpha) - tot, digamma(c.spam + beta) - tot, digamma(c.strategy + strategy_prior) - xs)
    tot = jnp.log(c.know + c.spam + 2.0 * smoothing)
    xs = jnp.log(jnp.sum(c.strategy, axis=1, keepdims=True) + 2.0 * smoothing)
    return MaceParams(jnp.log(c.know + smoothing) - tot, jnp.log(c.spam + smoothing) - tot, jnp.log(c.strategy + smoothing) - xs)


@partial(jax.jit, static_argnames=("vb",))
def run(votes: VoteArrays, p0: MaceParams, log_prior, n_iter, smoothing, alpha, beta, strategy_prior, *, vb: bool):
    """All restarts (leading axis of ``p0``) under vmap, ``n_iter`` (M, E) cycles each, after a first E-step.

    Returns the per-restart (params, q, log marginal likelihood).
    """

    def one(p):
        _, _, c = e_step(votes, p, log_prior)

        def body(_, carry):
            p, c = carry
            p = m_step(c, vb, smoothing, alpha, beta, strategy_prior)
            _, _, c = e_step(votes, p, log_prior)
            return p, c

        p, _ = jax.lax.fori_loop(0, n_iter, body, (p, c))
        q, ll, _ = e_step(votes, p, log_prior)
        return p, q, ll

    return jax.vmap(one)(p0)


def mace(arrays: VoteArrays, cfg: MACEConfig | None = None, *, dtype, prior, delta) -> EstimatorFit:
    """MACE by VB or EM with restarts (module docstring).

    Parameters
    ----------
    arrays : VoteArrays
        Votes; honeypot lines (``truth != 0``) are clamped to their truth.
    cfg : MACEConfig, optional
        ``inference`` (vb / em), ``n_iter``, ``n_restarts``, ``seed``, ``smoothing`` (em), ``alpha``, ``beta``,
        ``strategy_prior`` (vb). None: ``MACEConfig()``'s defaults (crowd-kit's).
    dtype : jnp.float32 or jnp.float64
    prior : float in (0, 1)
        The fixed class prior P(line correct).
    delta : float
        The reliabilities are clipped to [delta, 1 - delta] before their logit.

    Returns
    -------
    EstimatorFit
        posterior, reliability (balanced accuracy), weight (its logit); annotator columns ``competence``,
        ``spam_positive``, ``sensitivity``, ``specificity``; diagnostics ``log_marginal_likelihood``,
        ``restart``, ``restart_log_likelihoods``, ``iterations``.
    """
    cfg = cfg or MACEConfig()
    check_inputs(arrays, dtype, prior, delta, "mace")
    m = int(np.max(np.asarray(arrays.annotator))) + 1
    votes = VoteArrays(*(jnp.asarray(x) for x in arrays))
    d = partial(jnp.asarray, dtype=dtype)
    p0 = MaceParams(*(d(x) for x in init_params(m, cfg.n_restarts, cfg.seed)))
    log_prior = d([math.log1p(-prior), math.log(prior)])
    ps, qs, lls = run(
        votes, p0, log_prior, cfg.n_iter, d(cfg.smoothing), d(cfg.alpha), d(cfg.beta), d(cfg.strategy_prior), vb=cfg.inference == "vb"
    )
    lls_np = np.asarray(lls, np.float64)
    best = int(np.nanargmax(np.where(np.isfinite(lls_np), lls_np, -np.inf))) if np.isfinite(lls_np).any() else 0
    know = np.exp(np.asarray(ps.log_know[best], np.float64))
    spam = np.exp(np.asarray(ps.log_spam[best], np.float64))
    xi = np.exp(np.asarray(ps.log_xi[best], np.float64))
    theta = know / (know + spam)
    xi = xi / xi.sum(axis=1, keepdims=True)
    sens = theta + (1.0 - theta) * xi[:, 1]
    spec = theta + (1.0 - theta) * xi[:, 0]
    rel = 0.5 * (sens + spec)
    rel_c = np.clip(rel, delta, 1 - delta)
    out_dt = np.dtype(jnp.dtype(dtype).name)
    return EstimatorFit(
        posterior=np.asarray(qs[best]),
        weight=(np.log(rel_c) - np.log1p(-rel_c)).astype(out_dt),
        reliability=rel.astype(out_dt),
        diagnostics={
            "model": f"MACE ({cfg.inference}): P(label = truth) = theta_i + (1 - theta_i) xi_i(truth)"
            + (f", theta ~ Beta({cfg.alpha}, {cfg.beta}), xi ~ Dirichlet({cfg.strategy_prior})" if cfg.inference == "vb" else ""),
            "iterations": int(cfg.n_iter),
            "log_marginal_likelihood": float(lls_np[best]) if math.isfinite(lls_np[best]) else None,
            "restart": best,
            "restart_log_likelihoods": [float(x) if math.isfinite(x) else None for x in lls_np],
            "n_honeypot_lines_clamped": int(np.count_nonzero(np.asarray(arrays.truth))),
        },
        annotator_columns={"competence": theta, "spam_positive": xi[:, 1], "sensitivity": sens, "specificity": spec},
    )


def fit(table, cfg: MACEConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="mace")``: :func:`mace` on a :class:`~crowdstat.io.tables.VoteTable`."""
    return mace(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta))
