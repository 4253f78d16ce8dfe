"""crowdstat line rewards in verl (rl.integrations.verl_reward, docs/verl.md).

The reference is the project's PPO: ``rl train``'s path (load_rewards -> token_rewards ->
``PPOTrainer.prepare(...).scores``, the (B, C) per-token scores PPO trains on) on real rollouts of a
tiny model, and an independent character-level placement for the character tokenizer. In the main
venv (no verl) the batch is verl's layout built by hand; in the verl venv (``make test-verl``) it is
a real ``DataProto`` through the managers as verl resolves them.
"""

import asyncio
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from crowdstat.io.rewards import RewardFileError, write_rewards  # noqa: E402
from rl.crowd.rewards import load_rewards, token_rewards  # noqa: E402
from rl.integrations.verl_reward import (  # noqa: E402
    CrowdRewardSettings,
    CrowdTokenRewards,
    RewardIndex,
    batch_rows,
    rollout_key,
    rollout_view,
)
from rl.policy.models import LoraSpec, build_tiny_model, load_policy, train_char_tokenizer  # noqa: E402
from rl.policy.rollouts import generate, pack  # noqa: E402
from rl.train.ppo import PPOConfig, PPOTrainer  # noqa: E402
from tests.rl_helpers import reward_record  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [("p0", "ab\n"), ("p1", "c d\n  e\n")]


def _has_verl() -> bool:
    try:
        import verl  # noqa: F401
    except ImportError:
        return False
    return True


needs_verl = pytest.mark.skipif(not _has_verl(), reason="verl is not installed (make test-verl runs these in .venv-verl)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model, 10 real rollouts, and a rewards.jsonl with random posteriors (prompt line 1 included)."""
    root = tmp_path_factory.mktemp("verl")
    tok = train_char_tokenizer(["abcde \n:()"], root / "tok")
    path = build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)
    torch.manual_seed(0)
    model, tok = load_policy(path, LoraSpec(r=4, alpha=8))
    rollouts = generate(model, tok, PROMPTS, n=5, temperature=1.0, max_new_tokens=24, seed=3)
    rng = random.Random(0)
    records = []
    for r in rollouts:
        lines = sorted({1} | {ln for ln, _, _ in r.line_spans})
        post = [round(rng.random(), 3) for _ in lines]
        records.append(reward_record(r.program, lines, post, r.code.count("\n") + 1))
    write_rewards(root / "rewards.jsonl", records)
    return {"root": root, "tok": tok, "model": model, "rollouts": rollouts, "rewards": root / "rewards.jsonl"}


def ppo_scores(run, **cfg) -> torch.Tensor:
    """What the project's PPO trains on for this rewards file: rl train's path, up to prepare().scores."""
    config = PPOConfig(reward_mode=cfg.pop("reward_mode", "lines"), seed=0, **cfg)
    records = load_rewards(run["rewards"], run["rollouts"], prompt_lines="ignore")
    kw = dict(line_reward=config.line_reward, credit=config.line_credit, missing_eos_penalty=config.missing_eos_penalty)
    rewards = [token_rewards(r, records[r.program], config.reward_mode, **kw) for r in run["rollouts"]]
    trainer = PPOTrainer(run["model"], run["tok"], config)
    return trainer.prepare(run["rollouts"], rewards).scores.cpu()


def verl_tensors(run, rollouts=None) -> dict:
    """verl's batch layout: prompts left-padded, responses right-padded, one attention mask."""
    rollouts = rollouts or run["rollouts"]
    p = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], run["tok"].pad_token_id)
    P = p["P"]
    return {"prompts": p["input_ids"][:, :P], "responses": p["input_ids"][:, P:], "attention_mask": p["attention_mask"]}


def keyed(run) -> dict:
    return {"program": np.array([r.program for r in run["rollouts"]], dtype=object)}


def crowd(run, **kw) -> CrowdTokenRewards:
    kw.setdefault("prompt_lines", "ignore")
    return CrowdTokenRewards(run["tok"], CrowdRewardSettings(rewards=str(run["rewards"]), **kw))


def char_reference(run) -> torch.Tensor:
    """Independent placement for a character tokenizer (one character per token): line j's 2P - 1 goes
    on the last completion token whose character lies on line j (its newline included); a token that
    decodes to nothing (EOS, a sampled special token) owns none."""
    rollouts, tok = run["rollouts"], run["tok"]
    recs = {json.loads(x)["program"]: json.loads(x) for x in run["rewards"].read_text().splitlines()}
    out = torch.zeros(len(rollouts), max(len(r.completion_ids) for r in rollouts))
    for b, r in enumerate(rollouts):
        rec = recs[r.program]
        last, pos = {}, len(r.prompt)
        for k, t in enumerate(r.completion_ids):
            text = tok.decode([t], skip_special_tokens=True)  # one character, or none (a special token)
            assert len(text) <= 1
            if text:
                last[r.code[:pos].count("\n") + 1] = k
                pos += 1
        for ln, p in zip(rec["lines"], rec["posteriors"]):
            if ln in last and ln > r.prompt.count("\n"):
                out[b, last[ln]] += 2 * p - 1
    return out


