"""crowdstat.allocate: the information measures against independent brute force, the greedy batch's
invariants, the stopping rule, bad input, and ``crowdstat next``."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crowdstat
from crowdstat import allocate as A
from crowdstat.cli import main
from crowdstat.study.simulate import simulate


def _mi_brute(q, sens, spec):
    """I(Y; V_1..V_r) from the joint table P(Y, V) written out (no pattern recursion)."""
    total = 0.0
    pv = {}
    joint = {}
    for v in itertools.product([1, -1], repeat=len(sens)):
        for y, py in ((1, q), (-1, 1 - q)):
            p = py
            for s, c, vi in zip(sens, spec, v, strict=True):
                p *= (s if vi == 1 else 1 - s) if y == 1 else (1 - c if vi == 1 else c)
            joint[(y, v)] = p
            pv[v] = pv.get(v, 0.0) + p
    for (y, v), p in joint.items():
        if p > 0:
            total += p * math.log(p / ((q if y == 1 else 1 - q) * pv[v]))
    return total


@settings(max_examples=60, deadline=None)
@given(
    q=st.floats(0.0, 1.0),
    rates=st.lists(st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)), min_size=1, max_size=5),
)
def test_joint_information_is_the_mutual_information(q, rates):
    sens, spec = [r[0] for r in rates], [r[1] for r in rates]
    got = A.joint_information(q, sens, spec)
    assert got == pytest.approx(_mi_brute(q, sens, spec), abs=1e-10)
    assert 0.0 <= got <= math.log(2) + 1e-12
    # one vote: the vectorised kernel agrees
    one = np.asarray(A.vote_information(np.array([q]), np.array(sens[:1]), np.array(spec[:1])))[0, 0]
    assert one == pytest.approx(_mi_brute(q, sens[:1], spec[:1]), abs=1e-6)


def test_information_is_submodular():
    """A vote adds less to a larger set of votes on the line (votes independent given the truth): the
    property that makes the greedy batch within 1 - 1/e of the best."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        q = rng.random()
        s, c = rng.uniform(0.55, 0.99, 6), rng.uniform(0.55, 0.99, 6)
        x = (s[5:], c[5:])
        add = [A.joint_information(q, [*s[:k], *x[0]], [*c[:k], *x[1]]) - A.joint_information(q, s[:k], c[:k]) for k in range(6)]
        assert all(add[r] >= add[r + 1] - 1e-12 for r in range(5))  # S = the first r votes, T = the first r + 1


@pytest.mark.parametrize(("a", "b", "n"), [(1.0, 1.0, 6), (20.0, 4.0, 12)])
def test_honeypot_information_by_quadrature(a, b, n):
    """I(p; K) = sum_k int Beta(p) Bin(k | n, p) log(Bin / BetaBin) dp, by quadrature (scipy)."""
    from scipy import integrate, stats

    bb = stats.betabinom(n, a, b)
    total = 0.0
    for k in range(n + 1):
        f = lambda p, k=k: stats.beta.pdf(p, a, b) * stats.binom.pmf(k, n, p) * math.log(stats.binom.pmf(k, n, p) / bb.pmf(k))  # noqa: E731
        total += integrate.quad(f, 0, 1, limit=200)[0]
    assert A.honeypot_information(a, b, n) == pytest.approx(total, rel=1e-4, abs=1e-7)
    assert A.honeypot_information(a, b, 0) == 0.0


def _fit(seed=0, programs=40, per_item=2, spec="expert:3@0.9,novice:4@0.7,spammer:2"):
    sim = simulate(seed, spec, n_programs=programs, lines_per_program=5, annotators_per_item=per_item)
    res = crowdstat.fit(sim.votes, truth=sim.truth, method="em1", x64=True)
    return sim, res


