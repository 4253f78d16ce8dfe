"""Where line rewards land: on a token of that line, never on EOS or a stop token, for a character tokenizer,
a byte-level BPE and a Qwen2-style BPE (all trained here, no hub); ``signed_mean`` over completion lines only;
``line_reward`` as a config option; stop tokens kept as trained tokens; the missing-EOS penalty."""

from __future__ import annotations

import argparse
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from rl.config import LoopConfig, PPOConfig, dataclass_from_args  # noqa: E402
from rl.crowd.rewards import token_rewards  # noqa: E402
from rl.policy.models import build_tiny_model, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import Rollout, compute_line_spans, generate, token_char_ends  # noqa: E402

# (prompt, completion): indentation after a newline, blank lines, a completion that continues the prompt's
# last line, one that starts with a newline, a last line without newline (closed by EOS)
SNIPPETS = [
    ("def f(xs):\n", "    total = 0\n    for x in xs:\n        if x > 0:\n            total += x\n\n    return total\n"),
    ("class A:\n    def g(self):", "\n        return [1, 2]\n\n\ndef h():\n    pass"),
    ("def add(a, b):\n    return", " a + b\n"),
    ("def neg(x):\n", "    y = -x\n    return y\n"),
]
CORPUS = [p + c for p, c in SNIPPETS] + ["def mul(a, b):\n    return a * b\n", "if __name__ == '__main__':\n    print(add(1, 2))\n"]
EOS = "<|endoftext|>"
# Qwen2's pre-tokenizer regex (its tokenizer.json): punctuation takes the newlines after it (":\n"),
# whitespace before a newline ends with it, indentation is its own piece
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _bpe(pre_tokenizer, vocab_size=300):
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left")


def make_tokenizer(kind: str, tmp_path):
    """``char`` (rl.policy.models), ``bytelevel`` (GPT-2's byte-level pre-tokenizer: a newline merges with
    the next line's indentation, "\\n   "), ``qwen2`` (Qwen2's regex split + byte level: "):\\n", "]\\n\\n\\n")."""
    from tokenizers import Regex, pre_tokenizers

    if kind == "char":
        return train_char_tokenizer(CORPUS, tmp_path / "char")
    if kind == "bytelevel":
        return _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))
    split = pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False)
    return _bpe(pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]))


KINDS = ("char", "bytelevel", "qwen2")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {k: make_tokenizer(k, root) for k in KINDS}


def rollout_of(tok, prompt: str, completion: str, program: str = "p#0", finish: str = "eos") -> Rollout:
    """The rollout ``generate`` would build for this completion (plus EOS when ``finish == "eos"``)."""
    ids = tok(completion, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finish == "eos" else [])
    assert tok.decode(ids, skip_special_tokens=True) == completion
    ends = token_char_ends(tok, ids)
    code = prompt + completion
    return Rollout(
        program=program,
        prompt_id=program.split("#")[0],
        prompt=prompt,
        completion=completion,
        code=code,
        prompt_ids=tok(prompt)["input_ids"],
        completion_ids=ids,
        logprobs=[-1.0] * len(ids),
        ref_logprobs=[-1.0] * len(ids),
        line_spans=compute_line_spans(code, len(prompt), ends),
        finish_reason=finish,
        char_ends=ends,
    )


def record(program, lines, posteriors, tau=0.5):
    k = len(lines)
    return {
        "program": program,
        "reward": sum(p > tau for p in posteriors) / k if k else 0.0,
        "reward_soft": sum(posteriors) / k if k else 0.0,
        "lines": lines,
        "posteriors": posteriors,
    }


def _line_bounds(code: str) -> list[tuple[int, int]]:
    """[start, end) of each 1-based line of ``code`` (end past its newline)."""
    out, pos = [], 0
    for text in code.splitlines(keepends=True):
        out.append((pos, pos + len(text)))
        pos += len(text)
    return out


def _token_text_range(r: Rollout, ends: list[int], t: int) -> tuple[int, int]:
    """Characters of ``code`` that completion token t wrote (clipped at the end of the code)."""
    a = len(r.prompt) + (ends[t - 1] if t else 0)
    return min(a, len(r.code)), min(len(r.prompt) + ends[t], len(r.code))


def _own_region(code: str, j: int) -> tuple[int, int]:
    """Line j with its newline, and the blank lines right after it (Qwen2's ":\\n\\n" closes both)."""
    bounds = _line_bounds(code)
    a, b = bounds[j - 1]
    k = j
    while k < len(bounds) and code[bounds[k][0] : bounds[k][1]].strip() == "":
        b = bounds[k][1]
        k += 1
    return a, b