# --------------------------------------------------------------------------- main venv: the placement


def test_views_of_verl_rows_are_the_rollouts(run):
    t = verl_tensors(run)
    eos = {run["tok"].eos_token_id}
    assert any(r.finish_reason == "eos" for r in run["rollouts"]) and any(r.finish_reason == "length" for r in run["rollouts"])
    assert sum(len(r.line_spans) > 1 for r in run["rollouts"]) >= 3  # multi-line completions
    for r, (p, c) in zip(run["rollouts"], batch_rows(t["prompts"], t["responses"], t["attention_mask"])):
        assert (p, c) == (r.prompt_ids, r.completion_ids)
        v = rollout_view(run["tok"], r.program, p, c, eos=eos)
        assert (v.prompt, v.completion, v.code) == (r.prompt, r.completion, r.code)
        assert (v.char_ends, v.line_spans, v.finish_reason) == (r.char_ends, r.line_spans, r.finish_reason)


def test_token_rewards_equal_the_ppo_scores(run):
    t = verl_tensors(run)
    got, info = crowd(run).tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    want = ppo_scores(run)
    assert got.shape == want.shape == t["responses"].shape
    assert torch.equal(got, want)
    assert torch.allclose(got, char_reference(run), atol=1e-6)
    assert (got != 0).sum() >= 10  # real line rewards, not an all-zero agreement
    assert info["crowd_reward"] == pytest.approx(want.sum(-1).tolist(), abs=1e-5)


@pytest.mark.parametrize(
    "kw",
    [dict(line_credit="spread"), dict(line_reward="signed_mean"), dict(reward_mode="program", missing_eos_penalty=0.5)],
)
def test_other_reward_settings_equal_the_ppo_scores(run, kw):
    t = verl_tensors(run)
    got, _ = crowd(run, **kw).tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    assert torch.allclose(got, ppo_scores(run, **kw), atol=1e-6)


def test_content_keys_without_a_key_field(run, tmp_path):
    t = verl_tensors(run)
    rows = batch_rows(t["prompts"], t["responses"], t["attention_mask"])
    recs = [json.loads(x) for x in run["rewards"].read_text().splitlines()]
    for rec, (p, c) in zip(recs, rows):
        rec["program"] = rollout_key(p, c)
        rec.pop("schema_version")
    write_rewards(tmp_path / "w.jsonl", recs)
    s = CrowdRewardSettings(rewards=str(tmp_path / "w.jsonl"), prompt_lines="ignore")
    got, _ = CrowdTokenRewards(run["tok"], s).tensor(t["prompts"], t["responses"], t["attention_mask"], {})
    assert torch.equal(got, ppo_scores(run))
    assert rollout_key([1, 2], [3]) != rollout_key([1], [2, 3])


def test_missing_rollout_is_a_one_line_error(run, tmp_path):
    lines = run["rewards"].read_text().splitlines()
    (tmp_path / "w.jsonl").write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    t = verl_tensors(run)
    c = CrowdTokenRewards(run["tok"], CrowdRewardSettings(rewards=str(tmp_path / "w.jsonl"), prompt_lines="ignore"))
    with pytest.raises(RewardFileError) as e:
        c.tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "w.jsonl") in msg and repr(run["rollouts"][3].program) in msg and "batch row 3" in msg


def test_prompt_lines_error_names_file_and_line(run):
    t = verl_tensors(run)
    with pytest.raises(RewardFileError) as e:
        crowd(run, prompt_lines="error").tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    assert "\n" not in str(e.value) and f"{run['rewards']}:1: field 'lines'" in str(e.value)


def test_the_file_is_read_again_when_it_changes(run, tmp_path):
    recs = [json.loads(x) for x in run["rewards"].read_text().splitlines()]
    for r in recs:
        r.pop("schema_version")
    write_rewards(tmp_path / "w.jsonl", recs)
    t = verl_tensors(run)
    c = CrowdTokenRewards(run["tok"], CrowdRewardSettings(rewards=str(tmp_path / "w.jsonl"), prompt_lines="ignore"))
    a, _ = c.tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    for r in recs:
        r["posteriors"] = [1.0 - p for p in r["posteriors"]]
    write_rewards(tmp_path / "w.jsonl", recs)
    b, _ = c.tensor(t["prompts"], t["responses"], t["attention_mask"], keyed(run))
    assert torch.allclose(a, -b, atol=1e-6) and (a != 0).any()  # 2(1 - P) - 1 = -(2P - 1)


