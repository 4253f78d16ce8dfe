"""Regression tests of six PPO defects (docs/rl.md, "The PPO update"), each on a tiny model built locally.

1. reward whitening added the batch mean back to every token (a length-dependent constant reward);
2. log probabilities were computed at temperature 1 when sampling at T != 1;
3. ``rl train --batch-size`` recomputed "old" log probabilities under an already-updated policy;
4. old and new log probabilities were computed with different batch layouts (padding);
5. the LoRA initialisation of ``rl train`` was not seeded;
6. a batch of only empty completions raised (under DDP: while the other ranks wait in all-reduce).
"""

import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")

from crowdstat.io.rewards import write_rewards  # noqa: E402
from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import Rollout, generate, read_rollouts, write_rollouts  # noqa: E402
from rl.train import ppo  # noqa: E402
from rl.train.ppo import PPOConfig, PPOTrainer  # noqa: E402
from tests.rl_helpers import reward_record, run_rl_train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_defects")
    tok = train_char_tokenizer(["abcdefgh\n"], root / "tok")
    return build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)


def _rollout(tok, name: str, prompt: str, completion: str, temperature: float = 1.0) -> Rollout:
    ids = tok.convert_tokens_to_ids(list(completion))
    r = Rollout(
        program=name,
        prompt_id=name,
        prompt=prompt,
        completion=completion,
        code=prompt + completion,
        prompt_ids=tok.convert_tokens_to_ids(list(prompt)),
        completion_ids=ids,
        logprobs=[0.0] * len(ids),
        ref_logprobs=[0.0] * len(ids),
        line_spans=[],
    )
    if temperature != 1.0:
        r.temperature = temperature
    return r


def _spy(monkeypatch, name: str):
    """Record the arguments of every call of ``rl.train.ppo.<name>`` (module global), then call it."""
    calls = []
    inner = getattr(ppo, name)

    def spy(*a, **k):
        calls.append([x.detach().clone() if torch.is_tensor(x) else x for x in a])
        return inner(*a, **k)

    monkeypatch.setattr(ppo, name, spy)
    return calls


def _expected_logprobs(model, r: Rollout, temperature: float) -> torch.Tensor:
    """log softmax(logits / T)[token] of each completion token, the sequence alone (no padding)."""
    ids = torch.tensor([r.prompt_ids + r.completion_ids])
    P = len(r.prompt_ids)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, P - 1 : -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, ids[0, P:, None]).squeeze(-1)


def _write_line_rewards(rs, path) -> None:
    recs = []
    for r in rs:
        lines = [ln for ln, _, _ in r.line_spans] or [1]
        code_lines = r.code.split("\n")
        post = [min(1.0, code_lines[ln - 1].count("a") / 3) for ln in lines]
        n = max(len(code_lines), max(lines))
        recs.append(reward_record(r.program, lines, post, n))
    write_rewards(path, recs)


def _train_cli(model_path, tmp_path, out: str, *extra: str) -> int:
    return run_rl_train(model_path, tmp_path, "--out", str(tmp_path / out), *extra)


# ------------------------------------------------------------------------------ 1. reward whitening


def test_whitening_is_off_by_default_and_adds_no_constant(model_path, monkeypatch):
    """One terminal reward per completion: whitened, a completion's rewards sum to the same value at 20 and
    at 80 tokens (scale only), and a completion scoring 0 keeps 0. Before the fix the mean was added back
    to every token: sums 8.22 (20 tokens) and 2.81 (80 tokens) for the same score 1, and -1.81 / -7.22 for 0;
    now 10.03, 10.03, 0, 0."""
    assert PPOConfig().whiten_rewards is False
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    trainer = PPOTrainer(model, tok, PPOConfig(whiten_rewards=True, kl_coef=0.0, ppo_epochs=1, minibatch_size=4))
    lengths, scores = [20, 80, 20, 80], [1.0, 1.0, 0.0, 0.0]
    rs = [_rollout(tok, f"p{i}", "a", ("abcdefgh\n" * 9)[:n]) for i, n in enumerate(lengths)]
    token_rewards = [[0.0] * (n - 1) + [s] for n, s in zip(lengths, scores)]
    calls = _spy(monkeypatch, "gae")
    trainer.step(rs, token_rewards)
    rewards, _, mask = calls[0][:3]
    sums = (rewards * mask).sum(1).tolist()
    print("whitened reward sums per completion (lengths 20, 80, 20, 80; scores 1, 1, 0, 0):", [round(s, 3) for s in sums])
    assert sums[0] == pytest.approx(sums[1], rel=1e-5)  # score 1 at 20 and at 80 tokens: the same
    assert sums[2] == pytest.approx(0.0, abs=1e-6) and sums[3] == pytest.approx(0.0, abs=1e-6)
    assert sums[0] > 1.0  # scaled up: sparse rewards have a small per-token standard deviation


