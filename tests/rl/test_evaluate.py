"""rl evaluate with a tiny model built from a config and a locally trained tokenizer,
saved with save_pretrained and loaded back by path, as a real run would; and the one sampler:
rl evaluate, the loop's evaluation and the loop's rollouts draw identical completions."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rl.config import EvalSpec, LoopConfig, SamplingConfig
from rl.evaluate import STOP_SEQUENCES, truncate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_truncate_at_earliest_stop_sequence():
    s = STOP_SEQUENCES["humaneval"]
    assert truncate("    return 1\n\ndef g():\n    pass\n", s) == "    return 1\n"
    assert truncate("    x = 1\n# note\nprint(x)\n", s) == "    x = 1"
    assert truncate("    return 2\n", s) == "    return 2\n"
    m = STOP_SEQUENCES["mbpp"]
    assert (
        truncate("def f():\n    return 1\ndef g():\n    return f()\nassert f() == 1\n", m)
        == "def f():\n    return 1\ndef g():\n    return f()"
    )


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from rl.tasks.benchmarks import load_humaneval

    d = tmp_path_factory.mktemp("tiny")
    texts = [p.prompt + p.canonical_solution for p in load_humaneval()[:20]]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


def test_evaluate_in_memory(tiny_model_dir):
    from rl.evaluate import evaluate, load_model
    from rl.execution.sandbox import Limits, Sandbox
    from rl.tasks.benchmarks import load_humaneval

    model, tok, dev = load_model(str(tiny_model_dir), device="cpu")
    assert dev.type == "cpu" and next(model.parameters()).dtype == torch.float32
    problems = load_humaneval()[:2]
    with Sandbox(workers=2, limits=Limits(timeout_s=3)) as sb:
        s = SamplingConfig(temperature=0.8, max_new_tokens=8, batch_size=3, seed=1)
        res = evaluate(model, tok, problems, 2, s, sandbox=sb)
        res2 = evaluate(model, tok, problems, 2, s, sandbox=sb)
    assert len(res.samples) == 4 and len(res.problems) == 2
    assert [s["completion"] for s in res.samples] == [s["completion"] for s in res2.samples]  # seeded
    assert set(res.pass_at_k) == {"pass@1"}
    assert res.pass_at_k["pass@1"] == sum(s["passed"] for s in res.samples) / 4
    for s in res.samples:
        assert s["status"] in ("passed", "failed", "timeout", "memory", "crashed", "killed")
        assert not any(stop in s["completion"] for stop in STOP_SEQUENCES["humaneval"])
    # a random tiny model does not solve HumanEval: the run must report that honestly
    assert res.pass_at_k["pass@1"] == 0.0
    assert sum(res.status_counts.values()) == 4


def test_evaluate_with_the_canonical_solution_as_model_output_passes(tiny_model_dir, monkeypatch):
    """Plumbing check: if generation returned the canonical solution, pass@1 would be 1."""
    import rl.evaluate as ev
    from rl.tasks.benchmarks import load_humaneval

    problems = load_humaneval()[:2]
    canon = {p.prompt: p.canonical_solution for p in problems}
    monkeypatch.setattr(ev, "generate_completions", lambda model, tok, prompts, n, *a, **k: [[canon[p]] * n for p in prompts])
    res = ev.evaluate(None, None, problems, 3, SamplingConfig(temperature=0.8, max_new_tokens=8), workers=1)
    assert res.pass_at_k == {"pass@1": 1.0}
    assert [p["n_passed"] for p in res.problems] == [3, 3]


def test_cli_evaluate_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    from rl.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--benchmark",
            "mbpp",
            "--n",
            "2",
            "--temperature",
            "0.8",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
            "--limit",
            "2",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 2 and summary["samples_per_problem"] == 2
    assert set(summary["pass_at_k"]) == {"pass@1"}
    assert sum(summary["status_counts"].values()) == 4
    rows = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["Mbpp/11", "Mbpp/11", "Mbpp/12", "Mbpp/12"]
    probs = [json.loads(l) for l in (out / "problems.jsonl").read_text().splitlines()]
    assert [p["n"] for p in probs] == [2, 2]


def test_cli_evaluate_bad_arguments(tmp_path, capsys):
    from rl.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "none"), "--benchmark", "humaneval", "--n", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "missing-model"),
                "--benchmark",
                "humaneval",
                "--n",
                "1",
                "--limit",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_rejects_mixed_benchmarks():
    from rl.evaluate import evaluate
    from rl.tasks.benchmarks import load_humaneval, load_mbpp

    with pytest.raises(ValueError, match="mix benchmarks"):
        evaluate(None, None, load_humaneval()[:1] + load_mbpp("prompt")[:1], 1)


# ------------------------------------------------------------------------------ one sampler


@pytest.fixture(scope="module")
def char_policy(tmp_path_factory):
    """A random tiny char model over the synthetic benchmark's alphabet (sharp logits: initializer_range 0.2)."""
    from rl.policy.models import build_tiny_model, train_char_tokenizer
    from rl.tasks.synthetic import make_benchmark
    from rl.train.sft import all_texts

    root = tmp_path_factory.mktemp("one-sampler")
    bench = make_benchmark(seed=0, n_train_per_template=2, n_heldout_per_template=1)
    tok = train_char_tokenizer(all_texts(bench), root / "tok")
    path = build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    return path, bench


