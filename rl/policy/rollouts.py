"""Rollouts: sampled completions with everything PPO needs, and the rollout file.

A :class:`Rollout` is one program: ``code = prompt + completion`` is exactly what annotators see
(1-based line numbers of ``code``), with the token ids, the policy's and the reference's log
probabilities of each completion token at sampling time, and ``line_spans`` mapping each line of
``code`` that overlaps the completion to the completion tokens that produced it, so rewards for
lines can be placed on tokens (:func:`rl.crowd.rewards.token_rewards`).

The rollout file (JSONL, one rollout a line, written atomically) doubles as the ``--programs``
file of ``rl annotate``: each line has ``program``, ``code`` and ``task_id``.

Conventions
-----------
- Sampling is the one sampler's (:mod:`rl.policy.sampling`: prompt encoding, padding, seeding,
  stopping and the cut at EOS or a stop string are described there); by default from the
  policy's full distribution (top_k=0, top_p=1), the distribution the policy gradient is of.
- Log probabilities are those of the distribution sampled from: ``log softmax(logits / T)`` at the
  sampling temperature T (``Rollout.temperature``, written to the file; greedy, T <= 0: at 1).
  :meth:`rl.train.ppo.PPOTrainer.step` recomputes them at the same T before the update, so PPO's
  ratio and KL are those of the tempered policy (as in TRL and OpenRLHF).
- ``line_spans`` lists ``(line, first, last)``: ``line`` a 1-based line of ``code``, ``first``
  and ``last`` (inclusive) indices into ``completion_ids`` of the tokens whose characters lie on
  that line. A line's characters include its terminating newline, so with a character tokenizer
  the last token of a line is its ``"\\n"``. A token spanning several lines belongs to each. Tokens
  without text in ``code`` (EOS, the tokens of a stop string) belong to the line of the token before them.
  ``line_spans`` says which lines the completion wrote (what :func:`rl.crowd.rewards.load_rewards`
  checks); where a line's reward goes is :func:`rl.crowd.rewards.token_lines`' rule, on ``char_ends``.
- ``completion_ids`` are the trained tokens: up to and including EOS, or up to and including the
  token that completes a stop string (stopping is an action, and it gets gradient), while
  ``completion`` (and so ``code``) is the text cut *before* the stop string, for execution and
  annotation. So ``decode(completion_ids)`` may extend past ``completion`` by the stop string.

``rl generate --model PATH [--adapter DIR] --prompts FILE.jsonl --n N --temperature T
--max-new-tokens M --seed S --out rollouts.jsonl`` (prompt file fields ``prompt_id``, ``prompt``,
optional ``task_id``).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from crowdstat.io.atomic import atomic_write_text
from crowdstat.io.jsonl import read_jsonl
from rl.config.paths import check_model, check_output, reading
from rl.policy.sampling import SamplingConfig, add_sampling_arguments, sample_batches, sampling_from_args, token_char_ends

__all__ = [
    "Rollout",
    "entropy_from_logits",
    "RolloutFileError",
    "generate",
    "write_rollouts",
    "read_rollouts",
    "read_prompts",
    "token_char_ends",
    "compute_line_spans",
    "pack",
    "completion_logprobs",
    "add_arguments",
    "run",
]


class RolloutFileError(ValueError):
    """A rollout or prompt file does not follow its format; the message names file, line and field."""


@dataclass
class Rollout:
    """One sampled program (see the module docstring for the conventions)."""

    program: str
    prompt_id: str
    prompt: str
    completion: str
    code: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    ref_logprobs: list[float]
    line_spans: list[tuple[int, int, int]]
    task_id: str | None = None
    #: "eos", "stop" or "length" (an addition to the agreed API; None when unknown)
    finish_reason: str | None = None
    #: the sampling temperature; ``logprobs`` and ``ref_logprobs`` are at this temperature (1.0 in
    #: files written before the field existed, whose log probs are at temperature 1)
    temperature: float = 1.0
    #: ``char_ends[k]`` = characters of ``decode(completion_ids[:k+1])`` (:func:`token_char_ends`): where each
    #: token's text ends; past ``len(completion)`` for the tokens of a stop string. What places line rewards on
    #: tokens (:func:`rl.crowd.rewards.token_lines`); None in files written before the field existed
    char_ends: list[int] | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["line_spans"] = [list(s) for s in self.line_spans]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Rollout:
        d = dict(d)
        d["line_spans"] = [tuple(int(x) for x in s) for s in d.get("line_spans", [])]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------
# token <-> character <-> line bookkeeping


def _line_starts(code: str) -> list[int]:
    starts, pos = [0], code.find("\n")
    while pos != -1:
        starts.append(pos + 1)
        pos = code.find("\n", pos + 1)
    return starts


def compute_line_spans(code: str, prompt_len: int, char_ends: list[int]) -> list[tuple[int, int, int]]:
    """``(line, first_token, last_token)`` for every line of ``code`` that completion tokens cover.

    ``prompt_len`` is the number of characters of the prompt (the completion starts there);
    ``char_ends`` as returned by :func:`token_char_ends` for the completion tokens. Characters past
    the end of ``code`` (a stop string after the cut) are not on any line.
    """
    starts = _line_starts(code)

    def line_of(pos: int) -> int:  # 1-based line containing character pos (its "\n" included)
        return bisect.bisect_right(starts, pos)

    per_token: list[tuple[int, int] | None] = []
    prev_end = 0
    for end in char_ends:
        a, b = prompt_len + prev_end, min(prompt_len + end, len(code))
        per_token.append((line_of(a), line_of(b - 1)) if b > a else None)
        prev_end = end
    # tokens without text: the line of the token before them (else of the next token with text)
    last = None
    for k, lines in enumerate(per_token):
        if lines is None:
            if last is not None:
                per_token[k] = (last, last)
        else:
            last = lines[1]
    nxt = None
    for k in range(len(per_token) - 1, -1, -1):
        if per_token[k] is None:
            if nxt is not None:
                per_token[k] = (nxt, nxt)
        else:
            nxt = per_token[k][0]
    spans: dict[int, list[int]] = {}
    for k, lines in enumerate(per_token):
        if lines is None:
            continue
        for ln in range(lines[0], lines[1] + 1):
            s = spans.setdefault(ln, [k, k])
            s[0], s[1] = min(s[0], k), max(s[1], k)
    return [(ln, s[0], s[1]) for ln, s in sorted(spans.items())]


# ---------------------------------------------------------------------------------------------
# batching and log probabilities (shared with rl.train.ppo)


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device=None) -> dict:
    """Left-pad prompts to a common length P, right-pad completions to C; one [B, P + C] batch.

    Returns ``input_ids``, ``attention_mask``, ``position_ids`` (cumsum of the mask: correct
    positions under left padding for any architecture), ``completion_mask`` [B, C] and ``P``,
    ``C``. Completion token j of row b sits at column P + j; its logits come from column P + j - 1.
    """
    B = len(prompt_ids)
    P = max(len(p) for p in prompt_ids)
    C = max(1, max(len(c) for c in completion_ids))
    if P < 1:
        raise ValueError("pack: every prompt needs at least one token (the completion is predicted from it)")
    ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    att = torch.zeros((B, P + C), dtype=torch.long)
    cmask = torch.zeros((B, C), dtype=torch.float32)
    for b, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        if len(p) < 1:
            raise ValueError(f"pack: row {b} has an empty prompt")
        ids[b, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        att[b, P - len(p) : P] = 1
        if c:
            ids[b, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
            att[b, P : P + len(c)] = 1
            cmask[b, : len(c)] = 1.0
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    out = {"input_ids": ids, "attention_mask": att, "position_ids": pos, "completion_mask": cmask, "P": P, "C": C}
    if device is not None:
        out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in out.items()}
    return out


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy ``H = logsumexp(z) - sum_v softmax(z)_v z_v`` of ``softmax(z)``, ``z = logits / T``, per
    position ([..., V] -> [...], float32), one row of the leading dimension at a time (no float32 copy
    of the whole [B, T, V] tensor). ``temperature <= 0`` (greedy) is taken as 1, as the log probs are."""
    scale = 1.0 / temperature if temperature > 0 else 1.0
    out = []
    for row in logits:
        z = row.float() if scale == 1.0 else row.float() * scale
        lse = torch.logsumexp(z, dim=-1)
        out.append(lse - (torch.softmax(z, dim=-1) * z).sum(-1))
    return torch.stack(out)


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[token] in float32, one row at a time (no [B, T, V] float32 copy).

    The distribution the sampler draws from at ``temperature`` (float32 logits divided by it, as
    transformers' ``TemperatureLogitsWarper``); ``temperature <= 0`` (greedy) is taken as 1.
    """
    scale = 1.0 / temperature if temperature > 0 else 1.0
    out = []
    for row_logits, row_tokens in zip(logits, tokens):
        row = row_logits.float() if scale == 1.0 else row_logits.float() * scale
        out.append(row.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(out)


def completion_forward(model, batch: dict, *, hidden: bool = False, temperature: float = 1.0, entropy: str | None = None):
    """Forward pass on a :func:`pack` batch: per completion token log probs [B, C] at ``temperature``
    (:func:`gather_logprobs`), and the last hidden state [B, C, H] with ``hidden``. ``entropy``
    ("grad" or "detach") appends the per-token entropy [B, C] of the same tempered distribution
    (:func:`entropy_from_logits`), with or without its gradient."""
    P, C = batch["P"], batch["C"]
    # logits_to_keep: the LM head runs on the last C + 1 positions only (columns P-1 .. P+C-1),
    # not on the prompt: with a 150k vocabulary that is most of the activation memory
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        output_hidden_states=hidden,
        use_cache=False,
        logits_to_keep=C + 1,
    )
    logits = out.logits[:, -(C + 1) : -1] if out.logits.shape[1] != P + C else out.logits[:, P - 1 : P + C - 1]
    lp = gather_logprobs(logits, batch["input_ids"][:, P : P + C], temperature)
    res = (lp, out.hidden_states[-1][:, P - 1 : P + C - 1]) if hidden else (lp,)
    if entropy is not None:
        with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
            res = (*res, entropy_from_logits(logits, temperature))
    return res if len(res) > 1 else lp


@torch.no_grad()
def completion_logprobs(model, batch: dict, *, temperature: float = 1.0) -> torch.Tensor:
    """Per completion token log probs [B, C] under ``model`` at ``temperature`` (no grad)."""
    return completion_forward(model, batch, temperature=temperature)


def _reference(model):
    """Context in which ``model`` acts as the reference: its LoRA adapter disabled (a no-op for a plain model)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") and hasattr(model, "peft_config") else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# sampling (through the one sampler, rl.policy.sampling)


def generate(
    model,
    tokenizer,
    prompts: list[tuple[str, str]],
    *,
    n: int,
    sampling: SamplingConfig | None = None,
    task_ids: list[str] | None = None,
    progress: bool = False,
    **settings,
) -> list[Rollout]:
    """Sample ``n`` completions of each ``(prompt_id, prompt)``; program ids are ``f"{prompt_id}#{k}"``.

    Sampling goes through :func:`rl.policy.sampling.sample_batches` with ``sampling`` (default
    :class:`SamplingConfig`: the full distribution, top_k=0, top_p=1), whose fields ``settings``
    replace (``temperature=``, ``max_new_tokens=``, ``seed=``, ``stop=``, ``batch_size=``, ...);
    ``temperature <= 0`` is greedy. ``ref_logprobs`` come from the same model with its LoRA adapter
    disabled (equal to ``logprobs`` for a plain model). Deterministic given the seed, the batch size
    and the device.
    """
    cfg = dataclasses.replace(sampling or SamplingConfig(), **settings)
    if task_ids is not None and len(task_ids) != len(prompts):
        raise ValueError(f"generate: {len(task_ids)} task_ids for {len(prompts)} prompts")
    ids_seen = [pid for pid, _ in prompts]
    if len(set(ids_seen)) != len(ids_seen):
        dup = next(p for p in ids_seen if ids_seen.count(p) > 1)
        raise ValueError(f"generate: duplicate prompt_id {dup!r}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rollouts: list[Rollout] = []
    for batch in sample_batches(model, tokenizer, [p for _, p in prompts], n, cfg, progress=progress, desc="generate"):
        full = pack([s.prompt_ids for s in batch], [s.completion_ids for s in batch], pad_id, device)
        with torch.no_grad():
            lp = completion_logprobs(model, full, temperature=cfg.temperature)
            with _reference(model):
                ref = completion_logprobs(model, full, temperature=cfg.temperature)
        for b, s in enumerate(batch):
            pid, prompt = prompts[s.prompt_index]
            code = prompt + s.completion
            L = len(s.completion_ids)
            ends = token_char_ends(tokenizer, s.completion_ids)
            rollouts.append(
                Rollout(
                    program=f"{pid}#{s.sample_index}",
                    prompt_id=pid,
                    prompt=prompt,
                    completion=s.completion,
                    code=code,
                    prompt_ids=s.prompt_ids,
                    completion_ids=s.completion_ids,
                    logprobs=lp[b, :L].tolist(),
                    ref_logprobs=ref[b, :L].tolist(),
                    line_spans=compute_line_spans(code, len(prompt), ends),
                    task_id=None if task_ids is None else task_ids[s.prompt_index],
                    finish_reason=s.finish_reason,
                    temperature=float(cfg.temperature),
                    char_ends=ends,
                )
            )
    return rollouts


# ---------------------------------------------------------------------------------------------
# files

_REQUIRED = {
    "program": str,
    "prompt_id": str,
    "prompt": str,
    "completion": str,
    "code": str,
    "prompt_ids": list,
    "completion_ids": list,
    "logprobs": list,
    "ref_logprobs": list,
    "line_spans": list,
}


def write_rollouts(path, rollouts: list[Rollout]) -> None:
    """Write rollouts as JSONL atomically (temporary file + os.replace). Program ids must be unique."""
    seen = set()
    lines = []
    for r in rollouts:
        if r.program in seen:
            raise RolloutFileError(f"{path}: duplicate program {r.program!r}")
        seen.add(r.program)
        lines.append(json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines), parents=True)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_rollout(where: str, d: dict) -> None:
    """One rollout object of a file, field by field (RolloutFileError naming ``where`` and the field)."""
    for name, typ in _REQUIRED.items():
        if name not in d:
            raise RolloutFileError(f"{where}: missing field {name!r}")
        if not isinstance(d[name], typ):
            raise RolloutFileError(f"{where}: field {name!r}: expected {typ.__name__}, got {type(d[name]).__name__}")
    prog = d["program"]
    for name in ("prompt_ids", "completion_ids"):
        if not all(_is_int(x) and x >= 0 for x in d[name]):
            raise RolloutFileError(f"{where}: field {name!r}: program {prog!r}: expected token ids (integers >= 0)")
    if not d["prompt_ids"]:
        raise RolloutFileError(f"{where}: field 'prompt_ids': program {prog!r}: empty (the completion is predicted from the prompt)")
    n = len(d["completion_ids"])
    for name in ("logprobs", "ref_logprobs"):
        if len(d[name]) != n:
            raise RolloutFileError(f"{where}: program {prog!r}: {name} has {len(d[name])} entries, completion_ids has {n}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in d[name]):
            raise RolloutFileError(f"{where}: program {prog!r}: {name} has a non-finite value")
    if d["code"] != d["prompt"] + d["completion"]:
        raise RolloutFileError(f"{where}: program {prog!r}: code != prompt + completion")
    for s in d["line_spans"]:
        if not (isinstance(s, list) and len(s) == 3 and all(_is_int(x) for x in s) and 0 <= s[1] <= s[2] < max(n, 1)):
            raise RolloutFileError(f"{where}: program {prog!r}: bad line span {s!r}")
    ce = d.get("char_ends")
    if ce is not None and not (isinstance(ce, list) and len(ce) == n and all(_is_int(x) and x >= 0 for x in ce) and ce == sorted(ce)):
        raise RolloutFileError(f"{where}: program {prog!r}: char_ends must be {n} non-decreasing integers >= 0")
    t = d.get("temperature", 1.0)
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)):
        raise RolloutFileError(f"{where}: field 'temperature': program {prog!r}: expected a finite number, got {t!r}")
    for name in ("task_id", "finish_reason"):
        if d.get(name) is not None and not isinstance(d[name], str):
            raise RolloutFileError(f"{where}: field {name!r}: program {prog!r}: expected a string or null, got {d[name]!r}")


