"""Rollouts: line spans by hand, sampling bookkeeping against an independent forward pass, the file."""

import argparse
import json

import pytest

torch = pytest.importorskip("torch")

from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import (  # noqa: E402
    Rollout,
    RolloutFileError,
    compute_line_spans,
    generate,
    read_rollouts,
    token_char_ends,
    write_rollouts,
)

PROMPTS = [("add", "def add(a, b):\n"), ("neg", "def neg(x):\n    ")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("roll")
    tok = train_char_tokenizer(["def add(a, b):\n    return a + b\n", "def neg(x):\n    return -x\n"], root / "tok")
    path = build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    model, tok = load_policy(path, LoraSpec(r=4, alpha=8))
    return path, model, tok


# ------------------------------------------------------------------------------ line spans by hand


def test_line_spans_char_tokens_with_eos():
    prompt, completion = "def f(x):\n", "    y = 1\n    return y\n"
    code = prompt + completion
    ends = list(range(1, len(completion) + 1)) + [len(completion)]  # one char per token, then EOS (no text)
    # code line 2 = "    y = 1\n" (tokens 0..9), line 3 = "    return y\n" (tokens 10..22), EOS -> line 3
    assert compute_line_spans(code, len(prompt), ends) == [(2, 0, 9), (3, 10, 23)]


def test_line_spans_prompt_without_newline_and_multiline_token():
    prompt, completion = "ab", "c\nd"
    # completion continues prompt line 1 ("abc\n": tokens 0, 1), line 2 "d" is token 2
    assert compute_line_spans(prompt + completion, 2, [1, 2, 3]) == [(1, 0, 1), (2, 2, 2)]
    # one token "c\nd" spans both lines; a leading EOS-like empty token goes to the next token's line
    assert compute_line_spans(prompt + completion, 2, [0, 3]) == [(1, 0, 1), (2, 1, 1)]


def test_token_char_ends_by_prefix_decoding(policy):
    _, _, tok = policy
    ids = tok("ab\n d")["input_ids"] + [tok.eos_token_id]
    assert token_char_ends(tok, ids) == [1, 2, 3, 4, 5, 5]


# ------------------------------------------------------------------------------ sampling


def _independent_logprobs(model, r):
    ids = torch.tensor([r.prompt_ids + r.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1].float().log_softmax(-1)
    return logits.gather(-1, ids[0, len(r.prompt_ids) :, None])[:, 0]


def test_generate_bookkeeping(policy):
    _, model, tok = policy
    rs = generate(model, tok, PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=0, task_ids=["T/add", "T/neg"], batch_size=4)
    assert [r.program for r in rs] == ["add#0", "add#1", "add#2", "neg#0", "neg#1", "neg#2"]
    assert [r.task_id for r in rs] == ["T/add"] * 3 + ["T/neg"] * 3
    eos = tok.eos_token_id
    for r in rs:
        assert r.code == r.prompt + r.completion
        assert r.prompt_ids == tok(r.prompt)["input_ids"]
        assert tok.decode(r.completion_ids, skip_special_tokens=True) == r.completion
        assert 1 <= len(r.completion_ids) <= 12
        assert len(r.logprobs) == len(r.ref_logprobs) == len(r.completion_ids)
        assert (r.finish_reason == "eos") == (r.completion_ids[-1] == eos)
        assert eos not in r.completion_ids[:-1]
        # log probs of the padded batch agree with an unpadded forward of this rollout alone
        torch.testing.assert_close(torch.tensor(r.logprobs), _independent_logprobs(model, r), atol=1e-5, rtol=1e-5)
        # LoRA B = 0 at init: the reference (adapter disabled) is the same distribution
        assert r.ref_logprobs == pytest.approx(r.logprobs, abs=1e-6)
        # spans cover every completion token, lines ascending, all within the code
        covered = sorted({k for _, a, b in r.line_spans for k in range(a, b + 1)})
        assert covered == list(range(len(r.completion_ids)))
        n_lines = r.code.count("\n") + (0 if r.code.endswith("\n") else 1)
        assert all(1 <= ln <= n_lines for ln, _, _ in r.line_spans)
    assert len({r.completion for r in rs}) > 1  # sampling, not one string repeated


def test_generate_deterministic_in_seed(policy):
    _, model, tok = policy
    a = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=5)
    b = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=5)
    c = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=6)
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    assert [r.completion_ids for r in a] != [r.completion_ids for r in c]
    greedy = generate(model, tok, PROMPTS[:1], n=2, temperature=0.0, max_new_tokens=10, seed=1)
    assert greedy[0].completion_ids == greedy[1].completion_ids


def test_ref_logprobs_use_the_adapter_disabled_model(policy):
    path, _, tok = policy
    model, _ = load_policy(path, LoraSpec(r=4, alpha=8))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.3)
    rs = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=8, seed=0)
    with model.disable_adapter():
        for r in rs:
            torch.testing.assert_close(torch.tensor(r.ref_logprobs), _independent_logprobs(model, r), atol=1e-5, rtol=1e-5)
    assert max(abs(a - b) for r in rs for a, b in zip(r.logprobs, r.ref_logprobs)) > 1e-2


def test_stop_strings_are_cut(policy):
    _, model, tok = policy
    rs = generate(model, tok, PROMPTS, n=6, temperature=1.0, max_new_tokens=30, seed=2, stop=[" ", "\n"])
    stopped = [r for r in rs if r.finish_reason == "stop"]
    assert stopped  # 30 characters from a near-uniform char model: a space or newline is all but certain
    for r in rs:
        assert " " not in r.completion and "\n" not in r.completion
        text = tok.decode(r.completion_ids, skip_special_tokens=True)
        # the trained ids run through the stop string (stopping is trained); the text stops before it
        assert text == r.completion + (text[-1] if r.finish_reason == "stop" else "")


