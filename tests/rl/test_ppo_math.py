"""PPO math against hand-computed numbers and an independent plain-Python oracle."""

import math
import random

import pytest

torch = pytest.importorskip("torch")

from rl.train.ppo import gae, kl_penalty, masked_mean, masked_var, masked_whiten, policy_loss, value_loss  # noqa: E402

T64 = dict(dtype=torch.float64)


def t(x):
    return torch.tensor(x, **T64)


# --------------------------------------------------------------------------------------- GAE


def test_gae_three_tokens_by_hand():
    # gamma = 0.9, lam = 0.8, rewards (0, 0, 1), values (0.5, 0.4, 0.6); V after the end = 0
    # delta2 = 1 - 0.6 = 0.4                    A2 = 0.4
    # delta1 = 0.9 * 0.6 - 0.4 = 0.14           A1 = 0.14 + 0.72 * 0.4 = 0.428
    # delta0 = 0.9 * 0.4 - 0.5 = -0.14          A0 = -0.14 + 0.72 * 0.428 = 0.16816
    adv, ret = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.4, 0.6]), t([1.0, 1.0, 1.0]), gamma=0.9, lam=0.8)
    assert adv.tolist() == pytest.approx([0.16816, 0.428, 0.4], abs=1e-12)
    assert ret.tolist() == pytest.approx([0.66816, 0.828, 1.0], abs=1e-12)


def test_gae_gamma_one_lam_one_is_return_minus_value():
    # gamma = lam = 1: A_t = sum_{s >= t} r_s - V_t (Monte Carlo), returns = reward-to-go
    r, v = t([0.5, -1.0, 0.0, 2.0]), t([0.1, 0.2, 0.3, 0.4])
    adv, ret = gae(r, v, torch.ones(4, **T64), gamma=1.0, lam=1.0)
    assert ret.tolist() == pytest.approx([1.5, 1.0, 2.0, 2.0], abs=1e-12)
    assert adv.tolist() == pytest.approx([1.4, 0.8, 1.7, 1.6], abs=1e-12)


def test_gae_padding_and_holes_are_skipped():
    r, v = t([0.0, 0.0, 1.0]), t([0.5, 0.4, 0.6])
    ref_adv, ref_ret = gae(r, v, torch.ones(3, **T64), gamma=0.9, lam=0.8)
    # right padding with garbage
    adv, ret = gae(t([0.0, 0.0, 1.0, 99.0]), t([0.5, 0.4, 0.6, -7.0]), t([1, 1, 1, 0]), gamma=0.9, lam=0.8)
    assert adv[:3].tolist() == pytest.approx(ref_adv.tolist(), abs=1e-12)
    assert ret[:3].tolist() == pytest.approx(ref_ret.tolist(), abs=1e-12)
    assert adv[3].item() == 0.0 and ret[3].item() == 0.0
    # a masked hole in the middle (and left padding)
    adv, _ = gae(t([5.0, 0.0, 3.0, 0.0, 1.0]), t([9.0, 0.5, 8.0, 0.4, 0.6]), t([0, 1, 0, 1, 1]), gamma=0.9, lam=0.8)
    assert adv.tolist() == pytest.approx([0.0, 0.16816, 0.0, 0.428, 0.4], abs=1e-12)


def _gae_oracle(rewards, values, length, gamma, lam):
    """Plain-Python GAE over the first `length` entries of one row (lists of floats)."""
    adv = [0.0] * len(rewards)
    running = 0.0
    for i in reversed(range(length)):
        next_value = values[i + 1] if i + 1 < length else 0.0
        delta = rewards[i] + gamma * next_value - values[i]
        running = delta + gamma * lam * running
        adv[i] = running
    ret = [adv[i] + values[i] if i < length else 0.0 for i in range(len(rewards))]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.5, 0.0), (1.0, 1.0)])
def test_gae_matches_plain_python_loop(gamma, lam):
    rng = random.Random(7)
    B, T = 5, 9
    lengths = [9, 1, 4, 7, 2]
    R = [[rng.gauss(0, 1) for _ in range(T)] for _ in range(B)]
    V = [[rng.gauss(0, 1) for _ in range(T)] for _ in range(B)]
    M = [[1.0 if j < n else 0.0 for j in range(T)] for n in lengths]
    adv, ret = gae(t(R), t(V), t(M), gamma=gamma, lam=lam)
    for b in range(B):
        a_ref, r_ref = _gae_oracle(R[b], V[b], lengths[b], gamma, lam)
        assert adv[b].tolist() == pytest.approx(a_ref, abs=1e-12)
        assert ret[b].tolist() == pytest.approx(r_ref, abs=1e-12)


def test_gae_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 0.95)


# --------------------------------------------------------------------------------------- losses


