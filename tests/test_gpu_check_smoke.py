"""``python -m benchmarks.gpu_check --cpu-smoke``: the prepared GPU check, run on the CPU (float32, tiny sizes).

Slow (about a minute on 2 cores): out of the default run, in ``make test-slow``. The GPU run itself
(bf16, the 0.5B model) needs a CUDA machine: docs/rl.md, "GPU check".
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke", "--out", str(out), *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return p, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage(tmp_path):
    p, res = _run(tmp_path / "out")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = res["results"]
    assert [(r["model"], r["stage"]) for r in rows] == [("tiny", s) for s in ("build", "ppo", "grpo_scalar", "grpo_lines", "loop")]
    assert all(r["status"] == "ok" for r in rows), rows
    assert res["failed"] == [] and res["mode"] == "cpu-smoke" and res["env"]["dtype"] == "float32"
    for r in rows[1:]:
        assert r["rollout_tok_s"] > 0 and r["update_tok_s"] > 0, r
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.count("| tiny |") == 5 and table in p.stdout


@pytest.mark.slow
def test_qwen2_shape_on_one_layer(tmp_path):
    """The 0.5B model's path (Qwen2-0.5B's width, heads and KV heads) with one layer, through every stage it runs."""
    p, res = _run(tmp_path / "out", "--models", "qwen2-0.5b", "--big-layers", "1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [r["stage"] for r in res["results"]] == ["build", "ppo", "grpo_scalar", "grpo_lines"]
    assert "d=896" in res["results"][0]["note"]


@pytest.mark.slow
def test_a_failing_stage_is_reported_and_the_others_run(tmp_path):
    """float16 and bf16 mixed precision are refused on the CPU: PPO and GRPO fail with the reason, the build does not."""
    pytest.importorskip("torch")
    from benchmarks.gpu_check import SMOKE, markdown, run_checks

    env = {"device": "cpu", "dtype": "float16", "mixed_precision": "bf16"}
    rows = run_checks(SMOKE, env, tmp_path, ("tiny",), ("build", "ppo", "grpo_scalar"), smoke=True)
    assert [(r["stage"], r["status"]) for r in rows] == [("build", "ok"), ("ppo", "failed"), ("grpo_scalar", "failed")]
    assert "needs a GPU" in rows[1]["error"] and "float16 needs a GPU" in rows[2]["error"]
    assert "ValueError" in markdown(rows, {}, "test")


def test_qwen2_config_is_qwen2_05b(tmp_path):
    """Qwen2-0.5B's config.json numbers (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864)."""
    pytest.importorskip("transformers")
    from benchmarks.gpu_check import qwen2_05b_config
    from rl.policy.models import train_char_tokenizer

    c = qwen2_05b_config(train_char_tokenizer(["def f(x):\n    return x\n"], tmp_path / "tok"))
    got = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size)
    assert got == (896, 24, 14, 2, 4864) and c.tie_word_embeddings and c.rms_norm_eps == 1e-6
