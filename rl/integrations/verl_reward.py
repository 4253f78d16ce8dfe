"""crowdstat's line posteriors as token-level rewards in verl (docs/verl.md).

What it does
------------
For every row of a verl batch (``prompts`` left-padded, ``responses`` right-padded, one
``attention_mask`` over both, as verl's rollouts lay them out) it rebuilds the project's view of the
rollout from the token ids (``code = decode(prompt) + decode(response)``, the characters each
response token ends at, :func:`rl.policy.rollouts.token_char_ends`), finds the row's reward record
and places it on the response tokens with :func:`rl.crowd.rewards.token_rewards`: the very function
``rl train`` (the project's PPO) uses, so a line's ``2 P - 1`` lands on the last token of the line by
the same character-offset rule (:func:`rl.crowd.rewards.token_lines`). The result is verl's
``(B, response_length)`` float32 reward tensor, zero on padding.

Where the records come from (:class:`CrowdRewardSettings`)
------------------------------------------------------------
``rewards``: a ``rewards.jsonl`` (``crowdstat fit --out``; schema in docs/formats.md) keyed by the
rollout: a record's ``program`` is the row's ``key_field`` (a non-tensor field of the batch, or a key
of its ``extra_info`` dict), else the row's content key :func:`rollout_key` (a hash of its prompt
and response token ids). The file is read again when it changes. A row without a record is a
one-line :class:`crowdstat.io.rewards.RewardFileError`.

``source``: the crowd pipeline on the batch itself (:class:`rl.crowd.pipeline.CrowdRewarder`:
sandbox -> line truth -> simulated votes -> ``crowdstat fit``), with the row's task id
(``task_field``) naming its :class:`rl.tasks.benchmarks.Problem` in ``benchmark``.

verl 0.9.1 (what its trainer uses)
----------------------------------
verl 0.9.1's ``RayPPOTrainer`` (``trainer.use_v1=false``; the v1 trainer, 0.9.1's default, writes
samples one by one into TransferQueue and is not supported) computes rewards in its *reward loop*
(``verl.experimental.reward_loop``): a ``RewardManagerBase`` per worker scores one sample at a time
(``run_single``) and the trainer puts that **scalar** on the last response token. Token-level
rewards therefore need a hook where the whole batch is seen; this module gives three classes (built
on first access, so this module imports without verl):

* :class:`CrowdAgentLoopManager` (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``):
  verl's ``AgentLoopManager`` whose ``generate_sequences`` replaces ``rm_scores`` with the
  token-level tensor. This is what makes verl's PPO train on per-line rewards.
* :class:`CrowdLineRewardLoopManager`, registered as ``crowdstat_lines`` in the reward-loop
  registry (``reward.reward_manager``): the per-sample scalar (the sum of the row's token rewards)
  that the reward loop requires; in ``source`` mode it returns 0 (the batch hook does the work).
* :class:`CrowdLineRewardManager`, registered as ``crowdstat_lines`` in the batch registry
  (``verl.workers.reward_manager``, the ``__call__(data, return_dict=False)`` API of verl's
  ``NaiveRewardManager``, which 0.9.1's trainers no longer call): the full tensor in one call.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from crowdstat.io.jsonl import read_jsonl
from crowdstat.io.rewards import RewardFileError, validate_record
from rl.config import LINE_CREDITS, LINE_REWARDS, REWARD_MODES
from rl.config.paths import reading
from rl.crowd.rewards import code_n_lines, token_rewards
from rl.policy.rollouts import Rollout, compute_line_spans, token_char_ends

__all__ = [
    "NAME",
    "CrowdRewardSettings",
    "CrowdTokenRewards",
    "RewardIndex",
    "rollout_key",
    "rollout_view",
    "batch_rows",
    "row_keys",
    "dense_rewards",
    "verl_classes",
    "with_token_rewards",
]

#: the name under which the managers are registered in verl's registries
NAME = "crowdstat_lines"
_VERL_CLASSES = ("CrowdLineRewardManager", "CrowdLineRewardLoopManager", "CrowdAgentLoopManager")


@dataclass(frozen=True)
class CrowdRewardSettings:
    """How the managers find rewards and place them (``reward.crowdstat`` in the verl config).

    Exactly one of ``rewards`` (a rewards.jsonl keyed by rollout) and ``source`` (run the crowd
    pipeline on each batch: a crowdstat method, ``true_lines`` or ``execution``). ``reward_mode``,
    ``line_reward``, ``line_credit``, ``missing_eos_penalty`` and ``prompt_lines`` mean what they
    mean for ``rl train`` (:func:`rl.crowd.rewards.token_rewards`, :func:`rl.crowd.rewards.load_rewards`).
    """

    rewards: str | None = None
    source: str | None = None
    key_field: str = "program"
    task_field: str = "task_id"
    benchmark: str = "synthetic"
    split: str | None = None
    workdir: str = "verl-crowd"
    seed: int = 0
    reward_mode: str = "lines"
    line_reward: str = "signed"
    line_credit: str = "last"
    missing_eos_penalty: float | None = None
    prompt_lines: str = "error"

    def __post_init__(self):
        w = "reward.crowdstat"
        if (self.rewards is None) == (self.source is None):
            raise ValueError(f"{w}: give exactly one of 'rewards' (a rewards.jsonl keyed by rollout) and 'source' (the crowd pipeline)")
        for name, allowed in (
            ("reward_mode", REWARD_MODES),
            ("line_reward", LINE_REWARDS),
            ("line_credit", LINE_CREDITS),
            ("prompt_lines", ("error", "ignore")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{w}.{name}: must be one of {allowed}, got {getattr(self, name)!r}")
        if self.source is not None:
            from rl.crowd.pipeline import SOURCES

            if self.source not in SOURCES:
                raise ValueError(f"{w}.source: must be one of {SOURCES}, got {self.source!r}")
        pen = self.missing_eos_penalty
        if pen is not None and not (isinstance(pen, (int, float)) and math.isfinite(pen) and pen >= 0):
            raise ValueError(f"{w}.missing_eos_penalty: must be null or a finite number >= 0, got {pen!r}")

    @classmethod
    def from_mapping(cls, m: Mapping | None, where: str = "reward.crowdstat") -> CrowdRewardSettings:
        """From a dict or an OmegaConf node; an unknown key is a one-line ValueError naming it."""
        if m is None:
            raise ValueError(f"{where}: missing (set +{where}.rewards=PATH or +{where}.source=METHOD)")
        if not isinstance(m, Mapping):  # an OmegaConf DictConfig
            from omegaconf import OmegaConf

            m = OmegaConf.to_container(m, resolve=True)  # type: ignore[assignment]
        known = {f.name for f in fields(cls)}
        bad = sorted(set(m) - known)
        if bad:
            raise ValueError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**dict(m))


# ---------------------------------------------------------------------------------------------
# pure parts: rows of a verl batch -> the project's rollouts -> per-token rewards


def rollout_key(prompt_ids: list[int], response_ids: list[int]) -> str:
    """The content key of a rollout: ``"verl-"`` + 16 hex digits of SHA-1 over its token ids."""
    blob = json.dumps([list(map(int, prompt_ids)), list(map(int, response_ids))], separators=(",", ":"))
    return "verl-" + hashlib.sha1(blob.encode()).hexdigest()[:16]


def batch_rows(prompts, responses, attention_mask) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, response_ids)`` of every row, padding removed as verl does: the prompt is the last
    ``attention_mask[:, :P].sum()`` columns of ``prompts``, the response the first ``attention_mask[:, P:].sum()``."""
    P = prompts.shape[-1]
    att = attention_mask.detach().cpu()
    pr, rs = prompts.detach().cpu(), responses.detach().cpu()
    out = []
    for i in range(pr.shape[0]):
        vp, vr = int(att[i, :P].sum()), int(att[i, P:].sum())
        out.append((pr[i, P - vp :].tolist(), rs[i, :vr].tolist()))
    return out