def test_masked_rescale_scales_without_shifting():
    from rl.train.ppo_math import masked_rescale, masked_var

    x, m = torch.tensor([0.0, 0.0, 0.0, 1.0, 5.0], dtype=torch.float64), torch.tensor([1, 1, 1, 1, 0], dtype=torch.float64)
    y = masked_rescale(x, m)
    std = math.sqrt(0.25 + 1e-8)  # unbiased variance of (0, 0, 0, 1) = 0.25
    assert y.tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0 / std, 0.0], abs=1e-12)
    assert masked_var(y, m).item() == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------ 2. temperature


def test_old_logprobs_use_the_sampling_temperature(model_path, monkeypatch, tmp_path):
    """Rollouts sampled at T = 0.7: the trainer's old (and reference) log probs are log softmax(logits / 0.7);
    before the fix they were at T = 1 (max gap to T = 0.7: 0.59 nats; now < 4e-7)."""
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    rs = generate(model, tok, [("p", "a"), ("q", "bc")], n=2, temperature=0.7, max_new_tokens=10, seed=1)
    rs = [r for r in rs if r.completion_ids]
    assert len(rs) >= 2
    at_07 = [_expected_logprobs(model, r, 0.7) for r in rs]
    at_1 = [_expected_logprobs(model, r, 1.0) for r in rs]
    trainer = PPOTrainer(model, tok, PPOConfig(ppo_epochs=1, minibatch_size=1, learning_rate=1e-9, kl_coef=0.0))
    calls = _spy(monkeypatch, "policy_loss")
    stats = trainer.step(rs, [[0.0] * (len(r.completion_ids) - 1) + [1.0] for r in rs])
    assert len(calls) == len(rs)
    for _, old, _, mask, _ in calls:
        row = old[0, : int(mask[0].sum())]
        gap_07, gap_1 = (min(((row - e).abs().max().item() for e in ref if len(e) == len(row)), default=1.0) for ref in (at_07, at_1))
        print(f"old log probs: max gap to log softmax(logits / 0.7): {gap_07:.2e}, to log softmax(logits): {gap_1:.2e}")
        assert gap_07 < 1e-5, row
        assert gap_1 > 1e-3
    # the stored sampling-time log probs are at T = 0.7 too, and the rollout file says so
    assert stats["logprob/rollout_mismatch_max"] < 1e-4
    assert all(r.temperature == 0.7 for r in rs)
    write_rollouts(tmp_path / "r.jsonl", rs)
    assert all(r.temperature == 0.7 for r in read_rollouts(tmp_path / "r.jsonl"))
    # a batch that mixes temperatures is rejected
    mixed = [rs[0], dataclasses.replace(rs[1], temperature=1.0)]
    with pytest.raises(ValueError, match="temperature"):
        trainer.step(mixed, [[0.0] * len(r.completion_ids) for r in mixed])


# ------------------------------------------------------------------------------ 3. --batch-size


def test_cli_batches_use_old_logprobs_from_before_any_update(model_path, monkeypatch, tmp_path):
    """``rl train --batch-size 2`` on 4 rollouts (2 PPO steps, minibatches of 1, lr 1e-2): every minibatch's old log
    probs are the policy's before the first update (LoRA B = 0: the base model's). Before the fix, the second
    step's were recomputed under the updated policy (max gap 0.42 nats; now < 5e-7)."""
    monkeypatch.setenv("RL_TORCH_THREADS", "1")
    base, tok = load_policy(model_path, None)
    rs = generate(base, tok, [("p", "a\n"), ("q", "bc\n")], n=2, temperature=1.0, max_new_tokens=10, seed=3)
    assert all(r.completion_ids for r in rs) and len({tuple(r.completion_ids) for r in rs}) == 4
    write_rollouts(tmp_path / "r.jsonl", rs)
    _write_line_rewards(rs, tmp_path / "w.jsonl")
    before = [_expected_logprobs(base, r, 1.0) for r in rs]
    calls = _spy(monkeypatch, "policy_loss")
    opts = ("--batch-size", "2", "--minibatch-size", "1", "--ppo-epochs", "2", "--learning-rate", "1e-2", "--kl-coef", "0")
    assert _train_cli(model_path, tmp_path, "out", *opts) == 0
    assert len(calls) == 2 * 2 * 2  # 2 steps x 2 epochs x 2 minibatches
    gaps = []
    for _, old, _, mask, _ in calls:
        row = old[0, : int(mask[0].sum())]
        gaps.append(min(((row - e).abs().max().item() for e in before if len(e) == len(row)), default=1.0))
    print("max gap of each minibatch's old log probs to the pre-update ones:", [f"{g:.2e}" for g in gaps])
    assert max(gaps) < 1e-5


