"""The RL study's statistics and page (experiments/rl_study_report.py) on made-up results."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str, file: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / file)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="module")
def rep():
    return _module("rl_study_report", "rl_study_report.py")


def _run(arm, seed, before, after, trainer="ppo", lens=(10.0, 11.0), templates=("a", "b")):
    hist = [{"round": 0, "pass@1": before, "per_template": {t: {"pass@1": before} for t in templates}}]
    for i, ln in enumerate(lens, 1):
        hist.append({"round": i, "ppo": {"tokens/mean_len": ln, "kl/k1_mean": 0.01 * i}, "line_accuracy": 0.9})
    hist[-1].update({"pass@1": after, "per_template": {t: {"pass@1": after} for t in templates}})
    return {"arm": arm, "seed": seed, "trainer": trainer, "history": hist}


def _results(gains: dict[str, list[float]], comps: list[dict], before=0.4) -> dict:
    runs = {}
    for arm, gs in gains.items():
        for s, g in enumerate(gs):
            runs[f"{arm}-s{s}"] = _run(arm, s, before + 0.01 * s, before + 0.01 * s + g)
    arms = [
        {
            "name": a,
            "source": "true_lines",
            "crowd": "biased",
            "crowd_args": [],
            "trainer": "ppo",
            "advantage": "lines",
            "reward_mode": "lines",
        }
        for a in gains
    ]
    return {"label": "full", "settings": {"arms": arms, "comparisons": comps, "length_tolerance": 0.2, "loop": {"rounds": 2}}, "runs": runs}


def test_bootstrap_interval_of_a_mean_matches_the_percentile_spread(rep):
    x = np.random.default_rng(1).normal(0.1, 0.05, size=40)
    iv = rep.bootstrap_interval(lambda a, axis=-1: np.mean(a, axis=axis), x)
    assert iv["mean"] == pytest.approx(x.mean())
    se = x.std(ddof=1) / math.sqrt(len(x))
    # a BCa interval of a mean of 40 normal draws is close to mean +- 1.96 se
    assert iv["lo"] == pytest.approx(x.mean() - 1.96 * se, abs=0.35 * se)
    assert iv["hi"] == pytest.approx(x.mean() + 1.96 * se, abs=0.35 * se)


def test_too_few_seeds_give_no_interval_and_no_verdict(rep):
    res = _results({"a": [0.1, 0.2], "b": [0.0, 0.1]}, [{"a": "a", "b": "b", "kind": "diff", "target": "> 0", "label": ""}])
    (row,) = rep.comparisons(res)
    assert row["mean"] == pytest.approx(0.1) and math.isnan(row["lo"]) and row["verdict"].startswith("undecided")


def test_paired_difference_sees_a_consistent_small_gain_that_unpaired_noise_would_hide(rep):
    rng = np.random.default_rng(0)
    base = rng.normal(0.1, 0.1, size=8)  # large seed-to-seed spread, shared by both arms
    d = 0.03 + rng.normal(0, 0.005, 8)
    res = _results({"a": list(base + d), "b": list(base)}, [{"a": "a", "b": "b", "kind": "diff", "target": "> 0", "label": "a beats b"}])
    (row,) = rep.comparisons(res)
    assert row["mean"] == pytest.approx(d.mean())
    assert 0.015 < row["lo"] < d.mean() < row["hi"] < 0.045 and row["verdict"] == "met" and row["seeds"] == list(range(8))
    # the same numbers unpaired (arm means) would overlap: the study must pair them
    summ = rep.summarize(res)
    assert summ["a"]["pass@1_gain"]["lo"] < summ["b"]["pass@1_gain"]["hi"]


def test_a_ratio_target_is_judged_on_the_point_estimate_and_a_missed_target_says_so(rep):
    comps = [
        {"a": "crowd", "b": "truth", "kind": "ratio", "target": "0.8", "label": ""},
        {"a": "crowd", "b": "truth", "kind": "diff", "target": "> 0", "label": ""},
    ]
    res = _results({"crowd": [0.05, 0.06, 0.04, 0.05], "truth": [0.1, 0.1, 0.11, 0.09]}, comps)
    ratio, diff = rep.comparisons(res)
    assert ratio["mean"] == pytest.approx(0.2 / 0.4) and ratio["verdict"] == "missed"
    assert diff["hi"] < 0 and diff["verdict"] == "missed"


def test_length_target_uses_last_over_first_round(rep):
    res = _results({"a": [0.1, 0.1, 0.1]}, [])
    for r in res["runs"].values():
        for h, ln in zip(r["history"][1:], (10.0, 13.0)):
            h["ppo"]["tokens/mean_len"] = ln
    lt = rep.length_targets(res, 0.2)
    assert lt["a"]["mean"] == pytest.approx(1.3) and lt["a"]["verdict"] == "missed"


def test_report_writes_page_and_figures(rep, tmp_path):
    res = _results(
        {"a": [0.1, 0.12, 0.08, 0.1], "b": [0.05, 0.04, 0.06, 0.05]},
        [{"a": "a", "b": "b", "kind": "diff", "target": "> 0", "label": "a vs b"}],
    )
    res["settings"].update(
        loop={
            "rounds": 2,
            "prompts_per_round": 4,
            "samples": 2,
            "lora": {"r": 4},
            "ppo": {"learning_rate": 1e-3},
            "honeypot_fraction": 0.1,
            "eval": {"n": 4, "temperature": 0.8, "per_template": 1},
        },
        grpo={"steps": 2, "batch_size": 4, "num_generations": 2, "lr": 1e-3},
        sft={"steps": 1, "batch_size": 1},
        crowds={"biased": "expert:1@0.9"},
    )
    rep.write_report(res, tmp_path / "page.md", tmp_path / "figs")
    page = (tmp_path / "page.md").read_text()
    assert "| a vs b | `a` - `b` | 4 |" in page and "| met |" in page
    assert (tmp_path / "figs" / "rl_study_rounds.png").stat().st_size > 0
    assert (tmp_path / "figs" / "rl_study_comparisons.png").stat().st_size > 0


def test_grpo_lengths_are_grouped_into_rounds_and_the_summary_line_is_skipped(rep):
    res = _results({"g": [0.1, 0.1, 0.1]}, [])
    for r in res["runs"].values():
        r["trainer"] = "grpo"
        steps = [{"completions/mean_length": 10.0 + i, "step": i} for i in range(8)]
        r["grpo"] = {"log": [*steps, {"train_runtime": 3.0}]}  # TRL's final summary has no length
    (v,) = rep.length_targets(res, 0.2).values()
    # 8 steps in 2 "rounds" of 4: mean 11.5 then 15.5
    assert v["mean"] == pytest.approx(15.5 / 11.5) and v["verdict"] == "missed"


@pytest.fixture(scope="module")
def synth():
    return _module("rl_synthetic", "rl_synthetic.py")


def _settings(synth, edit=None) -> dict:
    import json

    from rl.config import to_dict

    cfg = synth.load_study_config(ROOT / "experiments/configs/rl_synthetic.json", False)
    s = json.loads(json.dumps(to_dict(cfg)))
    if edit:
        edit(s)
    return s


def test_a_results_file_keeps_its_runs_when_the_config_only_adds_arms(synth, tmp_path):
    import json

    new = _settings(synth)
    old = _settings(synth)
    old["arms"] = [
        {k: v for k, v in a.items() if k != "loop"} for a in old["arms"] if not a["loop"]
    ]  # as written before arms had loop overrides
    old["parts"] = {k: [a for a in v if a in {x["name"] for x in old["arms"]}] for k, v in old["parts"].items() if k != "allocation"}
    old["comparisons"] = [
        c for c in old["comparisons"] if c["a"] in {x["name"] for x in old["arms"]} and c["b"] in {x["name"] for x in old["arms"]}
    ]
    del old["loop"]["allocation"], old["loop"]["vote_budget"]  # settings the code gained later, at their defaults
    assert synth._extends(old, new)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": old, "runs": {"majority-s0": {"x": 1}}, "calls": []}))
    cfg = synth.load_study_config(ROOT / "experiments/configs/rl_synthetic.json", False)
    kept = synth._results_base(path, cfg, False)
    assert kept["runs"] == {"majority-s0": {"x": 1}} and kept["settings"] == new
    # anything else that differs starts a new file: a changed loop setting, a changed arm, a new setting off its default
    for edit in (
        lambda s: s["loop"].__setitem__("rounds", 5),
        lambda s: s["arms"][0].__setitem__("source", "execution"),
        lambda s: s["loop"].__setitem__("allocation", "adaptive"),
        lambda s: s["parts"]["crowd"].remove("majority"),
    ):
        assert not synth._extends(old, _settings(synth, edit))


def test_arm_loop_overrides_reach_the_loop_config_and_bad_keys_are_refused(synth):
    cfg = synth.load_study_config(ROOT / "experiments/configs/rl_synthetic.json", False)
    arms = {a.name: a for a in cfg.arms}
    lc = synth.arm_loop_config(arms["proximal_latent_adaptive3"], cfg, "m", "o", 0)
    assert (lc.allocation, lc.vote_budget, lc.per_program) == ("adaptive", 3, None)
    lc = synth.arm_loop_config(arms["proximal_latent_uniform3"], cfg, "m", "o", 0)
    assert (lc.allocation, lc.per_program) == ("fixed", 3)
    with pytest.raises(ValueError, match="loop keys \\['rounds'\\]"):
        synth.StudyConfig(arms=[synth.Arm(name="x", source="em2", loop={"rounds": 2})], crowds={"biased": "expert:3@0.9"})
