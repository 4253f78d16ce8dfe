"""`make demo` runs end to end (a smaller embedded default for speed)."""

import subprocess
import sys

import pandas as pd


def test_demo_runs_and_writes_summary_and_plot(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "crowdstat.demo", "--out", str(out), "--programs", "40"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Line-level results" in r.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 7
    # honeypot-trained estimators beat chance clearly on the simulated crowd
    acc = summary.set_index("method")["line accuracy"]
    assert acc["proximal"] > 0.8 and acc["proximal paper gamma=1%"] > 0.8
    assert acc["majority"] > 0.6
    png = (out / "trajectories.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    for d in (out / "fits").iterdir():
        assert {"annotators.csv", "fit.json", "lines.csv", "rewards.jsonl"} <= {p.name for p in d.iterdir()}
        assert ("trajectory.csv" in {p.name for p in d.iterdir()}) == d.name.startswith("sequential")