# ------------------------------------------------------------------------------ 4. one packing


def _ratio_at_first_minibatch(model_path, monkeypatch, dtype) -> float:
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8), dtype=dtype)
    rs = generate(model, tok, [("p", "a"), ("q", "abcabcab")], n=4, temperature=1.0, max_new_tokens=12, seed=5)
    assert len({len(r.completion_ids) for r in rs}) > 2  # several paddings
    trainer = PPOTrainer(model, tok, PPOConfig(ppo_epochs=1, minibatch_size=4, grad_accum_steps=2, learning_rate=1e-9, seed=1))
    calls = _spy(monkeypatch, "policy_loss")
    stepped = []
    inner = trainer.optimizer.step

    def step(*a, **k):
        stepped.append(len(calls))
        return inner(*a, **k)

    trainer.optimizer.step = step
    trainer.step(rs, [[1.0] * len(r.completion_ids) for r in rs])
    first = calls[: stepped[0]]  # every micro-batch of the first minibatch (before any optimizer step)
    assert len(first) == 2
    return max(((new - old).exp() - 1).abs()[mask > 0].max().item() for new, old, _, mask, _ in first)


def test_ratio_is_one_at_the_first_minibatch(model_path, monkeypatch):
    """Old and new log probs come from identical batch layouts, so before the first optimizer step the PPO
    ratio is 1 for every token, in float32 and in bfloat16 (where a different padding shows: before the
    fix |ratio - 1| was up to 4.0e-3 in bfloat16, 2.4e-7 in float32; now exactly 0 in both)."""
    r32 = _ratio_at_first_minibatch(model_path, monkeypatch, torch.float32)
    r16 = _ratio_at_first_minibatch(model_path, monkeypatch, torch.bfloat16)
    print(f"max |ratio - 1| at the first minibatch: float32 {r32:.2e}, bfloat16 {r16:.2e}")
    assert r32 < 1e-5
    assert r16 < 1e-5


# ------------------------------------------------------------------------------ 5. seeded LoRA init


def test_cli_same_seed_same_adapter(model_path, monkeypatch, tmp_path):
    """Two ``rl train`` runs in one process with the same seed write identical adapters (the LoRA
    initialisation is seeded); before the fix the global RNG state decided it (max difference 0.35)."""
    from safetensors.torch import load_file

    monkeypatch.setenv("RL_TORCH_THREADS", "1")
    base, tok = load_policy(model_path, None)
    rs = generate(base, tok, [("p", "a\n")], n=3, temperature=1.0, max_new_tokens=8, seed=0)
    write_rollouts(tmp_path / "r.jsonl", rs)
    _write_line_rewards(rs, tmp_path / "w.jsonl")
    opts = ("--ppo-epochs", "1", "--minibatch-size", "3", "--seed", "7")
    assert _train_cli(model_path, tmp_path, "a", *opts) == 0
    torch.rand(10)  # whatever the global RNG state
    assert _train_cli(model_path, tmp_path, "b", *opts) == 0
    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max adapter difference between two runs with seed 7: {diff:.3e}")
    assert diff == 0.0


# ------------------------------------------------------------------------------ 6. empty completions


def test_only_empty_completions_is_a_no_op_step(model_path):
    """A batch of only empty completions: no error, zero tokens in the statistics, no parameter change
    (before the fix: ValueError "every completion is empty")."""
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    trainer = PPOTrainer(model, tok, PPOConfig(ppo_epochs=1, minibatch_size=2))
    rs = [_rollout(tok, f"e{i}", "ab", "") for i in range(3)]
    before = [p.detach().clone() for p in trainer.params]
    stats = trainer.step(rs, [[], [], []])
    assert stats["n_empty"] == 3 and stats["tokens/n"] == 0 and stats["tokens/mean_len"] == 0.0
    assert trainer.n_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(trainer.params, before))
    assert all(math.isfinite(v) for k, v in stats.items() if k not in ("value/explained_variance", "grad_norm"))


