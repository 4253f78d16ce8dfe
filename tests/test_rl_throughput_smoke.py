"""``python -m benchmarks.rl_throughput --smoke``: every trainer runs and the table has finite positive rates."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rl_throughput_smoke(tmp_path):
    out = tmp_path / "rl_throughput.json"
    cmd = [sys.executable, "-m", "benchmarks.rl_throughput", "--smoke", "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [ln for ln in p.stdout.splitlines() if re.match(r"\| (ppo|grpo_scalar|grpo_lines|trl) \|", ln)]
    assert [r.split("|")[1].strip() for r in rows] == ["ppo", "grpo_scalar", "grpo_lines", "trl"], p.stdout[-2000:]
    for row in rows:
        tok_s, ratio, tokens, step_s = (float(x) for x in row.split("|")[2:6])
        assert all(math.isfinite(x) and x > 0 for x in (tok_s, ratio, tokens, step_s)), row
    res = json.loads(out.read_text())
    assert res["smoke"] and res["rows"]["trl"]["ratio_vs_trl"] == pytest.approx(1.0)
    for r in res["rows"].values():
        assert math.isfinite(r["tok_s"]) and r["tok_s"] > 0 and len(r["steps"]) == 1 + res["settings"]["repeats"]