def _field(non_tensor: Mapping, name: str, i: int):
    """Row ``i``'s value of a non-tensor field, or of the key ``name`` of its ``extra_info`` dict; None if absent."""
    if name in non_tensor:
        return non_tensor[name][i]
    extra = non_tensor.get("extra_info")
    if extra is not None and isinstance(extra[i], Mapping):
        return extra[i].get(name)
    return None


def row_keys(rows: list[tuple[list[int], list[int]]], non_tensor: Mapping, key_field: str) -> list[str]:
    """The rollout key of every row: its ``key_field`` when the batch carries it, else :func:`rollout_key`."""
    keys = []
    for i, (p, r) in enumerate(rows):
        v = _field(non_tensor, key_field, i)
        keys.append(str(v) if v is not None else rollout_key(p, r))
    return keys


def rollout_view(
    tokenizer, program: str, prompt_ids: list[int], response_ids: list[int], *, eos: set[int], prefix: str | None = None
) -> Rollout:
    """The project's :class:`Rollout` of one verl row (what placement reads; no log probs).

    ``code = prefix + decode(response)``, ``prefix`` defaulting to ``decode(prompt)`` (special
    tokens skipped, as ``rl generate`` decodes); ``finish_reason`` is ``"eos"`` when the response
    ends with an id of ``eos``, else ``"length"``.
    """
    completion = tokenizer.decode(response_ids, skip_special_tokens=True)
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True) if prefix is None else prefix
    ends = token_char_ends(tokenizer, response_ids)
    code = prompt + completion
    return Rollout(
        program=program,
        prompt_id=program,
        prompt=prompt,
        completion=completion,
        code=code,
        prompt_ids=list(prompt_ids),
        completion_ids=list(response_ids),
        logprobs=[],
        ref_logprobs=[],
        line_spans=compute_line_spans(code, len(prompt), ends),
        finish_reason="eos" if response_ids and response_ids[-1] in eos else "length",
        char_ends=ends,
    )