def _writes(code: str, a: int, b: int) -> int:
    """Position of the last character of code[a:b] that is not a newline (a if all are)."""
    c = b - 1
    while c > a and code[c] == "\n":
        c -= 1
    return c


def check_placement(r: Rollout, tok, credit: str = "last") -> int:
    """Each completion line j, annotated alone with P = 1, against token texts computed here from the tokenizer:

    - its reward lands on no EOS and on no token without a character in the code;
    - a line of which the completion wrote more than whitespace gets all of it;
    - ``last``: on one token whose characters all lie in line j (its newline and the blank lines after it
      included), unless line j is whitespace only (then its indentation token may also hold the newline
      before it);
    - every rewarded token writes line j: the token's last character that is not a newline lies in line j.

    Returns the number of lines checked.
    """
    ends = token_char_ends(tok, r.completion_ids)
    bounds = _line_bounds(r.code)
    n = 0
    for j, _, _ in r.line_spans:
        kw = {} if credit == "last" else {"credit": credit}
        tr = token_rewards(r, record(r.program, [j], [1.0]), "lines", **kw)
        hit = [t for t, v in enumerate(tr) if v != 0.0]
        a_j, b_j = bounds[j - 1]
        if r.code[max(a_j, len(r.prompt)) : b_j].strip():
            assert math.isclose(sum(tr), 1.0), (r.program, j, tr)
            assert len(hit) == 1 if credit == "last" else len(hit) >= 1
        lo, hi = _own_region(r.code, j)
        for t in hit:
            assert r.completion_ids[t] != tok.eos_token_id, f"line {j}'s reward on EOS"
            a, b = _token_text_range(r, ends, t)
            assert a < b, f"line {j}'s reward on token {t} that wrote no character of the code"
            assert a_j <= _writes(r.code, a, b) < b_j, f"line {j} ({r.code[a_j:b_j]!r}): reward on {r.code[a:b]!r} ({r.program})"
            if credit == "last" and r.code[a_j:b_j].strip():
                assert lo <= a and b <= hi, f"line {j} ({r.code[a_j:b_j]!r}): reward on token {r.code[a:b]!r} of {r.program}"
        n += 1
    return n


# ------------------------------------------------------------------------------ 1. placement


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("credit", ["last", "spread"])
def test_line_rewards_land_on_their_own_line(tokenizers, kind, credit):
    tok = tokenizers[kind]
    n = 0
    for i, (prompt, completion) in enumerate(SNIPPETS):
        r = rollout_of(tok, prompt, completion, program=f"s{i}#0")
        n += check_placement(r, tok, credit)
        # EOS (and only EOS) belongs to no line; every token that wrote a character belongs to a line
        from rl.crowd.rewards import token_lines

        owners = token_lines(r)
        assert owners[-1] == 0 and all(o > 0 for o in owners[:-1])
    assert n == 6 + 6 + 1 + 2  # every completion line of the four snippets


def test_bpe_newline_with_indentation_belongs_to_the_next_line(tokenizers):
    """The defect: with GPT-2's byte-level BPE "\\n   " ends line 2 and starts line 3; line 2's verdict used to land there."""
    tok = tokenizers["bytelevel"]
    r = rollout_of(tok, *SNIPPETS[3])
    pieces = [tok.decode([t]) for t in r.completion_ids]
    assert "\n   " in pieces  # the merge this test is about
    tr = token_rewards(r, record(r.program, [2, 3], [1.0, 0.0]), "lines")
    placed = {pieces[t]: v for t, v in enumerate(tr) if v}
    assert placed == {"x": 1.0, "\n": -1.0}  # line 2 on its last token "x"; line 3 ("    return y\n") on its newline


def test_qwen2_punctuation_newline_token_belongs_to_its_line(tokenizers):
    tok = tokenizers["qwen2"]
    r = rollout_of(tok, *SNIPPETS[0])
    pieces = [tok.decode([t]) for t in r.completion_ids]
    assert ":\n" in pieces
    tr = token_rewards(r, record(r.program, [3], [0.0]), "lines")  # line 3 = "    for x in xs:\n"
    assert [pieces[t] for t, v in enumerate(tr) if v] == [":\n"]


