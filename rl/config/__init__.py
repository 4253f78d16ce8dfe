"""Configuration: typed dataclasses for the settings of rl, their file form and their command-line form.

The lowest layer of rl (standard library only): importing it loads neither torch nor crowdstat.

- :class:`PPOConfig`: one PPO update (re-exported by :mod:`rl.train.ppo`).
- :class:`LoraSpec`: the LoRA adapter, one spec for PPO and GRPO (re-exported by :mod:`rl.policy.models`).
- :class:`SamplingConfig`: the settings of the one sampler (re-exported by :mod:`rl.policy.sampling`),
  used by rollouts and by every evaluation.
- :class:`LoopConfig` with the sections :class:`BenchSpec`, :class:`EvalSpec` and the three above:
  the config tree of ``rl loop``, read from JSON or TOML by :func:`load_config`.

File form (:mod:`rl.config.forms`). :func:`from_dict` builds a dataclass from a mapping key by key, sections recursively: an
unknown key at any level, or a value of the wrong type, is a :class:`ConfigError` (a ``ValueError``)
of one line naming the file and the dotted key, with the closest known key as a hint, e.g.
``loop.json: unknown key 'ppo.lerning_rate' (did you mean 'learning_rate'?)``. A missing key keeps
its default; inside a section of :class:`LoopConfig`, the default of that section in the loop.
:func:`to_dict` is the inverse (JSON-ready): ``from_dict(type(c), to_dict(c)) == c``. A silently
ignored misspelling would run a different experiment than the one written down, hence the strictness.

Command-line form (:mod:`rl.config.forms`). Each field carries ``metadata={"help": ...}`` (as TRL's ``PPOConfig`` does), so
:func:`add_dataclass_arguments` turns a dataclass into ``--kebab-case`` options of an ``argparse``
subcommand and :func:`dataclass_from_args` reads them back.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rl.config.forms import (
    ConfigError,
    add_dataclass_arguments,
    dataclass_from_args,
    field_default,
    from_dict,
    read_config_file,
    to_dict,
)

__all__ = [
    "PPOConfig",
    "LoraSpec",
    "SamplingConfig",
    "BenchSpec",
    "EvalSpec",
    "LabelStudioSpec",
    "LoopConfig",
    "ConfigError",
    "REWARD_MODES",
    "LINE_REWARDS",
    "LINE_CREDITS",
    "MIXED_PRECISION",
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LR_SCHEDULES",
    "NON_CROWD_SOURCES",
    "DEFAULT_POPULATION",
    "reward_sources",
    "from_dict",
    "to_dict",
    "read_config_file",
    "load_config",
    "add_dataclass_arguments",
    "dataclass_from_args",
]

#: how crowd rewards become per-token rewards (see rl.crowd.rewards.token_rewards)
REWARD_MODES = ("program", "soft", "lines")
#: how a line posterior P becomes a reward in "lines" mode: 2P - 1, P, or (2P - 1) / k (k annotated completion lines)
LINE_REWARDS = ("signed", "posterior", "signed_mean")
#: where a line's reward goes among the tokens of the line: its last token, or evenly over all of them
LINE_CREDITS = ("last", "spread")
#: advantage estimators of PPO: GAE with the value head, or line rewards minus the group's mean line reward
ADVANTAGES = ("gae", "lines")
#: Schulman's estimators of KL(pi || pi_ref) per sampled token (rl.train.ppo_math.kl_penalty)
KL_ESTIMATORS = ("k1", "k2", "k3")
LR_SCHEDULES = ("constant", "linear", "cosine")
#: accepted values of PPOConfig.mixed_precision; "auto" = "no" on CPU, "bf16" (or "fp16") on GPU
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")
#: reward sources that bypass the crowd: the line truth itself, and the share of tests passed
NON_CROWD_SOURCES = ("true_lines", "execution")
#: the biased crowd of the study (a crowdstat.spec population): 2 reliable raters, 2 noisy ones, one who
#: approves every line of a program whose shown examples pass, one lazy rater who accepts 80 % of
#: lines unseen, a spammer and 2 adversaries
DEFAULT_POPULATION = "expert:2@0.9,novice:2@0.65,examples:1@0.9,lazy:1@0.8,spammer:1,adversary:2@0.2"


def reward_sources() -> tuple[str, ...]:
    """Every reward source: ``auto`` and the crowdstat methods (``crowdstat.estimators.METHODS``), then the non-crowd ones."""
    from crowdstat.estimators import METHODS

    return ("auto", *METHODS) + NON_CROWD_SOURCES


# ---------------------------------------------------------------------------------------------
# the sections


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
    clip_range_value : clip of the value update around the old values; None (default) = no clip (the
        returns are several units while the clip is absolute: a clip of 0.2 keeps the critic behind).
    value_learning_rate : AdamW learning rate of the value head; None = ``learning_rate``.
    vf_coef : weight of the value loss in the joint loss.
    gamma : discount factor of GAE.
    lam : lambda of GAE.
    kl_coef : weight of the per-token KL penalty to the adapter-disabled reference.
    kl_estimator : "k1" (default), "k2" or "k3": the per-token KL estimate of the penalty.
    advantage : "gae" (value head) or "lines" (default): each token of an annotated line gets its
        line's reward minus the mean line reward of the group of rollouts of the same prompt (docs/rl.md).
    advantage_std : "lines": divide the advantages by the group's standard deviation (GRPO's scaling).
    whiten_rewards : divide the per-token rewards by their standard deviation over the batch (nothing
        added: a zero reward stays zero; off by default, as in TRL).
    max_grad_norm : gradient clipping norm (<= 0 disables).
    reward_mode : "program", "soft" or "lines" (rl.crowd.rewards.token_rewards).
    line_reward : "lines" mode: a line with posterior P earns 2P - 1 ("signed"), P ("posterior") or
        (2P - 1) / k ("signed_mean", k = the annotated lines of the completion).
    line_credit : "lines" mode: a line's reward on the last token of the line ("last") or spread evenly
        over the line's tokens ("spread").
    missing_eos_penalty : subtracted from the last token's reward of a completion that ended by length
        (neither EOS nor a stop string); None = no penalty (TRL's option of the same name).
    mixed_precision : "no", "fp16", "bf16" or "auto" ("no" on CPU, bf16/fp16 on GPU).
    seed : seed of the minibatch layout and order, and in ``rl train`` of a new adapter's LoRA
        initialisation (the value head starts at zero).
    entropy_coef : weight of the entropy bonus, ``loss = pg + vf_coef * vf - entropy_coef * H`` (default 0).
    target_kl : stop a step's epochs once the approx KL (k3, old vs new) of an epoch's last minibatch
        exceeds it (CleanRL / SB3); None (default) = always ``ppo_epochs``.
    lr_warmup_steps : PPO steps of linear learning-rate warmup (default 0).
    lr_schedule : "constant" (default), "linear" or "cosine" decay after the warmup, over ``total_steps``.
    total_steps : PPO steps the schedule spans; None = constant after the warmup.
    reward_clip : clip the per-token scores to [-c, c] before the KL penalty and advantages; None = no clip.
    """

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA weights and value head)."})
    ppo_epochs: int = field(default=4, metadata={"help": "PPO epochs (passes over the batch) per step."})
    minibatch_size: int = field(default=16, metadata={"help": "Rollouts per optimizer step."})
    grad_accum_steps: int = field(default=1, metadata={"help": "Micro-batches per minibatch (gradient accumulation)."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    clip_range_value: float | None = field(
        default=None, metadata={"help": "Clip of value updates around the old values (default None: no clip)."}
    )
    value_learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW learning rate of the value head (default None: learning_rate)."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty to the adapter-disabled reference."})
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator of the penalty.", "choices": KL_ESTIMATORS})
    advantage: str = field(
        default="lines", metadata={"help": "Advantage estimator: GAE, or line reward minus the group's mean.", "choices": ADVANTAGES}
    )
    advantage_std: bool = field(default=True, metadata={"help": "lines: divide advantages by the group's standard deviation."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Divide per-token rewards by their standard deviation over the batch (no shift)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (<= 0: no clipping)."})
    reward_mode: str = field(default="lines", metadata={"help": "How crowd rewards reach tokens.", "choices": REWARD_MODES})
    line_reward: str = field(
        default="signed",
        metadata={"help": "lines mode: reward of a line with posterior P: 2P-1, P, or (2P-1)/k.", "choices": LINE_REWARDS},
    )
    line_credit: str = field(
        default="last",
        metadata={"help": "lines mode: a line's reward on its last token, or spread over its tokens.", "choices": LINE_CREDITS},
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the reward of a completion cut by length (no EOS, no stop string)."}
    )
    mixed_precision: str = field(
        default="no",
        metadata={"help": "Mixed precision: no, fp16, bf16, or auto (no on CPU, bf16/fp16 on GPU).", "choices": MIXED_PRECISION},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the minibatch shuffling (and of a new adapter's LoRA init)."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus in the loss."})
    target_kl: float | None = field(
        default=None, metadata={"help": "Stop a step's epochs when an epoch's last minibatch has approx KL above it."}
    )
    lr_warmup_steps: int = field(default=0, metadata={"help": "PPO steps of linear learning-rate warmup."})
    lr_schedule: str = field(default="constant", metadata={"help": "Learning-rate decay after the warmup.", "choices": LR_SCHEDULES})
    total_steps: int | None = field(default=None, metadata={"help": "PPO steps of the lr schedule (None: constant after warmup)."})
    reward_clip: float | None = field(default=None, metadata={"help": "Clip per-token scores to [-c, c] (None: no clip)."})

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
        if not self.clip_range > 0:
            raise ValueError(f"PPOConfig.clip_range: expected > 0, got {self.clip_range!r}")
        for name in ("clip_range_value", "value_learning_rate"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)):
                raise ValueError(f"PPOConfig.{name}: expected None or a finite number > 0, got {v!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"PPOConfig.advantage: expected one of {ADVANTAGES}, got {self.advantage!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_estimator: expected one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"PPOConfig: gamma and lam must lie in [0, 1], got gamma={self.gamma!r}, lam={self.lam!r}")
        if self.kl_coef < 0 or self.vf_coef < 0:
            raise ValueError(f"PPOConfig: kl_coef and vf_coef must be >= 0, got {self.kl_coef!r}, {self.vf_coef!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"PPOConfig.reward_mode: expected one of {REWARD_MODES}, got {self.reward_mode!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"PPOConfig.mixed_precision: expected one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.line_reward not in LINE_REWARDS:
            raise ValueError(f"PPOConfig.line_reward: expected one of {LINE_REWARDS}, got {self.line_reward!r}")
        if self.line_credit not in LINE_CREDITS:
            raise ValueError(f"PPOConfig.line_credit: expected one of {LINE_CREDITS}, got {self.line_credit!r}")
        pen = self.missing_eos_penalty
        if pen is not None and not (isinstance(pen, (int, float)) and math.isfinite(pen) and pen >= 0):
            raise ValueError(f"PPOConfig.missing_eos_penalty: expected None or a finite number >= 0, got {pen!r}")
        self._check_schedule()

    def _check_schedule(self) -> None:
        if not (isinstance(self.entropy_coef, (int, float)) and math.isfinite(self.entropy_coef) and self.entropy_coef >= 0):
            raise ValueError(f"PPOConfig.entropy_coef: expected a finite number >= 0, got {self.entropy_coef!r}")
        for name in ("target_kl", "reward_clip"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)):
                raise ValueError(f"PPOConfig.{name}: expected None or a finite number > 0, got {v!r}")
        w, t = self.lr_warmup_steps, self.total_steps
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ValueError(f"PPOConfig.lr_warmup_steps: expected an integer >= 0, got {w!r}")
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t <= w):
            raise ValueError(f"PPOConfig.total_steps: expected None or an integer > lr_warmup_steps ({w}), got {t!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"PPOConfig.lr_schedule: expected one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LoraSpec:
    """A LoRA adapter: rank ``r``, scaling ``alpha / r``, dropout, and the wrapped modules.

    ``target_modules=None`` picks by architecture (:func:`rl.policy.models.default_target_modules`):
    every attention and MLP projection of Llama/Qwen2/Mistral-style models, ``c_attn``/``c_proj``/
    ``c_fc`` for GPT-2, else peft's ``"all-linear"``. :meth:`peft_kwargs` is the one mapping of the
    spec onto ``peft.LoraConfig``.
    """

    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: tuple[str, ...] | None = field(default=None, metadata={"help": "Module names to wrap (default: by architecture)."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSpec.r: expected >= 1, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout: expected in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)

    def peft_kwargs(self, default_targets: tuple[str, ...] | str) -> dict[str, Any]:
        """Keyword arguments of ``peft.LoraConfig`` (``default_targets``: used when ``target_modules`` is None)."""
        targets = self.target_modules or default_targets
        return {
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": targets if isinstance(targets, str) else list(targets),
            "bias": "none",
            "task_type": "CAUSAL_LM",
        }


@dataclass
class SamplingConfig:
    """How completions are sampled by the one sampler (:func:`rl.policy.sampling.sample`).

    The defaults sample the model's full distribution (``top_k=0``, ``top_p=1``): PPO's policy gradient
    and KL are defined on that distribution, and an evaluation with the same settings measures the
    same policy that is trained. Truncated sampling (``top_p < 1`` or ``top_k > 0``) stays available.
    Results depend on ``seed``, ``batch_size`` and the device.
    """

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; 0 = greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1 = full distribution)."})
    top_k: int = field(default=0, metadata={"help": "Top-k truncation (0 = off)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens per completion at most."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate call."})
    seed: int | None = field(default=0, metadata={"help": "torch seed set before sampling (None: leave the RNG)."})
    stop: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Strings that end a completion (dropped with what follows); None = the caller's default."}
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"SamplingConfig.temperature: expected a finite number >= 0, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p: expected in (0, 1], got {self.top_p!r}")
        for name, low in (("top_k", 0), ("max_new_tokens", 1), ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"SamplingConfig.{name}: expected an integer >= {low}, got {v!r}")
        if self.stop is not None:
            if isinstance(self.stop, str):
                raise ValueError(f"SamplingConfig.stop: expected a list of strings, got one string {self.stop!r}")
            self.stop = tuple(s for s in self.stop if s)


@dataclass
class BenchSpec:
    """The synthetic benchmark (the arguments of :func:`rl.tasks.synthetic.make_benchmark`, same names and
    defaults except ``n_train_per_template``, whose loop default is the warm start's)."""

    seed: int = 0
    n_train_per_template: int = 200
    n_heldout_per_template: int = 4
    n_tests: int = 5
    heldout_fraction: float = 0.25
    templates: tuple[str, ...] | None = None
    hold_single: bool = False


@dataclass
class EvalSpec:
    """Held-out evaluation of the loop (pass@1, and pass@10 when ``n >= 10``, per template too).

    n: samples per problem at round 0 and the last round; n_mid: at the rounds between (None = n);
    every: evaluate every this many rounds (the last round always). per_template: the first k held-out
    problems of each template (0 = all); n_problems: then a random subset of that many (0 = all).
    temperature, top_p, top_k, max_new_tokens (None = the loop's ``sampling.max_new_tokens``),
    batch_size: the sampler; the stop strings are the loop's ``sampling.stop``, the seed is the loop's.
    """

    n: int = 10
    n_mid: int | None = None
    every: int = 1
    per_template: int = 0
    n_problems: int = 0
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("n", "every") + (("n_mid",) if self.n_mid is not None else ()):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalSpec.{name}: expected >= 1, got {getattr(self, name)!r}")
        if self.per_template < 0 or self.n_problems < 0:
            raise ValueError("EvalSpec: per_template and n_problems must be >= 0 (0 = all)")


@dataclass
class LabelStudioSpec:
    """``annotate = "labelstudio"``: the round's votes come from a Label Studio server (docs/annotation.md).

    server: the ``server.json`` of ``rl labelstudio serve`` (URL and admin token; relative paths are
    taken from the working directory). local_crowd: the simulated ``population`` posts its votes through
    the server, each annotator as its own account (no humans needed). wait: ``poll`` (wait up to
    ``timeout`` seconds, checking every ``poll_seconds``, then stop with exit status 3) or ``exit``
    (stop at once when votes are missing); ``rl loop --resume`` continues the round. title: the
    project's title (default: ``rl loop <name of out>``; at most 50 characters); all rounds go to one project.
    """

    server: str = "server.json"
    local_crowd: bool = False
    wait: str = "poll"
    timeout: float = 3600.0
    poll_seconds: float = 10.0
    title: str = ""

    def __post_init__(self) -> None:
        if self.wait not in ("poll", "exit"):
            raise ValueError(f"LabelStudioSpec.wait: expected 'poll' or 'exit', got {self.wait!r}")
        for name in ("timeout", "poll_seconds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"LabelStudioSpec.{name}: expected a finite number > 0, got {v!r}")


def _default_sampling() -> SamplingConfig:
    return SamplingConfig(max_new_tokens=64, batch_size=64, seed=None, stop=())


def _default_ppo() -> PPOConfig:
    return PPOConfig(learning_rate=1e-4, ppo_epochs=2, minibatch_size=32, reward_mode="lines")


@dataclass
class LoopConfig:
    """``rl loop`` settings (a JSON or TOML file; unknown keys and wrong types are errors).

    model: warm-started model directory (required to run). out: run directory. rounds: R.
    prompts_per_round, samples: generation per round, sampled with ``sampling`` (temperature 1, full
        distribution, max_new_tokens 64, batch_size 64; ``stop``: strings that end a completion, e.g.
        ``["\\ndef", "\\nclass", "\\nif __name__"]`` for a pretrained code LLM; also used by the
        evaluation). Top-level ``temperature``, ``max_new_tokens`` and ``stop`` are accepted as
        shorthands for ``sampling.*``.
    reward_source: ``auto`` (the default: ``crowdstat fit``'s default, a method chosen from the data and,
        with 5 or more honeypot programs in the fit, calibrated on them), a crowdstat method
        (``crowdstat.estimators.METHODS``; ``sequential`` is the paper's), ``true_lines`` or ``execution``.
        crowd_args: extra ``crowdstat fit`` options.
    annotate: ``simulate``, ``pause`` (human round trip) or ``labelstudio`` (a Label Studio server,
        section ``labelstudio``: :class:`LabelStudioSpec`). population (a ``crowdstat.spec``
        population: compact string or list of objects), per_program (annotators per program; None =
        all), honeypot_fraction: the simulated crowd. allocation: ``fixed`` (per_program annotators on
        every program) or ``adaptive`` (``crowdstat next`` asks for reviews where they inform most, up to
        vote_budget reviews per program on average, skipping programs decided at allocation_confidence;
        with ``labelstudio`` it raises the overlap of undecided programs' tasks; docs/allocation.md).
    ppo, lora, bench, eval: :class:`PPOConfig`, :class:`LoraSpec`, :class:`BenchSpec`, :class:`EvalSpec`.
    seed: generation, crowd, LoRA-init and PPO minibatch seed (``ppo.seed`` and ``sampling.seed`` are
        derived from it, per round, and cannot be set). threads: torch CPU threads.

    A section may be given as a mapping (missing keys keep the loop's defaults of that section).
    """

    model: str = ""
    out: str = "runs/loop"
    rounds: int = 3
    prompts_per_round: int = 16
    samples: int = 8
    sampling: SamplingConfig = field(default_factory=_default_sampling)
    reward_source: str = "auto"
    crowd_args: list[str | int | float] = field(default_factory=list)
    annotate: str = "simulate"
    population: str | list[dict] = DEFAULT_POPULATION
    per_program: int | None = None
    honeypot_fraction: float = 0.1
    allocation: str = "fixed"
    vote_budget: float = 3.0
    allocation_confidence: float = 0.95
    ppo: PPOConfig = field(default_factory=_default_ppo)
    lora: LoraSpec = field(default_factory=LoraSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    labelstudio: LabelStudioSpec = field(default_factory=LabelStudioSpec)
    seed: int = 0
    threads: int = 2

    #: section keys the loop sets itself (rejected in files, left out of to_dict)
    _DERIVED: ClassVar[dict[str, tuple[str, ...]]] = {"ppo": ("seed",), "sampling": ("seed",)}
    #: top-level shorthands of earlier config files -> their place in the tree
    _SHORTHANDS: ClassVar[dict[str, str]] = {"temperature": "sampling", "max_new_tokens": "sampling", "stop": "sampling"}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if isinstance(sub, Mapping) and dataclasses.is_dataclass(hints[f.name]):
                setattr(
                    self,
                    f.name,
                    from_dict(
                        hints[f.name],
                        sub,
                        where="LoopConfig",
                        prefix=f"{f.name}.",
                        base=field_default(f),
                        fixed=self._DERIVED.get(f.name, ()),
                    ),
                )
        self.ppo = dataclasses.replace(self.ppo, seed=self.seed) if self.ppo.seed != self.seed else self.ppo
        if self.sampling.seed is not None:
            self.sampling = dataclasses.replace(self.sampling, seed=None)
        sources = reward_sources()
        if self.reward_source not in sources:
            raise ValueError(f"reward_source must be one of {sources}, got {self.reward_source!r}")
        if self.annotate not in ("simulate", "pause", "labelstudio"):
            raise ValueError(f"annotate must be 'simulate', 'pause' or 'labelstudio', got {self.annotate!r}")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.samples < 1:
            raise ValueError("rounds, prompts_per_round and samples must be >= 1")
        if not 0.0 <= self.honeypot_fraction <= 1.0:
            raise ValueError(f"honeypot_fraction must be in [0, 1], got {self.honeypot_fraction!r}")
        from crowdstat import spec

        n = len(spec.parse(self.population, decay=False, tool="the rl simulator").annotators)  # validates the spec
        if self.per_program is not None and not 1 <= self.per_program <= n:
            raise ValueError(f"per_program must be between 1 and the population size {n}, got {self.per_program!r}")
        if self.allocation not in ("fixed", "adaptive"):
            raise ValueError(f"allocation must be 'fixed' or 'adaptive', got {self.allocation!r}")
        if not 1 <= self.vote_budget <= (n if self.allocation == "adaptive" else math.inf):
            raise ValueError(f"vote_budget must be between 1 and the population size {n} (reviews per program), got {self.vote_budget!r}")
        if not 0.5 <= self.allocation_confidence < 1:
            raise ValueError(f"allocation_confidence must be in [0.5, 1), got {self.allocation_confidence!r}")
        if self.allocation == "adaptive" and self.annotate not in ("simulate", "labelstudio"):
            raise ValueError("allocation 'adaptive' needs annotate 'simulate' or 'labelstudio' (pause mode takes the votes it is given)")

    def to_dict(self) -> dict[str, Any]:
        """The file form (JSON-ready; derived keys left out)."""
        return to_dict(self)

    def eval_sampling(self) -> SamplingConfig:
        """The sampler of the held-out evaluation: ``eval``'s settings, the loop's stop strings, seed
        10000 + seed (its own seed, so that every round and every run of the same seed samples alike;
        ``rl warmstart``'s evaluation uses it too)."""
        e = self.eval
        return SamplingConfig(
            temperature=e.temperature,
            top_p=e.top_p,
            top_k=e.top_k,
            max_new_tokens=e.max_new_tokens or self.sampling.max_new_tokens,
            batch_size=e.batch_size,
            seed=10_000 + self.seed,
            stop=tuple(self.sampling.stop or ()),
        )


def load_config(path: str | Path, **overrides) -> LoopConfig:
    """Read a JSON or TOML loop config; ``overrides`` (not None) replace top-level keys.

    A relative ``model`` that does not exist from the working directory is looked up next to the file.
    """
    path = Path(path)
    d = read_config_file(path)
    d.update({k: v for k, v in overrides.items() if v is not None})
    model = d.get("model")
    if isinstance(model, str) and model and not Path(model).is_absolute() and not Path(model).exists():
        cand = path.parent / model
        if cand.exists():
            d["model"] = str(cand)
    cfg = from_dict(LoopConfig, d, where=str(path))
    if not cfg.model:
        raise ConfigError(f"{path}: 'model' (the warm-started model directory) is required")
    return cfg
