"""`python -m crowdstat fit` end to end on a small CSV: the four documented files, their
columns, the reward file through cs.read_rewards, fit.json, and equality with cs.fit."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crowdstat as cs
from tests.reference import oracles as O
from tests.strategies import random_tables

ROOT = Path(__file__).resolve().parents[2]
FILES = ["lines.csv", "annotators.csv", "rewards.jsonl", "fit.json"]
REWARD_FIELDS = {
    "schema_version",
    "program",
    "reward",
    "reward_soft",
    "n_lines",
    "n_annotated",
    "coverage",
    "lines",
    "posteriors",
    "tau",
    "method",
}
RUNS = {
    "majority": [],
    "sequential": ["--lam", "0.5", "--w-max", "6", "--nu", "0.65", "--pbar-honeypot", "0.95"],
    "proximal": ["--gamma", "10%", "--center", "zero", "--tol", "1e-12"],
}
PY_KW = {
    "majority": {},
    "sequential": dict(lam=0.5, w_max=6.0, nu=0.65, pbar_honeypot=0.95),
    "proximal": dict(gamma="10%", center="zero", tol=1e-12),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    votes, truth = random_tables(21, n_programs=5, max_lines=6, n_annotators=6, p_honeypot=0.5)
    # ids that only survive if read as strings
    votes["program"] = votes["program"].map(lambda p: "00" + p[1:])
    truth["program"] = truth["program"].map(lambda p: "00" + p[1:])
    votes["annotator"] = votes["annotator"].map(lambda a: "0" + a[1:])
    sizes = votes.groupby("program", sort=False)["line"].nunique() + 2
    programs = pd.DataFrame({"program": sizes.index, "n_lines": sizes.to_numpy()})
    votes.to_csv(d / "votes.csv", index=False)
    truth.to_csv(d / "truth.csv", index=False)
    programs.to_csv(d / "programs.csv", index=False)
    return d


def _fit_cli(*args) -> None:
    """``crowdstat fit ARGS`` in a subprocess; it must succeed."""
    r = subprocess.run([sys.executable, "-m", "crowdstat", "fit", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def _run(d, method, out):
    _fit_cli(
        d / "votes.csv",
        "--truth",
        d / "truth.csv",
        "--programs",
        d / "programs.csv",
        "--method",
        method,
        "--x64",
        *RUNS[method],
        "--out",
        out,
    )
    return out


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, data):
    method = request.param
    out = _run(data, method, data / f"out_{method}")
    res = cs.fit(data / "votes.csv", truth=data / "truth.csv", programs=data / "programs.csv", method=method, x64=True, **PY_KW[method])
    return method, out, res


def _read_csv(path):
    return pd.read_csv(path, dtype={"program": str, "annotator": str})


def test_four_files_with_documented_columns(run):
    method, out, res = run
    for f in FILES:
        assert (out / f).is_file(), f
    lines = _read_csv(out / "lines.csv")
    assert list(lines.columns) == ["program", "line", "posterior", "n_votes"]
    ann = _read_csv(out / "annotators.csv")
    assert list(ann.columns) == ["annotator", "weight", "reliability"]
    # string ids written back unchanged (leading zeros kept)
    assert lines["program"].str.startswith("00").all()
    assert ann["annotator"].str.startswith("0").all()


def test_rewards_file_validates_and_matches(run, data):
    method, out, res = run
    recs = cs.read_rewards(out / "rewards.jsonl")
    raw = [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines() if line.strip()]
    assert len(recs) == len(raw) == len(res.rewards)
    programs = pd.read_csv(data / "programs.csv", dtype={"program": str})
    n_lines = dict(zip(programs["program"], programs["n_lines"]))
    for rec, row in zip(raw, res.rewards.to_dict("records")):
        assert REWARD_FIELDS <= set(rec)
        assert rec["schema_version"] == 1 and rec["method"] == method and rec["tau"] == 0.5
        assert rec["program"] == row["program"]
        assert rec["n_lines"] == n_lines[rec["program"]]
        assert rec["coverage"] == pytest.approx(rec["n_annotated"] / rec["n_lines"], rel=1e-12)
        assert rec["lines"] == sorted(rec["lines"]) == list(map(int, row["lines"]))
        np.testing.assert_allclose(rec["posteriors"], row["posteriors"], rtol=1e-12, atol=1e-15)
        for k in ["reward", "reward_soft"]:
            assert rec[k] == pytest.approx(row[k], rel=1e-12, abs=1e-15)


def test_fit_json(run):
    method, out, res = run
    fj = json.loads((out / "fit.json").read_text())
    assert fj["method"] == method
    assert isinstance(fj["params"], dict)
    assert any(str(v) == cs.__version__ for k, v in fj.items() if "version" in k), fj.keys()
    if method == "proximal":
        diag = fj.get("diagnostics", fj)
        for k in ["objective", "dual_value", "gap", "rel_gap", "iterations", "converged", "gamma", "gamma_max"]:
            assert k in diag, k
        assert diag["gamma"] == pytest.approx(0.1 * diag["gamma_max"], rel=1e-12)
        assert diag["objective"] == pytest.approx(res.diagnostics["objective"], rel=1e-12)


def test_cli_output_equals_python_fit(run):
    method, out, res = run
    lines = _read_csv(out / "lines.csv")
    assert lines["program"].tolist() == res.lines["program"].tolist()
    assert lines["line"].tolist() == res.lines["line"].astype(int).tolist()
    assert lines["n_votes"].tolist() == res.lines["n_votes"].astype(int).tolist()
    np.testing.assert_allclose(lines["posterior"], res.lines["posterior"].astype(float), rtol=1e-12, atol=1e-15)
    ann = _read_csv(out / "annotators.csv")
    assert ann["annotator"].tolist() == res.annotators["annotator"].tolist()
    for c in ["weight", "reliability"]:
        np.testing.assert_allclose(ann[c], res.annotators[c].astype(float), rtol=1e-12, atol=1e-15)


def test_cli_gamma_percent_is_fraction_of_gamma_max(run, data):
    method, out, res = run
    if method != "proximal":
        pytest.skip("proximal only")
    votes = O.frame_to_votes(_read_csv(data / "votes.csv"))
    truth = O.frame_to_truth(_read_csv(data / "truth.csv"))
    E, t, _ = O.design(votes, truth)
    gm = O.gamma_max(E, t)
    fj = json.loads((out / "fit.json").read_text())
    diag = fj.get("diagnostics", fj)
    assert diag["gamma_max"] == pytest.approx(gm, rel=1e-12)
    assert diag["gamma"] == pytest.approx(0.1 * gm, rel=1e-12)
    w, _ = O.l1_logistic(E, t, 0.1 * gm)
    ann = _read_csv(out / "annotators.csv")
    np.testing.assert_allclose(ann["weight"], w, atol=1e-6)


def test_result_save_writes_the_same_files(run, tmp_path):
    method, out, res = run
    target = tmp_path / "saved"
    res.save(target)
    for f in FILES:
        assert (target / f).is_file()
    a, b = _read_csv(target / "lines.csv"), _read_csv(out / "lines.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    ra, rb = cs.read_rewards(target / "rewards.jsonl"), cs.read_rewards(out / "rewards.jsonl")
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if k == "posteriors":
                np.testing.assert_allclose(x[k], y[k], rtol=1e-12, atol=1e-15)
            elif isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], rel=1e-12, abs=1e-15), k
            else:
                assert x[k] == y[k], k
    assert not [p for p in tmp_path.iterdir() if p.name != "saved"]  # no temporary left over


def test_cli_absolute_gamma_and_ista(data, tmp_path):
    """`--gamma 0.3` is absolute; `--ista` converges to the same minimiser as the dense oracle."""
    out = tmp_path / "ista"
    args = ["--method", "proximal", "--x64", "--gamma", "0.3", "--center", "zero", "--ista", "--tol", "1e-12", "--maxiter", "100000"]
    _fit_cli(data / "votes.csv", "--truth", data / "truth.csv", *args, "--out", out)
    fj = json.loads((out / "fit.json").read_text())
    diag = fj.get("diagnostics", fj)
    assert diag["gamma"] == pytest.approx(0.3, rel=1e-15)
    votes = O.frame_to_votes(_read_csv(data / "votes.csv"))
    truth = O.frame_to_truth(_read_csv(data / "truth.csv"))
    E, t, _ = O.design(votes, truth)
    w, _ = O.l1_logistic(E, t, 0.3)
    np.testing.assert_allclose(_read_csv(out / "annotators.csv")["weight"], w, atol=1e-6)


def test_write_csv_round_trips_floats_exactly_and_quotes_only_when_needed(tmp_path):
    from crowdstat.io.frames import write_csv

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(1000), [0.1, 1.0, 1e-300, np.inf, np.nan]])
    df = pd.DataFrame({"program": [f"p{i}" for i in range(len(x))], "line": np.arange(len(x)), "posterior": x})
    write_csv(df, tmp_path / "a.csv")
    text = (tmp_path / "a.csv").read_text()
    assert text.splitlines()[:2] == ["program,line,posterior", "p0,0," + repr(float(x[0]))]
    back = pd.read_csv(tmp_path / "a.csv", dtype={"program": str})
    np.testing.assert_array_equal(back["posterior"].to_numpy(), x)  # bit-exact; NaN <-> empty field
    assert text.splitlines()[-1] == f"p{len(x) - 1},{len(x) - 1},"
    # float32 (a sequential trajectory): read back equal to the float32 values.
    f32 = pd.DataFrame({"w": rng.random(100).astype(np.float32)})
    write_csv(f32, tmp_path / "c.csv")
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "c.csv")["w"].to_numpy(), f32["w"].to_numpy().astype(np.float64))
    # A field with a comma or a quote: valid CSV, same values back.
    odd = pd.DataFrame({"program": ["a,b", 'c"d', "e"], "line": [1, 2, 3], "posterior": [0.5, 0.25, 1.0]})
    write_csv(odd, tmp_path / "b.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv", dtype={"program": str}), odd, check_dtype=False)


def test_degenerate_fits_say_so_in_fit_json_and_on_stderr(tmp_path):
    """The sequential default (weights in the thousands, every posterior 0 or 1) used to flow into
    rewards.jsonl without a word; an honest two-coin EM fit of the same votes raises nothing."""
    import json
    import subprocess
    import sys

    sim = tmp_path / "sim"
    run = [sys.executable, "-m", "crowdstat"]
    subprocess.run([*run, "simulate", "--population", "expert:3@0.95,novice:4@0.7,spammer:2", "--out", str(sim)], check=True)
    r = subprocess.run(
        [*run, "fit", str(sim / "votes.csv"), "--truth", str(sim / "truth.csv"), "--method", "sequential", "--out", str(tmp_path / "seq")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("crowdstat fit: warning: sequential:")]
    assert any("|weight| >= 20" in ln for ln in warned) and any("lines without truth have posteriors within" in ln for ln in warned)
    diag = json.loads((tmp_path / "seq" / "fit.json").read_text())["diagnostics"]
    assert len(diag["warnings"]) == 2
    r = subprocess.run(
        [*run, "fit", str(sim / "votes.csv"), "--truth", str(sim / "truth.csv"), "--method", "em2", "--out", str(tmp_path / "em2")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "warning" not in r.stderr
    assert "warnings" not in json.loads((tmp_path / "em2" / "fit.json").read_text())["diagnostics"]
