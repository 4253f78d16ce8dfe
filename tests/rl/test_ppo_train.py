"""PPO end to end on a tiny model built locally and reloaded by path, like a real run.

Target: the share of the character "a" among the completion tokens (a verifiable reward, given as
a program-level reward on the last token). A random tiny model samples "a" about 1 time in 13.
"""

import argparse
import json
import math

import pytest

torch = pytest.importorskip("torch")

from crowdstat.io.rewards import write_rewards  # noqa: E402
from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import generate, read_rollouts, write_rollouts  # noqa: E402
from rl.train.ppo import PPOConfig, PPOTrainer  # noqa: E402
from tests.rl_helpers import reward_record, run_rl_train  # noqa: E402

N_STEPS = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    tok = train_char_tokenizer(["abcdefgh\n"], root / "tok")
    # initializer_range 0.2: see build_tiny_model (LoRA cannot sharpen a 0.02-init tiny model)
    return build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)


def share_of_a(tok, rollouts):
    a = tok.convert_tokens_to_ids("a")
    out = []
    for r in rollouts:
        x = [0.0] * len(r.completion_ids)
        x[-1] = sum(t == a for t in r.completion_ids) / len(r.completion_ids)
        out.append(x)
    return out


@pytest.fixture(scope="module")
def trained(model_path):
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=8, alpha=16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = PPOConfig(learning_rate=3e-3, ppo_epochs=4, minibatch_size=16, kl_coef=0.01, reward_mode="program", seed=0)
    trainer = PPOTrainer(model, tok, cfg)
    vh_before = trainer.value_head.weight.detach().clone()
    history = []
    for it in range(N_STEPS):
        rs = generate(model, tok, [("p", "a")], n=32, temperature=1.0, max_new_tokens=8, seed=100 + it)
        history.append(trainer.step(rs, share_of_a(tok, rs)))
    return trainer, tok, history, before, vh_before


def test_mean_reward_rises(trained):
    _, _, history, _, _ = trained
    scores = [h["reward/score_mean"] for h in history]
    first, last = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    print(f"share of 'a': first two steps {first:.3f}, last three {last:.3f}; per step {[round(s, 3) for s in scores]}")
    assert first < 0.25  # a random policy (1/13 expected)
    assert last > first + 0.3, scores
    for h in history:
        # explained variance is undefined (nan) when the returns have no variance
        assert all(math.isfinite(v) for k, v in h.items() if k != "value/explained_variance"), h
        assert 0.0 <= h["policy/clipfrac"] <= 1.0
        assert h["logprob/rollout_mismatch_max"] < 1e-4  # stored sampling-time log probs = recomputed
    assert history[0]["kl/k1_mean"] == pytest.approx(0.0, abs=1e-6)  # LoRA B = 0: policy = reference
    assert history[-1]["kl/k1_mean"] > 0.5  # and it moved away from the reference


def test_only_lora_and_value_head_changed(trained):
    trainer, _, _, before, vh_before = trained
    changed_lora = 0
    for n, p in trainer.model.named_parameters():
        if "lora_" in n:
            changed_lora += not torch.equal(p, before[n])
        else:
            assert torch.equal(p, before[n]), f"base weight {n} changed"
            assert not p.requires_grad
    n_lora = sum("lora_" in n for n in before)
    assert changed_lora == n_lora  # every LoRA matrix moved
    assert not torch.equal(trainer.value_head.weight, vh_before)