def test_policy_loss_by_hand():
    # ratios 1.5, 0.5, 1.1, 0.5 (and one masked token); advantages 1, 1, -2, -1; clip 0.2
    # tok0: max(-1.5, -1.2) = -1.2 (clipped)   tok1: max(-0.5, -0.8) = -0.5
    # tok2: max(2.2, 2.2)   =  2.2             tok3: max(0.5, 0.8)   =  0.8 (clipped)
    ratios = [1.5, 0.5, 1.1, 0.5, 50.0]
    new = t([math.log(x) for x in ratios])
    old = torch.zeros(5, **T64)
    adv = t([1.0, 1.0, -2.0, -1.0, 1000.0])
    mask = t([1, 1, 1, 1, 0])
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2 + 0.8) / 4, abs=1e-12)
    assert clipfrac.item() == pytest.approx(2 / 4, abs=0)
    k3 = [(r - 1) - math.log(r) for r in ratios[:4]]
    assert approx_kl.item() == pytest.approx(sum(k3) / 4, abs=1e-12)


def test_policy_loss_gradient_is_zero_where_clipped():
    new = t([math.log(1.5), math.log(0.9)]).requires_grad_()
    loss, _, _ = policy_loss(new, torch.zeros(2, **T64), t([1.0, 1.0]), t([1, 1]), clip_range=0.2)
    loss.backward()
    # token 0 is clipped (ratio 1.5 > 1.2 with A > 0): no gradient; token 1: d/dlogp (-A r / 2) = -0.9 / 2
    assert new.grad.tolist() == pytest.approx([0.0, -0.45], abs=1e-12)


def test_value_loss_by_hand():
    # old (0, 1), new (0.5, 0.9), returns (1, 0), clip 0.2
    # tok0: clipped value 0.2 -> max(0.25, 0.64) = 0.64;  tok1: clipped 0.9 -> max(0.81, 0.81) = 0.81
    loss = value_loss(t([0.5, 0.9, 7.0]), t([0.0, 1.0, 0.0]), t([1.0, 0.0, -9.0]), t([1, 1, 0]), clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-12)


# --------------------------------------------------------------------------------------- KL


@pytest.mark.parametrize("p,q", [([0.5, 0.3, 0.2], [0.25, 0.25, 0.5]), ([0.9, 0.1], [0.6, 0.4])])
def test_kl_estimators_expectations_match_closed_form(p, q):
    """Sampling x ~ p: E[k1] = E[k3] = KL(p || q); E[k2] = 0.5 E[(log p/q)^2]."""
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    lp, lq, w = t([math.log(x) for x in p]), t([math.log(x) for x in q]), t(p)
    assert (w * kl_penalty(lp, lq, "k1")).sum().item() == pytest.approx(kl, abs=1e-12)
    assert (w * kl_penalty(lp, lq, "k3")).sum().item() == pytest.approx(kl, abs=1e-12)
    k2 = 0.5 * sum(pi * math.log(pi / qi) ** 2 for pi, qi in zip(p, q))
    assert (w * kl_penalty(lp, lq, "k2")).sum().item() == pytest.approx(k2, abs=1e-12)
    # k3 is non-negative per sample, k1 is not
    assert (kl_penalty(lp, lq, "k3") >= 0).all()
    assert (kl_penalty(lp, lq, "k1") < 0).any()


def test_kl_values_by_hand_and_bad_kind():
    # log p - log q = ln 2: k1 = ln 2, k3 = 1/2 - 1 + ln 2
    v1 = kl_penalty(t([math.log(0.5)]), t([math.log(0.25)]), "k1").item()
    v3 = kl_penalty(t([math.log(0.5)]), t([math.log(0.25)]), "k3").item()
    assert v1 == pytest.approx(math.log(2), abs=1e-12)
    assert v3 == pytest.approx(0.5 - 1 + math.log(2), abs=1e-12)
    with pytest.raises(ValueError, match="k1"):
        kl_penalty(t([0.0]), t([0.0]), "k9")


# --------------------------------------------------------------------------------------- whitening


def test_masked_whiten_by_hand():
    x, m = t([1.0, 2.0, 3.0, 4.0, 100.0]), t([1, 1, 1, 1, 0])
    assert masked_mean(x, m).item() == pytest.approx(2.5, abs=1e-12)
    assert masked_var(x, m).item() == pytest.approx(5 / 3, abs=1e-12)  # unbiased
    std = math.sqrt(5 / 3 + 1e-8)
    w = masked_whiten(x, m)
    assert w.tolist() == pytest.approx([(v - 2.5) / std for v in (1, 2, 3, 4)] + [0.0], abs=1e-12)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, m).item() == pytest.approx(1.0, abs=1e-7)
    ws = masked_whiten(x, m, shift_mean=False)
    assert ws.tolist() == pytest.approx([(v - 2.5) / std + 2.5 for v in (1, 2, 3, 4)] + [0.0], abs=1e-12)


