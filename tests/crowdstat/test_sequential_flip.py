"""Sequential eq. 8 without honeypots: the flipped (label-switched) solution is refused; with honeypots eq. 8 is unchanged."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import binom

import crowdstat as cs
from crowdstat.estimators.sequential import FLIP_MIN_LINES, FLIP_P_VALUE, majority_agreement
from tests.reference import oracles as O
from tests.strategies import random_tables


@pytest.fixture(scope="module")
def flipping_crowd():
    """12 equally reliable annotators (0.75), 30 short programs, 40% of them voting on a line: plain eq. 8
    from w0 = logit(0.7) ends with labels opposite to majority vote on most lines (seed found by search)."""
    return random_tables(5, n_programs=30, max_lines=3, n_annotators=12, p_vote=0.4, reliabilities=np.full(12, 0.75))


def _accuracy(res, truth) -> float:
    m = res.lines.merge(truth, on=["program", "line"])
    return float(np.mean(np.where(m["posterior"] > 0.5, 1, -1) == m["truth"]))


def _majority_agreement_oracle(votes, post: dict) -> tuple[float, int]:
    """Loop form: lines whose votes do not tie, and whether the posterior sides with their majority."""
    net: dict = {}
    for p, line, _, lab in votes:
        net[(p, line)] = net.get((p, line), 0) + lab
    decided = [k for k, v in net.items() if v != 0]
    agree = [(post[k] > 0.5) if net[k] > 0 else (post[k] < 0.5) for k in decided]
    return sum(agree) / len(agree), len(agree)


def test_plain_eq8_flips_here_and_the_check_refuses_it(flipping_crowd):
    votes_df, truth_df = flipping_crowd
    votes = O.frame_to_votes(votes_df)
    # flip_check=False: exactly the oracle's eq. 8 without honeypots ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = cs.fit(votes_df, method="sequential", x64=True, flip_check=False)
    w, _ = O.sequential(votes, {})
    ann = O.annotators_in_order(votes)
    np.testing.assert_allclose(plain.annotators["weight"], [w[a] for a in ann], rtol=1e-9, atol=1e-9)
    post = O.posteriors(votes, w)
    agreement, n = _majority_agreement_oracle(votes, post)
    assert n >= FLIP_MIN_LINES and agreement < 0.5  # ... which is the flipped solution
    assert plain.diagnostics["majority_agreement"] == pytest.approx(agreement) and plain.diagnostics["majority_decided_lines"] == n
    # significantly so: the one-sided binomial p-value, against scipy's
    p = plain.diagnostics["majority_agreement_p_value"]
    assert p == pytest.approx(binom.cdf(round(agreement * n), n, 0.5), rel=1e-10) and p <= FLIP_P_VALUE
    mv = cs.fit(votes_df, method="majority")
    assert _accuracy(plain, truth_df) < 0.5 < _accuracy(mv, truth_df)
    # ... and the default refuses it, with a message that says what to do
    with pytest.raises(ValueError, match=r"flipped solution .* majority vote on \d+% of the \d+ lines .*binomial p = .*--truth"):
        cs.fit(votes_df, method="sequential", x64=True)


def test_with_honeypots_eq8_is_unchanged(flipping_crowd):
    """Truth on some lines: no check, no majority diagnostics; the weights are the oracle's eq. 8."""
    votes_df, truth_df = flipping_crowd
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    res = cs.fit(votes_df, truth_df, method="sequential", x64=True)
    w, _ = O.sequential(votes, truth)
    ann = O.annotators_in_order(votes)
    np.testing.assert_allclose(res.annotators["weight"], [w[a] for a in ann], rtol=1e-9, atol=1e-9)
    assert "majority_agreement" not in res.diagnostics


