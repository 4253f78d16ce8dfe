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
- Log probs at the rollouts' sampling temperature; one packing (micro-batches packed once) for old
  and new log probs; per-token reward ``r_t = score_t - kl_coef * (log pi(a_t) - log pi_ref(a_t))``,
  optionally divided by its std (no shift); GAE (gamma, lam); advantages whitened; ``ppo_epochs``
  passes of the minibatches in shuffled order; clipped ratio and value losses (math: ppo_math.py).
- Options: scores clipped to [-reward_clip, reward_clip]; entropy of the tempered policy per token
  (``policy/entropy``, bonus ``entropy_coef``); epochs stopped early past ``target_kl``; a LambdaLR
  learning-rate warmup/schedule stepped once per PPO step (saved in ``scheduler.pt``).
- ``accelerate.Accelerator`` for device placement, mixed precision and multi-GPU (DDP); under several
  processes a step is the one a single process takes on the global batch (global token means,
  whitening and group baselines: rl/train/ppo_dist.py, docs/scale.md).

``rl train --model PATH [--adapter DIR] --rollouts R --rewards W --reward-mode {program,soft,lines}
--out DIR [ppo options]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crowdstat.io.atomic import atomic_write_dir
from rl.config import PPOConfig
from rl.crowd.rewards import token_lines
from rl.policy.rollouts import Rollout, completion_forward, pack
from rl.train.ppo_dist import LOSS_KEYS, Collectives, step_summary
from rl.train.ppo_math import (
    entropy_from_logits,
    gae,
    kl_penalty,
    line_advantages,
    lr_factor,
    masked_mean,
    masked_rescale,
    masked_var,
    masked_whiten,
    policy_loss,
    token_weight,
    value_loss,
)

__all__ = [
    "PPOConfig",
    "PPOTrainer",
    "PPOBatch",
    "rollout_temperature",
    "gae",
    "policy_loss",
    "value_loss",
    "kl_penalty",
    "entropy_from_logits",
    "lr_factor",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "masked_rescale",
]

VALUE_HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "ppo_config.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


# ---------------------------------------------------------------------------------------------
# trainer


class _PolicyWithValue(nn.Module):
    """One module for accelerate/DDP: the peft policy and the value head."""

    def __init__(self, policy, value_head: nn.Linear):
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(self, input_ids, attention_mask, position_ids, P: int, C: int, temperature: float = 1.0, entropy: str | None = None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "P": P, "C": C}
        lp, h, *ent = completion_forward(self.policy, batch, hidden=True, temperature=temperature, entropy=entropy)
        values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return lp, values, (ent[0] if ent else None)


def _resolve_mixed_precision(mp: str, on_gpu: bool) -> str:
    if mp == "auto":
        if not on_gpu:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mp != "no" and not on_gpu:
        raise ValueError(f"PPOConfig.mixed_precision={mp!r} needs a GPU; use 'no' or 'auto' on CPU")
    return mp


def rollout_temperature(rollouts: list[Rollout], where: str = "PPOTrainer.step") -> float:
    """The one sampling temperature of ``rollouts`` (``Rollout.temperature``), at which PPO computes every
    log probability; a ``ValueError`` naming ``where`` if they differ or one is not a finite number."""
    temps = set()
    for r in rollouts:
        t = r.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(f"{where}: program {r.program!r}: temperature must be a finite number, got {t!r}")
        temps.add(float(t))
    if len(temps) > 1:
        raise ValueError(
            f"{where}: rollouts sampled at different temperatures {sorted(temps)}; their log probabilities belong to "
            "different distributions (train each temperature in its own step or run)"
        )
    return temps.pop() if temps else 1.0