def test_bad_settings_are_one_line_errors():
    for kw, part in [
        ({}, "exactly one of"),
        ({"rewards": "w.jsonl", "source": "true_lines"}, "exactly one of"),
        ({"rewards": "w.jsonl", "line_credit": "first"}, "line_credit"),
        ({"source": "nope"}, "source"),
        ({"rewards": "w.jsonl", "missing_eos_penalty": -1}, "missing_eos_penalty"),
    ]:
        with pytest.raises(ValueError, match=part):
            CrowdRewardSettings(**kw)
    with pytest.raises(ValueError, match="unknown key 'rewardz'"):
        CrowdRewardSettings.from_mapping({"rewardz": "w.jsonl"})
    with pytest.raises(RewardFileError, match="no such file"):
        RewardIndex("/nonexistent/w.jsonl").record("x", 0, "program")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.integers(4, 9), min_size=1, max_size=5), st.lists(st.integers(4, 9), max_size=6)), min_size=1, max_size=4
    )
)
def test_batch_rows_undo_verl_padding(rows):
    p = pack([a for a, _ in rows], [b for _, b in rows], 0)
    P = p["P"]
    assert batch_rows(p["input_ids"][:, :P], p["input_ids"][:, P:], p["attention_mask"]) == rows


def test_crowd_pipeline_source_on_a_batch(tmp_path):
    """``source="true_lines"``: the sandbox and the line truth on each row; the rewards land on the last token
    of every annotated line of the problem's program (+1 for the canonical solution's lines)."""
    from rl.tasks.benchmarks import load

    probs = load("synthetic", split="heldout")[:2]
    texts = [p.prompt + p.canonical_solution for p in probs]
    tok = train_char_tokenizer(texts, tmp_path / "tok")
    eos = tok.eos_token_id
    bad = probs[1].canonical_solution.replace("return", "return 1 +", 1)
    resp = [tok.encode(probs[0].canonical_solution) + [eos], tok.encode(bad) + [eos]]
    p = pack([tok.encode(q.prompt) for q in probs], resp, tok.pad_token_id)
    P = p["P"]
    s = CrowdRewardSettings(source="true_lines", benchmark="synthetic", split="heldout", workdir=str(tmp_path / "crowd"))
    got, info = CrowdTokenRewards(tok, s).tensor(
        p["input_ids"][:, :P], p["input_ids"][:, P:], p["attention_mask"], {"task_id": np.array([q.task_id for q in probs])}
    )
    assert (tmp_path / "crowd" / "verl-000001" / "rewards.jsonl").is_file()
    n0 = len(probs[0].program(probs[0].canonical_solution).splitlines()) - len(probs[0].prompt.splitlines())
    assert got[0].sum().item() == pytest.approx(info["crowd_lines"][0]) and info["crowd_lines"][0] >= min(n0, 1)
    assert (got[0] >= 0).all() and (got[1] < 0).any()  # the canonical program: every line right; the bug: one wrong
    with pytest.raises(ValueError, match="batch row 0 has no field 'task_id'"):
        CrowdTokenRewards(tok, s).tensor(p["input_ids"][:, :P], p["input_ids"][:, P:], p["attention_mask"], {})


# --------------------------------------------------------------------------- verl venv: the managers


def dataproto(run, non_tensor=None):
    from verl import DataProto

    return DataProto.from_dict(tensors=verl_tensors(run), non_tensors=non_tensor if non_tensor is not None else keyed(run))


@needs_verl
def test_batch_manager_from_verls_registry(run):
    from verl.workers.reward_manager import get_reward_manager_cls

    import rl.integrations.verl_reward as vr

    vr.verl_classes()
    cls = get_reward_manager_cls(vr.NAME)
    mgr = cls(run["tok"], 0, rewards=str(run["rewards"]), prompt_lines="ignore")
    want = ppo_scores(run)
    assert torch.equal(mgr(dataproto(run)), want)
    out = mgr(dataproto(run), return_dict=True)
    assert torch.equal(out["reward_tensor"], want) and len(out["reward_extra_info"]["crowd_lines"]) == len(run["rollouts"])
    with pytest.raises(RewardFileError, match="no reward record for rollout 'verl-"):
        mgr(dataproto(run, {}))  # no key field: content keys, which this file does not hold