# ------------------------------------------------------------------------------ 7. credit on the wrong line


def _task1(tok):
    """Four samples of task 1, five lines each (prompt "h\\n" is line 1); sample 0's middle line (line 4) is
    wrong, the others have one wrong line or none. Per-token rewards in "lines" mode (signed, last token)."""
    from rl.crowd.rewards import token_lines, token_rewards
    from rl.policy.rollouts import compute_line_spans

    comps = ["abc\ndef\nggg\nabc\nhhb\n", "abc\ndef\nabc\nabc\nhhb\n", "aaa\nbbb\nccc\nddd\neee\n", "abh\ndef\nabc\ndda\nhhb\n"]
    posts = [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    rs, rewards = [], []
    for i, (c, post) in enumerate(zip(comps, posts)):
        ends, code = list(range(1, len(c) + 1)), "h\n" + c
        r = dataclasses.replace(
            _rollout(tok, f"s{i}", "h\n", c), prompt_id="task1", char_ends=ends, line_spans=compute_line_spans(code, 2, ends)
        )
        rs.append(r)
        rewards.append(token_rewards(r, {"program": r.program, "lines": [2, 3, 4, 5, 6], "posteriors": post}, "lines"))
    return rs, rewards, torch.tensor(token_lines(rs[0]))


def _line_means(trainer, rs, rewards, owners):
    """Mean advantage of each line (2..6) of sample 0 after one PPO step (the second step's prepare), and that batch."""
    trainer.update(trainer.prepare(rs, rewards))
    batch = trainer.prepare(rs, rewards)
    adv = batch.adv[0, : len(owners)]
    return [adv[owners == ln].mean().item() for ln in range(2, 7)], batch


def test_default_credit_lands_on_the_wrong_line(model_path):
    """Sample 0 of task 1: lines 2, 3, 5, 6 correct, line 4 wrong. After one PPO step with the default config, the
    wrong line's tokens have a negative advantage and every correct line's a positive one. Before the fix (GAE,
    lam 0.95, value clip 0.2, critic at V ~ 0, batch-whitened) the lambda-smeared returns put correct lines 3 and 6
    below the batch mean: mean advantages per line 0.44, -0.26, -1.12, 0.15, -0.62; now 0.41, 0.41, -2.32, 0.41, 0.41."""
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    rs, rewards, owners = _task1(tok)
    means, _ = _line_means(PPOTrainer(model, tok, PPOConfig(minibatch_size=4)), rs, rewards, owners)
    print("mean advantage of lines 2..6 of sample 0 (line 4 wrong):", [round(m, 3) for m in means])
    assert means[2] < 0
    assert all(m > 0 for i, m in enumerate(means) if i != 2)


def test_gae_with_a_fast_unclipped_critic_still_smears(model_path):
    """What the critic can do: with GAE, no value clip and a value-head learning rate of 1e-2, one step lifts the
    explained variance from 0 to ~0.12 but correct lines still get negative advantages (why "lines" is the default)."""
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    rs, rewards, owners = _task1(tok)
    cfg = PPOConfig(minibatch_size=4, advantage="gae", value_learning_rate=1e-2)
    trainer = PPOTrainer(model, tok, cfg)
    means, batch = _line_means(trainer, rs, rewards, owners)
    print("GAE, mean advantage of lines 2..6 of sample 0:", [round(m, 3) for m in means])
    assert means[2] < 0 and min(means[1], means[4]) < 0
    assert trainer.update(batch)["value/explained_variance"] > 0.05


def test_lines_step_moves_the_lora_weights_and_uses_the_kl_estimator(model_path, monkeypatch):
    torch.manual_seed(0)
    model, tok = load_policy(model_path, LoraSpec(r=4, alpha=8))
    rs, rewards, _ = _task1(tok)
    trainer = PPOTrainer(model, tok, PPOConfig(minibatch_size=2, advantage="lines", kl_estimator="k3", learning_rate=1e-2))
    calls = _spy(monkeypatch, "kl_penalty")
    lora = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    before = [p.detach().clone() for p in lora]
    stats = trainer.step(rs, rewards)
    assert calls[0][2] == "k3"
    assert max((p - q).abs().max().item() for p, q in zip(lora, before)) > 1e-4
    assert math.isfinite(stats["loss/total"]) and stats["advantages/mean"] < 0.5