def test_save_and_load_round_trip(trained, model_path, tmp_path):
    trainer, tok, _, _, _ = trained
    out = trainer.save(tmp_path / "ckpt")
    assert {p.name for p in tmp_path.iterdir()} == {"ckpt"}  # written through a temporary sibling, renamed
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "value_head.safetensors",
        "ppo_config.json",
        "trainer_state.json",
        "optimizer.pt",
    } <= {p.name for p in out.iterdir()}
    assert "model.safetensors" not in {p.name for p in out.iterdir()}  # adapter only, no base copy
    again = PPOTrainer.load(out, model_path)
    assert again.n_steps == N_STEPS and again.config == trainer.config
    torch.testing.assert_close(again.value_head.weight, trainer.value_head.weight, atol=0, rtol=0)
    ids = torch.tensor([tok("abcab")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(again.model(input_ids=ids).logits, trainer.model(input_ids=ids).logits, atol=1e-6, rtol=1e-6)
    # save over an existing directory replaces it
    trainer.save(out)
    assert {p.name for p in tmp_path.iterdir()} == {"ckpt"}


def test_gradient_accumulation_matches_one_big_minibatch(model_path):
    """minibatch 8 in one pass == minibatch 8 as 2 micro-batches of 4 (token-weighted): same gradients."""
    grads = []
    for accum in (1, 2):
        torch.manual_seed(0)
        model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
        trainer = PPOTrainer(model, tok, PPOConfig(ppo_epochs=1, minibatch_size=8, grad_accum_steps=accum, seed=3))
        seen = []
        inner = trainer.optimizer.step

        def record(*a, _inner=inner, _seen=seen, _t=trainer, **k):
            _seen.append([p.grad.detach().clone() for p in _t.params])
            return _inner(*a, **k)

        trainer.optimizer.step = record
        rs = generate(model, tok, [("p", "ab")], n=16, temperature=1.0, max_new_tokens=6, seed=0)
        trainer.step(rs, share_of_a(tok, rs))
        grads.append(seen)
    assert len(grads[0]) == len(grads[1]) == 2  # 16 rollouts / minibatch 8
    for g1, g2 in zip(grads[0], grads[1]):
        assert any(g.abs().max() > 0 for g in g1)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_step_rejects_mismatched_rewards(trained):
    trainer, tok, _, _, _ = trained
    rs = generate(trainer.model, tok, [("p", "a")], n=2, temperature=1.0, max_new_tokens=4, seed=0)
    with pytest.raises(ValueError, match="2 rollouts but 1 reward lists"):
        trainer.step(rs, [[0.0]])
    with pytest.raises(ValueError, match=f"program '{rs[0].program}': 0 token rewards"):
        trainer.step(rs, [[], [0.0] * len(rs[1].completion_ids)])
    with pytest.raises(TypeError, match="peft.PeftModel"):
        PPOTrainer(torch.nn.Linear(2, 2), tok, PPOConfig())
    with pytest.raises(ValueError, match="multiple of grad_accum_steps"):
        PPOConfig(minibatch_size=6, grad_accum_steps=4)


def test_cli_train_lines_mode_and_resume(model_path, tmp_path, monkeypatch):
    """rl generate -> a crowd reward file -> rl train --reward-mode lines -> rl train --adapter (resume)."""
    from rl.policy import rollouts as rmod

    monkeypatch.setenv("RL_TORCH_THREADS", "1")

    model, tok = load_policy(model_path, None)
    rs = generate(model, tok, [("p", "a\n"), ("q", "b\n")], n=6, temperature=1.0, max_new_tokens=12, seed=0)
    write_rollouts(tmp_path / "r.jsonl", rs)
    recs = []
    for r in rs:
        lines = [ln for ln, _, _ in r.line_spans] or [1]  # a text-less completion: a prompt line (ignored)
        code_lines = r.code.split("\n")
        post = [min(1.0, code_lines[ln - 1].count("a") / 3) for ln in lines]
        recs.append(
            {
                "program": r.program,
                "reward": sum(p > 0.5 for p in post) / len(lines),
                "reward_soft": sum(post) / len(lines),
                "n_lines": max(len(code_lines), max(lines)),
                "n_annotated": len(lines),
                "coverage": len(lines) / max(len(code_lines), max(lines)),
                "lines": lines,
                "posteriors": post,
                "tau": 0.5,
                "method": "test",
            }
        )
    write_rewards(tmp_path / "w.jsonl", recs)
    base_bytes = (model_path / "model.safetensors").read_bytes()

    def train(*extra):
        return run_rl_train(model_path, tmp_path, "--ppo-epochs", "1", "--minibatch-size", "6", "--batch-size", "6", *extra)

    assert train("--out", str(tmp_path / "a")) == 0
    cfg = json.loads((tmp_path / "a" / "ppo_config.json").read_text())
    assert cfg["reward_mode"] == "lines" and cfg["ppo_epochs"] == 1 and cfg["mixed_precision"] == "auto"
    assert json.loads((tmp_path / "a" / "trainer_state.json").read_text())["n_steps"] == 2  # 12 rollouts / 6
    assert len((tmp_path / "a" / "train_stats.jsonl").read_text().splitlines()) == 2
    assert train("--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "b")) == 0
    assert json.loads((tmp_path / "b" / "trainer_state.json").read_text())["n_steps"] == 4
    assert len((tmp_path / "b" / "train_stats.jsonl").read_text().splitlines()) == 4
    assert (model_path / "model.safetensors").read_bytes() == base_bytes  # the base model is never written
    assert train("--adapter", str(tmp_path / "b"), "--out", str(tmp_path / "b")) == 0  # resume in place
    assert json.loads((tmp_path / "b" / "trainer_state.json").read_text())["n_steps"] == 6
    assert [json.loads(x)["step"] for x in (tmp_path / "b" / "train_stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt_id": "p", "prompt": "a\n"}) + "\n")
    parser = argparse.ArgumentParser()
    rmod.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(model_path),
            "--adapter",
            str(tmp_path / "b"),
            "--prompts",
            str(prompts),
            "--n",
            "2",
            "--max-new-tokens",
            "5",
            "--out",
            str(tmp_path / "r2.jsonl"),
        ]
    )
    assert rmod.run(args) == 0
    r2 = read_rollouts(tmp_path / "r2.jsonl")
    assert len(r2) == 2 and any(a != b for r in r2 for a, b in zip(r.logprobs, r.ref_logprobs))


