"""PPO with LoRA and a value head, from external per-token rewards (no reward model).

Why not TRL: TRL 1.16 ships no PPO (GRPOTrainer/RLOOTrainer only), and TRL 1.12's
``trl.experimental.ppo.PPOTrainer`` requires a ``reward_model`` that it scores through
``get_reward`` (backbone + ``score`` head) on the final token. cRLHF has no reward model: the
crowd's per-line posteriors arrive in a file, and the point is to place them on the tokens that
wrote each line. So the update is written here, compactly, on transformers + peft + accelerate
(design, formulas and GPU commands: docs/rl.md).

- Policy: base model + LoRA (peft), with a value head (``nn.Linear(hidden, 1)`` on the last
  hidden state) trained jointly (``loss = pg_loss + vf_coef * vf_loss``).
- Reference: the same model with the adapter disabled (``with model.disable_adapter():``), so
  there is no second copy of the weights.
- Per-token reward: ``r_t = score_t - kl_coef * (log pi(a_t) - log pi_ref(a_t))``; optional
  scaling to unit variance; GAE (gamma, lam); advantages whitened; ``ppo_epochs`` passes of
  shuffled minibatches; clipped ratio and clipped value losses.
- ``accelerate.Accelerator`` for device placement, mixed precision and multi-GPU (DDP).

``rl train --model PATH [--adapter DIR] --rollouts R --rewards W --reward-mode {program,soft,lines}
--out DIR [ppo options]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crowdstat.io.atomic import atomic_write_dir, atomic_write_text
from rl.config import PPOConfig, add_dataclass_arguments, dataclass_from_args
from rl.policy.rollouts import Rollout, completion_forward, pack

__all__ = [
    "PPOConfig",
    "PPOTrainer",
    "gae",
    "policy_loss",
    "value_loss",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "add_arguments",
    "run",
]

VALUE_HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "ppo_config.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


# ---------------------------------------------------------------------------------------------
# the math (pure tensor functions; tests/rl/test_ppo_math.py checks each against hand values)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected when ``unbiased`` and more than one entry)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over masked entries; ``shift_mean=False`` adds the mean back
    (scale only). Masked-out entries are returned as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


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


def value_loss(values_new, values_old, returns, mask, clip_range_value: float):
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))``,
    ``V_clip = V_old + clip(V - V_old, -c, c)``."""
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


# ---------------------------------------------------------------------------------------------
# trainer


class _PolicyWithValue(nn.Module):
    """One module for accelerate/DDP: the peft policy and the value head."""

    def __init__(self, policy, value_head: nn.Linear):
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(self, input_ids, attention_mask, position_ids, P: int, C: int):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "P": P, "C": C}
        lp, h = completion_forward(self.policy, batch, hidden=True)
        values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return lp, values


def _resolve_mixed_precision(mp: str, on_gpu: bool) -> str:
    if mp == "auto":
        if not on_gpu:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mp != "no" and not on_gpu:
        raise ValueError(f"PPOConfig.mixed_precision={mp!r} needs a GPU; use 'no' or 'auto' on CPU")
    return mp


def _check_batch(rollouts: list[Rollout], token_rewards: list[list[float]]) -> int:
    """Validate a PPO batch (one finite reward per completion token); return the number of empty completions."""
    if len(rollouts) != len(token_rewards):
        raise ValueError(f"PPOTrainer.step: {len(rollouts)} rollouts but {len(token_rewards)} reward lists")
    for r, tr in zip(rollouts, token_rewards):
        if len(tr) != len(r.completion_ids):
            raise ValueError(
                f"PPOTrainer.step: program {r.program!r}: {len(tr)} token rewards for {len(r.completion_ids)} completion tokens"
            )
        if not all(math.isfinite(x) for x in tr):
            raise ValueError(f"PPOTrainer.step: program {r.program!r}: non-finite token reward")
    n_empty = sum(not r.completion_ids for r in rollouts)
    if n_empty == len(rollouts):
        raise ValueError("PPOTrainer.step: every completion is empty; nothing to train on")
    return n_empty


def _grid(rows: list[list[float]], B: int, C: int, device) -> torch.Tensor:
    """Ragged rows as a zero-padded float32 [B, C] tensor on ``device``."""
    out = torch.zeros(B, C, dtype=torch.float32)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)