def test_proposal_invariants():
    sim, res = _fit()
    prop = A.propose(res, 30, per_annotator=6)
    a = prop.assignments
    assert len(a) == 30 and list(a.columns) == ["program", "annotator", "kind", "gain"]
    assert (a["kind"] == "honeypot").sum() == 3  # round(0.1 x 30)
    assert a.groupby("annotator").size().max() <= 6
    decided = set(prop.programs.loc[prop.programs["decided"], "program"])
    assert not decided & set(a.loc[a["kind"] == "vote", "program"])
    hp_programs = set(sim.truth["program"])
    assert set(a.loc[a["kind"] == "honeypot", "program"]) <= hp_programs
    # no annotator is asked about a program they reviewed already, nor twice in the batch
    seen = set(zip(sim.votes["program"], sim.votes["annotator"], strict=True))
    assert not seen & set(zip(a["program"], a["annotator"], strict=True))
    assert not a.duplicated(["program", "annotator"]).any()
    votes = a[a["kind"] == "vote"]
    assert (votes["gain"] > 0).all()
    # greedy: the gain of each pick equals the joint information it adds to its lines
    lines = res.lines.assign(program=res.lines["program"].astype(str))
    rel = dict(zip(res.annotators["annotator"], res.annotators["reliability"], strict=True))
    chosen: dict[str, list[float]] = {}
    for _, row in votes.iterrows():
        qs = lines.loc[lines["program"] == row["program"], "posterior"].to_numpy()
        before = sum(A.joint_information(q, chosen.get(row["program"], []), chosen.get(row["program"], [])) for q in qs)
        chosen.setdefault(row["program"], []).append(rel[row["annotator"]])
        after = sum(A.joint_information(q, chosen[row["program"]], chosen[row["program"]]) for q in qs)
        assert row["gain"] == pytest.approx(after - before, abs=1e-9)


def test_stopping_rule_and_line_unit():
    sim, res = _fit(per_item=4)
    conf = A.program_confidence(res.lines["posterior"], res.table.arrays.line_program, res.table.n_programs)
    truth = np.asarray(res.table.arrays.truth)
    q = np.where(truth != 0, 1.0, res.lines["posterior"].to_numpy())
    brute = pd.Series(np.maximum(q, 1 - q)).groupby(np.asarray(res.table.arrays.line_program)).prod().to_numpy()
    prop = A.propose(res, 10, confidence=0.9)
    np.testing.assert_allclose(prop.programs["confidence"], brute, rtol=1e-9)
    assert (prop.programs["decided"] == (brute >= 0.9)).all()
    assert conf.shape == brute.shape
    everything = A.propose(res, 10_000, unit="line", confidence=0.5, honeypot_fraction=0.0)
    undecided = set(everything.programs.loc[~everything.programs["decided"], "program"])
    assert set(everything.assignments["program"]) == undecided  # a large budget reaches every undecided program, only them
    lines = A.propose(res, 12, unit="line", honeypot_fraction=0.0)
    assert list(lines.assignments.columns) == ["program", "line", "annotator", "kind", "gain"]
    assert (lines.assignments["kind"] == "vote").all() and len(lines.assignments) == 12


def test_new_programs_and_new_annotators():
    sim, res = _fit()
    progs = pd.DataFrame({"program": ["fresh1", "fresh2"], "n_lines": [4, 3]})
    prop = A.propose(res, 200, programs=progs, annotators=[*res.annotators["annotator"], "newbie"], honeypot_fraction=0.1)
    a = prop.assignments
    assert {"fresh1", "fresh2"} <= set(a["program"])
    assert prop.programs.set_index("program").loc["fresh1", "n_lines"] == 4
    # the honeypots go first to those whose reliability the honeypots have told least about (none yet)
    hp_votes = sim.votes.merge(sim.truth, on=["program", "line"]).groupby("annotator").size()
    first = a.loc[a["kind"] == "honeypot", "annotator"]
    assert "newbie" in set(first) and hp_votes.get(first.iloc[0], 0) == 0
    only = A.propose(res, 5, annotators=["expert01"], honeypot_fraction=0.0)
    assert set(only.assignments["annotator"]) <= {"expert01"}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"budget": -1}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"budget": 3, "unit": "token"}, "unit"),
        ({"budget": 3, "confidence": 1.0}, "confidence"),
        ({"budget": 3, "honeypot_fraction": 2}, "honeypot_fraction"),
        ({"budget": 3, "per_annotator": 0}, "per_annotator"),
        ({"budget": 3, "prior_reliability": 0.3}, "prior_reliability"),
    ],
)
def test_bad_options(kw, match):
    _, res = _fit(programs=12)
    with pytest.raises(ValueError, match=match):
        A.propose(res, **kw)