@pytest.mark.slow
def test_line_rewards_through_the_seam_raise_the_target(model_path, tmp_path):
    """Dense mode end to end: per-line posteriors (share of "a" on the line) -> rewards.jsonl ->
    load_rewards -> token_rewards("lines") -> PPO. Measured: share of "a" 0.13 -> 0.74 in 10 steps, and
    completions grow from 5 to 12 tokens (the maximum) once their lines are mostly "a": the length effect of
    summed signed line rewards (docs/rl.md). Before the PPO fixes (reward whitening on, with the mean added
    back): 0.13 -> 0.90, completions shrinking to 2 tokens."""
    from rl.crowd.rewards import load_rewards, token_rewards

    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=8, alpha=16))
    trainer = PPOTrainer(model, tok, PPOConfig(learning_rate=3e-3, kl_coef=0.01, reward_mode="lines"))
    shares, lengths = [], []
    for it in range(10):
        rs = generate(model, tok, [("p", "x\n")], n=32, temperature=1.0, max_new_tokens=12, seed=200 + it)
        recs = []
        for r in rs:
            code_lines = r.code.split("\n")
            lines = [ln for ln, _, _ in r.line_spans if code_lines[ln - 1]] or [ln for ln, _, _ in r.line_spans] or [1]
            post = [code_lines[ln - 1].count("a") / len(code_lines[ln - 1]) if code_lines[ln - 1] else 0.0 for ln in lines]
            n = max(len(code_lines), max(lines))
            recs.append(reward_record(r.program, lines, post, n, method="t"))
        write_rewards(tmp_path / "w.jsonl", recs)
        records = load_rewards(tmp_path / "w.jsonl", rs, prompt_lines="ignore")
        trainer.step(rs, [token_rewards(r, records[r.program], "lines") for r in rs])
        shares.append(sum(r.completion.count("a") for r in rs) / max(1, sum(len(r.completion) for r in rs)))
        lengths.append(sum(len(r.completion_ids) for r in rs) / len(rs))
    print("share of 'a' per step:", [round(s, 3) for s in shares], "mean completion tokens:", [round(x, 1) for x in lengths])
    assert sum(shares[-3:]) / 3 > sum(shares[:2]) / 2 + 0.3, shares


