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
    completion token that belongs to line j (:func:`token_lines`), i.e. at the moment the policy
    finishes writing the line; ``credit="spread"`` divides it evenly over the line's tokens
    instead. Lines outside the completion (prompt lines) get nothing. ``line_reward="posterior"``
    puts ``P_j`` instead, ``"signed_mean"`` puts ``(2 P_j - 1) / k`` with k the number of
    annotated lines *of the completion*, so that a program's rewards sum to a value in [-1, 1]
    whatever its number of lines (``"signed"`` sums to more for longer programs: a length
    incentive when lines are judged correct, a length penalty when they are judged wrong).

Which line a token belongs to (:func:`token_lines`, independent of the tokenizer): the line of its
last character that is not a newline, or of its first character when it holds newlines only;
characters past the end of ``code`` (a stop string) do not count, and a token with no character
in ``code`` (EOS, a token inside the stop string) belongs to no line. So byte-level BPE's
``"\n    "`` (a newline merged with the next line's indentation) belongs to the *next* line,
Qwen2's ``"):\n"`` and ``"]\n\n"`` to the line they close. Every token belongs to at most one
line, so no token carries the reward of two lines, and no line reward lands on EOS or on a stop
token. A line that owns no token (a blank line whose newline sits in the previous line's token, or
a line of which the completion wrote only the newline, merged into the next line's indentation)
gets no reward.

``missing_eos_penalty`` (every mode; TRL's option of the same name): a completion that ended by
length (``finish_reason == "length"``: neither EOS nor a stop string) has the penalty subtracted
from its last token's reward. Unknown finish reasons (``None``) are not penalised.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

from crowdstat.io.jsonl import read_jsonl
from crowdstat.io.rewards import RewardFileError, read_rewards
from rl.config import LINE_CREDITS, LINE_REWARDS, REWARD_MODES
from rl.config.paths import reading

__all__ = [
    "RewardFileError",
    "load_rewards",
    "token_rewards",
    "token_lines",
    "LINE_REWARDS",
    "LINE_CREDITS",
    "REWARD_MODES",
    "code_n_lines",
]


def code_n_lines(code: str) -> int:
    """Number of lines of ``code`` (1-based numbering; a final newline does not start a new line)."""
    if code == "":
        return 0
    return code.count("\n") + (0 if code.endswith("\n") else 1)


def load_rewards(path, rollouts, *, prompt_lines: str = "error") -> dict[str, dict]:
    """Read ``rewards.jsonl`` and check it against ``rollouts``; return ``{program: record}``.

    Raises :class:`crowdstat.io.rewards.RewardFileError` (a ``ValueError``) of one line naming the
    file, the line and the field when: the file is not UTF-8, the schema is violated (version,
    missing field, NaN, range; checked by ``read_rewards``), a rollout has no record, a record names
    no rollout, or an annotated line does not exist in the rollout's ``code`` or is not a line of
    the completion (no completion token produced it). ``prompt_lines="ignore"`` accepts annotated
    lines that lie wholly in the prompt (they are then ignored by :func:`token_rewards`); lines
    beyond the code are always an error.
    """
    if prompt_lines not in ("error", "ignore"):
        raise ValueError(f"load_rewards: prompt_lines must be 'error' or 'ignore', got {prompt_lines!r}")
    path = Path(path)
    with reading(path, RewardFileError):
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
            raise RewardFileError(
                f"{_where(path, prog)}: program {prog!r} is not among the {len(by_prog)} rollouts (a reward file for other rollouts?)"
            )
        _check_lines(path, rec, by_prog[prog], prompt_lines)
        out[prog] = rec
    missing = [p for p in by_prog if p not in out]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RewardFileError(f"{path}: no reward record for program {missing[0]!r}{more}")
    return out


def _where(path: Path, program: str) -> str:
    """``{path}:{line}`` of the record of ``program`` (the file was read and checked, so programs are unique)."""
    for _, where, rec in read_jsonl(path, RewardFileError):
        if rec.get("program") == program:
            return where
    return str(path)


def _check_lines(path: Path, rec: dict, rollout, prompt_lines: str) -> None:
    """Every annotated line of ``rec`` is a line of the rollout's code (and of its completion, unless ignored)."""
    prog = rec["program"]
    n_code = code_n_lines(rollout.code)
    in_completion = {ln for ln, _, _ in rollout.line_spans}
    for ln in rec["lines"]:
        if not 1 <= ln <= n_code:
            raise RewardFileError(
                f"{_where(path, prog)}: field 'lines': program {prog!r}: line {ln} does not exist (the code has {n_code} lines)"
            )
        if ln not in in_completion and prompt_lines == "error":
            span = sorted(in_completion)
            raise RewardFileError(
                f"{_where(path, prog)}: field 'lines': program {prog!r}: line {ln} is not a line of the completion "
                f"(completion lines: {span[0] if span else '-'}..{span[-1] if span else '-'}); annotate completion lines "
                f"only, or ignore prompt lines (rl train --prompt-lines ignore, load_rewards(prompt_lines='ignore'))"
            )


def _line_starts(code: str) -> list[int]:
    starts = [0]
    pos = code.find("\n")
    while pos != -1:
        starts.append(pos + 1)
        pos = code.find("\n", pos + 1)
    return starts


def _lines_from_spans(rollout) -> list[int]:
    """Owners for a rollout without ``char_ends`` (files written before the field): a token in several
    ``line_spans`` belongs to the later line, and the final token of an ``"eos"`` completion to none."""
    out = [0] * len(rollout.completion_ids)
    for ln, lo, hi in sorted(rollout.line_spans):
        for t in range(lo, min(hi + 1, len(out))):
            out[t] = ln
    if out and rollout.finish_reason == "eos":
        out[-1] = 0
    return out


def token_lines(rollout) -> list[int]:
    """The line (1-based, of ``code``) each completion token belongs to; 0 for none (see the module docstring).

    Uses ``rollout.char_ends`` (characters of ``decode(completion_ids[:k+1])``); without it (older
    rollout files), an approximation from ``line_spans``.
    """
    ends = getattr(rollout, "char_ends", None)
    if ends is None:
        return _lines_from_spans(rollout)
    if len(ends) != len(rollout.completion_ids):
        raise ValueError(f"program {rollout.program!r}: {len(ends)} char_ends for {len(rollout.completion_ids)} completion tokens")
    code, p = rollout.code, len(rollout.prompt)
    starts = _line_starts(code)
    out, prev = [], 0
    for end in ends:
        a, b = p + prev, min(p + end, len(code))
        prev = max(prev, end)
        if a >= b:  # no character in the code: EOS, a special token, a token of the stop string
            out.append(0)
            continue
        c = b - 1
        while c > a and code[c] == "\n":  # trailing newlines close lines; the token writes the line before them
            c -= 1
        out.append(bisect.bisect_right(starts, c))
    return out


def token_rewards(
    rollout,
    record: dict,
    mode: str,
    *,
    line_reward: str = "signed",
    credit: str = "last",
    missing_eos_penalty: float | None = None,
) -> list[float]:
    """Per completion token rewards (length ``len(rollout.completion_ids)``); see the module docstring."""
    if mode not in REWARD_MODES:
        raise ValueError(f"token_rewards: mode must be one of {REWARD_MODES}, got {mode!r}")
    if line_reward not in LINE_REWARDS:
        raise ValueError(f"token_rewards: line_reward must be one of {LINE_REWARDS}, got {line_reward!r}")
    if credit not in LINE_CREDITS:
        raise ValueError(f"token_rewards: credit must be one of {LINE_CREDITS}, got {credit!r}")
    pen = missing_eos_penalty
    if pen is not None and not (isinstance(pen, (int, float)) and math.isfinite(pen) and pen >= 0):
        raise ValueError(f"token_rewards: missing_eos_penalty must be None or a finite number >= 0, got {pen!r}")
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
        _place_lines(rollout, record, out, line_reward, credit)
    if pen is not None and rollout.finish_reason == "length":
        out[-1] -= float(pen)
    return out


def _place_lines(rollout, record: dict, out: list[float], line_reward: str, credit: str) -> None:
    """``"lines"`` mode: add each annotated completion line's reward to the tokens of that line."""
    completion_lines = {ln for ln, _, _ in rollout.line_spans}
    annotated = [(ln, p) for ln, p in zip(record["lines"], record["posteriors"]) if ln in completion_lines]
    tokens: dict[int, list[int]] = {}
    for t, ln in enumerate(token_lines(rollout)):
        if ln:
            tokens.setdefault(ln, []).append(t)
    for ln, p in annotated:
        p = float(p)
        if not math.isfinite(p):
            raise ValueError(f"token_rewards: program {rollout.program!r}: line {ln}: posterior {p!r}")
        v = p if line_reward == "posterior" else 2.0 * p - 1.0
        if line_reward == "signed_mean":
            v /= len(annotated)  # k: the annotated lines of the completion (prompt lines excluded)
        own = tokens.get(ln, [])
        if credit == "last" and own:
            out[own[-1]] += v
        elif own:
            for t in own:
                out[t] += v / len(own)
