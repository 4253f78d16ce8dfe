"""GRPO comparison trainer (TRL GRPOTrainer + LoRA): device/dtype rule, per-line advantages (formula,
reduction to scalar GRPO, one training step through TRL), crowd-backed reward smoke tests and a
verifiable target whose mean reward must rise within a few CPU steps."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from rl.config import LoraSpec
from rl.tasks.synthetic import make_benchmark
from rl.train.grpo import GRPOSettings, add_arguments, crowd_reward_func, grpo_config, resolve_precision, settings_from_args, train_grpo
from rl.train.grpo_lines import CompletionLines, group_line_baselines, line_advantages
from rl.train.sft import SFTConfig, warm_start


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws") / "model"
    warm_start(
        out, SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=3e-3), progress=False
    )
    return out


def test_grpo_config_without_gpu_is_cpu_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    c = grpo_config(GRPOSettings(), tmp_path)
    assert (c.bf16, c.fp16, c.gradient_checkpointing, c.use_cpu) == (False, False, False, True)
    assert c.learning_rate == 1e-4 and c.beta == 0.0 and c.loss_type == "dr_grpo" and c.scale_rewards == "none"
    assert c.top_k == 0 and c.lr_scheduler_type == "constant"


def test_grpo_config_follows_a_gpu(tmp_path, monkeypatch):
    """On a machine with a bf16-capable GPU, ``rl grpo``'s default settings train on it in bf16 (was: CPU, float32).

    ``GRPOConfig`` sets up the (absent) CUDA device when constructed, so it is replaced by a recorder."""
    import types

    import trl

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(trl, "GRPOConfig", lambda **kw: types.SimpleNamespace(**kw))
    c = grpo_config(GRPOSettings(), tmp_path)
    assert (c.use_cpu, c.bf16, c.fp16) == (False, True, False)
    assert c.activation_checkpointing is False  # transformers 5's name (the old gradient_checkpointing warns)
    # the flags: the CPU on request; float16 / float32 on request
    c = grpo_config(GRPOSettings(device="cpu"), tmp_path)
    assert (c.use_cpu, c.bf16, c.fp16) == (True, False, False)
    c = grpo_config(GRPOSettings(dtype="float16"), tmp_path)
    assert (c.use_cpu, c.bf16, c.fp16) == (False, False, True)
    assert resolve_precision("auto", "float32") == ("cuda", "float32")
    # a GPU without bf16: auto is float32, bfloat16 is refused
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision() == ("cuda", "float32")
    with pytest.raises(ValueError, match="does not support"):
        resolve_precision("cuda", "bfloat16")


def test_precision_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision() == ("cpu", "float32")
    assert resolve_precision("cpu", "bfloat16") == ("cpu", "bfloat16")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_precision("cuda")
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        resolve_precision("auto", "float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_precision("auto", "fp8")


def test_grpo_cli_builds_the_shared_lora_spec():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    s = settings_from_args(
        p.parse_args(["--model", "m", "--out", "o", "--steps", "3", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1"])
    )
    assert s.steps == 3 and s.lora == LoraSpec(r=4, alpha=8, dropout=0.1)
    assert settings_from_args(p.parse_args(["--model", "m", "--out", "o"])) == GRPOSettings()
    args = ["--model", "m", "--out", "o", "--advantages", "lines", "--device", "cpu", "--dtype", "bfloat16", "--scale-rewards", "group"]
    s = settings_from_args(p.parse_args(args))
    assert (s.advantages, s.device, s.dtype, s.scale_rewards, s.line_reward) == ("lines", "cpu", "bfloat16", "group", "auto")
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--out", "o", "--advantages", "tokens"])


# ---------------------------------------------------------------------------------------------
# per-line advantages


def test_line_advantages_formula():
    """Two prompts x three completions; each token's line by hand (0: none); scale_rewards none and group."""
    r = [
        {3: 1.0, 4: 0.0},  # prompt 1: rbar 0.5
        {3: 1.0},  # 1.0
        {3: 0.0, 4: 0.0, 5: 1.0},  # 1/3
        {2: 0.5},  # prompt 2: 0.5
        {},  # no annotated line: left out of the baseline
        {2: -1.0, 3: 1.0},  # 0.0
    ]
    owners = [
        [3, 3, 4, 4, 4, 0],  # token 5: EOS, no line
        [3, 3],  # a two-token completion: positions 2-5 are padding
        [2, 3, 3, 4, 5, 5],  # line 2 is a prompt line (not annotated)
        [2, 2, 2, 2, 0],
        [2, 2],
        [2, 2, 3, 0],
    ]
    prog = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # TRL's program-level advantages
    b1, b2 = (0.5 + 1.0 + 1 / 3) / 3, (0.5 + 0.0) / 2
    want = torch.tensor(
        [
            [1 - b1, 1 - b1, -b1, -b1, -b1, 0.1],
            [1 - b1, 1 - b1, 0.2, 0.2, 0.2, 0.2],
            [0.3, -b1, -b1, -b1, 1 - b1, 1 - b1],
            [0.5 - b2] * 4 + [0.4, 0.4],
            [0.5] * 6,
            [-1 - b2, -1 - b2, 1 - b2, 0.6, 0.6, 0.6],
        ]
    )
    got = line_advantages(prog, r, owners, num_generations=3, T=6)
    assert got.shape == (6, 6)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # scaled by the group std of the completions' mean line rewards (Bessel-corrected, + 1e-4, as TRL)
    s1 = torch.tensor([0.5, 1.0, 1 / 3]).std().item() + 1e-4
    s2 = torch.tensor([0.5, 0.0]).std().item() + 1e-4
    base, scale = group_line_baselines(r, 3, "group")
    torch.testing.assert_close(base, torch.tensor([b1] * 3 + [b2] * 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(scale, torch.tensor([s1] * 3 + [s2] * 3), atol=1e-6, rtol=0)
    got = line_advantages(prog, r, owners, num_generations=3, T=6, scale_rewards="group")
    assert got[0, 0].item() == pytest.approx((1 - b1) / s1, abs=1e-5) and got[5, 2].item() == pytest.approx((1 - b2) / s2, abs=1e-5)
    assert got[4].tolist() == pytest.approx([0.5] * 6) and got[0, 5].item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="whole groups"):
        group_line_baselines(r, 4)


@pytest.mark.parametrize("scale", ["none", "group", "batch"])
def test_equal_lines_reduce_to_scalar_grpo(scale):
    """Every line of completion i has reward R_i: the (B, T) advantages are GRPO's scalar advantages on every token."""
    g = torch.Generator().manual_seed(0)
    R = torch.rand(12, generator=g)
    n_lines = [1, 3, 2, 4, 1, 2, 5, 1, 3, 2, 2, 1]
    r = [{ln: float(R[i]) for ln in range(2, 2 + k)} for i, k in enumerate(n_lines)]
    owners = [[2 + j for j in range(k) for _ in range(2)] + [0] for k in n_lines]  # two tokens a line, then EOS
    # TRL's scalar advantages (sum_then_normalize, one reward function)
    grouped = R.view(-1, 4)
    scalar = R - grouped.mean(1).repeat_interleave(4)
    if scale == "group":
        scalar = scalar / (grouped.std(1).repeat_interleave(4) + 1e-4)
    elif scale == "batch":
        scalar = scalar / (R.std() + 1e-4)
    got = line_advantages(scalar, r, owners, num_generations=4, T=11, scale_rewards=scale)
    torch.testing.assert_close(got, scalar[:, None].expand(12, 11), atol=1e-6, rtol=0)


def test_crowd_reward_func_hands_over_line_posteriors():
    """``last_lines``: the call's posteriors, the program they number and where the completion starts in it."""
    import types

    b = make_benchmark(seed=0, n_train_per_template=1)
    p = b.train[0]

    class Rewarder:
        source = "fake"

        def rewards(self, items, tag):
            recs = {
                prog: {"reward": 0.5, "reward_soft": 0.6, "lines": [7, 8], "posteriors": [0.9, 0.2], "tau": 0.5} for prog, _, _ in items
            }
            return recs, [types.SimpleNamespace(passed=False)] * len(items), {}

    f = crowd_reward_func(Rewarder(), {p.task_id: p}, "reward_soft")
    assert f.last_lines == []
    assert f([p.prompt] * 2, ["  return 1\n", "x"], [p.task_id] * 2) == [0.6, 0.6]
    cl = f.last_lines[1]
    assert cl.completion == "x" and cl.code == p.program("x") and cl.code[cl.offset :] == "x"
    assert cl.posteriors == {7: 0.9, 8: 0.2} and cl.tau == 0.5


def _line_func(per_line: bool):
    """A cheap reward with line posteriors (no sandbox, no crowd): P of a line is its share of spaces.

    per_line=False: every line of a completion gets the completion's share instead (all lines equal)."""

    def share(t):
        return t.count(" ") / max(1, len(t))

    def reward(prompts, completions, **kw):
        last = []
        for pr, c in zip(prompts, completions):
            code = pr + c
            n = code.count("\n") + (0 if code.endswith("\n") else 1)
            texts = code.split("\n")
            post = {ln: share(texts[ln - 1]) if per_line else share(c) for ln in range(pr.count("\n") + 1, n + 1) if c}
            last.append(CompletionLines(c, code, len(pr), post))
        reward.last_lines = last
        return [sum(cl.posteriors.values()) / len(cl.posteriors) if cl.posteriors else 0.0 for cl in last]

    reward.last_lines = []
    return reward


def _char_lines(ids: list[int], code: str, offset: int) -> list[int]:
    """Line of each completion token under the character tokenizer (ids 0-3 special: no text, no line): an independent mapping."""
    out, pos = [], offset
    for t in ids:
        if t < 4:
            out.append(0)
        else:
            out.append(code[:pos].count("\n") + 1)
            pos += 1
    return out


def _spy(monkeypatch):
    """Record TRL's scalar advantages and the subclass's (B, T) advantages of each generation batch."""
    from trl import GRPOTrainer

    from rl.train.grpo_lines import LineGRPOTrainer

    seen: list[dict] = []
    parent, child = GRPOTrainer._generate_and_score_completions, LineGRPOTrainer._generate_and_score_completions

    def parent_spy(self, inputs):
        out = parent(self, inputs)
        seen.append({"scalar": out["advantages"].clone()})
        return out

    def child_spy(self, inputs):
        out = child(self, inputs)
        seen[-1].update(lines=out["advantages"].clone(), mask=out["completion_mask"].clone(), ids=out["completion_ids"].clone())
        seen[-1]["last_lines"] = list(self.line_source.last_lines)
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", parent_spy)
    monkeypatch.setattr(LineGRPOTrainer, "_generate_and_score_completions", child_spy)
    return seen


def _lora_b_max(adapter_dir) -> float:
    from safetensors.torch import load_file

    w = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return max(v.abs().max().item() for k, v in w.items() if "lora_B" in k)


def test_line_grpo_step_uses_token_advantages(tiny_model, tmp_path, monkeypatch):
    """One step of LineGRPOTrainer on the tiny CPU model: (B, T) advantages by the formula; LoRA weights move."""
    seen = _spy(monkeypatch)
    b = make_benchmark(seed=0, n_train_per_template=2)
    s = GRPOSettings(steps=1, batch_size=8, num_generations=4, max_completion_length=16, advantages="lines", line_reward="posterior")
    res = train_grpo(tiny_model, tmp_path / "g", s, reward_funcs=[_line_func(per_line=True)], problems=b.train)
    assert len(res["reward_per_step"]) == 1 and res["device"] == "cpu" and res["dtype"] == "float32"
    (batch,) = seen
    adv, mask = batch["lines"], batch["mask"]
    assert adv.shape == batch["ids"].shape and adv.dim() == 2
    n_on_line = 0
    for i, cl in enumerate(batch["last_lines"]):
        group = batch["last_lines"][i - i % 4 : i - i % 4 + 4]
        rbar = [sum(c.posteriors.values()) / len(c.posteriors) for c in group if c.posteriors]
        base = sum(rbar) / len(rbar) if rbar else 0.0
        ids = batch["ids"][i][mask[i].bool()].tolist()
        for k, ln in enumerate(_char_lines(ids, cl.code, cl.offset)):
            want = cl.posteriors[ln] - base if ln in cl.posteriors else batch["scalar"][i].item()
            n_on_line += ln in cl.posteriors
            assert adv[i, k].item() == pytest.approx(want, abs=1e-6), (i, k)
    assert n_on_line > 0
    # LoRA B starts at zero (peft): one step with nonzero advantages moved it
    assert _lora_b_max(tmp_path / "g" / "adapter") > 0.0


def test_line_grpo_with_equal_lines_is_scalar_grpo(tiny_model, tmp_path, monkeypatch):
    """Through TRL: every line carries its completion's reward, so the (B, T) advantages are the scalar ones."""
    seen = _spy(monkeypatch)
    b = make_benchmark(seed=0, n_train_per_template=2)
    s = GRPOSettings(
        steps=1,
        batch_size=8,
        num_generations=4,
        max_completion_length=12,
        advantages="lines",
        line_reward="posterior",
        scale_rewards="group",
    )
    train_grpo(tiny_model, tmp_path / "g", s, reward_funcs=[_line_func(per_line=False)], problems=b.train)
    (batch,) = seen
    want = batch["scalar"][:, None].expand_as(batch["lines"])
    torch.testing.assert_close(batch["lines"], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("advantages", ["scalar", "lines"])
def test_grpo_crowd_reward_smoke(tiny_model, tmp_path, advantages):
    b = make_benchmark(seed=0, n_train_per_template=2)
    s = GRPOSettings(
        steps=1, batch_size=8, num_generations=4, max_completion_length=12, reward_source="majority", threads=2, advantages=advantages
    )
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