@needs_verl
def test_reward_loop_manager_as_verl_loads_it(run):
    """verl 0.9.1's reward loop: load_reward_manager from the config (source importlib, pkg:// path),
    run_single per sample, the trainer's scalar on the last response token = the row sum of PPO's scores."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import load_reward_manager

    cfg = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": None, "name": "compute_score"},
                "reward_manager": {
                    "source": "importlib",
                    "name": "CrowdLineRewardLoopManager",
                    "module": {"path": "pkg://rl.integrations.verl_reward", "name": "custom_reward_manager"},
                },
                "sandbox_fusion": {"url": None},
                "crowdstat": {"rewards": str(run["rewards"]), "prompt_lines": "ignore"},
            }
        }
    )
    mgr = load_reward_manager(cfg, run["tok"])
    data = dataproto(run)

    async def all_rows():
        return [await mgr.run_single(data[i : i + 1]) for i in range(len(data))]

    outs = asyncio.run(all_rows())
    rm = type(mgr).assemble_rm_scores(data, [o["reward_score"] for o in outs])
    want = ppo_scores(run)
    last = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1) - 1
    assert torch.allclose(rm.sum(-1), want.sum(-1), atol=1e-5)
    assert torch.allclose(rm[torch.arange(len(data)), last], want.sum(-1), atol=1e-5)


@needs_verl
def test_agent_loop_hook_sets_token_level_rm_scores(run):
    """CrowdAgentLoopManager's post-processing on a generated DataProto: rm_scores = PPO's scores."""
    import rl.integrations.verl_reward as vr

    out = dataproto(run, {})
    prompts = dataproto(run)  # the generation input carries the keys, row-aligned with the output
    vr.with_token_rewards(crowd(run), prompts, out)
    assert torch.equal(out.batch["rm_scores"], ppo_scores(run))
    assert set(out.meta_info["reward_extra_keys"]) == {"crowd_reward", "crowd_lines"}
    assert issubclass(vr.CrowdAgentLoopManager, __import__("verl.experimental.agent_loop", fromlist=["x"]).AgentLoopManager)


@needs_verl
def test_agent_loop_manager_generate_sequences(run):
    """CrowdAgentLoopManager.generate_sequences through verl's own AgentLoopManager code, its Ray workers
    replaced by one that returns the rollouts as generated rows: rm_scores = PPO's scores."""
    from types import SimpleNamespace

    import rl.integrations.verl_reward as vr

    async def generated(chunk):
        out = dataproto(run, {})
        zero = dict(generate_sequences=0.0, tool_calls=0.0, compute_score=0.0, num_preempted=0)
        out.meta_info["metrics"] = [zero] * len(out)
        return out

    mgr = object.__new__(vr.CrowdAgentLoopManager)
    mgr.agent_loop_workers = [SimpleNamespace(generate_sequences=SimpleNamespace(remote=generated))]
    mgr._crowd = crowd(run)
    out = mgr.generate_sequences(dataproto(run))  # synchronous, as the trainer calls it
    assert torch.equal(out.batch["rm_scores"], ppo_scores(run))
    assert "agent_loop/generate_sequences/mean" in out.meta_info["timing"]


@needs_verl
def test_verl_0_9_trainer_has_no_cpu_rollout():
    """Why verl's PPO step cannot run here: 0.9.1's trainer samples through an async rollout server and
    registers only vLLM, SGLang and TensorRT-LLM (GPU engines, not installed); HFRollout is not registered."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class

    assert {name for name, _ in _ROLLOUT_REGISTRY} == {"vllm", "sglang", "trtllm"}
    with pytest.raises(AssertionError, match="Rollout hf with mode async not found"):
        get_rollout_class("hf", "async")


@needs_verl
def test_the_example_config_composes_and_names_our_classes(run):
    """rl/integrations/verl_ppo_lora.yaml on verl's config tree: LoRA on, the two classes resolve, the
    crowdstat block parses (with the rewards file given as on the command line)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import resolve_reward_manager_cls
    from verl.utils.import_utils import load_class_from_fqn

    import rl.integrations.verl_reward as vr

    here = Path(vr.__file__).parent
    with initialize_config_dir(config_dir=str(here), version_base=None):
        over = ["actor_rollout_ref.model.path=/m", f"+reward.crowdstat.rewards={run['rewards']}", "reward.crowdstat.workdir=/w"]
        cfg = compose("verl_ppo_lora", overrides=over)
    assert cfg.actor_rollout_ref.model.lora_rank > 0 and cfg.algorithm.adv_estimator == "gae"
    assert cfg.trainer.use_v1 is False  # RayPPOTrainer: its agent loop returns the batch the hook rewards
    assert resolve_reward_manager_cls(cfg) is vr.CrowdLineRewardLoopManager
    assert load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class) is vr.CrowdAgentLoopManager
    s = vr._settings_of(cfg, {})
    assert (s.rewards, s.prompt_lines, s.reward_mode, s.workdir) == (str(run["rewards"]), "ignore", "lines", "/w")
