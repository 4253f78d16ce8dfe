"""``python -m benchmarks.run --smoke``: the CI version of ``make bench`` (tiny sizes).

It runs in the test environment (no crowd-kit, scikit-learn from the dev extra); the crowd-kit
comparison is skipped there with its reason, which the second test makes visible.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, json.loads((out / "smoke.json").read_text()), p.stdout


def test_smoke_suite_runs_and_writes_results(smoke):
    out, res, stdout = smoke
    assert res["mode"] == "smoke"
    for key in ("k1", "k2", "k3", "e2e", "memory", "targets", "bandwidth", "machine"):
        assert key in res, key
    k1 = res["k1"][0]
    assert k1["crowdstat_ns_per_vote"] > 0 and k1["max_abs_dposterior_vs_ref"] < 1e-5
    assert res["k2"][0]["max_abs_dw_float64_vs_numpy"] < 1e-9
    assert res["k2_streaming"][0]["step_donated_us_per_task"] > 0  # equality with jit(update) is asserted inside
    assert res["k3"]["single"][0]["crowdstat_rel_objective_diff"] <= 1e-6
    assert res["memory"]["peak_rss_mib"] > 0
    assert any(Path(p).name == "smoke_k1.png" for p in res["plots"])
    assert "Targets" in stdout


def test_crowdkit_part(smoke):
    _, res, _ = smoke
    if importlib.util.find_spec("crowdkit") is None:
        assert "skipped" in res["agg"]
        pytest.skip(f"aggregation vs crowd-kit: {res['agg']['skipped']}")
    assert res["agg"]["majority"][0]["max_abs_dposterior"] < 1e-6