def test_rl_evaluate_and_the_loop_sample_identical_completions(char_policy, monkeypatch):
    import argparse

    import rl.evaluate as ev
    from rl.execution.sandbox import Sandbox
    from rl.policy.models import load_policy
    from rl.policy.rollouts import generate

    path, bench = char_policy
    problems = bench.heldout[:3]
    model, tok = load_policy(str(path), None, device="cpu")
    # rl evaluate's sampler, from its command line with the defaults (no --top-p / --top-k)
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(path),
            "--benchmark",
            "humaneval",
            "--out",
            "x",
            "--n",
            "3",
            "--temperature",
            "0.8",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "4",
            "--seed",
            "10007",
        ]
    )
    cli = ev.sampling_from_args(args)
    assert (cli.top_p, cli.top_k) == (1.0, 0)  # the full distribution, as the rollouts sample
    # the loop's evaluation of a config with the same settings (eval seed = 10000 + seed)
    cfg = LoopConfig(
        model=str(path),
        seed=7,
        sampling=SamplingConfig(stop=STOP_SEQUENCES["humaneval"]),
        eval=EvalSpec(n=3, temperature=0.8, max_new_tokens=16, batch_size=4),
    )
    assert ev.eval_sampling(cfg) == cli
    seen = []
    real = ev.generate_completions

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(ev, "generate_completions", spy)
    with Sandbox(workers=1) as sb:
        e = ev.heldout_pass(model, tok, problems, cfg, sandbox=sb)
    assert e["n"] == 3 and e["n_problems"] == 3 and set(e["per_template"])
    monkeypatch.undo()
    loop_completions = seen[0]
    cli_completions = ev.generate_completions(model, tok, [p.prompt for p in problems], args.n, cli)
    assert cli_completions == loop_completions
    assert len({c for cs in cli_completions for c in cs}) > 1  # sampled, not one string
    # and the loop's rollouts, sampled with the same settings, are the same completions
    ro = generate(model, tok, [(p.task_id, p.prompt) for p in problems], n=3, sampling=cli)
    assert [[r.completion for r in ro[3 * i : 3 * i + 3]] for i in range(3)] == cli_completions
    # truncated sampling stays available and changes the draw
    nucleus = ev.generate_completions(model, tok, [p.prompt for p in problems], 3, dataclasses.replace(cli, top_p=0.5))
    assert nucleus != cli_completions
