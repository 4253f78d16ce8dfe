"""Per-line GRPO advantages from the crowd's line posteriors (``rl grpo --advantages lines``).

TRL's reward functions return one scalar per completion, and :class:`trl.GRPOTrainer` turns them
into one advantage per completion. :class:`LineGRPOTrainer` keeps that scalar path (the reward
function, the logged ``reward``, the program-level advantage) and replaces the ``advantages`` of
each generation batch by a ``(B, T)`` tensor, one advantage per completion token, which TRL 1.16's
``_compute_loss`` takes as it is (it unsqueezes only a 1-D tensor).

The math, for a group g of G completions of one prompt (TRL's ``num_generations``):

- completion i has annotated lines j with posteriors P_ij; its line rewards are r_ij = f(P_ij),
  f one of :data:`LINE_REWARDS`: ``hard`` 1[P > tau], ``posterior`` P, ``signed`` 2P - 1;
  ``auto`` is ``hard`` for the scalar reward ``reward`` (s = c/k) and ``posterior`` for
  ``reward_soft``, so that a completion's mean line reward r̄_i equals its scalar reward;
- the group baseline is b_g = mean over the completions i of g that have annotated lines of r̄_i
  (each completion counts once, whatever its number of lines, as in GRPO); the scale is
  d_g = 1 (``scale_rewards="none"``), std_g(r̄) + 1e-4 (``"group"``) or std_batch(r̄) + 1e-4
  (``"batch"``), std with Bessel's correction as TRL's ``nanstd``;
- A_ij = (r_ij - b_g) / d_g; every token of line j gets A_ij; a token of no annotated line (EOS,
  a token of an unannotated line, every token of a completion without annotated lines) gets the
  program-level GRPO advantage A_i that TRL computed from the scalar rewards. NaN (a group with
  one scorable completion under std scaling) becomes 0.

When r̄_i equals the scalar reward R_i (``auto``) and every completion of the group has annotated
lines, the mean of A_ij over a completion's lines is A_i: the per-line advantages redistribute the
program's advantage among its lines. When, in addition, all lines of a completion have the same
reward R_i, every token gets exactly A_i (tested). ``signed`` gives twice the ``posterior`` advantages under
``scale_rewards="none"`` (the -1 cancels in the baseline).

Tokens are mapped to lines by the project's rule, :func:`rl.crowd.rewards.token_lines` (the one PPO's
line rewards use), on the program the reward was computed on (``CompletionLines.code``; the
completion starts at ``offset``) and :func:`rl.policy.sampling.token_char_ends` of the completion
ids TRL sampled: a token belongs to the line of its last character that is not a newline (of its
first when it holds newlines only), so every token has at most one line, and a token with no
character in the code (EOS) has none.

The per-line information travels from the reward function to the trainer through the reward
function's ``last_lines`` attribute: after each call, a list with one :class:`CompletionLines` per
completion, in the order of the call (:func:`rl.train.grpo.crowd_reward_func` sets it). The trainer
checks that its completions are the ones TRL just passed. Under several processes the line rewards
are gathered (``accelerate.utils.gather_object``) so that each group's baseline sees the whole group.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "LINE_REWARDS",
    "SCALES",
    "CompletionLines",
    "LineGRPOTrainer",  # noqa: F822 - built on first use by __getattr__ (it subclasses trl's GRPOTrainer)
    "line_reward",
    "completion_line_rewards",
    "completion_token_lines",
    "group_line_baselines",
    "token_line_advantages",
    "line_advantages",
]

#: line reward transforms (``--line-reward``); ``auto`` follows the scalar reward field
LINE_REWARDS = ("auto", "hard", "posterior", "signed")
#: TRL's ``scale_rewards`` values
SCALES = ("none", "group", "batch")


@dataclass
class CompletionLines:
    """The line posteriors of one scored completion.

    completion: the text TRL decoded; code: the program the lines number (1-based);
    offset: where the completion starts in ``code``; posteriors: line -> P; tau: the decision threshold.
    """

    completion: str
    code: str
    offset: int
    posteriors: dict[int, float]
    tau: float = 0.5


def line_reward(p: float, kind: str, tau: float = 0.5) -> float:
    """f(P) of one line: ``hard`` 1[P > tau], ``posterior`` P, ``signed`` 2P - 1 (``auto`` resolved by the caller)."""
    if kind == "hard":
        return 1.0 if p > tau else 0.0
    if kind == "posterior":
        return float(p)
    if kind == "signed":
        return 2.0 * float(p) - 1.0
    raise ValueError(f"line reward must be one of {LINE_REWARDS[1:]}, got {kind!r}")


def completion_line_rewards(lines: list[CompletionLines], kind: str) -> list[dict[int, float]]:
    """r_ij = f(P_ij) for every completion's annotated lines."""
    return [{ln: line_reward(p, kind, cl.tau) for ln, p in cl.posteriors.items()} for cl in lines]


