"""Full Bayes for the one-coin and the two-coin model by NUTS (numpyro) (docs/baselines.md).

Model (binary truth y_j in {correct = +1, wrong = -1}):

    p_i ~ Beta(a, b)            i = 1..m       (reliability: P(label_ij = y_j))
    pi  ~ Beta(1, 1)                           (class prior P(y_j = +1), estimated)
    y_j ~ Bernoulli(pi)                        (marginalised out, never sampled)
    label_ij | y_j, p_i: equals y_j with probability p_i

Two-coin (``bayes2``): p_i is replaced by a sensitivity and a specificity per annotator,

    sens_i = P(label_ij = +1 | y_j = +1) ~ Beta(a, b),   spec_i = P(label_ij = -1 | y_j = -1) ~ Beta(a, b),

the Bayesian version of two-coin Dawid-Skene (``em2``), whose E-step it shares.

The line truth is summed out exactly, so NUTS samples only (p, pi) (m + 1 continuous
parameters, on the logit scale by numpyro's Beta bijector; two-coin: 2 m + 1):

    log p(votes | p, pi) = sum_j logsumexp( log pi     + sum_i log P(label_ij | y_j = +1, p_i),
                                            log(1-pi)  + sum_i log P(label_ij | y_j = -1, p_i) )

Honeypot lines (``truth != 0``) enter with their known branch only (the joint term of that
class, no logsumexp), exactly as in the semi-supervised EM of :mod:`.dawid_skene`; both
per-line terms are one segment sum over the vote list (the E-step of that module, reused), so
there is no Python loop over lines or votes.

Decisions, documented:

- **pi is estimated** with a flat Beta(1, 1) prior, as Dawid-Skene estimates it in its
  M-step: the real sets are unbalanced (jn_product has 12% positives). ``prior`` is used only
  as every chain's starting value of pi.
- **Label switching.** The likelihood is invariant under (p, pi, y) -> (1 - p, 1 - pi, -y).
  The default prior Beta(a=2, b=1) (density 2p) favours p > 1/2 and breaks the symmetry:
  the mirrored mode has prior mass prod_i (1 - p_i) / p_i times smaller (two-coin: the mirror is
  (sens, spec, pi) -> (1 - spec, 1 - sens, 1 - pi), and the same prior on both breaks it). Chains also start in
  the p > 1/2 half (p at the prior median of a few prior draws; ``init_to_median``), so they do
  not hop to the mirror mode. With a symmetric prior (a = b) the posterior is bimodal and the
  r-hat diagnostic says so.
- Outputs per line are posterior means over draws of P(y_j = +1 | votes, p, pi) (the
  Rao-Blackwellised line posterior), with equal-tailed ``credible`` intervals of that
  quantity; per annotator the posterior mean of p_i and its equal-tailed interval (two-coin:
  of the balanced accuracy (sens_i + spec_i) / 2, and of sens_i and spec_i in their own columns).
- Chains run with ``chain_method="sequential"`` (one CPU device; numpyro's
  ``set_host_device_count`` is global and is never called here).

:func:`nuts` takes vote arrays; :func:`fit` is the registry's entry point
(``crowdstat.fit(method="bayes")``, parameters in :class:`~crowdstat.estimators.registry.BayesConfig`),
:func:`fit_two_coin` that of ``method="bayes2"`` (the same parameters).
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial

import numpy as np

from crowdstat._typing import VoteArrays
from crowdstat.estimators.registry import BayesConfig, CommonConfig
from crowdstat.estimators.result import EstimatorFit, check_inputs

__all__ = ["model", "nuts", "fit", "fit_two_coin"]


def model(votes: VoteArrays, m: int, a, b, delta, two_coin: bool = False):
    """numpyro model: p_i ~ Beta(a, b) (two-coin: sens_i, spec_i ~ Beta(a, b)), pi ~ Beta(1, 1), line truth
    marginalised (honeypots fixed)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from crowdstat.estimators.dawid_skene import e_step

    a = jnp.asarray(a)
    prior = dist.Beta(jnp.full((m,), a), jnp.full((m,), jnp.asarray(b, a.dtype))).to_event(1)
    if two_coin:
        sens = numpyro.sample("sens", prior)
        spec = numpyro.sample("spec", prior)
    else:
        sens = spec = numpyro.sample("p", prior)
    pi = numpyro.sample("pi", dist.Beta(jnp.ones((), a.dtype), jnp.ones((), a.dtype)))
    _, ll = e_step(votes, pi, spec, sens, delta)
    numpyro.factor("votes", ll)