# ------------------------------------------------- entropy, target_kl, lr schedule, reward clip


def _fresh(model_path, **cfg):
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    trainer = PPOTrainer(model, tok, PPOConfig(**{"ppo_epochs": 1, "minibatch_size": 8, "seed": 3, **cfg}))
    rs = generate(model, tok, [("p", "ab")], n=8, temperature=0.8, max_new_tokens=6, seed=0)
    return trainer, model, tok, rs


def test_entropy_stat_is_the_entropy_of_the_sampling_distribution(model_path):
    from rl.train.ppo_math import entropy_from_logits

    trainer, model, tok, rs = _fresh(model_path)
    # independently: the entropy of softmax(logits / 0.8) at every completion token, averaged over tokens
    ents = []
    with torch.no_grad():
        for r in rs:
            ids = torch.tensor([r.prompt_ids + r.completion_ids])
            logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1]
            ents += entropy_from_logits(logits[None], 0.8)[0].tolist()
    stats = trainer.step(rs, share_of_a(tok, rs))  # one epoch, one minibatch: measured before any update
    assert math.isfinite(stats["policy/entropy"]) and 0 < stats["policy/entropy"] <= math.log(len(tok)) + 1e-6
    assert stats["policy/entropy"] == pytest.approx(sum(ents) / len(ents), abs=1e-5)
    assert stats["policy/epochs_run"] == 1


def test_entropy_bonus_enters_the_loss(model_path):
    losses = []
    for coef in (0.0, 0.5):
        trainer, _, tok, rs = _fresh(model_path, entropy_coef=coef)
        s = trainer.step(rs, share_of_a(tok, rs))
        losses.append((s["loss/total"], s["loss/policy"], s["loss/value"], s["policy/entropy"]))
    (t0, p0, v0, h0), (t1, p1, v1, h1) = losses
    assert h0 == pytest.approx(h1, abs=1e-6) and p0 == pytest.approx(p1, abs=1e-6)
    assert t1 == pytest.approx(t0 - 0.5 * h1, abs=1e-5)


def test_target_kl_stops_the_epochs_early(model_path):
    runs = {}
    for tkl in (None, 1e-6):
        trainer, _, tok, rs = _fresh(model_path, learning_rate=5e-2, ppo_epochs=4, minibatch_size=4, target_kl=tkl)
        runs[tkl] = trainer.step(rs, share_of_a(tok, rs))
    assert runs[None]["policy/epochs_run"] == 4
    assert runs[1e-6]["policy/approx_kl"] > 0
    assert 1 <= runs[1e-6]["policy/epochs_run"] < 4


def test_lr_warmup_and_schedule_follow_the_formula_and_survive_save_load(model_path, tmp_path):
    from rl.train.ppo_math import lr_factor

    base, vbase = 1e-3, 4e-3
    kw = dict(learning_rate=base, value_learning_rate=vbase, lr_warmup_steps=2, lr_schedule="cosine", total_steps=6)
    trainer, _, tok, rs = _fresh(model_path, **kw)
    want = [base * lr_factor(k, 2, "cosine", 6) for k in range(8)]
    assert want[:4] == pytest.approx([5e-4, 1e-3, 1e-3, base * 0.5 * (1 + math.cos(math.pi / 4))])
    for k in range(3):
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(want[k], rel=1e-12)
        assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(want[k] * vbase / base, rel=1e-12)
        assert trainer.step(rs, share_of_a(tok, rs))["lr"] == pytest.approx(want[k], rel=1e-12)
    again = PPOTrainer.load(trainer.save(tmp_path / "ck"), model_path)
    assert (tmp_path / "ck" / "scheduler.pt").is_file()
    for t in (trainer, again):
        assert [g["lr"] for g in t.optimizer.param_groups] == pytest.approx([want[3], want[3] * vbase / base], rel=1e-12)
    for k in (3, 4, 5, 6, 7):
        assert again.step(rs, share_of_a(tok, rs))["lr"] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
    assert again.optimizer.param_groups[0]["lr"] == 0.0  # past total_steps: 0


