"""The reward file seam: every bad file is a clear error before training; token rewards by hand."""

import argparse
import json

import pytest

from crowdstat.io.rewards import RewardFileError, write_rewards
from rl.crowd.rewards import code_n_lines, load_rewards, token_rewards
from rl.policy.rollouts import Rollout, compute_line_spans

PROMPT = "def f(x):\n"  # line 1 (prompt only)
COMPLETION = "    y = x\n    return y\n"  # lines 2 and 3


def hand_rollout(program="f#0", prompt=PROMPT, completion=COMPLETION, eos=True):
    """One token per character (ids made up), plus an EOS token without text (as generate builds it)."""
    ids = list(range(10, 10 + len(completion))) + ([2] if eos else [])
    ends = list(range(1, len(completion) + 1)) + ([len(completion)] if eos else [])
    code = prompt + completion
    return Rollout(
        program=program,
        prompt_id=program.split("#")[0],
        prompt=prompt,
        completion=completion,
        code=code,
        prompt_ids=[5] * len(prompt),
        completion_ids=ids,
        logprobs=[-1.0] * len(ids),
        ref_logprobs=[-1.0] * len(ids),
        line_spans=compute_line_spans(code, len(prompt), ends),
        task_id="T/f",
        finish_reason="eos" if eos else "length",
        char_ends=ends,
    )


def record(program, lines, posteriors, n_lines=3, tau=0.5):
    k = len(lines)
    return {
        "program": program,
        "reward": sum(p > tau for p in posteriors) / k,
        "reward_soft": sum(posteriors) / k,
        "n_lines": n_lines,
        "n_annotated": k,
        "coverage": k / n_lines,
        "lines": lines,
        "posteriors": posteriors,
        "tau": tau,
        "method": "test",
    }


@pytest.fixture
def rollouts():
    return [hand_rollout("f#0"), hand_rollout("f#1", completion="    return x * 2\n")]


def test_hand_rollout_spans():
    r = hand_rollout()
    # line 2 = "    y = x\n" -> tokens 0..9; line 3 = "    return y\n" -> tokens 10..22, EOS (23) joins line 3
    assert r.line_spans == [(2, 0, 9), (3, 10, 23)]
    assert code_n_lines(r.code) == 3 and code_n_lines("a\nb") == 2 and code_n_lines("") == 0


