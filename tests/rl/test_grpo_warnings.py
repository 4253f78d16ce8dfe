"""rl grpo prints no checkpointing FutureWarning: ours (the deprecated ``gradient_checkpointing`` argument of
GRPOConfig) is gone, and the one peft and TRL raise (they read the deprecated ``is_gradient_checkpointing``
property) is filtered exactly; other warnings still show."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from rl.policy.models import build_tiny_model, quiet_gradient_checkpointing_warning, train_char_tokenizer
from rl.tasks.synthetic import make_benchmark
from rl.train.grpo import GRPOSettings, grpo_config, train_grpo
from rl.train.sft import all_texts

CHECKPOINTING = r"gradient_checkpointing"


def _checkpointing_warnings(record) -> list[str]:
    return [str(w.message) for w in record if CHECKPOINTING in str(w.message)]


def test_grpo_config_passes_no_deprecated_argument(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cfg = grpo_config(GRPOSettings(), tmp_path)
    assert _checkpointing_warnings(rec) == []
    assert cfg.activation_checkpointing is False and cfg.gradient_checkpointing is False  # still off, under both names


def test_one_grpo_step_warns_nothing_about_checkpointing(tmp_path, monkeypatch):
    """A real TRL step (peft wraps the model, TRL unwraps it around generation) on a random 1-layer model."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    bench = make_benchmark(seed=0, n_train_per_template=1)
    tok = train_char_tokenizer(all_texts(bench), tmp_path / "m")
    build_tiny_model(tmp_path / "m", tok, hidden_size=16, num_layers=1, num_heads=2)

    def length(completions, **kw):
        return [float(len(c)) for c in completions]

    s = GRPOSettings(steps=1, batch_size=4, num_generations=2, max_completion_length=4, threads=1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = train_grpo(tmp_path / "m", tmp_path / "g", s, reward_funcs=[length], problems=bench.train[:4])
    assert len(res["reward_per_step"]) == 1
    assert _checkpointing_warnings(rec) == []


def test_the_filter_hides_exactly_that_warning():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with quiet_gradient_checkpointing_warning():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1)
            warnings.warn("`is_gradient_checkpointing` is deprecated, as a UserWarning", UserWarning, stacklevel=1)
            warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [(w.category, str(w.message)) for w in rec] == [
        (UserWarning, "`is_gradient_checkpointing` is deprecated, as a UserWarning"),
        (FutureWarning, "something else is deprecated"),
    ]
