"""GRPO comparison trainer (TRL GRPOTrainer + LoRA): crowd-backed reward smoke test and a verifiable
target whose mean reward must rise within a few CPU steps."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from rl.config import LoraSpec
from rl.tasks.synthetic import make_benchmark
from rl.train.grpo import GRPOSettings, add_arguments, grpo_config, settings_from_args, train_grpo
from rl.train.sft import SFTConfig, warm_start


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws") / "model"
    warm_start(
        out, SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=3e-3), progress=False
    )
    return out


def test_grpo_config_is_cpu_safe(tmp_path):
    c = grpo_config(GRPOSettings(), tmp_path)
    assert (c.bf16, c.fp16, c.gradient_checkpointing, c.use_cpu) == (False, False, False, True)
    assert c.learning_rate == 1e-4 and c.beta == 0.0 and c.loss_type == "dr_grpo" and c.scale_rewards == "none"
    assert c.top_k == 0 and c.lr_scheduler_type == "constant"


def test_grpo_cli_builds_the_shared_lora_spec():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    s = settings_from_args(
        p.parse_args(["--model", "m", "--out", "o", "--steps", "3", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1"])
    )
    assert s.steps == 3 and s.lora == LoraSpec(r=4, alpha=8, dropout=0.1)
    assert settings_from_args(p.parse_args(["--model", "m", "--out", "o"])) == GRPOSettings()


def test_grpo_crowd_reward_smoke(tiny_model, tmp_path):
    b = make_benchmark(seed=0, n_train_per_template=2)
    s = GRPOSettings(steps=1, batch_size=8, num_generations=4, max_completion_length=12, reward_source="majority", threads=2)
    res = train_grpo(tiny_model, tmp_path / "g", s, problems=b.train)
    assert len(res["reward_per_step"]) == 1 and 0.0 <= res["reward_per_step"][0] <= 1.0
    # the reward went through crowdstat's CLI: a reward file per generation batch
    fits = sorted((tmp_path / "g" / "crowdwork").glob("g*/fit/rewards.jsonl"))
    assert len(fits) == 1 and len(fits[0].read_text().splitlines()) <= 8
    assert res["history"][0]["mean_reward"] == pytest.approx(res["reward_per_step"][0], abs=1e-6)
    assert (tmp_path / "g" / "adapter" / "adapter_config.json").exists()
    saved = json.loads((tmp_path / "g" / "grpo.json").read_text())["settings"]
    assert saved["reward_source"] == "majority" and saved["lora"]["r"] == 8


@pytest.mark.slow
def test_grpo_mean_reward_rises(tmp_path):
    """A verifiable target (share of spaces in the completion): ~2 minutes on a loaded 2-core CPU.

    The model needs a slightly longer warm start than the smoke test's (an 8-step model is
    near-uniform and its group rewards are mostly noise)."""
    model = tmp_path / "ws"
    warm_start(
        model,
        SFTConfig(steps=30, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=5, lr=3e-3, threads=1),
        progress=False,
    )

    def spaces(prompts, completions, **kw):
        return [c.count(" ") / max(1, len(c)) for c in completions]

    b = make_benchmark(seed=0, n_train_per_template=2)
    s = GRPOSettings(steps=8, batch_size=16, num_generations=4, max_completion_length=12, lr=5e-3, lora=LoraSpec(r=8, alpha=32), threads=2)
    r = train_grpo(model, tmp_path / "g", s, reward_funcs=[spaces], problems=b.train)["reward_per_step"]
    assert len(r) == 8
    assert sum(r[-3:]) / 3 > sum(r[:3]) / 3 + 0.03, r
