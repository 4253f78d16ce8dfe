"""``rl evaluate``: sample completions from a causal LM on a benchmark and report pass@k.

The model and tokenizer are loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer``
``.from_pretrained(PATH_OR_NAME)`` (set ``HF_HUB_OFFLINE=1`` to forbid downloads). Sampling
runs batched (GPU with bf16/fp16 when ``torch.cuda.is_available()``, CPU float32 otherwise),
completions are cut at the usual stop sequences, and every completion runs in the sandbox.

``evaluate(model, tokenizer, problems, n, temperature, max_new_tokens, ...)`` does the same
for an in-memory model (the RL loop calls it). torch is imported lazily, inside functions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["STOP_SEQUENCES", "truncate", "generate_completions", "evaluate", "EvalResult",
           "add_arguments", "run", "load_model"]

# HumanEval: Chen et al. (2021) stop sequences. MBPP: bigcode-evaluation-harness's, where a
# completion is a whole function (so "\ndef " must not stop it: helpers are allowed).
STOP_SEQUENCES: dict[str, tuple[str, ...]] = {
    "humaneval": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"),
    "mbpp": ("\nclass", "\nassert", '\n"""', "\nprint(", "\nif __name__", "\n#", "\n```", "\n<|/"),
}


def truncate(completion: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut ``completion`` at the earliest stop sequence (the sequence itself is dropped)."""
    cut = len(completion)
    for s in stop:
        i = completion.find(s)
        if i != -1 and i < cut:
            cut = i
    return completion[:cut]


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    pass_at_k: dict[str, float]
    samples: list[dict]  # one per completion: task_id, completion_id, completion, status, ...
    problems: list[dict]  # one per problem: task_id, n, n_passed, statuses
    status_counts: dict[str, int]
    network_isolated: bool
    timings: dict[str, float] = field(default_factory=dict)


def _stop_for(problems) -> tuple[str, ...]:
    sources = {p.source for p in problems}
    if len(sources) != 1:
        raise ValueError(f"problems mix benchmarks {sorted(sources)}; evaluate one benchmark at a time")
    return STOP_SEQUENCES[sources.pop()]


def generate_completions(model, tokenizer, prompts: list[str], n: int, temperature: float,
                         max_new_tokens: int, *, batch_size: int = 16, top_p: float = 0.95,
                         seed: int | None = 0, stop: tuple[str, ...] = (), progress: bool = True) -> list[list[str]]:
    """``n`` sampled completions (already truncated at ``stop``) for each prompt."""
    import torch

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
    device = next(model.parameters()).device
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
    outs: list[list[str]] = [[] for _ in prompts]
    gen_kw = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if temperature > 0:
        gen_kw.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kw.update(do_sample=False)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(flat), desc="sampling", unit="sample")
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            enc = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                gen = model.generate(**enc, **gen_kw)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for (i, _), t in zip(chunk, texts):
                outs[i].append(truncate(t, stop))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
        if bar is not None:
            bar.close()
    return outs


def evaluate(model, tokenizer, problems, n: int, temperature: float, max_new_tokens: int, *,
             batch_size: int = 16, top_p: float = 0.95, seed: int | None = 0, sandbox=None,
             workers: int = 2, limits=None, ks=(1, 10, 100), progress: bool = True) -> EvalResult:
    """Sample ``n`` completions per problem from an in-memory model, run them in the sandbox
    (``sandbox`` if given, else a fresh ``Sandbox(workers, limits)``) and compute pass@k."""
    from rl.execution.passk import pass_at_k
    from rl.execution.sandbox import Limits, Sandbox

    problems = list(problems)
    if not problems:
        raise ValueError("no problems to evaluate")
    stop = _stop_for(problems)
    t0 = time.monotonic()
    comps = generate_completions(model, tokenizer, [p.prompt for p in problems], n, temperature, max_new_tokens,
                                 batch_size=batch_size, top_p=top_p, seed=seed, stop=stop, progress=progress)
    t1 = time.monotonic()
    jobs = [p.job(c) for p, cs in zip(problems, comps) for c in cs]
    own = sandbox is None
    sb = Sandbox(workers=workers, limits=limits or Limits()) if own else sandbox
    try:
        results = sb.map(jobs, progress=progress)
        netns = sb.network_isolated
    finally:
        if own:
            sb.close()
    t2 = time.monotonic()
    samples, per_problem, per = [], [], {}
    it = iter(results)
    for p, cs in zip(problems, comps):
        statuses = []
        for j, c in enumerate(cs):
            r = next(it)
            statuses.append(r.status)
            samples.append({"task_id": p.task_id, "completion_id": j, "completion": c, "status": r.status,
                            "passed": r.status == "passed", "failing_test": r.failing_test,
                            "exception_type": r.exception_type, "line": r.line, "message": r.message})
        per[p.task_id] = [s == "passed" for s in statuses]
        per_problem.append({"task_id": p.task_id, "n": len(cs), "n_passed": sum(per[p.task_id]),
                            "statuses": statuses})
    return EvalResult(pass_at_k=pass_at_k(per, ks=ks), samples=samples, problems=per_problem,
                      status_counts=dict(Counter(s["status"] for s in samples).most_common()),
                      network_isolated=bool(netns),
                      timings={"generate_s": round(t1 - t0, 3), "execute_s": round(t2 - t1, 3)})


def load_model(name_or_path: str, device: str | None = None):
    """(model, tokenizer, device) via AutoModelForCausalLM.from_pretrained and rl.policy.models.load_tokenizer.

    ``load_tokenizer`` (not AutoTokenizer) because transformers 5.23's AutoTokenizer forces
    Qwen2Tokenizer on every qwen2 directory, which breaks locally trained character vocabularies.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from rl.policy.models import load_tokenizer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    tok = load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    model.to(dev)
    model.eval()
    return model, tok, dev


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a local path or hub name for from_pretrained")
    parser.add_argument("--benchmark", required=True, choices=("humaneval", "mbpp"))
    parser.add_argument("--n", type=int, default=100, help="samples per problem (default 100)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--split", default="test", help="MBPP split (default: test)")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 2), help="sandbox workers")
    parser.add_argument("--timeout", type=float, default=5.0, help="sandbox wall-clock seconds per program")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from rl.tasks.benchmarks import load
    from rl.execution.check import write_json_atomic, write_jsonl_atomic
    from rl.execution.sandbox import Limits

    try:
        for name in ("n", "batch_size", "max_new_tokens", "workers"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        if args.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
        kw = {} if args.benchmark == "humaneval" else {"split": args.split}
        problems = load(args.benchmark, **kw)
    except (ValueError, FileNotFoundError) as e:
        print(f"rl evaluate: error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        problems = problems[:args.limit]
    try:
        model, tok, dev = load_model(args.model, args.device)
    except OSError as e:
        print(f"rl evaluate: error: cannot load model {args.model!r}: {e}", file=sys.stderr)
        return 2
    limits = Limits(timeout_s=args.timeout, cpu_s=max(1, int(args.timeout * 2 + 1)))
    res = evaluate(model, tok, problems, args.n, args.temperature, args.max_new_tokens, batch_size=args.batch_size,
                   top_p=args.top_p, seed=args.seed, workers=args.workers, limits=limits,
                   progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "samples.jsonl", res.samples)
    write_jsonl_atomic(out / "problems.jsonl", res.problems)
    summary = {
        "model": str(args.model), "benchmark": args.benchmark, "split": kw.get("split"),
        "n_problems": len(problems), "samples_per_problem": args.n, "temperature": args.temperature,
        "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "seed": args.seed, "device": str(dev),
        "pass_at_k": res.pass_at_k, "status_counts": res.status_counts,
        "network_isolated": res.network_isolated, "timings": res.timings,
        "stop_sequences": list(STOP_SEQUENCES[args.benchmark]),
    }
    write_json_atomic(out / "summary.json", summary)
    pk = ", ".join(f"{k}={v:.4f}" for k, v in res.pass_at_k.items())
    print(f"{len(problems)} problems x {args.n} samples: {pk}; statuses {res.status_counts}; wrote {out}")
    return 0
