"""``rl warmstart`` reports the held-out pass@k of the model it wrote (issue 20), the numbers of
``rl loop``'s round-0 evaluation of that model."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rl.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["--steps", "6", "--batch-size", "8", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "4"]
SMALL += ["--n-train-per-template", "3", "--threads", "1", "--no-progress"]


def test_warmstart_writes_and_prints_heldout_pass(tmp_path, capsys):
    out = tmp_path / "ws"
    assert main(["warmstart", "--out", str(out), *SMALL, "--eval-n", "10"]) == 0
    printed = capsys.readouterr().out
    ev = json.loads((out / "warmstart.json").read_text())["heldout"]
    assert ev["n"] == 10 and ev["n_problems"] > 0
    assert 0.0 <= ev["pass@1"] <= ev["pass@10"] <= 1.0
    assert set(ev["per_template"]) and all("pass@1" in v for v in ev["per_template"].values())
    assert f"held-out pass@1 {ev['pass@1']:.3f}" in printed and "pass@10" in printed

    # the same numbers as the loop's round-0 evaluation of this model (same problems, sampler and seed)
    from rl.config import BenchSpec, LoopConfig
    from rl.evaluate import evaluate_heldout

    cfg = LoopConfig(model=str(out), seed=0, bench=BenchSpec(n_train_per_template=3), threads=1)
    again = evaluate_heldout(cfg)
    assert again["pass@1"] == ev["pass@1"] and again["pass@10"] == ev["pass@10"]


def test_warmstart_eval_n_below_10_reports_pass1_only_and_0_skips(tmp_path, capsys):
    assert main(["warmstart", "--out", str(tmp_path / "a"), *SMALL, "--eval-n", "2"]) == 0
    ev = json.loads((tmp_path / "a" / "warmstart.json").read_text())["heldout"]
    assert "pass@1" in ev and "pass@10" not in ev
    assert main(["warmstart", "--out", str(tmp_path / "b"), *SMALL, "--eval-n", "0"]) == 0
    assert json.loads((tmp_path / "b" / "warmstart.json").read_text())["heldout"] is None