@dataclass(frozen=True)
class _Batch:
    """One PPO batch: the rollouts and, as [B, C] tensors over completion tokens, the token mask, the
    scores, and what the epochs hold fixed (old and reference log probs, old values, the per-token
    KL, whitened advantages, returns). ``mismatch``: the largest gap between the rollouts' stored
    log probs and the recomputed ones."""

    rollouts: list[Rollout]
    mask: torch.Tensor
    scores: torch.Tensor
    old_lp: torch.Tensor
    old_v: torch.Tensor
    ref_lp: torch.Tensor
    kl: torch.Tensor
    adv: torch.Tensor
    returns: torch.Tensor
    mismatch: float


class PPOTrainer:
    """PPO on a peft (LoRA) policy with a jointly trained value head; see the module docstring.

    Parameters
    ----------
    model : a ``peft.PeftModel`` with a trainable LoRA adapter (:func:`rl.policy.models.load_policy`).
    tokenizer : its tokenizer (pad token used for batching).
    config : :class:`PPOConfig`.
    progress : show a tqdm bar over the minibatch updates of each step.

    Attributes
    ----------
    value_head : ``nn.Linear(hidden_size, 1)``, float32, zero-initialised (V = 0 at the start).
    accelerator : the ``accelerate.Accelerator``.
    n_steps : PPO steps taken (kept across :meth:`save`/:meth:`load`).
    """

    def __init__(self, model, tokenizer, config: PPOConfig, *, progress: bool = False):
        from accelerate import Accelerator
        from peft import PeftModel

        if not isinstance(config, PPOConfig):
            raise TypeError(f"PPOTrainer: config must be an rl.train.ppo.PPOConfig, got {type(config).__name__}")
        if not isinstance(model, PeftModel):
            raise TypeError(
                f"PPOTrainer: model must be a peft.PeftModel (base + LoRA), got {type(model).__name__}; "
                "load it with rl.policy.models.load_policy(path, LoraSpec()) so that the reference is the "
                "same model with its adapter disabled"
            )
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("PPOTrainer: the model has no trainable parameters; load the adapter with is_trainable=True")
        if tokenizer.pad_token_id is None:
            raise ValueError("PPOTrainer: the tokenizer has no pad token; rl.policy.models.load_tokenizer sets one")
        self.config = config
        self.tokenizer = tokenizer
        self.progress = progress
        on_gpu = torch.cuda.is_available()
        self.mixed_precision = _resolve_mixed_precision(config.mixed_precision, on_gpu)
        self.accelerator = Accelerator(mixed_precision=self.mixed_precision, cpu=not on_gpu)
        hidden = model.config.hidden_size
        value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(value_head.weight)
        nn.init.zeros_(value_head.bias)
        model.eval()  # no dropout in PPO: old and new log probs must come from the same function
        self.model = model
        self.value_head = value_head
        wrapper = _PolicyWithValue(model, value_head).to(self.accelerator.device)
        params = trainable + list(value_head.parameters())
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
        self.wrapped, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        self.params = params
        self.n_steps = 0

    # -- helpers ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def _forward(self, rollouts: list[Rollout]):
        b = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], self.tokenizer.pad_token_id, self.device)
        lp, v = self.wrapped(b["input_ids"], b["attention_mask"], b["position_ids"], b["P"], b["C"])
        return lp, v, b["completion_mask"]

    @property
    def micro_batch_size(self) -> int:
        """Rollouts per forward/backward pass: minibatch_size / grad_accum_steps."""
        return self.config.minibatch_size // self.config.grad_accum_steps

    # -- the update -----------------------------------------------------------------------------

    def step(self, rollouts: list[Rollout], token_rewards: list[list[float]]) -> dict:
        """One PPO update on a batch of rollouts and their per-token rewards; returns statistics.

        Empty completions (no tokens) carry no action: they are masked out (counted in ``n_empty``).
        In a multi-process run each process passes its own, equally sized, share of the rollouts;
        DDP averages the gradients (whitening statistics are per process).
        """
        t0 = time.perf_counter()
        n_empty = _check_batch(rollouts, token_rewards)
        # empty completions stay in the batch as all-masked rows (so that every process of a
        # multi-GPU run makes the same number of forward/backward passes)
        B = len(rollouts)
        C = max(1, max(len(r.completion_ids) for r in rollouts))
        mask = _grid([[1.0] * len(r.completion_ids) for r in rollouts], B, C, self.device)
        scores = _grid(token_rewards, B, C, self.device)
        batch = self._prepare_batch(rollouts, mask, scores)
        stats, grad_norm = self._ppo_epochs(batch)
        self.n_steps += 1
        out = self._summary(batch, stats, grad_norm, n_empty)
        out["time_s"] = time.perf_counter() - t0
        return out

    def _old_logprobs(self, rollouts: list[Rollout], B: int, C: int):
        """Log probs and values under the current policy, and reference log probs (adapter off),
        of every completion token: three [B, C] tensors, zero at padding."""
        dev, micro = self.device, self.micro_batch_size
        old_lp = torch.zeros(B, C, device=dev)
        old_v = torch.zeros(B, C, device=dev)
        ref_lp = torch.zeros(B, C, device=dev)
        with torch.no_grad():
            for s in range(0, B, micro):
                rows = rollouts[s : s + micro]
                lp, v, m = self._forward(rows)
                c = lp.shape[1]
                old_lp[s : s + len(rows), :c] = lp * m
                old_v[s : s + len(rows), :c] = v * m
                with self.model.disable_adapter():
                    rlp, _, _ = self._forward(rows)
                ref_lp[s : s + len(rows), :c] = rlp * m
        return old_lp, old_v, ref_lp

    def _prepare_batch(self, rollouts: list[Rollout], mask: torch.Tensor, scores: torch.Tensor) -> _Batch:
        """Everything the PPO epochs hold fixed: old/reference log probs and values, the KL-penalised
        rewards (optionally scaled), GAE advantages (whitened) and returns."""
        cfg = self.config
        B, C = mask.shape
        old_lp, old_v, ref_lp = self._old_logprobs(rollouts, B, C)
        mismatch = max((abs(a - b) for r, row in zip(rollouts, old_lp.tolist()) for a, b in zip(r.logprobs, row)), default=0.0)
        kl = kl_penalty(old_lp, ref_lp, "k1") * mask
        rewards = scores - cfg.kl_coef * kl
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        adv, returns = gae(rewards, old_v, mask, cfg.gamma, cfg.lam)
        adv = masked_whiten(adv, mask, shift_mean=True)
        return _Batch(rollouts, mask, scores, old_lp, old_v, ref_lp, kl, adv, returns, float(mismatch))

    def _ppo_epochs(self, batch: _Batch) -> tuple[dict[str, list[float]], float]:
        """``ppo_epochs`` passes over shuffled minibatches, one optimizer step per minibatch.
        Returns the per-micro-batch losses and the last gradient norm (nan without clipping)."""
        from tqdm.auto import tqdm

        cfg = self.config
        B = len(batch.rollouts)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.n_steps)
        n_mb = math.ceil(B / cfg.minibatch_size)
        stats = {"loss/policy": [], "loss/value": [], "policy/clipfrac": [], "policy/approx_kl": [], "loss/total": []}
        bar = tqdm(
            total=cfg.ppo_epochs * n_mb, desc=f"ppo step {self.n_steps}", unit="mb", disable=not self.progress, file=sys.stderr, leave=False
        )
        self.wrapped.train(False)
        grad_norm = float("nan")
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=gen).tolist()
            for s in range(0, B, cfg.minibatch_size):
                self._minibatch(batch, perm[s : s + cfg.minibatch_size], stats)
                if cfg.max_grad_norm > 0:
                    grad_norm = float(self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                bar.update(1)
        bar.close()
        return stats, grad_norm

    def _minibatch(self, batch: _Batch, mb: list[int], stats: dict[str, list[float]]) -> None:
        """Accumulate the gradient of one minibatch (rows ``mb``) over micro-batches, each weighted by
        its share of the minibatch's tokens; DDP synchronises on the last micro-batch only."""
        cfg = self.config
        micro = self.micro_batch_size
        parts = [mb[i : i + micro] for i in range(0, len(mb), micro)]
        n_tok = float(batch.mask[mb].sum().item())
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(self.wrapped)
            with ctx:
                lp, v, m = self._forward([batch.rollouts[i] for i in part])
                c = lp.shape[1]
                idx = torch.tensor(part, device=self.device)
                mk = batch.mask[idx, :c]
                pg, clipfrac, akl = policy_loss(lp, batch.old_lp[idx, :c], batch.adv[idx, :c], mk, cfg.clip_range)
                vf = value_loss(v, batch.old_v[idx, :c], batch.returns[idx, :c], mk, cfg.clip_range_value)
                loss = pg + cfg.vf_coef * vf
                w = float(mk.sum().item()) / max(n_tok, 1.0)
                self.accelerator.backward(loss * w)
            stats["loss/policy"].append(pg.item())
            stats["loss/value"].append(vf.item())
            stats["policy/clipfrac"].append(clipfrac.item())
            stats["policy/approx_kl"].append(akl.item())
            stats["loss/total"].append(loss.item())

    def _summary(self, batch: _Batch, stats: dict[str, list[float]], grad_norm: float, n_empty: int) -> dict:
        """The statistics :meth:`step` returns (all but ``time_s``)."""
        cfg = self.config
        mask, scores, kl, returns, old_v = batch.mask, batch.scores, batch.kl, batch.returns, batch.old_v
        B = len(batch.rollouts)
        seq_score = (scores * mask).sum(1)
        var_r = masked_var(returns, mask)
        ev = 1.0 - masked_var(returns - old_v, mask) / var_r if var_r > 0 else torch.tensor(float("nan"))
        out = {k: float(sum(v) / len(v)) for k, v in stats.items()}
        out.update(
            {
                "step": self.n_steps,
                "reward/score_mean": float(seq_score.mean()),
                "reward/score_std": float(seq_score.std()) if B > 1 else 0.0,
                "reward/total_mean": float(((scores - cfg.kl_coef * kl) * mask).sum(1).mean()),
                "kl/k1_mean": float(kl.sum(1).mean()),
                "kl/k3_mean": float((kl_penalty(batch.old_lp, batch.ref_lp, "k3") * mask).sum(1).mean()),
                "value/mean": float(masked_mean(old_v, mask)),
                "returns/mean": float(masked_mean(returns, mask)),
                "value/explained_variance": float(ev),
                "advantages/mean": float(masked_mean(batch.adv, mask)),
                "grad_norm": grad_norm,
                "logprob/rollout_mismatch_max": batch.mismatch,
                "tokens/mean_len": float(mask.sum() / B),
                "n_rollouts": B,
                "n_empty": n_empty,
                "lr": cfg.learning_rate,
            }
        )
        return out

    # -- persistence ----------------------------------------------------------------------------

    def save(self, out_dir) -> Path:
        """Write the adapter (peft ``save_pretrained``), the value head, the config, the optimizer state
        and the step count to ``out_dir`` atomically (temporary sibling directory, then renamed)."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:

            def write(tmp: Path) -> None:
                acc.unwrap_model(self.wrapped).policy.save_pretrained(tmp)
                save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}, str(tmp / VALUE_HEAD_FILE))
                (tmp / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
                state = {"n_steps": self.n_steps, "hidden_size": self.value_head.in_features, "mixed_precision": self.mixed_precision}
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
                torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_FILE)

            atomic_write_dir(out_dir, write)
        acc.wait_for_everyone()
        return out_dir

    @classmethod
    def load(
        cls, adapter_dir, model_name_or_path=None, *, config: PPOConfig | None = None, device=None, dtype=None, progress: bool = False
    ) -> PPOTrainer:
        """Rebuild a trainer from :meth:`save`: base model (``model_name_or_path``, default the base
        named in the adapter config) + the saved adapter, value head, optimizer state and step count.
        ``config`` overrides the saved config. A plain peft adapter directory (no value head) gets a
        fresh value head."""
        from safetensors.torch import load_file

        from rl.policy.models import load_policy

        adapter_dir = Path(adapter_dir)
        if config is None:
            cfg_file = adapter_dir / CONFIG_FILE
            config = PPOConfig(**json.loads(cfg_file.read_text(encoding="utf-8"))) if cfg_file.is_file() else PPOConfig()
        model, tok = load_policy(model_name_or_path, lora=None, device=device, adapter_path=adapter_dir, dtype=dtype)
        trainer = cls(model, tok, config, progress=progress)
        vh = adapter_dir / VALUE_HEAD_FILE
        if vh.is_file():
            sd = load_file(str(vh))
            if sd["weight"].shape != trainer.value_head.weight.shape:
                raise ValueError(
                    f"{vh}: value head of shape {tuple(sd['weight'].shape)}, model needs "
                    f"{tuple(trainer.value_head.weight.shape)} (another base model?)"
                )
            with torch.no_grad():
                trainer.value_head.weight.copy_(sd["weight"])
                trainer.value_head.bias.copy_(sd["bias"])
            opt = adapter_dir / OPTIMIZER_FILE
            if opt.is_file():
                try:
                    trainer.optimizer.load_state_dict(torch.load(opt, map_location=trainer.device, weights_only=True))
                except (ValueError, KeyError, RuntimeError) as e:
                    print(f"warning: {opt}: optimizer state not restored ({e}); starting AdamW afresh", file=sys.stderr)
                for g in trainer.optimizer.param_groups:
                    g["lr"] = config.learning_rate
        st = adapter_dir / STATE_FILE
        if st.is_file():
            trainer.n_steps = int(json.loads(st.read_text(encoding="utf-8")).get("n_steps", 0))
        return trainer


# ---------------------------------------------------------------------------------------------
# CLI: rl train


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="base model directory")
    parser.add_argument("--adapter", default=None, help="continue from this directory (a previous --out: adapter + value head + optimizer)")
    parser.add_argument("--rollouts", required=True, help="rollout file (rl generate --out)")
    parser.add_argument("--rewards", required=True, help="reward file (crowdstat fit --out DIR/rewards.jsonl)")
    parser.add_argument("--out", required=True, help="output directory (adapter, value head, config, stats)")
    parser.add_argument("--batch-size", type=int, default=0, help="rollouts per PPO step (default 0: all rollouts in one step)")
    parser.add_argument(
        "--line-reward",
        default="signed",
        choices=("signed", "posterior", "signed_mean"),
        help="lines mode: reward of a line with posterior P: 2P-1, P, or (2P-1)/k (default: signed)",
    )
    parser.add_argument(
        "--prompt-lines",
        default="error",
        choices=("error", "ignore"),
        help="annotated lines that lie in the prompt: error (default) or ignore",
    )
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank of a new adapter (default: 8)")
    parser.add_argument("--lora-alpha", type=int, default=16, help="(default: 16)")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="(default: 0.0)")
    add_dataclass_arguments(parser, PPOConfig, title="PPO", defaults={"mixed_precision": "auto"})


def run(args) -> int:
    from tqdm.auto import tqdm

    from rl.crowd.rewards import load_rewards, token_rewards
    from rl.policy.models import LoraSpec, _cpu_threads, load_policy
    from rl.policy.rollouts import read_rollouts

    config = dataclass_from_args(PPOConfig, args)
    # everything about the inputs is checked before a model is loaded
    rollouts = read_rollouts(args.rollouts)
    records = load_rewards(args.rewards, rollouts, prompt_lines=args.prompt_lines)
    rewards = [token_rewards(r, records[r.program], config.reward_mode, line_reward=args.line_reward) for r in rollouts]
    _cpu_threads()
    prev_stats = ""
    if args.adapter and (Path(args.adapter) / "train_stats.jsonl").is_file():  # read now: --out may be --adapter
        prev_stats = (Path(args.adapter) / "train_stats.jsonl").read_text(encoding="utf-8")
    if args.adapter:
        trainer = PPOTrainer.load(args.adapter, args.model, config=config, progress=True)
    else:
        model, tok = load_policy(args.model, LoraSpec(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout))
        trainer = PPOTrainer(model, tok, config, progress=True)
    order = torch.randperm(len(rollouts), generator=torch.Generator().manual_seed(config.seed)).tolist()
    acc = trainer.accelerator
    world, rank = acc.num_processes, acc.process_index
    if world > 1:  # data parallel: each process takes an equal share (DDP needs equal pass counts)
        n_use = len(order) // world * world
        if n_use < len(order):
            print(f"warning: {len(order) - n_use} rollout(s) left out so that {world} processes get equal shares", file=sys.stderr)
        order = order[rank:n_use:world]
    bs = (args.batch_size // world if args.batch_size > 0 else len(order)) or 1
    log = []
    for s in tqdm(range(0, len(order), bs), desc="train", unit="step", file=sys.stderr, disable=not acc.is_main_process):
        idx = order[s : s + bs]
        st = trainer.step([rollouts[i] for i in idx], [rewards[i] for i in idx])
        log.append(st)
        if acc.is_main_process:
            print(
                json.dumps({k: st[k] for k in ("step", "reward/score_mean", "kl/k1_mean", "policy/clipfrac", "loss/value", "time_s")}),
                file=sys.stderr,
            )
    out = trainer.save(args.out)
    if acc.is_main_process:
        atomic_write_text(out / "train_stats.jsonl", prev_stats + "".join(json.dumps(s) + "\n" for s in log))
    print(f"trained {len(log)} PPO step(s) on {len(rollouts)} rollouts; saved to {out}", file=sys.stderr)
    return 0
