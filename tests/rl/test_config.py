"""The typed config tree: unknown keys and bad types rejected at every level with the file and the dotted key,
every committed config file round-trips, and shorthands of earlier files load to the same config."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

from rl.config import (
    BenchSpec,
    ConfigError,
    EvalSpec,
    LoopConfig,
    LoraSpec,
    PPOConfig,
    SamplingConfig,
    load_config,
    read_config_file,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.*"))


def _study_module():
    """experiments/rl_synthetic.py as a module (the experiments folder is not a package)."""
    name = "rl_synthetic_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "rl_synthetic.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _write(tmp_path, name, d) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize(
    "d, message",
    [
        ({"model": "m", "roundz": 3}, r"c.json: unknown key 'roundz' \(did you mean 'rounds'\?\)$"),
        ({"model": "m", "ppo": {"lerning_rate": 1e-3}}, r"c.json: unknown key 'ppo.lerning_rate' \(did you mean 'learning_rate'\?\)$"),
        ({"model": "m", "eval": {"temprature": 0.5}}, r"c.json: unknown key 'eval.temprature' \(did you mean 'temperature'\?\)$"),
        ({"model": "m", "lora": {"alpah": 4}}, r"c.json: unknown key 'lora.alpah' \(did you mean 'alpha'\?\)$"),
        ({"model": "m", "sampling": {"topp": 0.9}}, r"c.json: unknown key 'sampling.topp' \(did you mean 'top_p'\?\)$"),
        ({"model": "m", "bench": {"zzz": 1}}, r"c.json: unknown key 'bench.zzz' \(known: seed, n_train_per_template, "),
        ({"model": "m", "ppo": {"seed": 3}}, r"c.json: unknown key 'ppo.seed' \(the loop derives it from the top-level 'seed'\)$"),
    ],
)
def test_unknown_keys_are_rejected_with_the_dotted_name(tmp_path, d, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(_write(tmp_path, "c.json", d))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "d, message",
    [
        ({"model": "m", "rounds": "3"}, r"c.json: 'rounds': expected int, got str '3'"),
        ({"model": "m", "rounds": 2.5}, r"c.json: 'rounds': expected int, got float 2.5"),
        ({"model": "m", "rounds": True}, r"c.json: 'rounds': expected int, got bool True"),
        ({"model": "m", "ppo": {"learning_rate": "fast"}}, r"c.json: 'ppo.learning_rate': expected float, got str 'fast'"),
        ({"model": "m", "ppo": {"whiten_rewards": 1}}, r"c.json: 'ppo.whiten_rewards': expected bool, got int 1"),
        ({"model": "m", "sampling": {"stop": "\n"}}, r"c.json: 'sampling.stop': expected list of str or null"),
        ({"model": "m", "crowd_args": ["--x", None]}, r"c.json: 'crowd_args\[1\]': expected str or int or float"),
        ({"model": "m", "eval": 10}, r"c.json: 'eval': expected a table of EvalSpec settings, got int 10"),
        ({"model": "m", "ppo": {"ppo_epochs": 0}}, r"c.json: 'ppo': PPOConfig.ppo_epochs: expected an integer >= 1"),
        ({"model": "m", "sampling": {"top_p": 0}}, r"c.json: 'sampling': SamplingConfig.top_p: expected in \(0, 1\]"),
        ({"model": "m", "reward_source": "vibes"}, r"c.json: reward_source must be one of"),
        ({"model": "m", "temperature": 0.5, "sampling": {"temperature": 0.7}}, r"'temperature' and 'sampling.temperature'"),
        ({"rounds": 2}, r"c.json: 'model' \(the warm-started model directory\) is required"),
    ],
)
def test_bad_values_are_rejected_with_the_dotted_name(tmp_path, d, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(_write(tmp_path, "c.json", d))
    assert "\n" not in str(e.value)


def test_toml_and_parse_errors(tmp_path):
    (tmp_path / "c.toml").write_text('model = "m"\n[eval]\nn = 4\ntop_p = 0.95\n[lora]\nr = 4\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.eval == EvalSpec(n=4, top_p=0.95) and cfg.lora == LoraSpec(r=4)
    (tmp_path / "broken.toml").write_text("model = \n")
    with pytest.raises(ConfigError, match=r"broken.toml: cannot parse the config"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list.json: expected a table of settings"):
        load_config(tmp_path / "list.json")


def test_defaults_shorthands_and_python_sections(tmp_path):
    cfg = load_config(_write(tmp_path, "c.json", {"model": "m", "seed": 7, "temperature": 0.5, "max_new_tokens": 12, "stop": ["\ndef"]}))
    # earlier files' top-level generation keys land in the sampling section
    assert cfg.sampling == SamplingConfig(temperature=0.5, max_new_tokens=12, batch_size=64, seed=None, stop=("\ndef",))
    assert cfg.ppo.seed == 7 and cfg.ppo.ppo_epochs == 2 and cfg.ppo.minibatch_size == 32  # the loop's PPO defaults
    assert cfg.bench == BenchSpec()
    # sections given as mappings in Python are checked the same way
    assert LoopConfig(model="m", ppo={"learning_rate": 1e-3}).ppo.learning_rate == 1e-3
    with pytest.raises(ConfigError, match=r"LoopConfig: unknown key 'ppo.learning_rte' \(did you mean 'learning_rate'\?\)"):
        LoopConfig(model="m", ppo={"learning_rte": 1e-3})
    # replace() keeps the derived seeds in step
    assert dataclasses.replace(cfg, seed=3).ppo.seed == 3


def test_round_trip_of_a_full_config(tmp_path):
    cfg = LoopConfig(
        model="m",
        population=[{"kind": "expert", "count": 2, "p": 0.9}],
        crowd_args=["--gamma", 0.5],
        per_program=2,
        sampling=SamplingConfig(top_k=5, stop=("\n#",)),
        bench=BenchSpec(templates=("add",)),
        eval=EvalSpec(n_mid=2, max_new_tokens=9),
    )
    d = cfg.to_dict()
    assert "seed" not in d["ppo"] and "seed" not in d["sampling"]  # derived, not settings
    back = load_config(_write(tmp_path, "c.json", d))
    assert back == cfg and back.to_dict() == d


def test_bench_spec_mirrors_make_benchmark():
    from rl.tasks.synthetic import make_benchmark

    params = inspect.signature(make_benchmark).parameters
    for f in dataclasses.fields(BenchSpec):
        assert f.name in params, f.name
        if f.name != "n_train_per_template":  # the loop's default is the warm start's
            assert params[f.name].default == f.default, f.name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_committed_config_round_trips(path, tmp_path):
    raw = read_config_file(path)
    assert path.name == "rl_synthetic.json"  # the one kind of file there today: a study config
    mod = _study_module()
    for quick in (False, True):
        cfg = mod.load_study_config(path, quick)
        out = _write(tmp_path, f"rt-{quick}.json", to_dict(cfg))
        again = mod.load_study_config(out, False)
        assert again == cfg and to_dict(again) == to_dict(cfg)
    # every value the file gives is the value the typed config holds
    cfg = mod.load_study_config(path, False)
    loop = cfg.loop.to_dict()
    for k, v in raw["loop"].items():
        if k in ("temperature", "max_new_tokens", "stop"):  # shorthands of the sampling section
            assert loop["sampling"][k] == v, k
        elif isinstance(v, dict):
            assert {kk: loop[k][kk] for kk in v} == v, k
        else:
            assert loop[k] == v, k
    assert dataclasses.asdict(cfg.sft) == raw["sft"]
    assert [a.name for a in cfg.arms] == [a["name"] for a in raw["arms"]] and list(cfg.seeds) == raw["seeds"]
    assert cfg.crowds == raw["crowds"] and [c.a for c in cfg.comparisons] == [c["a"] for c in raw["comparisons"]]
    assert {k: getattr(cfg.grpo, k) for k in raw["grpo"]} == raw["grpo"]
    quick = mod.load_study_config(path, True)
    assert list(quick.seeds) == raw["quick"]["seeds"] and quick.loop.rounds == raw["quick"]["loop"]["rounds"]
    assert quick.loop.ppo == cfg.loop.ppo  # the quick overrides touch only what they name


def test_study_config_errors_name_the_file_and_the_dotted_key(tmp_path):
    mod = _study_module()
    raw = read_config_file(ROOT / "experiments" / "configs" / "rl_synthetic.json")
    raw["loop"]["ppo"]["lerning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"s.json: unknown key 'loop.ppo.lerning_rate' \(did you mean 'learning_rate'\?\)"):
        mod.load_study_config(_write(tmp_path, "s.json", raw), False)
    raw = read_config_file(ROOT / "experiments" / "configs" / "rl_synthetic.json")
    raw["quick"]["loop"]["roundz"] = 1
    with pytest.raises(ConfigError, match=r"unknown key 'loop.roundz'"):
        mod.load_study_config(_write(tmp_path, "s.json", raw), False)  # checked without --quick too
    raw = read_config_file(ROOT / "experiments" / "configs" / "rl_synthetic.json")
    raw["arms"][3]["source"] = "vibes"
    with pytest.raises(ConfigError, match=r"s.json: arms: majority: source 'vibes' is not a reward source"):
        mod.load_study_config(_write(tmp_path, "s.json", raw), False)
    raw = read_config_file(ROOT / "experiments" / "configs" / "rl_synthetic.json")
    raw["comparisons"][0]["b"] = "nobody"
    with pytest.raises(ConfigError, match=r"s.json: comparisons: .* arms must be named arms"):
        mod.load_study_config(_write(tmp_path, "s.json", raw), False)
    raw = read_config_file(ROOT / "experiments" / "configs" / "rl_synthetic.json")
    raw["arms"][0]["crowd"] = "angry"
    with pytest.raises(ConfigError, match=r"crowd 'angry' is not one of the crowds"):
        mod.load_study_config(_write(tmp_path, "s.json", raw), False)


def test_resume_compares_configs_by_dotted_key(tmp_path):
    from rl.loop import _open_state

    cfg = LoopConfig(model="m", out=str(tmp_path / "run"))
    state = _open_state(cfg, Path(cfg.out), resume=False)
    (Path(cfg.out) / "state.json").write_text(json.dumps(state))
    assert _open_state(cfg, Path(cfg.out), resume=True)["round"] == 0
    with pytest.raises(ValueError, match=r"differs in \['eval.n', 'ppo.kl_coef'\]"):
        _open_state(dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, kl_coef=0.1), eval=EvalSpec(n=3)), Path(cfg.out), resume=True)
    # a state saved by the earlier flat format (top-level generation keys, partial sections) still resumes
    old = {k: v for k, v in cfg.to_dict().items() if k != "sampling"}
    old.update(
        temperature=1.0,
        max_new_tokens=64,
        stop=[],
        ppo={"learning_rate": 1e-4, "ppo_epochs": 2, "minibatch_size": 32, "reward_mode": "lines"},
    )
    (Path(cfg.out) / "state.json").write_text(json.dumps({**state, "config": old}))
    assert _open_state(cfg, Path(cfg.out), resume=True)["round"] == 0


def test_ppo_and_lora_specs_unchanged_for_their_other_users():
    assert PPOConfig().ppo_epochs == 4 and PPOConfig().minibatch_size == 16  # rl train's defaults
    kw = LoraSpec(r=4, alpha=8).peft_kwargs(("q_proj", "v_proj"))
    assert kw == {
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    assert LoraSpec(target_modules=["c_attn"]).peft_kwargs("all-linear")["target_modules"] == ["c_attn"]
    assert LoraSpec().peft_kwargs("all-linear")["target_modules"] == "all-linear"