def _init_strategy(site=None, pi0=0.5):
    """pi starts at ``prior``; p at the median of a few prior draws (numpyro needs a partial)."""
    from numpyro.infer import init_to_median

    if site is None:
        return partial(_init_strategy, pi0=pi0)
    if site["name"] == "pi":
        return pi0
    return init_to_median(site, num_samples=15)


def _annotator_summary(sens, spec, two_coin: bool, lo_q: float, hi_q: float) -> tuple[np.ndarray, dict]:
    """(posterior mean reliability, annotator columns): p (one-coin) or the balanced accuracy (sens + spec) / 2 with its
    interval, and (two-coin) sensitivity / specificity with theirs. ``sens``, ``spec``: (draws, m)."""
    rel_draws = 0.5 * (sens + spec) if two_coin else sens
    p_lo, p_hi = np.quantile(rel_draws, [lo_q, hi_q], axis=0)
    cols = {"ci_low": p_lo, "ci_high": p_hi}
    if two_coin:
        for name, d in (("sensitivity", sens), ("specificity", spec)):
            lo, hi = np.quantile(d, [lo_q, hi_q], axis=0)
            cols.update({name: d.mean(axis=0), f"{name}_ci_low": lo, f"{name}_ci_high": hi})
    return rel_draws.mean(axis=0), cols


