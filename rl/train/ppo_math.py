"""The math of PPO (:mod:`rl.train.ppo`): pure tensor functions, no model, no state.

Each is checked against hand-computed numbers in tests/rl/test_ppo_math.py; docs/rl.md ("The PPO
update") states the formulas. Masks are float or bool tensors with 1 at the entries that count.

- :func:`masked_mean`, :func:`masked_var`: statistics over the masked entries.
- :func:`masked_whiten`: ``(x - mean) / std`` (advantages); with ``shift_mean=False`` TRL's and
  OpenAI's ``whiten(..., shift_mean=False)``, ``(x - mean) / std + mean``, which adds a constant to
  every entry: not what reward scaling should do (:func:`masked_rescale` is).
- :func:`masked_rescale`: ``x / std``, the reward scaling of ``PPOConfig.whiten_rewards``: zero stays zero.
- :func:`gae`, :func:`line_advantages`, :func:`policy_loss`, :func:`value_loss`, :func:`kl_penalty`.
- :func:`entropy_from_logits`: per-position entropy of ``softmax(logits / T)``.
- :func:`lr_factor`: the learning-rate multiplier of ``PPOConfig.lr_warmup_steps`` / ``lr_schedule``.
- :func:`token_weight`: the factor that makes data-parallel micro-batch losses one global token mean.

Data parallel: the statistics that drive gradients (whitening, rescaling, line baselines) take a
``reduce`` / ``gather`` over the processes, so that every process computes the numbers one process
would compute on the global batch (tests/rl/test_distributed.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rl.policy.rollouts import entropy_from_logits  # the policy's own statistic, re-exported here

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "masked_rescale",
    "gae",
    "line_advantages",
    "policy_loss",
    "value_loss",
    "kl_penalty",
    "entropy_from_logits",
    "lr_factor",
    "token_weight",
    "LR_SCHEDULES",
]

LR_SCHEDULES = ("constant", "linear", "cosine")

#: sums a tensor over the processes of a data-parallel run (the identity on one process)
Reduce = Callable[[torch.Tensor], torch.Tensor]
#: concatenates a list over the processes, in rank order (the identity on one process)
Gather = Callable[[list], list]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None, reduce: Reduce | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (0 when the mask is empty).

    ``reduce``: sums a tensor over the processes of a data-parallel run (:class:`rl.train.ppo_dist.Collectives`
    ``.sum``); with it the mean is over the masked entries of every process (``dim`` must be None)."""
    mask = mask.to(x.dtype)
    if dim is None:
        if reduce is None:
            return (x * mask).sum() / mask.sum().clamp(min=1.0)
        s = reduce(torch.stack([(x * mask).sum(), mask.sum()]))
        return s[0] / s[1].clamp(min=1.0)
    if reduce is not None:
        raise ValueError("masked_mean: reduce works on the whole tensor (dim=None)")
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce: Reduce | None = None) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected when ``unbiased`` and more than one entry); with
    ``reduce``, of the masked entries of every process (two passes: the global mean, then the squares)."""
    mean = masked_mean(x, mask, reduce=reduce)
    m = mask.to(x.dtype)
    s = torch.stack([((x - mean) ** 2 * m).sum(), m.sum()])
    if reduce is not None:
        s = reduce(s)
    var, n = s[0] / s[1].clamp(min=1.0), s[1]
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce | None = None
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over masked entries (of every process with ``reduce``); masked-out
    entries are returned as 0.

    ``shift_mean=False`` adds the mean back, ``(x - mean) / std + mean`` (TRL's and OpenAI's
    convention): the variance becomes 1 but every entry moves by ``mean (1 - 1/std)``. For rewards
    that are zero on most tokens that constant is as large as the signal and grows with the length
    of a completion; scale rewards with :func:`masked_rescale` instead.
    """
    mean, var = masked_mean(x, mask, reduce=reduce), masked_var(x, mask, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def masked_rescale(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, reduce: Reduce | None = None) -> torch.Tensor:
    """``x / sqrt(var + eps)``, var the (unbiased) variance of the masked entries (of every process with
    ``reduce``): unit variance, nothing added, so a zero reward stays zero and a completion's rewards keep
    their sum up to one common factor. Masked-out entries are returned as 0."""
    return x * torch.rsqrt(masked_var(x, mask, reduce=reduce) + eps) * mask.to(x.dtype)


def token_weight(n_local: float, n_global: float, world: int) -> float:
    """The factor of a micro-batch's token-mean loss so that data-parallel training takes the gradient of
    the token mean over the whole global minibatch: ``n_local * world / n_global``.

    ``n_local``: the micro-batch's completion tokens; ``n_global``: the tokens of the minibatch over all
    ``world`` processes. DDP averages the processes' gradients (divides their sum by ``world``), so
    ``sum_micro mean_micro(l) * n_local * world / n_global`` summed over processes and divided by
    ``world`` is ``sum_all_tokens(l) / n_global``. Averaging each process's own token mean instead
    weighs a token by 1 / (its process's tokens): wrong when processes hold different token counts.
    A minibatch without tokens anywhere gets weight 0."""
    return float(n_local) * world / max(float(n_global), 1.0)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation per token, skipping masked positions.

    For the unmasked tokens t_1 < ... < t_n of a row (V after the last one is 0)::

        delta_i = r_i + gamma * V_{i+1} - V_i
        A_i     = delta_i + gamma * lam * A_{i+1}
        R_i     = A_i + V_i

    ``rewards``, ``values``, ``mask``: [B, T] (or [T]). Returns ``(advantages, returns)``, zero
    at masked positions. Value V_i estimates the return from before token i is emitted.
    """
    squeeze = rewards.dim() == 1
    if squeeze:
        rewards, values, mask = rewards[None], values[None], mask[None]
    if not (rewards.shape == values.shape == mask.shape):
        raise ValueError(f"gae: shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, mask {tuple(mask.shape)}")
    m = mask.to(rewards.dtype)
    values = values.to(rewards.dtype)
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_v = torch.zeros_like(last)
    for t in range(T - 1, -1, -1):
        on = m[:, t] > 0
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        g = delta + gamma * lam * last
        adv[:, t] = torch.where(on, g, torch.zeros_like(g))
        last = torch.where(on, g, last)
        next_v = torch.where(on, values[:, t], next_v)
    returns = (adv + values) * m
    if squeeze:
        return adv[0], returns[0]
    return adv, returns


def _pool_stats(pool: list[float], std: bool, eps: float) -> tuple[float, float]:
    """Mean and divisor of a group's pooled values (divisor ``std + eps``, or 1 without ``std``)."""
    mean = sum(pool) / len(pool)
    if not std:
        return mean, 1.0
    var = sum((x - mean) ** 2 for x in pool) / (len(pool) - 1) if len(pool) > 1 else 0.0
    return mean, var**0.5 + eps


def line_advantages(rewards, scores, owners, mask, groups: list, std: bool = True, eps: float = 1e-4, gather: Gather | None = None):
    """The ``"lines"`` advantage estimator (no critic): GRPO's group baseline, per line.

    ``rewards``, ``scores``: [B, T] per-token rewards (after the KL penalty) and crowd scores; ``owners``:
    [B, T] the line each token belongs to (0: none; :func:`rl.crowd.rewards.token_lines`); ``groups``:
    one hashable per row, rows of one prompt share it. A line ``l`` of row b is *rewarded* when one of
    its tokens has a nonzero score; its reward ``r_bl`` is the sum of ``rewards`` over its tokens, and
    the row's program reward ``R_b`` the sum over all its tokens. With the group g of row b::

        A_t = (r_bl - mean_g r) / (std_g r + eps)   for the tokens of a rewarded line l
        A_t = (R_b - mean_g R) / (std_g R + eps)    for every other token

    the means and (unbiased) standard deviations over all rewarded lines, resp. all rows, of the group;
    without ``std`` nothing is divided. ``gather``: concatenates a list over the processes of a
    data-parallel run (:class:`rl.train.ppo_dist.Collectives` ``.gather``), so that a group split across
    processes has one baseline, that of its rows on every process. Returns [B, T], zero at masked positions.
    """
    m = mask.to(rewards.dtype) > 0
    B = rewards.shape[0]
    if len(groups) != B:
        raise ValueError(f"line_advantages: {len(groups)} group ids for {B} rows")
    r, sc, own = (rewards * m).tolist(), (scores * m).tolist(), (owners.long() * m.long()).tolist()
    line_r: list[dict[int, float]] = []
    for b in range(B):
        hit = {ln for ln, s in zip(own[b], sc[b]) if ln > 0 and s != 0.0}
        line_r.append({ln: sum(x for x, o in zip(r[b], own[b]) if o == ln) for ln in sorted(hit)})
    rows = [(groups[b], list(line_r[b].values()), sum(r[b])) for b in range(B)]
    if gather is not None:
        rows = gather(rows)
    line_pool: dict = {}
    prog_pool: dict = {}
    for g, lines, prog in rows:
        line_pool.setdefault(g, []).extend(lines)
        prog_pool.setdefault(g, []).append(prog)
    adv = torch.zeros_like(rewards)
    for b in range(B):
        pm, ps = _pool_stats(prog_pool[groups[b]], std, eps)
        row = [(sum(r[b]) - pm) / ps] * len(r[b])
        if line_r[b]:
            lm, ls = _pool_stats(line_pool[groups[b]], std, eps)
            row = [(line_r[b][o] - lm) / ls if o in line_r[b] else x for x, o in zip(row, own[b])]
        adv[b] = torch.tensor(row, dtype=rewards.dtype)
    return adv * m.to(rewards.dtype)


def policy_loss(logprobs_new, logprobs_old, advantages, mask, clip_range: float):
    """PPO clipped surrogate: ``mean(max(-A r, -A clip(r, 1-eps, 1+eps)))``, r = exp(new - old).

    Returns ``(loss, clipfrac, approx_kl)``: the share of tokens where the clipped term is the
    larger (active), and the k3 estimate ``mean((r - 1) - log r)`` of KL(old || new).
    """
    log_ratio = logprobs_new - logprobs_old
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    clipfrac = masked_mean((pg2 > pg1).to(ratio.dtype), mask)
    approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values_new, values_old, returns, mask, clip_range_value: float | None):
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))``,
    ``V_clip = V_old + clip(V - V_old, -c, c)``; ``clip_range_value=None``: ``0.5 * mean((V - R)^2)``."""
    if clip_range_value is None:
        return 0.5 * masked_mean((values_new - returns) ** 2, mask)
    v_clip = values_old + torch.clamp(values_new - values_old, -clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.maximum((values_new - returns) ** 2, (v_clip - returns) ** 2), mask)


def kl_penalty(logprobs, ref_logprobs, kind: str = "k1"):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.

    With ``d = log pi - log pi_ref``: ``"k1"`` = d (unbiased, can be negative), ``"k2"`` =
    d^2 / 2, ``"k3"`` = exp(-d) - 1 + d (unbiased and >= 0; Schulman's estimator).
    """
    d = logprobs - ref_logprobs
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_penalty: kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def lr_factor(step: int, warmup: int = 0, schedule: str = "constant", total: int | None = None) -> float:
    """Multiplier of the base learning rate at PPO step ``step`` (0-based), for ``LambdaLR``.

    Warmup: ``(step + 1) / warmup`` for ``step < warmup`` (the first step already trains, at
    ``lr / warmup``). Then, with ``p = (step - warmup) / (total - warmup)``: ``"constant"`` 1,
    ``"linear"`` ``max(0, 1 - p)``, ``"cosine"`` ``max(0, (1 + cos(pi p)) / 2)``; ``total=None``:
    1 after the warmup whatever the schedule.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_factor: schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total is None:
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - p)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * p)))