def read_rollouts(path) -> list[Rollout]:
    """Read and check a rollout file; errors name the file, the line and the field."""
    path = Path(path)
    out, seen = [], {}
    with reading(path, RolloutFileError):
        for i, where, d in read_jsonl(path, RolloutFileError):
            _check_rollout(where, d)
            if d["program"] in seen:
                raise RolloutFileError(f"{where}: duplicate program {d['program']!r} (first at line {seen[d['program']]})")
            seen[d["program"]] = i
            out.append(Rollout.from_dict(d))
    if not out:
        raise RolloutFileError(f"{path}: no rollouts")
    return out


def read_prompts(path) -> tuple[list[tuple[str, str]], list[str] | None]:
    """Read a prompt file (JSONL: ``prompt_id``, ``prompt``, optional ``task_id``); errors name file, line and field."""
    path = Path(path)
    prompts, tasks, seen = [], [], {}
    with reading(path, RolloutFileError):
        for i, where, d in read_jsonl(path, RolloutFileError):
            for name in ("prompt_id", "prompt"):
                if not isinstance(d.get(name), str):
                    raise RolloutFileError(f"{where}: field {name!r}: expected a string, got {d.get(name)!r}")
            if d.get("task_id") is not None and not isinstance(d["task_id"], str):
                raise RolloutFileError(f"{where}: field 'task_id': expected a string or null, got {d['task_id']!r}")
            if d["prompt_id"] in seen:
                raise RolloutFileError(f"{where}: field 'prompt_id': duplicate {d['prompt_id']!r} (first at line {seen[d['prompt_id']]})")
            seen[d["prompt_id"]] = i
            prompts.append((d["prompt_id"], d["prompt"]))
            tasks.append(d.get("task_id"))
    if not prompts:
        raise RolloutFileError(f"{path}: no prompts")
    return prompts, (tasks if any(t is not None for t in tasks) else None)


# ---------------------------------------------------------------------------------------------
# CLI: rl generate


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="base model directory")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory (e.g. the --out of rl train)")
    parser.add_argument("--prompts", required=True, help="JSONL with prompt_id, prompt[, task_id]")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (default: 8)")
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    add_sampling_arguments(parser, temperature=1.0, batch_size=32)
    parser.add_argument("--out", required=True, help="rollout file to write (JSONL)")


def run(args) -> int:
    from rl.policy.models import _cpu_threads, load_policy

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    prompts, task_ids = read_prompts(args.prompts)
    check_output(args.out, directory=False)  # before the model loads, not after the sampling
    check_model(args.model)
    cfg = sampling_from_args(args, stop=tuple(args.stop or ()))
    _cpu_threads()
    model, tok = load_policy(args.model, lora=None, adapter_path=args.adapter)
    rollouts = generate(model, tok, prompts, n=args.n, sampling=cfg, task_ids=task_ids, progress=True)
    write_rollouts(args.out, rollouts)
    print(f"wrote {len(rollouts)} rollouts ({len(prompts)} prompts x {args.n}) to {args.out}", file=sys.stderr)
    return 0