def dense_rewards(rows: list[list[float]], width: int, device=None):
    """Ragged per-token rewards as a zero-padded float32 ``(B, width)`` tensor (verl's reward tensor)."""
    import torch

    out = torch.zeros(len(rows), width, dtype=torch.float32)
    for b, row in enumerate(rows):
        if len(row) > width:
            raise ValueError(f"row {b}: {len(row)} token rewards for a response width of {width}")
        if row:
            out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out if device is None else out.to(device)


class RewardIndex:
    """A rewards.jsonl indexed by ``program`` (the rollout key); read again whenever the file changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, dict] = {}
        self._where: dict[str, str] = {}

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise RewardFileError(f"{self.path}: no such file (reward.crowdstat.rewards: a rewards.jsonl keyed by rollout)") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        records, where = {}, {}
        with reading(self.path, RewardFileError):
            for _, w, rec in read_jsonl(self.path, RewardFileError):
                validate_record(rec, w)
                if rec["program"] in records:
                    raise RewardFileError(f"{w}: duplicate program {rec['program']!r} (first at {where[rec['program']]})")
                records[rec["program"]], where[rec["program"]] = rec, w
        self._records, self._where, self._stamp = records, where, stamp

    def __len__(self) -> int:
        self._load()
        return len(self._records)

    def record(self, key: str, row: int, key_field: str) -> tuple[dict, str]:
        """``(record, "file:line")`` of rollout ``key``; a one-line RewardFileError when the file has none."""
        self._load()
        if key not in self._records:
            how = (
                f"the row's {key_field!r} field"
                if not key.startswith("verl-")
                else f"the content key rl.integrations.verl_reward.rollout_key (the batch has no {key_field!r} field)"
            )
            raise RewardFileError(
                f"{self.path}: no reward record for rollout {key!r} (batch row {row}; records are keyed by {how}; "
                f"the file has {len(self._records)} records)"
            )
        return self._records[key], self._where[key]


def _check_lines(where: str, rec: dict, view: Rollout, prompt_lines: str) -> None:
    """The record's lines exist in the row's code, and lie in its completion unless prompt lines are ignored."""
    n_code = code_n_lines(view.code)
    mine = {ln for ln, _, _ in view.line_spans}
    for ln in rec["lines"]:
        if not 1 <= ln <= n_code:
            raise RewardFileError(
                f"{where}: field 'lines': rollout {rec['program']!r}: line {ln} does not exist (the code has {n_code} lines)"
            )
        if ln not in mine and prompt_lines == "error":
            raise RewardFileError(
                f"{where}: field 'lines': rollout {rec['program']!r}: line {ln} is not a line of the response "
                "(set reward.crowdstat.prompt_lines=ignore to skip prompt lines)"
            )


class CrowdTokenRewards:
    """The token-level rewards of verl batches (no verl needed): :meth:`tensor` is what every manager calls.

    ``tokenizer``: the policy's tokenizer; ``eos``: the ids that end a response (default the
    tokenizer's EOS).
    """

    def __init__(self, tokenizer, settings: CrowdRewardSettings, *, eos: set[int] | None = None):
        self.tokenizer = tokenizer
        self.settings = settings
        self.eos = set(eos) if eos is not None else ({tokenizer.eos_token_id} - {None})
        self.index = RewardIndex(settings.rewards) if settings.rewards is not None else None
        self._rewarder = None
        self._problems: dict | None = None
        self.calls = 0

    def rows(self, views: list[Rollout], records: list[dict]) -> list[list[float]]:
        """Per-token rewards of each view: :func:`rl.crowd.rewards.token_rewards`, as ``rl train`` calls it."""
        s = self.settings
        kw = dict(line_reward=s.line_reward, credit=s.line_credit, missing_eos_penalty=s.missing_eos_penalty)
        return [token_rewards(v, rec, s.reward_mode, **kw) for v, rec in zip(views, records)]

    def tensor(self, prompts, responses, attention_mask, non_tensor: Mapping | None = None) -> tuple[Any, dict[str, list]]:
        """``(rewards (B, R) float32 on responses' device, extra info per row)`` for one verl batch."""
        non_tensor = non_tensor or {}
        rows = batch_rows(prompts, responses, attention_mask)
        self.calls += 1
        if self.index is not None:
            views, records = self._from_file(rows, non_tensor)
        else:
            views, records = self._from_pipeline(rows, non_tensor)
        token_rows = self.rows(views, records)
        info = {
            "crowd_reward": [float(sum(r)) for r in token_rows],
            "crowd_lines": [len(rec["lines"]) for rec in records],
        }
        return dense_rewards(token_rows, responses.shape[-1], responses.device), info

    def _from_file(self, rows, non_tensor: Mapping) -> tuple[list[Rollout], list[dict]]:
        assert self.index is not None
        s = self.settings
        views, records = [], []
        for i, (key, (p, r)) in enumerate(zip(row_keys(rows, non_tensor, s.key_field), rows)):
            rec, where = self.index.record(key, i, s.key_field)
            view = rollout_view(self.tokenizer, key, p, r, eos=self.eos)
            _check_lines(where, rec, view, s.prompt_lines)
            views.append(view)
            records.append(rec)
        return views, records

    def _load_problems(self) -> dict:
        if self._problems is None:
            from rl.tasks.benchmarks import load

            s = self.settings
            kw = {} if s.split is None else {"split": s.split}
            self._problems = {p.task_id: p for p in load(s.benchmark, **kw)}
        return self._problems

    def _from_pipeline(self, rows, non_tensor: Mapping) -> tuple[list[Rollout], list[dict]]:
        """The crowd pipeline on the batch: program ids ``b{call}-{row}``, code = the problem's program."""
        from rl.crowd.pipeline import CrowdRewarder

        s = self.settings
        problems = self._load_problems()
        if self._rewarder is None:
            self._rewarder = CrowdRewarder(s.source, s.workdir, seed=s.seed)  # type: ignore[arg-type]
        views, items = [], []
        for i, (p, r) in enumerate(rows):
            tid = _field(non_tensor, s.task_field, i)
            if tid is None or str(tid) not in problems:
                what = "has no" if tid is None else f"names task {tid!r}, not in benchmark {s.benchmark!r}, as"
                raise ValueError(f"verl batch row {i} {what} field {s.task_field!r} (reward.crowdstat.task_field)")
            prob = problems[str(tid)]
            completion = self.tokenizer.decode(r, skip_special_tokens=True)
            code = prob.program(completion)
            if not code.endswith(completion):
                raise ValueError(f"verl batch row {i}: task {tid}: the problem's program does not end with the response")
            prog = f"b{self.calls:06d}-{i:05d}"
            views.append(rollout_view(self.tokenizer, prog, p, r, eos=self.eos, prefix=code[: len(code) - len(completion)]))
            items.append((prog, prob, completion))
        recs, _, _ = self._rewarder.rewards(items, f"verl-{self.calls:06d}")
        return views, [recs[v.program] for v in views]

    def from_dataproto(self, data) -> tuple[Any, dict[str, list]]:
        """:meth:`tensor` of a verl ``DataProto``."""
        b = data.batch
        return self.tensor(b["prompts"], b["responses"], b["attention_mask"], data.non_tensor_batch)


def _settings_of(config, overrides: Mapping) -> CrowdRewardSettings:
    """Settings from ``config.reward.crowdstat`` (a verl trainer config), overridden by ``overrides``."""
    node = None
    if config is not None:
        reward = config.get("reward") if hasattr(config, "get") else None
        node = reward.get("crowdstat") if reward is not None and hasattr(reward, "get") else None
    base: dict = {}
    if node is not None:
        base = dict(node) if isinstance(node, Mapping) else _to_dict(node)
    return CrowdRewardSettings.from_mapping({**base, **dict(overrides)})


def _to_dict(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# verl classes (built, and registered with verl, on first access)


@functools.cache
def verl_classes() -> dict[str, type]:
    """Build the verl classes and register the managers as :data:`NAME` in both of verl's registries."""
    from verl.experimental.agent_loop import AgentLoopManager
    from verl.experimental.reward_loop.reward_manager import register as register_loop
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.utils.ray_utils import auto_await
    from verl.workers.reward_manager import register as register_batch
    from verl.workers.reward_manager.abstract import AbstractRewardManager

    class CrowdLineRewardManager(AbstractRewardManager):
        """verl's batch reward manager API: ``manager(data)`` -> the (B, R) token-level reward tensor."""

        def __init__(self, tokenizer, num_examine: int = 0, compute_score=None, reward_fn_key: str = "data_source", **settings):
            self.tokenizer = tokenizer
            self.num_examine = num_examine
            self.crowd = CrowdTokenRewards(tokenizer, CrowdRewardSettings.from_mapping(settings))

        def __call__(self, data, return_dict: bool = False):
            tensor, info = self.crowd.from_dataproto(data)
            return {"reward_tensor": tensor, "reward_extra_info": info} if return_dict else tensor

    class CrowdLineRewardLoopManager(RewardManagerBase):
        """verl 0.9's reward-loop manager: one sample's scalar (the sum of its token rewards)."""

        def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None, **settings):
            super().__init__(config, tokenizer, compute_score)
            self.crowd = CrowdTokenRewards(tokenizer, _settings_of(config, settings))

        async def run_single(self, data) -> dict:
            data = data[-1:]
            if self.crowd.settings.source is not None:  # the crowd needs the batch: CrowdAgentLoopManager
                return {"reward_score": 0.0, "reward_extra_info": {"crowd_deferred": 1.0}}
            tensor, info = self.crowd.from_dataproto(data)
            return {"reward_score": float(tensor.sum()), "reward_extra_info": {k: float(v[0]) for k, v in info.items()}}

    class CrowdAgentLoopManager(AgentLoopManager):
        """verl's AgentLoopManager whose output carries the token-level ``rm_scores`` of the batch."""

        _crowd: CrowdTokenRewards | None = None

        def crowd(self) -> CrowdTokenRewards:
            if self._crowd is None:
                from verl.utils import hf_tokenizer
                from verl.utils.fs import copy_to_local

                model = self.config.actor_rollout_ref.model
                tok = hf_tokenizer(copy_to_local(model.get("tokenizer_path") or model.path), trust_remote_code=True)
                self._crowd = CrowdTokenRewards(tok, _settings_of(self.config, {}))
            return self._crowd

        @auto_await
        async def generate_sequences(self, prompts):
            # verl's method without its outer auto_await layer (this one awaits it; its skip layer stays)
            output = await AgentLoopManager.generate_sequences.__wrapped__(self, prompts)
            return with_token_rewards(self.crowd(), prompts, output)

    classes = (CrowdLineRewardManager, CrowdLineRewardLoopManager, CrowdAgentLoopManager)
    for c in classes:  # picklable by reference (Ray): the module's __getattr__ returns these very classes
        c.__qualname__ = c.__name__
    register_batch(NAME)(CrowdLineRewardManager)
    register_loop(NAME)(CrowdLineRewardLoopManager)
    return {c.__name__: c for c in classes}


def with_token_rewards(crowd: CrowdTokenRewards, prompts, output):
    """``output`` (a generated DataProto) with ``batch["rm_scores"]`` set to the batch's token rewards;
    the non-tensor fields of ``prompts`` (row-aligned with ``output``) supply the keys and task ids."""
    non_tensor = {**prompts.non_tensor_batch, **output.non_tensor_batch}
    b = output.batch
    tensor, info = crowd.tensor(b["prompts"], b["responses"], b["attention_mask"], non_tensor)
    b["rm_scores"] = tensor
    keys = list(output.meta_info.get("reward_extra_keys", []))
    output.meta_info["reward_extra_keys"] = keys + [k for k in info if k not in keys]
    import numpy as np

    for k, v in info.items():
        output.non_tensor_batch[k] = np.asarray(v, dtype=np.float64)
    return output


def __getattr__(name: str):
    if name in _VERL_CLASSES:
        return verl_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
