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
    stages = ("build", "ppo", "ppo_ddp", "grpo_scalar", "grpo_lines", "loop")
    assert [(r["model"], r["stage"]) for r in rows] == [("tiny", s) for s in stages]
    assert all(r["status"] == "ok" for r in rows), rows
    assert res["failed"] == [] and res["mode"] == "cpu-smoke" and res["env"]["dtype"] == "float32"
    for r in rows[1:]:
        assert r["rollout_tok_s"] > 0 and r["update_tok_s"] > 0, r
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.count("| tiny |") == 6 and table in p.stdout
    # the 2-process PPO (torchrun, gloo on the CPU): every process's tokens, identical parameters
    ddp = rows[2]
    assert ddp["processes"] == 2 and "parameters identical" in ddp["note"]
    assert all(t > 0 for t, _ in ddp["update_steps"])


@pytest.mark.slow
def test_qwen2_shape_on_one_layer(tmp_path):
    """The 0.5B model's path (Qwen2-0.5B's width, heads and KV heads) with one layer, through every stage it runs."""
    p, res = _run(tmp_path / "out", "--models", "qwen2-0.5b", "--big-layers", "1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [r["stage"] for r in res["results"]] == ["build", "ppo", "ppo_ddp", "grpo_scalar", "grpo_lines"]
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


def test_without_a_gpu_it_stops_before_any_work(tmp_path):
    """Outside ``--cpu-smoke`` a machine without CUDA gets exit status 2 and one line, nothing built or written."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "no CUDA GPU is visible" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_ppo_ddp_needs_two_gpus(tmp_path):
    """On a machine with one GPU the 2-process row is n/a (not a failure, not a time-budget skip); nothing runs."""
    from benchmarks.gpu_check import FULL, run_checks

    env = {"device": "cuda", "dtype": "bfloat16", "mixed_precision": "bf16"}
    rows = run_checks(FULL, env, tmp_path, ("tiny",), ("ppo_ddp",), smoke=False, n_gpus=1)
    assert rows == [
        {"model": "tiny", "stage": "ppo_ddp", "device": "cuda", "dtype": "bfloat16", "status": "n/a", "note": "needs 2 GPUs, 1 visible"}
    ]
