"""The cross-process half of PPO (:mod:`rl.train.ppo`) under ``torchrun`` / ``accelerate launch``.

Data parallel (DDP): every process holds its own share of a batch's rollouts; DDP averages the
gradients. So that a step of N processes is the step one process would take on the global batch
(docs/scale.md, tested in tests/rl/test_distributed.py):

- the loss of a minibatch is the token mean over the global minibatch: a micro-batch's token mean is
  scaled by :func:`rl.train.ppo_math.token_weight` with the minibatch's token count summed over the
  processes (one all-reduce per batch, in ``prepare``);
- the statistics that shape the advantages (whitening, reward rescaling, line baselines per prompt
  group) are taken over every process's tokens (:class:`Collectives` ``sum`` / ``gather``);
- the statistics a step returns are those of the global batch, the same on every process
  (:func:`step_summary`), and the loss statistics are token means over the global minibatches.

One process: every collective is the identity, and the numbers are those of the single-process code.
"""

from __future__ import annotations

import torch

from rl.train.ppo_math import kl_penalty, masked_mean, masked_var

__all__ = ["Collectives", "step_summary", "shutdown", "LOSS_KEYS"]

#: the loss statistics, in the order of the per-minibatch sums of :meth:`rl.train.ppo.PPOTrainer._minibatch`
LOSS_KEYS = ("loss/policy", "loss/value", "policy/clipfrac", "policy/approx_kl", "policy/entropy")


def shutdown() -> None:
    """Leave the process group (torchrun / accelerate launch) before the interpreter exits:
    ``destroy_process_group``, local (no barrier, so a rank that failed does not wait for the others). A
    process that exits with the group alive can abort in gloo's threads at exit ("terminate called without
    an active exception", SIGABRT) after its work is done, failing the whole launch. A no-op without a
    process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class Collectives:
    """Sums, maxima and gathers over the processes of an ``accelerate.Accelerator`` (identity for one).

    ``world``: the number of processes; ``rank``: this one's index."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.world = 1 if accelerator is None else int(accelerator.num_processes)
        self.rank = 0 if accelerator is None else int(accelerator.process_index)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes (a new tensor; ``t`` itself on one process)."""
        if self.world == 1:
            return t
        return self.accelerator.reduce(t.detach().contiguous(), reduction="sum")

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        return self.accelerator.reduce(t.detach().contiguous(), reduction="max")

    def gather(self, items: list) -> list:
        """Every process's ``items`` (picklable), concatenated in rank order."""
        if self.world == 1:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def check_same(self, value, what: str) -> None:
        """Raise the same ``ValueError`` on every process unless ``value`` is equal on all of them (before a
        mismatch can leave one process waiting in a collective the others never enter)."""
        if self.world == 1:
            return
        values = self.gather([value])
        if any(v != values[0] for v in values):
            raise ValueError(
                f"PPOTrainer: {what} differs between processes ({values}); give every process an equal share of "
                "rollouts (rl train does) so that each makes the same forward/backward passes"
            )


def step_summary(batch, losses: list[list[float]], cfg, dist: Collectives) -> dict:
    """The statistics of :meth:`rl.train.ppo.PPOTrainer.update` that describe the batch and the losses, over
    the global batch (identical on every process). ``losses``: one row per minibatch update, the global
    token means of :data:`LOSS_KEYS`; their mean over the updates is reported (0 for a step without
    tokens), and ``loss/total = policy + vf_coef * value - entropy_coef * entropy`` per update."""
    mask, scores, kl, returns, old_v = batch.mask, batch.scores, batch.kl, batch.returns, batch.old_v
    rows = torch.stack(
        [
            (scores * mask).sum(1),
            ((scores - cfg.kl_coef * kl) * mask).sum(1),
            (kl_penalty(batch.old_lp, batch.ref_lp, "k1") * mask).sum(1),
            (kl_penalty(batch.old_lp, batch.ref_lp, "k3") * mask).sum(1),
            mask.sum(1),
        ],
        1,
    ).cpu()
    rows = torch.tensor(dist.gather(rows.tolist()), dtype=torch.float32).reshape(-1, 5)
    B = rows.shape[0]
    seq_score = rows[:, 0]
    red = dist.sum if dist.world > 1 else None
    var_r = masked_var(returns, mask, reduce=red)
    ev = 1.0 - masked_var(returns - old_v, mask, reduce=red) / var_r if var_r > 0 else torch.tensor(float("nan"))
    out = {k: float(sum(x[i] for x in losses) / len(losses)) if losses else 0.0 for i, k in enumerate(LOSS_KEYS)}
    total = [x[0] + cfg.vf_coef * x[1] - cfg.entropy_coef * x[4] for x in losses]
    out["loss/total"] = float(sum(total) / len(total)) if total else 0.0
    n_tok = float(rows[:, 4].sum())
    out.update(
        {
            "reward/score_mean": float(seq_score.mean()),
            "reward/score_std": float(seq_score.std()) if B > 1 else 0.0,
            "reward/total_mean": float(rows[:, 1].mean()),
            "kl/k1_mean": float(rows[:, 2].mean()),
            "kl/k3_mean": float(rows[:, 3].mean()),
            "value/mean": float(masked_mean(old_v, mask, reduce=red)),
            "returns/mean": float(masked_mean(returns, mask, reduce=red)),
            "value/explained_variance": float(ev),
            "advantages/mean": float(masked_mean(batch.adv, mask, reduce=red)),
            "tokens/mean_len": n_tok / B,
            "tokens/n": int(round(n_tok)),
            "n_rollouts": B,
            "n_empty": int((rows[:, 4] == 0).sum()),
        }
    )
    return out