# the cut at a stop string (tokens kept through the stop string, text cut before it):
# tests/rl/test_line_credit.py::test_cut_keeps_the_tokens_that_produce_the_stop_string


def test_sampling_settings_are_one_config(policy):
    from rl.policy.sampling import SamplingConfig

    _, model, tok = policy
    a = generate(model, tok, PROMPTS, n=2, sampling=SamplingConfig(temperature=1.0, max_new_tokens=10, seed=5))
    b = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=5)  # field overrides
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    with pytest.raises(ValueError, match=r"SamplingConfig.top_p: expected in \(0, 1\]"):
        generate(model, tok, PROMPTS, n=1, max_new_tokens=2, top_p=1.5)
    with pytest.raises(TypeError):
        generate(model, tok, PROMPTS, n=1, max_new_tokenz=2)


def test_generate_rejects_bad_arguments(policy):
    _, model, tok = policy
    with pytest.raises(ValueError, match="duplicate prompt_id 'a'"):
        generate(model, tok, [("a", "x"), ("a", "y")], n=1, temperature=1.0, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="task_ids"):
        generate(model, tok, PROMPTS, n=1, temperature=1.0, max_new_tokens=2, seed=0, task_ids=["only one"])


# ------------------------------------------------------------------------------ the file


def test_rollout_file_round_trip_and_programs_fields(policy, tmp_path):
    _, model, tok = policy
    rs = generate(model, tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=8, seed=0, task_ids=["T/add", "T/neg"])
    path = tmp_path / "out" / "rollouts.jsonl"
    write_rollouts(path, rs)
    assert [p.name for p in path.parent.iterdir()] == ["rollouts.jsonl"]  # no temporary file left
    back = read_rollouts(path)
    assert back == rs
    assert isinstance(back[0].line_spans[0], tuple)
    first = json.loads(path.read_text().splitlines()[0])
    assert {"program", "code", "task_id"} <= set(first)  # usable as `rl annotate --programs`
    assert first["program"] == "add#0" and first["task_id"] == "T/add"


def _rollout(program="p#0"):
    return Rollout(
        program=program,
        prompt_id="p",
        prompt="a",
        completion="b\n",
        code="ab\n",
        prompt_ids=[5],
        completion_ids=[6, 7],
        logprobs=[-1.0, -2.0],
        ref_logprobs=[-1.0, -2.0],
        line_spans=[(1, 0, 1)],
    )


def test_rollout_file_errors_name_file_line_field(tmp_path):
    with pytest.raises(RolloutFileError, match="duplicate program 'p#0'"):
        write_rollouts(tmp_path / "d.jsonl", [_rollout(), _rollout()])
    good = json.dumps(_rollout().to_dict())
    bad = dict(_rollout("p#1").to_dict(), logprobs=[-1.0])
    f = tmp_path / "r.jsonl"
    f.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RolloutFileError, match=r"r.jsonl:2: program 'p#1': logprobs has 1 entries"):
        read_rollouts(f)
    f.write_text(good + "\n{not json\n")
    with pytest.raises(RolloutFileError, match=r"r.jsonl:2: malformed JSON"):
        read_rollouts(f)
    missing = _rollout().to_dict()
    del missing["code"]
    f.write_text(json.dumps(missing) + "\n")
    with pytest.raises(RolloutFileError, match=r"r.jsonl:1: missing field 'code'"):
        read_rollouts(f)
    f.write_text(json.dumps(dict(_rollout().to_dict(), code="zz")) + "\n")
    with pytest.raises(RolloutFileError, match="code != prompt \\+ completion"):
        read_rollouts(f)


def test_cli_generate(policy, tmp_path):
    from rl.policy import rollouts as mod

    path, _, _ = policy
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": p, "prompt": s, "task_id": f"T/{p}"}) + "\n" for p, s in PROMPTS))
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(path),
            "--prompts",
            str(prompts),
            "--n",
            "2",
            "--max-new-tokens",
            "6",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "r.jsonl"),
        ]
    )
    assert mod.run(args) == 0
    rs = read_rollouts(tmp_path / "r.jsonl")
    assert [r.program for r in rs] == ["add#0", "add#1", "neg#0", "neg#1"]
    assert [r.task_id for r in rs] == ["T/add", "T/add", "T/neg", "T/neg"]
    assert all(r.logprobs == r.ref_logprobs for r in rs)  # no adapter: reference = policy


def test_checkpoint_generation_defaults_do_not_change_the_sampler(policy):
    """A checkpoint's generation_config (Qwen ships top_k=20, top_p=0.8, repetition_penalty) must not
    bend sampling away from the policy: with top_k=1 left in place, all samples would be identical."""
    _, model, tok = policy
    gc = model.generation_config
    saved = (gc.top_k, gc.top_p, gc.repetition_penalty)
    gc.top_k, gc.top_p, gc.repetition_penalty = 1, 0.1, 5.0
    try:
        rs = generate(model, tok, PROMPTS[:1], n=6, temperature=1.0, max_new_tokens=8, seed=0)
        ref = generate(model, tok, PROMPTS[:1], n=6, temperature=0.0, max_new_tokens=8, seed=0)
    finally:
        gc.top_k, gc.top_p, gc.repetition_penalty = saved
    assert len({tuple(r.completion_ids) for r in rs}) > 1
    # greedy under repetition_penalty=5 would avoid repeats; the plain argmax path must equal argmax of logprobs
    for r in ref:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1]
        assert logits.argmax(-1).tolist() == r.completion_ids