def test_last_line_reward_is_not_on_eos_char_tokenizer_generate(tmp_path):
    """End to end through generate: rollouts that end with EOS put their last line's reward on a character of that line."""
    tok = train_char_tokenizer(CORPUS, tmp_path / "tok")
    path = build_tiny_model(tmp_path / "m", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    rs = generate(model, tok, [("a", SNIPPETS[0][0]), ("b", SNIPPETS[1][0])], n=8, temperature=1.0, max_new_tokens=40, seed=0)
    ended = [r for r in rs if r.finish_reason == "eos" and r.completion.strip()]
    assert ended  # ~25 symbols: EOS within 40 draws is likely
    for r in rs:
        check_placement(r, tok)


@pytest.mark.parametrize("kind", ["bytelevel", "qwen2"])
def test_generated_bpe_rollouts(tokenizers, kind, tmp_path):
    """Random completions from a tiny model over each BPE vocabulary: every line with text gets its reward on
    a token of its own line."""
    from transformers import AutoModelForCausalLM

    tok = tokenizers[kind]
    path = build_tiny_model(tmp_path / kind, tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    model = AutoModelForCausalLM.from_pretrained(path)
    rs = generate(model, tok, [("a", SNIPPETS[0][0]), ("b", SNIPPETS[1][0])], n=6, temperature=1.0, max_new_tokens=40, seed=1)
    assert sum(check_placement(r, tok) for r in rs) > 12


def test_legacy_rollout_without_char_ends():
    """Rollouts written before char_ends existed: owners from line_spans; a final EOS owns no line."""
    prompt, completion = "def f(x):\n", "    y = x\n    return y\n"
    code = prompt + completion
    ends = list(range(1, len(completion) + 1)) + [len(completion)]
    r = Rollout("f#0", "f", prompt, completion, code, [5], list(range(10, 33)) + [2], [-1.0] * 24, [-1.0] * 24,
                compute_line_spans(code, len(prompt), ends), finish_reason="eos")  # fmt: skip
    tr = token_rewards(r, record("f#0", [2, 3], [1.0, 0.0]), "lines")
    assert tr[9] == 1.0 and tr[22] == -1.0 and tr[23] == 0.0


# 2. signed_mean over the completion's lines only: tests/rl/test_rewards_seam.py::test_signed_mean_counts_completion_lines_only


# ------------------------------------------------------------------------------ 3. line_reward is a config option


def test_line_reward_is_a_ppo_config_option(monkeypatch):
    from rl import loop
    from rl.train import ppo_cli

    assert PPOConfig().line_reward == "signed" and PPOConfig().line_credit == "last" and PPOConfig().missing_eos_penalty is None
    with pytest.raises(ValueError, match="PPOConfig.line_reward"):
        PPOConfig(line_reward="mean")
    parser = argparse.ArgumentParser()
    ppo_cli.add_arguments(parser)
    base = ["--model", "m", "--rollouts", "r", "--rewards", "w", "--out", "o"]
    args = parser.parse_args(base + ["--line-reward", "signed_mean", "--line-credit", "spread", "--missing-eos-penalty", "0.5"])
    cfg = dataclass_from_args(PPOConfig, args)
    assert (cfg.line_reward, cfg.line_credit, cfg.missing_eos_penalty) == ("signed_mean", "spread", 0.5)
    assert dataclass_from_args(PPOConfig, parser.parse_args(base)).line_reward == "signed"
    lc = LoopConfig(model="m", ppo={"line_reward": "signed_mean", "missing_eos_penalty": 1.0})
    assert lc.ppo.line_reward == "signed_mean" and lc.ppo.missing_eos_penalty == 1.0

    # the loop's PPO stage passes the options through to token_rewards
    seen = {}

    def fake_token_rewards(r, rec, mode, **kw):
        seen.update(kw, mode=mode)
        return [0.0] * len(r.completion_ids)

    monkeypatch.setattr("rl.crowd.rewards.token_rewards", fake_token_rewards)

    class _Trainer:
        def step(self, rollouts, tr):
            return {"n": len(tr)}

    class _Run:
        cfg, trainer = lc, _Trainer()

    r = rollout_of(_CharTok(), *SNIPPETS[3])
    assert loop._train(_Run(), 1, [r], {r.program: record(r.program, [2], [1.0])}) == {"n": 1}
    assert seen == {"mode": "lines", "line_reward": "signed_mean", "credit": "last", "missing_eos_penalty": 1.0}


class _CharTok:
    """One id per character; id 0 is EOS."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0)


# ------------------------------------------------------------------------------ 4. stop tokens are trained


class _PieceTokenizer:
    """Decodes ids to fixed text pieces (a stand-in for a BPE vocabulary with multi-character tokens)."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def test_cut_keeps_the_tokens_that_produce_the_stop_string():
    from rl.policy.sampling import completion_text, cut_completion

    tok = _PieceTokenizer({0: "    return f(x", 1: ")\n\n", 2: "def", 3: " g", 4: "x\n#y", 9: ""})
    # ")\n\n" straddles the start of "\ndef "; " g" completes it: both are trained, the text stops before "\ndef "
    ids, reason = cut_completion(tok, [0, 1, 2, 3, 0], ("\ndef ",), {9})
    assert (ids, reason) == ([0, 1, 2, 3], "stop")
    assert completion_text(tok, ids, ("\ndef ",)) == "    return f(x)\n"
    # a token holding the whole stop string is trained; the text keeps what precedes the stop inside it
    ids, reason = cut_completion(tok, [0, 4, 3], ("\n#",), {9})
    assert (ids, reason) == ([0, 4], "stop") and completion_text(tok, ids, ("\n#",)) == "    return f(xx"
    # EOS first: kept, the rest dropped; no stop string: "length"
    assert cut_completion(tok, [0, 9, 1, 2, 3], ("\ndef ",), {9}) == ([0, 9], "eos")
    assert cut_completion(tok, [0, 1], ("\ndef ",), {9}) == ([0, 1], "length")
    assert completion_text(tok, [0, 1], ("\ndef ",)) == "    return f(x)\n\n"


def test_generated_stop_tokens_are_trained_with_their_logprob(tmp_path):
    tok = train_char_tokenizer(CORPUS, tmp_path / "tok")
    path = build_tiny_model(tmp_path / "m", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    rs = generate(model, tok, [("a", SNIPPETS[0][0])], n=8, temperature=1.0, max_new_tokens=30, seed=2, stop=[" ", "\n"])
    stopped = [r for r in rs if r.finish_reason == "stop"]
    assert stopped
    for r in stopped:
        text = tok.decode(r.completion_ids, skip_special_tokens=True)
        stop_id = r.completion_ids[-1]
        assert tok.decode([stop_id]) in (" ", "\n")  # the stop token is the last trained token
        assert text == r.completion + tok.decode([stop_id]) and " " not in r.completion and "\n" not in r.completion
        assert len(r.logprobs) == len(r.ref_logprobs) == len(r.completion_ids)
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        with torch.no_grad():
            lp = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1].float().log_softmax(-1)
        want = lp.gather(-1, ids[0, len(r.prompt_ids) :, None])[:, 0]
        torch.testing.assert_close(torch.tensor(r.logprobs), want, atol=1e-5, rtol=1e-5)
        assert r.logprobs[-1] < 0.0  # the stop token has its own log-prob
        # the stop token writes no line: no line reward lands on it; the program reward does
        from rl.crowd.rewards import token_lines

        owners = token_lines(r)
        assert owners[-1] == 0 and all(ln <= r.code.count("\n") + 1 for ln, _, _ in r.line_spans)
        if r.line_spans:
            lines = [ln for ln, _, _ in r.line_spans]
            tr = token_rewards(r, record(r.program, lines, [1.0] * len(lines)), "lines")
            assert tr[-1] == 0.0
        prog = token_rewards(r, record(r.program, [1], [1.0]), "program")
        assert prog[-1] == 1.0 and sum(prog) == 1.0


# ------------------------------------------------------------------------------ 5. missing-EOS penalty


@pytest.mark.parametrize("finish, want", [("length", -1.5), ("eos", 0.0), ("stop", 0.0), (None, 0.0)])
def test_missing_eos_penalty(tokenizers, finish, want):
    tok = tokenizers["char"]
    r = rollout_of(tok, *SNIPPETS[3], finish="eos" if finish == "eos" else "length")
    r.finish_reason = finish
    rec = record(r.program, [2, 3], [1.0, 1.0])
    for mode, base in (("program", 1.0), ("soft", 1.0), ("lines", None)):
        plain = token_rewards(r, rec, mode)
        pen = token_rewards(r, rec, mode, missing_eos_penalty=1.5)
        assert pen[:-1] == plain[:-1] and pen[-1] == pytest.approx(plain[-1] + want)
        assert token_rewards(r, rec, mode, missing_eos_penalty=None) == plain
        if base is not None:
            assert plain[-1] == base
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        token_rewards(r, rec, "lines", missing_eos_penalty=-1.0)
    with pytest.raises(ValueError, match="PPOConfig.missing_eos_penalty"):
        PPOConfig(missing_eos_penalty=float("nan"))