def _check_batch(rollouts: list[Rollout], token_rewards: list[list[float]]) -> tuple[int, float]:
    """Validate a PPO batch (one finite reward per completion token, one temperature); return the number
    of empty completions and the temperature."""
    if len(rollouts) != len(token_rewards):
        raise ValueError(f"PPOTrainer.step: {len(rollouts)} rollouts but {len(token_rewards)} reward lists")
    if not rollouts:
        raise ValueError("PPOTrainer.step: no rollouts")
    for r, tr in zip(rollouts, token_rewards):
        if len(tr) != len(r.completion_ids):
            raise ValueError(
                f"PPOTrainer.step: program {r.program!r}: {len(tr)} token rewards for {len(r.completion_ids)} completion tokens"
            )
        if not all(math.isfinite(x) for x in tr):
            raise ValueError(f"PPOTrainer.step: program {r.program!r}: non-finite token reward")
    return sum(not r.completion_ids for r in rollouts), rollout_temperature(rollouts)


def _grid(rows: list[list[float]], B: int, C: int, device) -> torch.Tensor:
    """Ragged rows as a zero-padded float32 [B, C] tensor on ``device``."""
    out = torch.zeros(B, C, dtype=torch.float32)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)


@dataclass(frozen=True)
class PPOBatch:
    """One PPO batch as :meth:`PPOTrainer.prepare` leaves it: everything the epochs hold fixed.

    ``packs``: the micro-batches, each ``(rows, packed)``: row indices into ``rollouts`` and their
    :func:`rl.policy.rollouts.pack` tensors. Old and new log probs are computed on these very
    layouts (one packing). ``minibatches``: lists of pack indices, one optimizer step each (their
    order is shuffled per epoch, their membership fixed). As [B, C] tensors over completion tokens:
    the token mask, the scores, old and reference log probs, old values, the per-token KL, the
    rewards after the KL penalty and the optional scaling, whitened advantages, returns.
    ``mismatch``: the largest gap between the rollouts' stored and the recomputed log probs (over all
    processes); ``n_tokens``: completion tokens over all processes; ``mb_tokens``: each minibatch's
    completion tokens over all processes (the denominator of its loss); ``index``: the step it is
    prepared for.
    """

    rollouts: list[Rollout]
    temperature: float
    packs: list[tuple[list[int], dict]]
    minibatches: list[list[int]]
    mask: torch.Tensor
    scores: torch.Tensor
    old_lp: torch.Tensor
    old_v: torch.Tensor
    ref_lp: torch.Tensor
    kl: torch.Tensor
    rewards: torch.Tensor
    adv: torch.Tensor
    returns: torch.Tensor
    mismatch: float
    n_empty: int
    n_tokens: int
    mb_tokens: tuple[int, ...]
    index: int
    prepare_s: float


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
        vlr = config.value_learning_rate or config.learning_rate
        groups = [{"params": trainable, "lr": config.learning_rate}, {"params": list(value_head.parameters()), "lr": vlr}]
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
        self.wrapped, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        # stepped once per PPO step (update), so that its last_epoch is n_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(k, config.lr_warmup_steps, config.lr_schedule, config.total_steps)
        )
        self.params = params
        self.dist = Collectives(self.accelerator)
        self.n_steps = 0
        self._n_pending = 0  # batches prepared and not yet updated on

    # -- helpers ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def _forward(self, packed: dict, temperature: float, entropy: str | None = None):
        p = packed
        return self.wrapped(p["input_ids"], p["attention_mask"], p["position_ids"], p["P"], p["C"], temperature, entropy)

    @property
    def micro_batch_size(self) -> int:
        """Rollouts per forward/backward pass: minibatch_size / grad_accum_steps."""
        return self.config.minibatch_size // self.config.grad_accum_steps

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + index)

    def _layout(self, rollouts: list[Rollout], index: int) -> tuple[list[tuple[list[int], dict]], list[list[int]]]:
        """The one packing of a batch: rows shuffled once, cut into minibatches of ``minibatch_size``
        rollouts, each cut into micro-batches of ``micro_batch_size``, each packed once."""
        cfg, micro = self.config, self.micro_batch_size
        perm = torch.randperm(len(rollouts), generator=self._generator(index)).tolist()
        packs, minibatches = [], []
        for s in range(0, len(perm), cfg.minibatch_size):
            mb = perm[s : s + cfg.minibatch_size]
            minibatches.append([])
            for i in range(0, len(mb), micro):
                rows = mb[i : i + micro]
                packed = pack(
                    [rollouts[j].prompt_ids for j in rows], [rollouts[j].completion_ids for j in rows], self.tokenizer.pad_token_id
                )
                minibatches[-1].append(len(packs))
                packs.append((rows, {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in packed.items()}))
        return packs, minibatches

    def _minibatch_tokens(self, packs: list[tuple[list[int], dict]], minibatches: list[list[int]]) -> tuple[int, ...]:
        """Each minibatch's completion tokens summed over all processes (one all-reduce when there are several),
        after checking that every process makes the same passes (minibatches of as many micro-batches)."""
        self.dist.check_same([len(mb) for mb in minibatches], "the number of minibatches and micro-batches of a batch")
        local = [sum(float(packs[j][1]["completion_mask"].sum()) for j in mb) for mb in minibatches]
        n = self.dist.sum(torch.tensor(local, dtype=torch.float64, device=self.device))
        return tuple(int(round(x)) for x in n.tolist())

    # -- the update -----------------------------------------------------------------------------

    def step(self, rollouts: list[Rollout], token_rewards: list[list[float]]) -> dict:
        """One PPO update on a batch of rollouts and their per-token rewards; returns statistics.

        ``update(prepare(rollouts, token_rewards))``. Empty completions (no tokens) carry no action:
        they are masked out (counted in ``n_empty``); a batch of only empty completions is a step that
        changes nothing. In a multi-process run each process passes its own, equally sized, share of
        the rollouts; the step is that of one process on the union of the shares (global token means,
        whitening and group baselines over every process; :mod:`rl.train.ppo_dist`).
        """
        return self.update(self.prepare(rollouts, token_rewards))

    def prepare(self, rollouts: list[Rollout], token_rewards: list[list[float]]) -> PPOBatch:
        """Everything a PPO step holds fixed, computed under the current policy without updating it: the
        layout, old/reference log probs (at the rollouts' temperature) and values, the KL-penalised
        rewards (optionally scaled), GAE advantages (whitened) and returns. Prepare every batch of a
        rollout set before the first :meth:`update` so that each batch's old log probs are those of
        the policy that sampled it; batches must then be updated in the order they were prepared."""
        t0 = time.perf_counter()
        cfg = self.config
        n_empty, temperature = _check_batch(rollouts, token_rewards)
        # empty completions stay in the batch as all-masked rows (so that every process of a
        # multi-GPU run makes the same number of forward/backward passes)
        B = len(rollouts)
        C = max(1, max(len(r.completion_ids) for r in rollouts))
        mask = _grid([[1.0] * len(r.completion_ids) for r in rollouts], B, C, self.device)
        scores = _grid(token_rewards, B, C, self.device)
        if cfg.reward_clip is not None:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        index = self.n_steps + self._n_pending
        packs, minibatches = self._layout(rollouts, index)
        old_lp, old_v, ref_lp = self._old_logprobs(packs, B, C, temperature)
        mismatch = max((abs(a - b) for r, row in zip(rollouts, old_lp.tolist()) for a, b in zip(r.logprobs, row)), default=0.0)
        mismatch = float(self.dist.max(torch.tensor([mismatch], device=self.device)).item())
        mb_tokens = self._minibatch_tokens(packs, minibatches)
        red = self.dist.sum if self.dist.world > 1 else None
        kl = kl_penalty(old_lp, ref_lp, cfg.kl_estimator) * mask
        rewards = scores - cfg.kl_coef * kl
        if cfg.whiten_rewards:
            rewards = masked_rescale(rewards, mask, reduce=red)
        adv, returns = gae(rewards, old_v, mask, cfg.gamma, cfg.lam)  # returns: the value head's targets in both modes
        if cfg.advantage == "lines":
            owners = _grid([token_lines(r) for r in rollouts], B, C, self.device)
            gather = self.dist.gather if self.dist.world > 1 else None
            adv = line_advantages(rewards, scores, owners, mask, [r.prompt_id for r in rollouts], cfg.advantage_std, gather=gather)
        else:
            adv = masked_whiten(adv, mask, shift_mean=True, reduce=red)
        self._n_pending += 1
        return PPOBatch(
            rollouts=rollouts,
            temperature=temperature,
            packs=packs,
            minibatches=minibatches,
            mask=mask,
            scores=scores,
            old_lp=old_lp,
            old_v=old_v,
            ref_lp=ref_lp,
            kl=kl,
            rewards=rewards,
            adv=adv,
            returns=returns,
            mismatch=float(mismatch),
            n_empty=n_empty,
            n_tokens=sum(mb_tokens),
            mb_tokens=mb_tokens,
            index=index,
            prepare_s=time.perf_counter() - t0,
        )

    def _old_logprobs(self, packs: list[tuple[list[int], dict]], B: int, C: int, temperature: float):
        """Log probs and values under the current policy, and reference log probs (adapter off), of every
        completion token, pack by pack: three [B, C] tensors, zero at padding."""
        dev = self.device
        old_lp = torch.zeros(B, C, device=dev)
        old_v = torch.zeros(B, C, device=dev)
        ref_lp = torch.zeros(B, C, device=dev)
        with torch.no_grad():
            for rows, packed in packs:
                idx = torch.tensor(rows, device=dev)
                lp, v, _ = self._forward(packed, temperature)
                m = packed["completion_mask"]
                c = lp.shape[1]
                old_lp[idx, :c] = lp * m
                old_v[idx, :c] = v * m
                with self.model.disable_adapter():
                    rlp, _, _ = self._forward(packed, temperature)
                ref_lp[idx, :c] = rlp * m
        return old_lp, old_v, ref_lp

    def update(self, batch: PPOBatch) -> dict:
        """The PPO epochs on a batch from :meth:`prepare` (the next one prepared); returns statistics. A batch
        without completion tokens on any process changes nothing (no forward, no optimizer step)."""
        t0 = time.perf_counter()
        if batch.index != self.n_steps:
            raise ValueError(f"PPOTrainer.update: batch prepared for step {batch.index}, the trainer is at step {self.n_steps}")
        self._n_pending = max(0, self._n_pending - 1)
        lr = float(self.optimizer.param_groups[0]["lr"])
        if batch.n_tokens > 0:
            losses, grad_norm, epochs = self._ppo_epochs(batch)
        else:
            losses, grad_norm, epochs = [], float("nan"), 0
        self.n_steps += 1
        with warnings.catch_warnings():  # a step without tokens steps the schedule but not the optimizer
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        out = {"step": self.n_steps, **step_summary(batch, losses, self.config, self.dist)}
        out.update(
            {
                "grad_norm": grad_norm,
                "logprob/rollout_mismatch_max": batch.mismatch,
                "logprob/temperature": batch.temperature,
                "lr": lr,
                "policy/epochs_run": epochs,
            }
        )
        out["time_s"] = batch.prepare_s + time.perf_counter() - t0
        return out

    def _ppo_epochs(self, batch: PPOBatch) -> tuple[list[list[float]], float, int]:
        """``ppo_epochs`` passes over the minibatches in shuffled order, one optimizer step per minibatch;
        with ``target_kl``, no further epoch once an epoch's last minibatch had approx KL above it (its
        token mean over every process). Returns one row per minibatch update, the global token means of
        :data:`rl.train.ppo_dist.LOSS_KEYS` (one all-reduce per step), the last gradient norm (nan without
        clipping) and the number of epochs run."""
        from tqdm.auto import tqdm

        cfg = self.config
        gen = self._generator(batch.index + 500_009)
        n_mb = len(batch.minibatches)
        sums: list[torch.Tensor] = []  # this process's token sums of LOSS_KEYS, one row per update
        denom: list[int] = []
        show = self.progress and self.accelerator.is_main_process
        bar = tqdm(total=cfg.ppo_epochs * n_mb, desc=f"ppo step {self.n_steps}", unit="mb", disable=not show, file=sys.stderr, leave=False)
        self.wrapped.train(False)
        grad_norm, epochs = float("nan"), 0
        for _ in range(cfg.ppo_epochs):
            epochs += 1
            for k in torch.randperm(n_mb, generator=gen).tolist():
                sums.append(self._minibatch(batch, k))
                denom.append(batch.mb_tokens[k])
                if cfg.max_grad_norm > 0:
                    grad_norm = float(self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                bar.update(1)
            if cfg.target_kl is not None:
                akl = float(self.dist.sum(sums[-1][3:4]).item()) / max(denom[-1], 1)
                if akl > cfg.target_kl:
                    break
        bar.close()
        total = self.dist.sum(torch.stack(sums)).cpu()
        losses = (total / torch.tensor(denom, dtype=total.dtype).clamp(min=1.0)[:, None]).tolist()
        return losses, grad_norm, epochs

    def _minibatch(self, batch: PPOBatch, k: int) -> torch.Tensor:
        """Accumulate the gradient of minibatch ``k`` over its micro-batches, each token mean weighted by
        :func:`rl.train.ppo_math.token_weight` (its tokens over the minibatch's tokens on every process, times
        the number of processes, which DDP's gradient average divides out): the gradient of the token mean of
        the loss over the global minibatch. DDP synchronises on the last micro-batch only. Returns this
        process's token sums of :data:`rl.train.ppo_dist.LOSS_KEYS` over the minibatch (float64, [5])."""
        cfg = self.config
        ent_mode = "grad" if cfg.entropy_coef > 0 else "detach"
        mb = batch.minibatches[k]
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64, device=self.device)
        for n, j in enumerate(mb):
            rows, packed = batch.packs[j]
            last = n == len(mb) - 1
            ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(self.wrapped)
            with ctx:
                lp, v, ent = self._forward(packed, batch.temperature, ent_mode)
                c = lp.shape[1]
                idx = torch.tensor(rows, device=self.device)
                mk = batch.mask[idx, :c]
                pg, clipfrac, akl = policy_loss(lp, batch.old_lp[idx, :c], batch.adv[idx, :c], mk, cfg.clip_range)
                vf = value_loss(v, batch.old_v[idx, :c], batch.returns[idx, :c], mk, cfg.clip_range_value)
                ent_mean = masked_mean(ent, mk)
                loss = pg + cfg.vf_coef * vf - cfg.entropy_coef * ent_mean
                n_local = float(mk.sum().item())
                self.accelerator.backward(loss * token_weight(n_local, batch.mb_tokens[k], self.dist.world))
            sums += n_local * torch.stack([pg.detach(), vf.detach(), clipfrac, akl, ent_mean.detach()]).double()
        return sums

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
                torch.save(self.scheduler.state_dict(), tmp / SCHEDULER_FILE)

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
                    # to the CPU first: a DDP run on CPUs has device "cpu:0", which torch.load cannot map to;
                    # load_state_dict moves the state to each parameter's device
                    trainer.optimizer.load_state_dict(torch.load(opt, map_location="cpu", weights_only=True))
                except (ValueError, KeyError, RuntimeError) as e:
                    print(f"warning: {opt}: optimizer state not restored ({e}); starting AdamW afresh", file=sys.stderr)
        st = adapter_dir / STATE_FILE
        if st.is_file():
            trainer.n_steps = int(json.loads(st.read_text(encoding="utf-8")).get("n_steps", 0))
        trainer._restore_schedule(adapter_dir / SCHEDULER_FILE)
        return trainer

    def _restore_schedule(self, path: Path) -> None:
        """The learning rates at step ``n_steps``: the (possibly overriding) config's base rates times the
        schedule's factor at the saved scheduler's step (``n_steps`` without a scheduler file)."""
        cfg = self.config
        step = self.n_steps
        if path.is_file():
            step = int(torch.load(path, map_location="cpu", weights_only=True).get("last_epoch", step))
        bases = [cfg.learning_rate, cfg.value_learning_rate or cfg.learning_rate]
        self.scheduler.base_lrs = bases
        self.scheduler.last_epoch = step
        for g, base in zip(self.optimizer.param_groups, bases):
            g["initial_lr"] = base
            g["lr"] = base * lr_factor(step, cfg.lr_warmup_steps, cfg.lr_schedule, cfg.total_steps)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
