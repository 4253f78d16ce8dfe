"""Warm start: the saved directory loads with from_pretrained, the loss falls, failures leave nothing."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rl.train.sft import SFTConfig, warm_start


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "model"
    s = warm_start(
        out, SFTConfig(steps=14, batch_size=12, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=1e-2), progress=False
    )
    return out, s


def test_loss_falls_and_summary(ws):
    out, s = ws
    assert s["loss_first"] > 3.0  # ~log(vocab) at initialisation
    assert s["loss_last10"] < 0.8 * s["loss_first"]
    saved = json.loads((out / "warmstart.json").read_text())
    assert saved["config"]["steps"] == 14 and len(saved["losses"]) == 14
    assert 0.15 < saved["frac_buggy_examples"] < 0.5  # the per-template bug rates (0.1/0.3/0.6) on average
    assert not list(out.parent.glob(".model.tmp-*"))


def test_from_pretrained_round_trip(ws):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    out, _ = ws
    model = AutoModelForCausalLM.from_pretrained(out)
    # the character tokenizer loads by path with its own class (transformers' AutoTokenizer forces
    # Qwen2Tokenizer on qwen2 directories; rl.policy.models.load_tokenizer does this)
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 1
    from rl.tasks.synthetic import make_benchmark

    text = make_benchmark(seed=0, n_train_per_template=3).train[5].canonical_program  # in the tokenizer's corpus
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text  # decoders.Fuse(): no inserted spaces
    assert tok.eos_token is not None
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok)) and torch.isfinite(logits).all()


def test_failure_leaves_no_directory(tmp_path):
    with pytest.raises(ValueError, match="multiple of num_heads"):
        warm_start(tmp_path / "bad", SFTConfig(steps=1, hidden_size=30, num_heads=4), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "SFTConfig.steps: expected an integer >= 1, got 0"),
        (["--hidden-size", "30"], r"hidden_size \(30\) must be a multiple of num_heads \(4\)"),
        (["--lr", "0"], "SFTConfig.lr: expected a finite number > 0, got 0.0"),
    ],
)
def test_rl_warmstart_rejects_bad_settings_in_one_line(argv, message, tmp_path, capsys):
    """Before: ``rl warmstart --steps 0`` ended in an IndexError after building the benchmark."""
    import re

    from rl.cli import main

    assert main(["warmstart", "--out", str(tmp_path / "ws"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]) and not (tmp_path / "ws").exists()
