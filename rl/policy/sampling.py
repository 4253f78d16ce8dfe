"""The one sampler: completions of prompts from a causal LM, for rollouts and for every evaluation.

``rl generate`` and ``rl loop`` (:func:`rl.policy.rollouts.generate`, which adds log-probabilities)
and ``rl evaluate`` (:func:`rl.evaluate.generate_completions`) all sample through
:func:`sample_batches` with a :class:`SamplingConfig`, so that pass@k measured by the one is
comparable with the other: same prompt encoding, padding, seeding, truncation and stopping.

Conventions
-----------
- Prompts are encoded with the tokenizer's defaults (``tokenizer(prompt)``: special tokens as the
  model's tokenizer adds them) and left-padded; ``n`` samples of each prompt are consecutive, in
  batches of ``batch_size`` sequences.
- The checkpoint's ``generation_config`` sampling defaults are overridden (Qwen2.5-Coder ships
  ``top_k=20, top_p=0.8, repetition_penalty=1.1``): the sampler draws from the distribution that
  ``SamplingConfig`` describes, by default the model's full distribution at ``temperature``.
- A completion ends at the first EOS (kept in ``completion_ids``: stopping is an action; it decodes
  to no text), at the first stop string, or after ``max_new_tokens``. At a stop string the ids are
  kept up to and including the token that completes it (stopping by a stop string is an action
  too, and PPO trains it), and the completion *text* is cut before the stop string
  (:func:`completion_text`): it never contains a stop string, and it is what is executed and
  annotated. ``decode(completion_ids)`` is then the text followed by the stop string.
- Deterministic given ``seed``, ``batch_size`` and the device. torch is imported inside functions.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from rl.config import SamplingConfig

__all__ = [
    "SamplingConfig",
    "Sample",
    "sample",
    "sample_batches",
    "token_char_ends",
    "cut_completion",
    "completion_text",
    "eos_ids",
    "add_sampling_arguments",
    "sampling_from_args",
]


@dataclass
class Sample:
    """One sampled completion of ``prompts[prompt_index]`` (its ``sample_index``-th of n)."""

    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    #: the generated tokens that are trained: through EOS, or through the token completing a stop string
    completion_ids: list[int]
    #: the text: ``decode(completion_ids)`` cut before the first stop string
    completion: str
    #: "eos", "stop" or "length"
    finish_reason: str


def token_char_ends(tokenizer, ids: list[int]) -> list[int]:
    """``ends[k]`` = number of characters of ``decode(ids[:k+1])`` (special tokens skipped).

    Decoding prefixes (not single tokens) is what makes this right for byte-level BPE and for
    tokenizers that merge spaces; it costs O(len(ids)^2) characters, negligible next to sampling.
    """
    ends, prev = [], 0
    for k in range(len(ids)):
        n = len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True))
        prev = max(prev, n)  # monotone even if a tokenizer strips a prefix space when decoding
        ends.append(prev)
    return ends


def cut_completion(tokenizer, ids: list[int], stop: tuple[str, ...] | list[str] | None, eos: set[int]) -> tuple[list[int], str]:
    """Cut generated ids after the first EOS or after the token that completes the first stop string.

    Returns ``(ids, finish_reason)``: ``"eos"`` (the EOS kept), ``"stop"`` (the tokens that produce the
    stop string kept: the policy learns to stop) or ``"length"``. Rows a stopping criterion finished are
    pad-filled after the stop string, which this cut removes. The text is :func:`completion_text`.
    """
    reason = "length"
    for k, t in enumerate(ids):
        if t in eos:
            ids, reason = ids[: k + 1], "eos"
            break
    if not stop:
        return ids, reason
    text = tokenizer.decode(ids, skip_special_tokens=True)
    done = [i + len(s) for s in stop for i in (text.find(s),) if i != -1]
    if not done:
        return ids, reason
    ends = token_char_ends(tokenizer, ids)
    k = bisect.bisect_left(ends, min(done))  # the first token whose text reaches the end of a stop string
    return ids[: k + 1], "stop"


def completion_text(tokenizer, ids: list[int], stop: tuple[str, ...] | list[str] | None) -> str:
    """``decode(ids)`` cut before the first stop string (the whole text when none occurs)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stop or ()) if i != -1]
    return text[: min(hits)] if hits else text


def eos_ids(model, tokenizer) -> set[int]:
    """The ids that end a completion: the model's generation_config EOS (one or several), else the tokenizer's."""
    eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) is not None else None
    eos = eos if eos is not None else tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


