"""crowdstat.study.compare and the `crowdstat simulate` / `crowdstat compare` commands end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdstat.study import compare as C
from crowdstat.study import simulate as S

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv" / "bin" / "python"
SPEC = "expert:2@0.95,novice:2@0.7,spammer:1,adversary:1@0.25"


def run(*args):
    exe = str(PY) if PY.exists() else sys.executable
    return subprocess.run([exe, "-m", "crowdstat", *args], capture_output=True, text=True, timeout=900, cwd=ROOT)


def run_compare(data, out, methods, *extra):
    """``crowdstat compare`` on the files ``crowdstat simulate`` wrote to ``data``."""
    files = ["--truth", data / "truth.csv", "--true-lines", data / "true_lines.csv", "--true-annotators", data / "annotators.csv"]
    return run("compare", str(data / "votes.csv"), *map(str, files), "--methods", methods, *extra, "--out", str(out))


def _typed(params):
    return {k: (type(v).__name__, v) for k, v in params.items()}


def test_parse_method():
    assert C.parse_method("majority") == ("majority", {})
    name, params = C.parse_method("sequential:lam=1:w_max=10:keep_trajectory=false")
    # coerced by the config fields' types: lam and w_max are floats even when written as integers
    assert name == "sequential"
    assert _typed(params) == {"lam": ("float", 1.0), "w_max": ("float", 10.0), "keep_trajectory": ("bool", False)}
    assert C.parse_method("sequential:w_max=inf")[1]["w_max"] == float("inf")
    _, params = C.parse_method("proximal:gamma=5%:intercept=true:maxiter=300:tol=1e-8:latent=none:stepsize=0.25")
    assert _typed(params) == {
        "gamma": ("str", "5%"),
        "intercept": ("bool", True),
        "maxiter": ("int", 300),
        "tol": ("float", 1e-8),
        "latent": ("NoneType", None),
        "stepsize": ("float", 0.25),
    }
    assert _typed(C.parse_method("proximal:gamma=0.3")[1]) == {"gamma": ("float", 0.3)}  # float | str: a number first
    # the same name, a different field type per method: em's maxiter is an int, its tol a float
    assert _typed(C.parse_method("em2:maxiter=50:tol=0")[1]) == {"maxiter": ("int", 50), "tol": ("float", 0.0)}
    assert _typed(C.parse_method("bayes:seed=3:a=2")[1]) == {"seed": ("int", 3), "a": ("float", 2.0)}
    with pytest.raises(ValueError, match="key=value"):
        C.parse_method("sequential:lam")
    with pytest.raises(ValueError, match="maxiter"):
        C.parse_method("proximal:maxiter=2.5")  # an int field does not take a fraction
    with pytest.raises(ValueError, match="intercept"):
        C.parse_method("proximal:intercept=maybe")
    with pytest.raises(TypeError, match="allowed"):
        C.parse_method("sequential:gamma=5%")  # a proximal parameter
    assert C.parse_method("em3:x=1") == ("em3", {"x": "1"})  # unknown method: left to available()


def test_unavailable_method_is_a_clear_error(monkeypatch):
    import dataclasses

    from crowdstat.estimators import REGISTRY

    ok, why = C.available("nonsense")
    assert not ok and "unknown method" in why
    monkeypatch.setitem(REGISTRY, "em1", dataclasses.replace(REGISTRY["em1"], module="crowdstat.estimators.not_landed_yet"))
    ok, why = C.available("em1")
    assert not ok and "not available" in why
    sim = S.simulate_votes(0, [0.9, 0.8, 0.6], n_programs=6, lines_per_program=2)
    with pytest.raises(C.MethodUnavailable, match="em1"):
        C.compare(sim.votes, sim.truth, sim.true_lines, methods=["majority", "em1"])


def test_compare_in_process_scores_against_truth():
    pop = S.parse_population(SPEC)
    sim = S.to_frames(S.simulate_arrays(1, pop, 40, 4, honeypot_fraction=0.25), pop)
    cmp = C.compare(sim.votes, sim.truth, sim.true_lines, sim.reliability, methods=["majority", "sequential:lam=0.1"])
    m = cmp.metrics.set_index("method")
    assert list(m.index) == ["majority", "sequential:lam=0.1"]
    assert (m["n_eval_lines"] == 30 * 4).all()  # honeypot lines excluded
    # recompute majority's accuracy by hand from the votes
    v = sim.votes.merge(sim.true_lines, on=["program", "line"])
    v = v[~v["program"].isin(sim.truth["program"])]
    g = v.groupby(["program", "line"]).agg(s=("label", "sum"), t=("truth", "first"))
    hand = np.mean(np.where(g["s"] > 0, 1, -1) == g["t"])
    assert m.loc["majority", "accuracy"] == pytest.approx(hand)
    assert 0.5 < m.loc["sequential:lam=0.1", "accuracy"] <= 1
    assert {"log_loss", "brier", "ece", "reliability_rmse", "detection_auc", "seconds"} <= set(m.columns)
    assert m.loc["majority", "detection_auc"] == pytest.approx(1.0)  # 4 good vs spammer + adversary, 120+ votes each


def test_cli_simulate_and_compare_end_to_end(tmp_path):
    data, out = tmp_path / "data", tmp_path / "cmp"
    r = run(
        "simulate",
        "--population",
        SPEC + ",twocoin:1@0.9/0.6,novice:1@0.8~0.01",
        "--programs",
        "24",
        "--lines",
        "3",
        "--honeypots",
        "0.25",
        "--per-item",
        "5",
        "--seed",
        "4",
        "--out",
        str(data),
    )
    assert r.returncode == 0, r.stderr
    votes = pd.read_csv(data / "votes.csv")
    assert list(votes.columns) == ["program", "line", "annotator", "label"] and len(votes) == 24 * 3 * 5
    truth = pd.read_csv(data / "truth.csv")
    assert list(truth.columns) == ["program", "line", "truth"] and truth["program"].nunique() == 6
    ann = pd.read_csv(data / "annotators.csv")
    assert len(ann) == 8 and {"annotator", "kind", "reliability", "sensitivity", "specificity"} <= set(ann.columns)
    r = run_compare(data, out, "majority,sequential:lam=0.1")
    assert r.returncode == 0, r.stderr
    met = pd.read_csv(out / "metrics.csv")
    assert list(met["method"]) == ["majority", "sequential:lam=0.1"]
    assert met["accuracy"].between(0, 1).all() and np.isfinite(met["log_loss"]).all()
    assert "| majority |" in (out / "metrics.md").read_text()
    lines = pd.read_csv(out / "lines.csv")
    assert len(lines) == 72 and "posterior[majority]" in lines.columns
    for png in ("reliability_diagram.png", "reliabilities.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_exit_2(tmp_path, capsys):
    from crowdstat.cli import main

    sim = S.simulate_votes(0, [0.9, 0.8, 0.6], n_programs=6, lines_per_program=2)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    sim.true_lines.to_csv(tmp_path / "true_lines.csv", index=False)
    # an unknown method: exit 2, a clear message, nothing written, nothing fitted
    rc = main(
        [
            "compare",
            str(tmp_path / "votes.csv"),
            "--true-lines",
            str(tmp_path / "true_lines.csv"),
            "--methods",
            "majority,em3",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert rc == 2 and "em3" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["simulate", "--population", "wizard:3", "--out", str(tmp_path / "bad2")]) == 2
    err = capsys.readouterr().err
    assert "unknown" in err and "kind" in err and "wizard" in err and not (tmp_path / "bad2").exists()


@pytest.mark.slow
def test_cli_compare_all_methods(tmp_path):
    data, out = tmp_path / "data", tmp_path / "cmp"
    assert run("simulate", "--population", SPEC, "--programs", "30", "--lines", "3", "--seed", "1", "--out", str(data)).returncode == 0
    r = run_compare(data, out, "majority,sequential,proximal,em1,em2,bayes", "--x64")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(out / "metrics.csv")) == 6