def test_load_rewards_ok(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#1", [2], [0.9], n_lines=2), record("f#0", [2, 3], [0.8, 0.3])])
    recs = load_rewards(f, rollouts)
    assert set(recs) == {"f#0", "f#1"}
    assert recs["f#0"]["posteriors"] == [0.8, 0.3]


def test_rewards_for_other_rollouts(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#0", [2], [0.9]), record("f#1", [2], [0.9]), record("g#7", [2], [0.9])])
    with pytest.raises(RewardFileError, match=r"rewards.jsonl:3: program 'g#7' is not among the 2 rollouts"):
        load_rewards(f, rollouts)


def test_missing_program(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#0", [2], [0.9])])
    with pytest.raises(RewardFileError, match=r"no reward record for program 'f#1'"):
        load_rewards(f, rollouts)


def test_line_not_in_the_rollout(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#0", [2, 9], [0.9, 0.9], n_lines=9), record("f#1", [2], [0.9])])
    with pytest.raises(RewardFileError, match=r"program 'f#0': line 9 does not exist \(the code has 3 lines\)"):
        load_rewards(f, rollouts)


def test_prompt_line_is_an_error_unless_ignored(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#0", [1, 2], [0.1, 0.9]), record("f#1", [2], [0.9], n_lines=2)])
    with pytest.raises(RewardFileError, match=r"program 'f#0': line 1 is not a line of the completion"):
        load_rewards(f, rollouts)
    recs = load_rewards(f, rollouts, prompt_lines="ignore")
    # the prompt line gets no token; line 2's reward 2 * 0.9 - 1 lands on its newline (token 9)
    tr = token_rewards(rollouts[0], recs["f#0"], "lines")
    assert tr[9] == pytest.approx(0.8) and sum(abs(x) for x in tr) == pytest.approx(0.8)


def test_nan_reward_is_rejected(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    good = {"schema_version": 1, **record("f#1", [2], [0.9], n_lines=2)}
    bad = {"schema_version": 1, **record("f#0", [2, 3], [0.8, 0.3])}
    bad["posteriors"] = [0.8, float("nan")]
    f.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")  # json writes NaN
    with pytest.raises(RewardFileError, match=r":1: 'posteriors'\[1\]: expected a finite number"):
        load_rewards(f, rollouts)
    bad = {"schema_version": 1, **record("f#0", [2, 3], [0.8, 0.3]), "reward": float("nan")}
    f.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(RewardFileError, match=r":1: field 'reward'"):
        load_rewards(f, rollouts)


def test_schema_version_mismatch(tmp_path, rollouts):
    f = tmp_path / "rewards.jsonl"
    recs = [{"schema_version": 2, **record("f#0", [2], [0.9])}, {"schema_version": 2, **record("f#1", [2], [0.9])}]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(RewardFileError, match=r":1: field 'schema_version': expected 1, got 2"):
        load_rewards(f, rollouts)
    assert issubclass(RewardFileError, ValueError)


def test_rl_train_validates_rewards_before_loading_any_model(tmp_path, rollouts):
    """`rl train` reads and checks rollouts and rewards first: a bad reward file fails even though
    the model path does not exist (a model load, let alone a training step, never happens)."""
    pytest.importorskip("torch")
    from rl.policy.rollouts import write_rollouts
    from rl.train import ppo_cli

    write_rollouts(tmp_path / "r.jsonl", rollouts)
    write_rewards(tmp_path / "w.jsonl", [record("f#0", [2], [0.9])])  # f#1 missing
    parser = argparse.ArgumentParser()
    ppo_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(tmp_path / "no-such-model"),
            "--rollouts",
            str(tmp_path / "r.jsonl"),
            "--rewards",
            str(tmp_path / "w.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    with pytest.raises(RewardFileError, match="no reward record for program 'f#1'"):
        ppo_cli.run(args)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ token rewards by hand


def test_token_rewards_each_mode():
    r = hand_rollout()
    n = len(r.completion_ids)  # 24: 23 characters + EOS
    rec = record("f#0", [2, 3], [0.8, 0.3])  # reward = 1/2 (tau 0.5), reward_soft = 0.55
    prog = token_rewards(r, rec, "program")
    assert len(prog) == n and prog[-1] == 0.5 and not any(prog[:-1])
    soft = token_rewards(r, rec, "soft")
    assert soft[-1] == pytest.approx(0.55) and not any(soft[:-1])
    lines = token_rewards(r, rec, "lines")
    want = [0.0] * n
    want[9] = 2 * 0.8 - 1  # end of line 2: its newline
    want[22] = 2 * 0.3 - 1  # end of line 3: its newline (EOS, token 23, belongs to no line)
    assert lines == pytest.approx(want, abs=1e-12)
    post = token_rewards(r, rec, "lines", line_reward="posterior")
    assert (post[9], post[22]) == pytest.approx((0.8, 0.3))
    mean = token_rewards(r, rec, "lines", line_reward="signed_mean")
    assert (mean[9], mean[22]) == pytest.approx((0.3, -0.2))


def test_signed_mean_counts_completion_lines_only(tmp_path, rollouts):
    """signed_mean divides by the number of annotated *completion* lines: a prompt line accepted with
    prompt_lines="ignore" gets no reward and must not shrink the others."""
    f = tmp_path / "rewards.jsonl"
    write_rewards(f, [record("f#0", [1, 2, 3], [0.1, 0.9, 0.6]), record("f#1", [2], [0.9], n_lines=2)])
    rec = load_rewards(f, rollouts, prompt_lines="ignore")["f#0"]
    tr = token_rewards(rollouts[0], rec, "lines", line_reward="signed_mean")
    assert (tr[9], tr[22]) == pytest.approx((0.8 / 2, 0.2 / 2))  # k = 2 completion lines, not 3
    assert sum(tr) == pytest.approx((0.8 + 0.2) / 2)


def test_token_rewards_line_of_a_prompt_without_newline():
    # the completion continues prompt line 1: "def f(x): return x\n" is line 1, then line 2 "# end"
    r = hand_rollout(prompt="def f(x):", completion=" return x\n# end", eos=False)
    assert r.line_spans == [(1, 0, 9), (2, 10, 14)]
    tr = token_rewards(r, record("f#0", [1, 2], [1.0, 0.0], n_lines=2), "lines")
    assert tr[9] == 1.0 and tr[14] == -1.0 and sum(map(abs, tr)) == 2.0


def test_token_rewards_errors():
    r = hand_rollout()
    with pytest.raises(ValueError, match="mode must be one of"):
        token_rewards(r, record("f#0", [2], [0.5]), "dense")
    with pytest.raises(ValueError, match="record of program 'g#0' given for rollout 'f#0'"):
        token_rewards(r, record("g#0", [2], [0.5]), "lines")
