"""Configuration dataclasses of the PPO side, and their command-line form.

Each field carries ``metadata={"help": ...}`` (as TRL's ``PPOConfig`` does), so one helper,
:func:`add_dataclass_arguments`, turns a dataclass into ``--kebab-case`` options of an
``argparse`` subcommand and :func:`dataclass_from_args` reads them back. Standard library only:
importing this module loads no torch.

- :class:`PPOConfig`: the PPO update (re-exported by :mod:`rl.train.ppo`).
- :class:`LoraSpec`: the LoRA adapter (re-exported by :mod:`rl.policy.models`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PPOConfig", "LoraSpec", "REWARD_MODES", "MIXED_PRECISION", "add_dataclass_arguments", "dataclass_from_args"]

#: how crowd rewards become per-token rewards (see rl.crowd.rewards.token_rewards)
REWARD_MODES = ("program", "soft", "lines")
#: accepted values of PPOConfig.mixed_precision; "auto" = "no" on CPU, "bf16" (or "fp16") on GPU
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")


@dataclass
class PPOConfig:
    """Hyperparameters of one PPO update (:meth:`rl.train.ppo.PPOTrainer.step`).

    Parameters
    ----------
    learning_rate : AdamW learning rate of the LoRA weights and the value head.
    ppo_epochs : passes over the batch of rollouts per step.
    minibatch_size : rollouts per optimizer step.
    grad_accum_steps : micro-batches a minibatch is split into (gradients accumulated).
    clip_range : PPO ratio clip epsilon.
    clip_range_value : clip of the value update around the old values.
    vf_coef : weight of the value loss in the joint loss.
    gamma : discount factor of GAE.
    lam : lambda of GAE.
    kl_coef : weight of the per-token KL penalty to the adapter-disabled reference.
    whiten_rewards : scale the per-token rewards to unit variance over the batch (mean kept).
    max_grad_norm : gradient clipping norm (<= 0 disables).
    reward_mode : "program", "soft" or "lines" (rl.crowd.rewards.token_rewards).
    mixed_precision : "no", "fp16", "bf16" or "auto" ("no" on CPU, bf16/fp16 on GPU).
    seed : seed of the minibatch shuffling (the value head starts at zero).
    """

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA weights and value head)."})
    ppo_epochs: int = field(default=4, metadata={"help": "PPO epochs (passes over the batch) per step."})
    minibatch_size: int = field(default=16, metadata={"help": "Rollouts per optimizer step."})
    grad_accum_steps: int = field(default=1, metadata={"help": "Micro-batches per minibatch (gradient accumulation)."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Clip of value updates around the old values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty to the adapter-disabled reference."})
    whiten_rewards: bool = field(default=True, metadata={"help": "Scale per-token rewards to unit variance over the batch."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (<= 0: no clipping)."})
    reward_mode: str = field(default="lines", metadata={"help": "How crowd rewards reach tokens.", "choices": REWARD_MODES})
    mixed_precision: str = field(
        default="no",
        metadata={"help": "Mixed precision: no, fp16, bf16, or auto (no on CPU, bf16/fp16 on GPU).", "choices": MIXED_PRECISION},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the minibatch shuffling."})

    def __post_init__(self) -> None:
        for name in ("ppo_epochs", "minibatch_size", "grad_accum_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PPOConfig.{name}: expected an integer >= 1, got {v!r}")
        if self.minibatch_size % self.grad_accum_steps:
            raise ValueError(
                f"PPOConfig: minibatch_size ({self.minibatch_size}) must be a multiple of grad_accum_steps "
                f"({self.grad_accum_steps}); each minibatch is split into grad_accum_steps equal micro-batches"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"PPOConfig.learning_rate: expected > 0, got {self.learning_rate!r}")
        for name in ("clip_range", "clip_range_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name}: expected > 0, got {getattr(self, name)!r}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"PPOConfig: gamma and lam must lie in [0, 1], got gamma={self.gamma!r}, lam={self.lam!r}")
        if self.kl_coef < 0 or self.vf_coef < 0:
            raise ValueError(f"PPOConfig: kl_coef and vf_coef must be >= 0, got {self.kl_coef!r}, {self.vf_coef!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"PPOConfig.reward_mode: expected one of {REWARD_MODES}, got {self.reward_mode!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"PPOConfig.mixed_precision: expected one of {MIXED_PRECISION}, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LoraSpec:
    """A LoRA adapter: rank ``r``, scaling ``alpha / r``, dropout, and the wrapped modules.

    ``target_modules=None`` picks by architecture (:func:`rl.policy.models.default_target_modules`):
    every attention and MLP projection of Llama/Qwen2/Mistral-style models, ``c_attn``/``c_proj``/
    ``c_fc`` for GPT-2, else peft's ``"all-linear"``.
    """

    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Module names to wrap (default: by architecture)."}
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSpec.r: expected >= 1, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout: expected in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)


def _str2bool(s: str) -> bool:
    t = str(s).strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, prefix: str = "", title: str | None = None,
                            defaults: dict[str, Any] | None = None) -> None:
    """Add one ``--{prefix}{field-name}`` option per field of dataclass ``cls`` (help from metadata)."""
    group = parser.add_argument_group(title or cls.__name__)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        name = "--" + prefix + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        kw: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": default,
                              "help": f"{f.metadata.get('help', '')} (default: {default})"}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        typ = f.type if not isinstance(f.type, str) else f.type
        if typ in (bool, "bool"):
            kw["type"] = _str2bool
            kw["metavar"] = "BOOL"
        elif typ in (int, "int"):
            kw["type"] = int
        elif typ in (float, "float"):
            kw["type"] = float
        elif typ in (str, "str"):
            kw["type"] = str
        else:  # tuple[str, ...] | None
            kw["nargs"] = "+"
            kw["type"] = str
        group.add_argument(name, **kw)


def dataclass_from_args(cls, args: argparse.Namespace, *, prefix: str = ""):
    """Build ``cls`` from the options :func:`add_dataclass_arguments` added."""
    kw = {f.name: getattr(args, prefix.replace("-", "_") + f.name) for f in dataclasses.fields(cls)}
    return cls(**kw)