def nuts(arrays: VoteArrays, cfg: BayesConfig | None = None, *, dtype, prior, delta, two_coin: bool = False) -> EstimatorFit:
    """Posterior of the one-coin (``two_coin``: two-coin) model by NUTS (model in the module docstring).

    Parameters
    ----------
    arrays : VoteArrays
        Votes; honeypot lines (``truth != 0``) enter with their known truth.
    cfg : BayesConfig, optional
        ``num_warmup``, ``num_samples``, ``num_chains`` (NUTS settings; chains run sequentially),
        ``a``, ``b`` (the Beta(a, b) prior of every p_i; a > b breaks the label-switching
        symmetry), ``seed``, ``credible`` (mass of the equal-tailed credible intervals).
        None: ``BayesConfig()``'s defaults.
    dtype : jnp.float32 or jnp.float64
    prior : float in (0, 1)
        Starting value of the class prior pi in every chain (pi itself has a Beta(1, 1) prior).
    delta : float
        p and pi are clipped to [delta, 1 - delta] inside the log-likelihood.

    Returns
    -------
    EstimatorFit
        posterior = posterior mean of P(line correct | votes, p, pi); reliability = posterior mean
        of p_i; weight = logit(that mean) (clipped); annotator_columns ``ci_low, ci_high`` (of p_i);
        line_columns ``ci_low, ci_high`` (of the line posterior); diagnostics ``r_hat_max, n_eff_min,
        divergences, num_chains, num_samples, num_warmup, seconds, class_prior, class_prior_ci``.
        Two-coin: reliability = the balanced accuracy (sens_i + spec_i) / 2 (its interval in ``ci_low, ci_high``),
        and the annotator columns ``sensitivity, specificity`` with their ``*_ci_low, *_ci_high``.
    """
    cfg = cfg or BayesConfig()
    check_inputs(arrays, dtype, prior, delta, "nuts")
    num_warmup, num_samples, num_chains, credible = cfg.num_warmup, cfg.num_samples, cfg.num_chains, cfg.credible
    import jax
    import jax.numpy as jnp
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS

    from crowdstat.estimators.dawid_skene import e_step

    t0 = time.perf_counter()
    m = int(np.max(np.asarray(arrays.annotator))) + 1
    votes = VoteArrays(*(jnp.asarray(x) for x in arrays))
    a_, b_, delta_, prior_ = (jnp.asarray(x, dtype) for x in (cfg.a, cfg.b, delta, prior))

    kernel = NUTS(partial(model, two_coin=two_coin), init_strategy=partial(_init_strategy, pi0=prior_))
    mcmc = MCMC(
        kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, chain_method="sequential", progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(cfg.seed), votes, m, a_, b_, delta_, extra_fields=("diverging",))
    samples = mcmc.get_samples(group_by_chain=True)  # p / sens, spec: (chains, draws, m), pi: (chains, draws)
    divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    summ = summary({k: np.asarray(v) for k, v in samples.items()}, prob=credible, group_by_chain=True)
    r_hat = np.concatenate([np.ravel(summ[k]["r_hat"]) for k in samples])
    n_eff = np.concatenate([np.ravel(summ[k]["n_eff"]) for k in samples])

    sens_draws, pi_draws = samples["sens" if two_coin else "p"].reshape(-1, m), samples["pi"].reshape(-1)
    spec_draws = samples["spec"].reshape(-1, m) if two_coin else sens_draws

    # P(line correct | votes, params) for every draw: one E-step per draw (lax.map in batches
    # bounds the memory to batch x n_lines besides the (draws x n_lines) result).
    q_draws = jax.lax.map(lambda d: e_step(votes, d[2], d[1], d[0], delta_)[0], (sens_draws, spec_draws, pi_draws), batch_size=64)
    q_draws = np.asarray(q_draws)
    lo_q, hi_q = (1.0 - credible) / 2.0, (1.0 + credible) / 2.0
    post = q_draws.mean(axis=0)
    line_lo, line_hi = np.quantile(q_draws, [lo_q, hi_q], axis=0)
    rel, ann_cols = _annotator_summary(np.asarray(sens_draws, np.float64), np.asarray(spec_draws, np.float64), two_coin, lo_q, hi_q)
    rel_c = np.clip(rel, delta, 1 - delta)
    weight = np.log(rel_c) - np.log1p(-rel_c)
    pi_np = np.asarray(pi_draws, np.float64)
    seconds = time.perf_counter() - t0

    r_hat_max = float(np.nanmax(r_hat)) if np.any(np.isfinite(r_hat)) else float("nan")
    params = f"sens_i, spec_i ~ Beta({cfg.a}, {cfg.b})" if two_coin else f"p_i ~ Beta({cfg.a}, {cfg.b})"
    diagnostics = {
        "model": f"{'two' if two_coin else 'one'}-coin Bayes: {params}, pi ~ Beta(1, 1), truth marginalised; NUTS",
        "r_hat_max": r_hat_max if math.isfinite(r_hat_max) else None,
        "n_eff_min": float(np.nanmin(n_eff)),
        "divergences": divergences,
        "num_chains": int(num_chains),
        "num_samples": int(num_samples),
        "num_warmup": int(num_warmup),
        "seconds": seconds,
        "class_prior": float(pi_np.mean()),
        "class_prior_ci": [float(np.quantile(pi_np, lo_q)), float(np.quantile(pi_np, hi_q))],
        "credible": float(credible),
    }
    if divergences:
        warnings.warn(f"nuts: {divergences} divergent transitions after warmup", stacklevel=2)
    if num_chains > 1 and math.isfinite(r_hat_max) and r_hat_max > 1.05:
        warnings.warn(f"nuts: max r-hat {r_hat_max:.3f} > 1.05: chains disagree (label switching or too few samples)", stacklevel=2)
    out_dt = np.dtype(jnp.dtype(dtype).name)
    return EstimatorFit(
        posterior=post.astype(out_dt),
        weight=weight.astype(out_dt),
        reliability=rel.astype(out_dt),
        diagnostics=diagnostics,
        annotator_columns=ann_cols,
        line_columns={"ci_low": line_lo.astype(np.float64), "ci_high": line_hi.astype(np.float64)},
    )


def fit(table, cfg: BayesConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="bayes")``: :func:`nuts` on a :class:`~crowdstat.io.tables.VoteTable`."""
    return nuts(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta))


def fit_two_coin(table, cfg: BayesConfig, common: CommonConfig, dtype) -> EstimatorFit:
    """``crowdstat.fit(method="bayes2")``: :func:`nuts` (two-coin) on a :class:`~crowdstat.io.tables.VoteTable`."""
    return nuts(table.arrays, cfg, dtype=dtype, prior=common.prior, delta=float(common.delta), two_coin=True)
