"""Crowd rewards -> per-token rewards: the seam between ``rewards.jsonl`` and PPO.

The reward file is read through :mod:`crowdstat.io.rewards` only (schema in docs/formats.md).
:func:`load_rewards` joins it to the rollouts and checks everything *before* any training step;
:func:`token_rewards` places a record's rewards on the completion tokens of its rollout.

Reward modes
------------
``"program"``
    ``record["reward"]`` (s = c / k, the share of annotated lines with posterior > tau) on the
    last completion token; zeros elsewhere. The usual sparse sequence-level RLHF reward.
``"soft"``
    ``record["reward_soft"]`` (mean posterior of the annotated lines) on the last token.
``"lines"`` (dense; the point of cRLHF with a value head)
    for each annotated line j of the completion, ``2 * P_j - 1`` (in [-1, 1]: + for a line the
    crowd believes correct, - for one it believes wrong, 0 for an undecided line) on the *last*
    completion token of that line (its newline with a character tokenizer), i.e. at the moment
    the policy finishes writing the line. Lines outside the completion (prompt lines) get
    nothing. ``line_reward="posterior"`` puts ``P_j`` instead, ``"signed_mean"`` puts
    ``(2 P_j - 1) / k`` so that a program's rewards sum to a value in [-1, 1] whatever its number
    of lines (``"signed"`` sums to more for longer programs: a length incentive when lines are
    judged correct, a length penalty when they are judged wrong).

A token that ends two annotated lines (a multi-line BPE token) receives the sum of their rewards.
"""

from __future__ import annotations

import math
from pathlib import Path

from crowdstat.io.rewards import RewardFileError, read_rewards

__all__ = ["RewardFileError", "load_rewards", "token_rewards", "LINE_REWARDS", "REWARD_MODES", "code_n_lines"]

REWARD_MODES = ("program", "soft", "lines")
#: how a line posterior P becomes a reward in "lines" mode
LINE_REWARDS = ("signed", "posterior", "signed_mean")


def code_n_lines(code: str) -> int:
    """Number of lines of ``code`` (1-based numbering; a final newline does not start a new line)."""
    if code == "":
        return 0
    return code.count("\n") + (0 if code.endswith("\n") else 1)


def load_rewards(path, rollouts, *, prompt_lines: str = "error") -> dict[str, dict]:
    """Read ``rewards.jsonl`` and check it against ``rollouts``; return ``{program: record}``.

    Raises :class:`crowdstat.io.rewards.RewardFileError` (a ``ValueError``) naming the file and
    the program when: the schema is violated (version, missing field, NaN, range; checked by
    ``read_rewards``), a rollout has no record, a record names no rollout, or an annotated line
    does not exist in the rollout's ``code`` or is not a line of the completion (no completion
    token produced it). ``prompt_lines="ignore"`` accepts annotated lines that lie wholly in the
    prompt (they are then ignored by :func:`token_rewards`); lines beyond the code are always an
    error.
    """
    if prompt_lines not in ("error", "ignore"):
        raise ValueError(f"load_rewards: prompt_lines must be 'error' or 'ignore', got {prompt_lines!r}")
    path = Path(path)
    records = read_rewards(path)
    by_prog: dict[str, object] = {}
    for r in rollouts:
        if r.program in by_prog:
            raise RewardFileError(f"rollouts: duplicate program {r.program!r}")
        by_prog[r.program] = r
    out: dict[str, dict] = {}
    for rec in records:
        prog = rec["program"]
        if prog not in by_prog:
            raise RewardFileError(f"{path}: program {prog!r} is not among the {len(by_prog)} rollouts (a reward file for other rollouts?)")
        r = by_prog[prog]
        n_code = code_n_lines(r.code)
        in_completion = {ln for ln, _, _ in r.line_spans}
        for ln in rec["lines"]:
            if not 1 <= ln <= n_code:
                raise RewardFileError(f"{path}: program {prog!r}: line {ln} does not exist (the code has {n_code} lines)")
            if ln not in in_completion and prompt_lines == "error":
                where = sorted(in_completion)
                raise RewardFileError(
                    f"{path}: program {prog!r}: line {ln} is not a line of the completion "
                    f"(completion lines: {where[0] if where else '-'}..{where[-1] if where else '-'}); "
                    f"annotate completion lines only, or pass prompt_lines='ignore'"
                )
        out[prog] = rec
    missing = [p for p in by_prog if p not in out]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RewardFileError(f"{path}: no reward record for program {missing[0]!r}{more}")
    return out


def token_rewards(rollout, record: dict, mode: str, *, line_reward: str = "signed") -> list[float]:
    """Per completion token rewards (length ``len(rollout.completion_ids)``); see the module docstring."""
    if mode not in REWARD_MODES:
        raise ValueError(f"token_rewards: mode must be one of {REWARD_MODES}, got {mode!r}")
    if line_reward not in LINE_REWARDS:
        raise ValueError(f"token_rewards: line_reward must be one of {LINE_REWARDS}, got {line_reward!r}")
    if record.get("program") != rollout.program:
        raise ValueError(f"token_rewards: record of program {record.get('program')!r} given for rollout {rollout.program!r}")
    n = len(rollout.completion_ids)
    out = [0.0] * n
    if n == 0:
        return out
    if mode == "program":
        out[-1] = float(record["reward"])
    elif mode == "soft":
        out[-1] = float(record["reward_soft"])
    else:
        last = {ln: hi for ln, _, hi in rollout.line_spans}
        k = len(record["lines"])
        for ln, p in zip(record["lines"], record["posteriors"]):
            if ln not in last:
                continue  # a prompt line: no completion token wrote it
            p = float(p)
            if not math.isfinite(p):
                raise ValueError(f"token_rewards: program {rollout.program!r}: line {ln}: posterior {p!r}")
            v = p if line_reward == "posterior" else 2.0 * p - 1.0
            if line_reward == "signed_mean":
                v /= k
            out[last[ln]] += v
    return out