def test_cli_next(tmp_path, capsys):
    sim = simulate(3, "expert:3@0.9,novice:4@0.7", n_programs=30, lines_per_program=4, annotators_per_item=2)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    sizes = sim.true_lines.groupby("program").size()
    progs = pd.DataFrame({"program": [*sizes.index, "new"], "n_lines": [*sizes.to_numpy(), 5]})
    progs.to_csv(tmp_path / "programs.csv", index=False)
    out = tmp_path / "next"
    args = [str(tmp_path / "votes.csv"), "--truth", str(tmp_path / "truth.csv"), "--budget", "15", "--out", str(out)]
    assert main(["next", *args, "--programs", str(tmp_path / "programs.csv"), "--method", "em1"]) == 0
    got = pd.read_csv(out / "next.csv")
    assert len(got) == 15 and (got["kind"] == "honeypot").sum() == 2
    assert "new" in set(pd.read_csv(out / "programs.csv")["program"])
    cal = tmp_path / "cal"
    assert main(["next", *args[:-1], str(cal), "--method", "em1", "--calibrate", "platt"]) == 0
    assert json.loads((cal / "next.json").read_text())["calibration"] == "platt"  # the map the fit applied
    assert json.loads((out / "next.json").read_text())["calibration"] is None  # em1's default: none
    assert main(["next", *args[:-1], str(tmp_path / "few")]) == 0  # auto with 3 honeypot programs: BIC, no map
    assert sim.truth["program"].nunique() == 3 and json.loads((tmp_path / "few" / "next.json").read_text())["calibration"] is None
    capsys.readouterr()
    assert main(["next", *args[:-1], str(tmp_path / "n2"), "--budget", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget" in err[0] and not (tmp_path / "n2").exists()
    pd.DataFrame({"program": ["x"], "lines": [3]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["next", *args[:-1], str(tmp_path / "n3"), "--programs", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv: missing column(s) n_lines" in capsys.readouterr().err


def test_cli_next_auto_reads_calibrated_posteriors_by_default(tmp_path):
    """method auto with >= 5 honeypot programs calibrates unless --calibrate says otherwise (docs/cli.md)."""
    sim = simulate(4, "expert:3@0.9,novice:4@0.7", n_programs=40, lines_per_program=4, annotators_per_item=3, honeypot_fraction=0.3)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    assert sim.truth["program"].nunique() >= 5
    args = [str(tmp_path / "votes.csv"), "--truth", str(tmp_path / "truth.csv"), "--budget", "10", "--out"]
    assert main(["next", *args, str(tmp_path / "a")]) == 0
    assert main(["next", *args, str(tmp_path / "b"), "--calibrate", "none"]) == 0
    a = json.loads((tmp_path / "a" / "next.json").read_text())
    b = json.loads((tmp_path / "b" / "next.json").read_text())
    assert a["calibration"] in ("none", "temperature", "platt", "affine", "isotonic") and b["calibration"] is None
    fit = crowdstat.fit(str(tmp_path / "votes.csv"), str(tmp_path / "truth.csv"))
    assert a["calibration"] == fit.diagnostics["calibration"]["kind"] and a["method"] == fit.method


def test_unanimous_round_has_a_usable_prior(tmp_path):
    """Every annotator at reliability 1 (a small unanimous round): new annotators get a prior below 1, not an error."""
    votes = pd.DataFrame(
        {
            "program": ["p1", "p1", "p2", "p2", "p3", "p3"],
            "line": [1] * 6,
            "annotator": ["a", "b", "a", "b", "c", "a"],
            "label": [1, 1, -1, -1, 1, 1],
        }
    )
    votes.to_csv(tmp_path / "v.csv", index=False)
    assert main(["next", str(tmp_path / "v.csv"), "--budget", "2", "--method", "em1", "--out", str(tmp_path / "nx")]) == 0
    res = crowdstat.fit(votes, method="em1")
    assert res.annotators["reliability"].median() > 0.99
    assert len(A.propose(res, 2, annotators=["a", "b", "c", "new"], confidence=0.999999).assignments) <= 2