# ------------------------------------------------------------------------------ "lines" advantages


def test_line_advantages_two_prompts_three_samples_by_hand():
    from rl.train.ppo_math import line_advantages

    # group A: A0 lines {1: +1, 2: -1}; A1 line {1: +1}, tokens 2-3 in no line; A2 no rewarded line (score on a
    # token of no line) -> program reward. Lines of A: (1, -1, 1), mean 1/3, sd 2/sqrt(3); programs (0, 1, 0.5), mean 0.5, sd 0.5.
    # group B (B0 padded to 2 tokens): lines (2, 1, 1, -1), mean 0.75, sd sqrt(4.75 / 3); programs (2, 2, -1).
    scores = t([[0, 1, 0, -1], [0, 1, 0, 0], [0, 0, 0, 0.5], [0, 2, 9, 9], [1, 0, 0, 1], [0, 0, 0, -1]])
    owners = t([[1, 1, 2, 2], [1, 1, 0, 0], [1, 1, 2, 0], [1, 1, 1, 1], [1, 2, 2, 2], [3, 3, 3, 3]])
    mask = t([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    groups = ["A", "A", "A", "B", "B", "B"]
    adv = line_advantages(scores * mask, scores, owners, mask, groups, std=True, eps=0.0)
    sa, sb = 2 / math.sqrt(3), math.sqrt(4.75 / 3)
    a1, a2 = (1 - 1 / 3) / sa, (-1 - 1 / 3) / sa
    b = [(2 - 0.75) / sb, (1 - 0.75) / sb, (-1 - 0.75) / sb]
    expected = [[a1, a1, a2, a2], [a1, a1, 1.0, 1.0], [0.0] * 4, [b[0], b[0], 0, 0], [b[1]] * 4, [b[2]] * 4]
    assert adv.tolist() == [pytest.approx(row, abs=1e-12) for row in expected]
    # without the std: differences to the group means; line rewards are sums of the (KL-penalised) rewards
    adv = line_advantages((scores - 0.1) * mask, scores, owners, mask, groups, std=False)
    assert adv[0].tolist() == pytest.approx([0.8 - (0.8 - 1.2 + 0.8) / 3] * 2 + [-1.2 - 0.4 / 3] * 2, abs=1e-12)
    assert adv[2].tolist() == pytest.approx([0.1 - (-0.4 + 0.6 + 0.1) / 3] * 4, abs=1e-12)
    with pytest.raises(ValueError, match="group"):
        line_advantages(scores, scores, owners, mask, groups[:5])


def test_value_loss_without_clip():
    loss = value_loss(t([0.5, 0.9, 7.0]), t([0.0, 1.0, 0.0]), t([1.0, 0.0, -9.0]), t([1, 1, 0]), clip_range_value=None)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.81) / 2, abs=1e-12)


# ------------------------------------------------------------------- entropy, lr schedule


def test_entropy_of_a_uniform_distribution_is_log_v():
    from rl.train.ppo_math import entropy_from_logits

    for V in (2, 13, 1000):
        logits = torch.full((3, 4, V), 0.7)
        for T in (1.0, 0.6):
            h = entropy_from_logits(logits, T)
            assert h.shape == (3, 4)
            assert torch.allclose(h, torch.full((3, 4), math.log(V)), atol=1e-5)
    # a one-hot-like distribution has entropy ~0; a hand-computed two-token one: p = (e/(1+e), 1/(1+e))
    assert float(entropy_from_logits(torch.tensor([[[100.0, 0.0, 0.0]]]))) == pytest.approx(0.0, abs=1e-5)
    p = math.e / (1 + math.e)
    expect = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(entropy_from_logits(torch.tensor([[[1.0, 0.0]]]))) == pytest.approx(expect, abs=1e-6)
    # at temperature T the entropy is that of softmax(logits / T)
    assert float(entropy_from_logits(torch.tensor([[[2.0, 0.0]]]), 2.0)) == pytest.approx(expect, abs=1e-6)


def test_lr_factor_formulas():
    from rl.train.ppo_math import lr_factor

    assert [lr_factor(k, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_factor(k, 0, "linear", None) for k in range(3)] == [1.0, 1.0, 1.0]  # no total: constant
    # linear over total 10 after 2 warmup steps: 1 - (k - 2) / 8, floored at 0
    assert [lr_factor(k, 2, "linear", 10) for k in (0, 1, 2, 6, 10, 12)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert [lr_factor(k, 0, "cosine", 8) for k in (0, 2, 4, 8, 9)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.0, 0.0], abs=1e-12
    )
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 0, "step")