def test_agreement_matches_the_loop_and_small_tables_are_not_checked():
    votes_df, _ = random_tables(3, n_programs=4, max_lines=3, n_annotators=5, p_vote=0.8)
    table = cs.read_votes(votes_df)
    post = np.random.default_rng(0).uniform(size=table.n_lines)
    got = majority_agreement(table, post)
    keys = O.lines_in_order(O.frame_to_votes(votes_df))
    want = _majority_agreement_oracle(O.frame_to_votes(votes_df), dict(zip(keys, post)))
    assert got[0] == pytest.approx(want[0]) and got[1] == want[1] < FLIP_MIN_LINES
    with pytest.warns(UserWarning, match="no honeypot truth"):
        res = cs.fit(votes_df, method="sequential", x64=True)  # too few decided lines to judge: eq. 8 as is
    assert 0 <= res.diagnostics["majority_agreement"] <= 1


def test_cli_refusal_is_one_line(flipping_crowd, tmp_path):
    votes_df, _ = flipping_crowd
    v = tmp_path / "votes.csv"
    votes_df.to_csv(v, index=False)
    r = subprocess.run(
        [sys.executable, "-m", "crowdstat", "fit", str(v), "--method", "sequential", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "warning" not in ln]
    assert len(lines) == 1 and "flipped solution" in lines[0]


def test_flip_check_bad_value():
    with pytest.raises(ValueError, match="flip_check"):
        cs.fit(random_tables(0)[0], method="sequential", flip_check="yes")


# ================================================================ real data (bluebirds: 108 items, 39 workers, 4,212 votes)


@pytest.fixture(scope="module")
def bluebirds():
    from crowdstat.io import datasets

    try:
        return datasets.load("bluebirds")
    except datasets.DatasetError as e:
        pytest.skip(str(e))


def _gold_accuracy(res, gold) -> float:
    m = res.lines[["program", "posterior"]].merge(gold[["program", "truth"]], on="program")
    assert len(m) == len(gold)
    return float(np.mean(np.where(m["posterior"] > 0.5, 1, -1) == m["truth"]))


def test_real_bluebirds_flip_is_refused_and_defaults_beat_majority(bluebirds):
    """The acceptance (experiments/acceptance.py, all 8 sets) in small: plain eq. 8 without honeypots
    flips on bluebirds and is refused; auto without honeypots (BIC: em2) and proximal with 20% honeypots
    beat majority vote on the other 80% of the gold."""
    from crowdstat.io import datasets

    votes, truth, _ = bluebirds
    table = cs.read_votes(votes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = cs.fit(table, method="sequential", x64=True, flip_check=False, keep_trajectory=False)
        assert plain.diagnostics["majority_agreement"] < 0.5
        with pytest.raises(ValueError, match="flipped solution"):
            cs.fit(table, method="sequential", x64=True, keep_trajectory=False)
        hp, ev = datasets.honeypot_split(truth, 0.2, 0)
        mv = _gold_accuracy(cs.fit(table, method="majority"), ev)
        assert _gold_accuracy(plain, ev) < 0.5 < mv
        auto = cs.fit(table, x64=True)
        assert auto.diagnostics["auto"]["chosen"] == "em2" and _gold_accuracy(auto, ev) > mv
        with_hp = cs.read_votes(votes, truth=hp)
        prox = cs.fit(with_hp, method="proximal", x64=True)
        assert _gold_accuracy(prox, ev) > mv
        cv = cs.fit(with_hp, method="proximal", gamma="cv", x64=True)
        assert cv.diagnostics["selection"]["chosen"]["gamma"] in cv.diagnostics["selection"]["gamma_grid"]


def test_real_bluebirds_auto_without_honeypots_leaves_collapsed_fits_out(bluebirds, monkeypatch):
    """BIC assumes an interior maximum: an EM fit whose class prior sits at the boundary is not compared.
    bluebirds' em1 has pi = 0.029 (every image 'wrong'); with the bound raised to 0.05 it is left out."""
    from crowdstat import api

    votes, _, _ = bluebirds
    monkeypatch.setattr(api, "AUTO_COLLAPSED_PRIOR", 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cs.fit(votes, x64=True)
    auto = res.diagnostics["auto"]
    assert auto["chosen"] == "em2" and "not compared: em1 (0.02" in auto["why"]
    assert set(auto["scores"]) == {"em1", "em2"}  # both BICs still reported