def test_reward_clip_clips_the_scores_before_the_advantages(model_path):
    trainer, _, tok, rs = _fresh(model_path, reward_clip=0.5, kl_coef=0.1, advantage="gae")
    raw = [[(-3.0 if i % 2 else 2.0) * (j + 1) for j in range(len(r.completion_ids))] for i, r in enumerate(rs)]
    b = trainer.prepare(rs, raw)
    for i, row in enumerate(raw):
        n = len(row)
        assert b.scores[i, :n].tolist() == pytest.approx([max(-0.5, min(0.5, x)) for x in row])
    torch.testing.assert_close(b.rewards, (b.scores - 0.1 * b.kl) * b.mask)
    with pytest.raises(ValueError, match="reward_clip"):
        PPOConfig(reward_clip=0)


def test_free_cpu_threads_leaves_busy_cores_alone():
    from rl.policy.models import free_cpu_threads

    assert [free_cpu_threads(2, load) for load in (0.0, 0.4, 0.6, 1.4, 2.0, 7.5)] == [2, 2, 1, 1, 1, 1]
    assert free_cpu_threads(16, 3.2) == 13 and free_cpu_threads(1, 0.0) == 1


def test_rl_train_threads_env_is_checked(monkeypatch):
    from rl.policy.models import _cpu_threads

    monkeypatch.setenv("RL_TORCH_THREADS", "0")
    with pytest.raises(ValueError, match="RL_TORCH_THREADS: expected a positive integer or 'auto', got '0'"):
        _cpu_threads()
    monkeypatch.setenv("RL_TORCH_THREADS", "1")
    assert _cpu_threads() == 1 == torch.get_num_threads()


def test_two_identical_rl_train_runs_give_identical_statistics_and_adapters(model_path, tmp_path, monkeypatch):
    """Same rollouts, rewards and seed: the same per-step statistics and bitwise the same adapter, also with
    a different torch thread count (issue: two identical runs once gave different clip fractions)."""
    monkeypatch.setenv("RL_TORCH_THREADS", "1")
    model, tok = load_policy(model_path, None)
    rs = generate(model, tok, [("p", "a\n"), ("q", "b\n")], n=6, temperature=1.0, max_new_tokens=12, seed=0)
    write_rollouts(tmp_path / "r.jsonl", rs)
    recs = []
    for r in rs:
        lines = [ln for ln, _, _ in r.line_spans] or [1]
        code_lines = r.code.split("\n")
        post = [min(1.0, code_lines[ln - 1].count("a") / 3) for ln in lines]
        recs.append(reward_record(r.program, lines, post, max(len(code_lines), max(lines))))
    write_rewards(tmp_path / "w.jsonl", recs)
    stats = {}
    for out, threads in (("a", "1"), ("b", "1"), ("c", "2")):
        monkeypatch.setenv("RL_TORCH_THREADS", threads)
        assert (
            run_rl_train(
                model_path, tmp_path, "--ppo-epochs", "2", "--minibatch-size", "4", "--batch-size", "6", "--out", str(tmp_path / out)
            )
            == 0
        )
        rows = [json.loads(x) for x in (tmp_path / out / "train_stats.jsonl").read_text().splitlines()]
        stats[out] = [{k: v for k, v in row.items() if k != "time_s"} for row in rows]
    assert stats["a"] == stats["b"] == stats["c"] and len(stats["a"]) == 2
    adapters = {o: (tmp_path / o / "adapter_model.safetensors").read_bytes() for o in "abc"}
    assert adapters["a"] == adapters["b"] == adapters["c"]