class _StopOnStrings:
    """Stopping criterion (duck-typed ``transformers.StoppingCriteria``): a row is done once its
    generated text contains one of ``stop``."""

    def __init__(self, tokenizer, stop: tuple[str, ...], prompt_len: int):
        self.tokenizer, self.stop, self.P = tokenizer, stop, prompt_len
        self.tail = max(len(s) for s in stop) + 2  # every token has >= 1 character

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        gen = input_ids[:, self.P :]
        k = min(gen.shape[1], self.tail)
        texts = self.tokenizer.batch_decode(gen[:, -k:], skip_special_tokens=True) if k else [""] * len(gen)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def _generate_kwargs(cfg: SamplingConfig, pad_id: int, eos: set[int]) -> dict:
    kw = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id, eos_token_id=sorted(eos) or None, repetition_penalty=1.0)
    if cfg.temperature > 0:
        kw.update(do_sample=True, temperature=float(cfg.temperature), top_k=cfg.top_k, top_p=float(cfg.top_p))
    else:
        kw.update(do_sample=False)
    return kw


def _left_pad(rows: list[list[int]], pad_id: int, device):
    import torch

    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, P - len(r) :] = torch.tensor(r, dtype=torch.long)
        att[b, P - len(r) :] = 1
    return ids.to(device), att.to(device)


def sample_batches(
    model, tokenizer, prompts: list[str], n: int, cfg: SamplingConfig, *, progress: bool = False, desc: str = "sample"
) -> Iterator[list[Sample]]:
    """Sample ``n`` completions of each prompt; yields the samples of each generate call in order.

    The model is in eval mode while the generator runs (callers may run forward passes between
    batches, as :func:`rl.policy.rollouts.generate` does for log-probabilities) and gets its mode
    back when the generator ends. ``temperature == 0`` is greedy (the n samples are identical).
    """
    import torch
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    stop = tuple(cfg.stop or ())
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    eos = eos_ids(model, tokenizer)
    items = []  # (prompt index, sample index, prompt ids)
    for i, prompt in enumerate(prompts):
        p_ids = tokenizer(prompt)["input_ids"]
        if not p_ids:
            raise ValueError(f"prompt {i} encodes to no tokens")
        items.extend((i, k, p_ids) for k in range(n))
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    kw = _generate_kwargs(cfg, pad_id, eos)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(items), desc=desc, unit="seq", disable=not progress, file=sys.stderr)
    try:
        for start in range(0, len(items), cfg.batch_size):
            chunk = items[start : start + cfg.batch_size]
            ids, att = _left_pad([it[2] for it in chunk], pad_id, device)
            P = ids.shape[1]
            if stop:
                from transformers import StoppingCriteriaList

                kw["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(tokenizer, stop, P)])
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=att, **kw)
            batch = []
            for (i, k, p_ids), row in zip(chunk, out):
                c_ids, reason = cut_completion(tokenizer, row[P:].tolist(), stop, eos)
                batch.append(Sample(i, k, list(p_ids), c_ids, completion_text(tokenizer, c_ids, stop), reason))
            bar.update(len(chunk))
            yield batch
    finally:
        bar.close()
        model.train(was_training)


def sample(model, tokenizer, prompts: list[str], n: int, cfg: SamplingConfig, *, progress: bool = False) -> list[Sample]:
    """Every sample of :func:`sample_batches`, prompt by prompt (``n`` consecutive samples each)."""
    return [s for batch in sample_batches(model, tokenizer, prompts, n, cfg, progress=progress) for s in batch]


def add_sampling_arguments(parser: argparse.ArgumentParser, *, temperature: float, batch_size: int) -> None:
    """The sampler's options (one set for ``rl evaluate`` and ``rl generate``); the two commands differ
    only in their default temperature and batch size."""
    g = parser.add_argument_group("sampling (rl.policy.sampling)")
    g.add_argument("--temperature", type=float, default=temperature, help=f"sampling temperature; 0 = greedy (default {temperature})")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus mass; 1 = the full distribution (default 1.0)")
    g.add_argument("--top-k", type=int, default=0, help="top-k truncation; 0 = off (default 0)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="(default 128)")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"sequences per generate call (default {batch_size})")
    g.add_argument("--seed", type=int, default=0, help="(default 0)")


def sampling_from_args(args: argparse.Namespace, stop: tuple[str, ...] | None) -> SamplingConfig:
    """The :class:`SamplingConfig` of the options :func:`add_sampling_arguments` added."""
    return SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        stop=stop,
    )