def completion_token_lines(tokenizer, cl: CompletionLines, completion_ids: list[int]) -> list[int]:
    """The line (1-based, of ``cl.code``; 0 for none) of each completion token, by :func:`rl.crowd.rewards.token_lines`."""
    import types

    from rl.crowd.rewards import token_lines
    from rl.policy.sampling import token_char_ends

    ids = list(completion_ids)
    view = types.SimpleNamespace(  # the fields of a Rollout that token_lines reads
        program="grpo completion", code=cl.code, prompt=cl.code[: cl.offset], completion_ids=ids, char_ends=token_char_ends(tokenizer, ids)
    )
    return token_lines(view)


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Standard deviation ignoring NaN, Bessel-corrected, NaN below two values (TRL's ``nanstd``)."""
    import torch

    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    n = (~torch.isnan(x)).sum(dim=dim)
    return torch.where(n > 1, torch.sqrt(var * n / (n - 1).clamp(min=1)), torch.full_like(var, math.nan))


def group_line_baselines(line_rewards: list[dict[int, float]], num_generations: int, scale_rewards: str = "none"):
    """Per completion: the group baseline b_g and the scale d_g (``(N,)`` float32 tensors each).

    ``line_rewards`` covers whole groups (all processes), completions of a group adjacent, as TRL orders them.
    """
    import torch

    if scale_rewards not in SCALES:
        raise ValueError(f"scale_rewards must be one of {SCALES}, got {scale_rewards!r}")
    n, g = len(line_rewards), num_generations
    if g < 1 or n % g:
        raise ValueError(f"{n} completions do not make whole groups of {g}")
    rbar = torch.tensor([sum(d.values()) / len(d) if d else math.nan for d in line_rewards], dtype=torch.float32)
    grouped = rbar.view(-1, g)
    base = torch.nanmean(grouped, dim=1).repeat_interleave(g)
    if scale_rewards == "none":
        scale = torch.ones_like(rbar)
    elif scale_rewards == "group":
        scale = (_nanstd(grouped, dim=1) + 1e-4).repeat_interleave(g)
    else:
        scale = (_nanstd(rbar) + 1e-4).expand_as(rbar).clone()
    return base, scale


def token_line_advantages(
    program_advantages: torch.Tensor,
    line_rewards: list[dict[int, float]],
    token_lines: list[list[int]],
    baseline: torch.Tensor,
    scale: torch.Tensor,
    T: int,
) -> torch.Tensor:
    """The ``(B, T)`` advantages: (r_ij - b) / d on the tokens whose line j is annotated, else the program's A_i.

    ``token_lines[b][k]``: the line of token k of completion b (0: none); positions past it (padding) get A_i.
    """
    import torch

    B = len(line_rewards)
    adv = program_advantages.detach().float().cpu().reshape(B, 1).repeat(1, T)
    for b in range(B):
        for k, ln in enumerate(token_lines[b][:T]):
            r = line_rewards[b].get(ln)
            if r is not None:
                adv[b, k] = (r - float(baseline[b])) / float(scale[b])
    return torch.nan_to_num(adv, nan=0.0)


def line_advantages(
    program_advantages: torch.Tensor,
    line_rewards: list[dict[int, float]],
    token_lines: list[list[int]],
    num_generations: int,
    T: int,
    scale_rewards: str = "none",
) -> torch.Tensor:
    """One process's whole batch: :func:`group_line_baselines` then :func:`token_line_advantages`."""
    base, scale = group_line_baselines(line_rewards, num_generations, scale_rewards)
    return token_line_advantages(program_advantages, line_rewards, token_lines, base, scale, T)


@functools.cache
def _line_trainer_class():
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    class LineGRPOTrainer(GRPOTrainer):
        """``GRPOTrainer`` with ``(B, T)`` per-line advantages (see :mod:`rl.train.grpo_lines`).

        line_source: the reward function whose ``last_lines`` carry the line posteriors (default the
        first reward function); line_reward: ``hard``, ``posterior`` or ``signed`` (resolve ``auto`` first).
        """

        def __init__(self, *args, line_source=None, line_reward: str = "hard", **kwargs):
            super().__init__(*args, **kwargs)
            if line_reward not in LINE_REWARDS[1:]:
                raise ValueError(f"line_reward must be one of {LINE_REWARDS[1:]}, got {line_reward!r}")
            src = self.reward_funcs[0] if line_source is None else line_source
            if not any(f is src for f in self.reward_funcs) or not hasattr(src, "last_lines"):
                raise TypeError("line_source must be one of the reward functions and set .last_lines (a list of CompletionLines)")
            if self.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError("per-line advantages need multi_objective_aggregation='sum_then_normalize'")
            self.line_source, self.line_reward = src, line_reward
            self._line_batch: tuple[list, list] | None = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            self._line_batch = (list(completions), [list(ids) for ids in completion_ids_list])
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            out["advantages"] = self._line_advantages(out).to(out["advantages"].device)
            return out

        def _line_advantages(self, out: dict) -> torch.Tensor:
            completions, ids_list = self._line_batch
            lines = list(self.line_source.last_lines)
            if [cl.completion for cl in lines] != completions:
                raise RuntimeError("the line source's last_lines are not this batch's completions (same order expected)")
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            rewards = completion_line_rewards(lines, self.line_reward)
            base, scale = group_line_baselines(gather_object(rewards), g, self.scale_rewards)
            part = slice(self.accelerator.process_index * len(rewards), (self.accelerator.process_index + 1) * len(rewards))
            owners = [completion_token_lines(self._tokenizer, cl, ids) for cl, ids in zip(lines, ids_list)]
            adv = token_line_advantages(out["advantages"], rewards, owners, base[part], scale[part], out["completion_ids"].size(1))
            on_line = sum(ln in r for o, r in zip(owners, rewards) for ln in o)
            self._metrics[mode]["lines/token_frac"].append(on_line / max(1, sum(len(o) for o in owners)))
            return adv

    return LineGRPOTrainer


def __getattr__(name: str):
    # The trainer class subclasses trl's GRPOTrainer: built on first use, so importing this module stays cheap.
    if name == "LineGRPOTrainer":
        return _line_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
