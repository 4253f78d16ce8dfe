"""rl loop: end to end on a tiny model, resume after an injected crash equals an uninterrupted run,
pause mode for a human round trip, config validation, and the crowd pipeline's pieces."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from crowdstat.estimators import METHODS
from rl.config import ConfigError, LoopConfig, PPOConfig, load_config
from rl.crowd.pipeline import CROWD_METHODS, DEFAULT_POPULATION, SOURCES, CrowdRewarder
from rl.evaluate import evaluate_heldout
from rl.loop import PausedForAnnotation, run_rounds, say_fit_warnings, warning_kind
from rl.tasks.synthetic import make_benchmark
from rl.train.sft import SFTConfig, warm_start


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws") / "model"
    warm_start(
        out,
        SFTConfig(steps=8, batch_size=16, hidden_size=32, num_layers=1, num_heads=4, n_train_per_template=3, lr=3e-3, threads=2),
        progress=False,
    )
    return out


def _cfg(model, out, **kw):
    base = dict(
        model=str(model),
        out=str(out),
        rounds=2,
        prompts_per_round=2,
        samples=3,
        sampling={"max_new_tokens": 14},
        reward_source="sequential",
        bench={"seed": 0, "n_train_per_template": 3},
        eval={"n": 2, "n_mid": 1, "temperature": 0.8, "n_problems": 3, "every": 1},
        ppo={"learning_rate": 1e-3, "ppo_epochs": 1, "minibatch_size": 3, "reward_mode": "lines"},
        lora={"r": 4, "alpha": 8},
        threads=2,
        seed=1,
    )
    base.update(kw)
    return LoopConfig(**base)


def _adapter(run_dir):
    from safetensors.torch import load_file

    st = json.loads((run_dir / "state.json").read_text())
    return st, load_file(str(run_dir / st["checkpoint"] / "adapter_model.safetensors"))


def test_default_population_is_the_biased_crowd():
    from rl.crowd.population import parse_population

    pop = parse_population(DEFAULT_POPULATION)
    assert [a.id for a in pop.annotators] == [
        "expert01",
        "expert02",
        "novice01",
        "novice02",
        "examples01",
        "lazy01",
        "spammer01",
        "adversary01",
        "adversary02",
    ]
    by = {a.id: a for a in pop.annotators}
    # sensitivity = P(vote +1 | correct line), specificity = P(vote -1 | wrong line): the lazy rater
    # approves every correct line and flags only the 20 % of wrong lines it looks at
    assert (by["lazy01"].sensitivity, by["lazy01"].specificity) == pytest.approx((1.0, 0.2))
    assert by["adversary02"].p == 0.2 and by["examples01"].kind == "examples"
    with pytest.raises(ValueError, match="unknown annotator kind"):
        LoopConfig(model="m", population="oracle:2")
    with pytest.raises(ValueError, match="per_program must be between 1 and the population size 9"):
        LoopConfig(model="m", per_program=10)


def test_crowd_rewarder_sources(tmp_path):
    b = make_benchmark(seed=0, n_train_per_template=2, n_heldout_per_template=1)
    probs = b.train[:6]
    items = [(f"p{i}", p, p.canonical_solution if i % 2 == 0 else b.buggy_completions(p)[0]) for i, p in enumerate(probs)]
    recs, scored, _ = CrowdRewarder("true_lines", tmp_path / "t").rewards(items, "b1")
    assert [recs[f"p{i}"]["reward"] == 1.0 for i in range(6)] == [i % 2 == 0 for i in range(6)]
    # the line truth is rl.tasks.lines' rule with the prompt as the unannotated prefix: exactly the changed
    # line of these one-line-bug programs is wrong, and the prompt's `def` line is never annotated
    from rl.tasks.lines import line_truth

    for (_, p, c), sc in zip(items, scored):
        first = p.prompt.count("\n") + 1
        assert [ln for ln, _ in sc.truths] == list(range(first, first + len(c.splitlines())))
        canon = p.canonical_solution.splitlines()
        assert [t for _, t in sc.truths] == [a == b for a, b in zip(c.splitlines(), canon)] or sc.passed
        assert dict(sc.truths) == {
            ln: v == 1 for ln, v in line_truth(p.program(c), p.canonical_program, sc.passed, prompt=p.prompt).items()
        }
    assert sum(not t for s in scored for _, t in s.truths) == 3  # one wrong line per buggy program
    recs, scored, _ = CrowdRewarder("execution", tmp_path / "e").rewards(items, "b1")
    assert [s.passed for s in scored] == [i % 2 == 0 for i in range(6)]
    assert all(recs[f"p{i}"]["reward"] == 1.0 for i in range(0, 6, 2))
    assert all(recs[f"p{i}"]["reward"] < 1.0 for i in range(1, 6, 2))
    # a reliable crowd through `crowdstat fit` (subprocess) recovers the line truth
    rw = CrowdRewarder("majority", tmp_path / "m", population="expert:5@0.95")
    recs, scored, info = rw.rewards(items, "b1")
    assert info["line_accuracy"] >= 0.9
    assert (tmp_path / "m" / "b1" / "fit" / "rewards.jsonl").exists()
    assert [recs[f"p{i}"]["reward"] == 1.0 for i in range(6)] == [i % 2 == 0 for i in range(6)]


def test_methods_come_from_the_crowdstat_registry():
    assert CROWD_METHODS == ("auto", *METHODS)
    assert SOURCES == ("auto", *METHODS) + ("true_lines", "execution")
    assert LoopConfig(model="m").reward_source == "auto"  # crowdstat's default, calibrated with enough honeypots


def test_crowd_rewarder_reports_what_the_fit_said(tmp_path):
    b = make_benchmark(seed=0, n_train_per_template=4, n_heldout_per_template=1)
    probs = b.train[:16]
    items = [(f"p{i}", p, p.canonical_solution if i % 2 == 0 else b.buggy_completions(p)[0]) for i, p in enumerate(probs)]
    pop = "expert:3@0.9,novice:3@0.7"
    _, _, info = CrowdRewarder("auto", tmp_path / "a", population=pop, honeypot_fraction=0.5, seed=2).rewards(items, "b1")
    d = json.loads((tmp_path / "a" / "b1" / "fit" / "fit.json").read_text())["diagnostics"]
    truth = (tmp_path / "a" / "b1").glob("**/truth*.csv")
    assert info["fit_method"] == d["auto"]["chosen"] and info["fit_method"] in ("em1", "em2", "proximal")
    assert any(truth) and d["auto"].get("calibrate") == "auto"  # >= 5 honeypot programs: calibrated by default
    assert info["fit_calibration"] == d["calibration"]["kind"] and info["fit_warnings"] == d.get("warnings", [])
    # the paper's sequential update (lam = 1) saturates its weights: the warning reaches the rewarder's info
    _, _, info = CrowdRewarder("sequential", tmp_path / "s", population=pop, honeypot_fraction=0.5, seed=2).rewards(items, "b1")
    d = json.loads((tmp_path / "s" / "b1" / "fit" / "fit.json").read_text())["diagnostics"]
    assert info["fit_method"] == "sequential" and info["fit_calibration"] is None
    assert info["fit_warnings"] == d["warnings"] and any("|weight| >= 20" in w for w in info["fit_warnings"])


def test_fit_warnings_are_said_once_per_kind(capsys):
    """The same degeneracy with other figures in a later round is not said again (it was, by exact text)."""
    warned: set = set()
    r1 = ["sequential: 3 of 9 annotators have |weight| >= 20 (max 31.2)", "posteriors within 1e-06 of 0 or 1: 60% of 300 lines"]
    r2 = ["sequential: 4 of 9 annotators have |weight| >= 20 (max 47.9)", "em2: class prior 0.999 at the boundary"]
    assert len(say_fit_warnings(warned, 1, "sequential", r1)) == 2
    said = say_fit_warnings(warned, 2, "sequential", r2)
    assert len(said) == 1 and "class prior" in said[0] and said[0].startswith("rl loop: warning: round 2: crowdstat fit (sequential): ")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "|weight| >= 20 (max 31.2)" in err[0]
    assert say_fit_warnings(warned, 3, "sequential", r1 + r2) == []


def test_config_files(tmp_path):
    (tmp_path / "c.toml").write_text('model = "m"\nrounds = 4\nreward_source = "proximal"\n[ppo]\nlearning_rate = 0.0002\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.rounds == 4 and cfg.reward_source == "proximal"
    # a partial section keeps the loop's defaults of that section (and the PPO seed is the loop's)
    assert cfg.ppo == PPOConfig(learning_rate=2e-4, ppo_epochs=2, minibatch_size=32, reward_mode="lines", seed=0)
    (tmp_path / "bad.json").write_text(json.dumps({"model": "m", "roundz": 3}))
    with pytest.raises(ConfigError, match=r"bad.json: unknown key 'roundz' \(did you mean 'rounds'\?\)"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="reward_source must be one of"):
        LoopConfig(model="m", reward_source="vibes")


def _check_tensorboard_tags(tb_dir):
    """The PPO diagnostics and the reward per source reach TensorBoard, once per trained round."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rl.loop import TB_PPO_KEYS

    ea = EventAccumulator(str(tb_dir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    want = {f"ppo/{k}" for k in TB_PPO_KEYS} | {"reward/sequential", "mean_reward", "pass@1"}
    assert want <= tags, want - tags
    for k in ("approx_kl", "clipfrac", "entropy", "epochs_run"):
        assert [e.step for e in ea.Scalars(f"ppo/policy/{k}")] == [1, 2]
    assert {"value/explained_variance", "loss/value", "tokens/mean_len"} <= set(TB_PPO_KEYS)
    assert all(e.value > 0 for e in ea.Scalars("ppo/tokens/mean_len") + ea.Scalars("ppo/policy/entropy"))


def test_loop_end_to_end_and_resume_equals_uninterrupted(tiny_model, tmp_path, monkeypatch, capsys):
    a = tmp_path / "a"
    st_a = run_rounds(_cfg(tiny_model, a), progress=False)
    err = capsys.readouterr().err
    said = {warning_kind(w) for h in st_a["history"] for w in h.get("fit_warnings") or []}
    printed = [x for x in err.splitlines() if x.startswith("rl loop: warning: ")]
    assert st_a["history"][1]["fit_method"] == "sequential" and len(printed) == len(said)  # each kind once on stderr
    assert st_a["round"] == 2 and [h["round"] for h in st_a["history"]] == [0, 1, 2]
    lines = (a / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 1, 2]
    h1 = st_a["history"][1]
    assert 0.0 <= h1["mean_reward"] <= 1.0 and 0.0 <= h1["pass@1"] <= 1.0 and h1["ppo_steps"] == 1
    assert set(h1["reliability"]) and len(h1["reliability"]) == 9  # the default population
    assert list((a / "tb").glob("events.out.tfevents.*"))
    _check_tensorboard_tags(a / "tb")
    assert (a / "rounds" / "r002" / "rewards.jsonl").exists()
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == ["round_002"]  # older ones removed
    with pytest.raises(FileExistsError, match="--resume"):
        run_rounds(_cfg(tiny_model, a), progress=False)
    # the study evaluates round 0 once per seed and passes it as initial_eval: it must be the same
    e0 = evaluate_heldout(_cfg(tiny_model, tmp_path / "unused"))
    assert {k: e0[k] for k in ("pass@1", "per_template")} == {k: st_a["history"][0][k] for k in ("pass@1", "per_template")}

    # the same run, crashed after round 2's PPO step (before its checkpoint), then resumed
    b = tmp_path / "b"
    monkeypatch.setenv("RL_LOOP_CRASH", "after_train:2")
    with pytest.raises(RuntimeError, match="injected crash"):
        run_rounds(_cfg(tiny_model, b), progress=False)
    assert json.loads((b / "state.json").read_text())["round"] == 1
    monkeypatch.delenv("RL_LOOP_CRASH")
    st_b = run_rounds(_cfg(tiny_model, b), resume=True, progress=False)
    assert st_b["round"] == 2
    _, wa = _adapter(a)
    _, wb = _adapter(b)
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

    def strip(h):  # wall-clock timings differ, nothing else may
        h = {k: v for k, v in h.items() if k != "seconds"}
        if "ppo" in h:
            h["ppo"] = {k: v for k, v in h["ppo"].items() if k != "time_s"}
        return h

    assert [strip(h) for h in st_a["history"]] == [strip(h) for h in st_b["history"]]
    # LoRA actually moved: B starts at zero
    assert any(float(v.abs().max()) > 0 for k, v in wa.items() if "lora_B" in k)


@pytest.mark.slow
def test_pause_mode_round_trip(tiny_model, tmp_path):
    """~90 s on the loaded 2-core machine: slow."""
    out = tmp_path / "p"
    cfg = _cfg(tiny_model, out, rounds=1, annotate="pause", reward_source="majority")
    with pytest.raises(PausedForAnnotation, match="waits for human votes"):
        run_rounds(cfg, progress=False)
    rdir = out / "rounds" / "r001"
    assert (rdir / "PAUSED.txt").exists() and not (out / "checkpoints").exists()
    # a "human" votes +1 on every non-blank completion line
    rows = ["program,line,annotator,label"]
    for ln in (rdir / "rollouts.jsonl").read_text().splitlines():
        r = json.loads(ln)
        n_prompt = r["prompt"].count("\n")
        for i, t in enumerate(r["completion"].split("\n")):
            if t.strip():
                rows.append(f"{r['program']},{n_prompt + 1 + i},human,1")
    (rdir / "votes.csv").write_text("\n".join(rows) + "\n")
    st = run_rounds(cfg, resume=True, progress=False)
    assert st["round"] == 1
    voted = {r.split(",")[0] for r in rows[1:]}
    recs = [json.loads(x) for x in (rdir / "rewards.jsonl").read_text().splitlines()]
    assert all(r["reward"] == 1.0 for r in recs if r["program"] in voted)
