"""gamma="cv" and the data-chosen default variant of the proximal method, against an independent loop
(the paper's fit, center="zero"; the default centred fit's cv is in test_centred_fit.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import crowdstat as cs
from crowdstat.estimators import registry as R
from tests.strategies import random_tables


@pytest.fixture(scope="module")
def crowd():
    votes, truth = random_tables(21, n_programs=14, max_lines=5, n_annotators=8, p_vote=0.6, p_honeypot=0.5)
    return votes, truth


def _independent_scores(votes, truth, candidates) -> dict:
    """Mean held-out log-likelihood of each (latent, gamma), 5-fold over honeypot programs, recomputed
    here with its own fold loop (same seeded fold assignment as the library: a permutation of the
    honeypot programs dealt round-robin)."""
    table = cs.read_votes(votes, truth=truth)
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    order = np.random.default_rng(0).permutation(np.unique(lp[t != 0]))
    out, se = {}, {}
    for latent, g in candidates:
        ll, n, per_fold = 0.0, 0, []
        for k in range(5):
            lines = np.flatnonzero(np.isin(lp, order[k::5]) & (t != 0))
            held = t.copy()
            held[lines] = 0
            tab = dataclasses.replace(table, arrays=table.arrays._replace(truth=held))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = (
                    cs.fit(tab, method="proximal", latent=latent, gamma=g, center=None if latent else "zero", x64=True)
                    .lines["posterior"]
                    .to_numpy()[lines]
                )
            p = np.clip(p, 1e-6, 1 - 1e-6)
            fold = float(np.sum(np.where(t[lines] > 0, np.log(p), np.log1p(-p))))
            ll += fold
            n += len(lines)
            per_fold.append(fold / len(lines))
        out[(latent, g)] = ll / n
        se[(latent, g)] = float(np.std(per_fold, ddof=1) / np.sqrt(5))
    _independent_scores.se = se  # type: ignore[attr-defined]
    return out


def _one_se_choice(scores: dict, se: dict):
    """The one-standard-error rule: the largest gamma of the best's variant within one SE of the best."""
    best = max(scores, key=scores.get)
    near = [k for k in scores if k[0] == best[0] and scores[k] >= scores[best] - se[best]]
    return max(near, key=lambda k: float(k[1].rstrip("%")))


@pytest.fixture(scope="module")
def supervised_cv(crowd):
    votes, truth = crowd
    return cs.fit(votes, truth, method="proximal", gamma="cv", latent=False, center="zero", x64=True)


def test_gamma_cv_picks_what_an_independent_loop_over_the_grid_picks(crowd, supervised_cv):
    votes, truth = crowd
    res = supervised_cv
    sel = res.diagnostics["selection"]
    assert sel["gamma_grid"] == list(R.GAMMA_CV_GRID)
    want = _independent_scores(votes, truth, [(False, g) for g in R.GAMMA_CV_GRID])
    got = {(r["latent"], r["gamma"]): r["heldout_loglik"] for r in sel["scores"]}
    assert got.keys() == want.keys()
    se = {(r["latent"], r["gamma"]): r["se"] for r in sel["scores"]}
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
        assert se[k] == pytest.approx(_independent_scores.se[k], rel=1e-9, abs=1e-12), k
    best = _one_se_choice(want, _independent_scores.se)
    assert (sel["chosen"]["latent"], sel["chosen"]["gamma"]) == best
    assert (sel["best"]["latent"], sel["best"]["gamma"]) == max(want, key=want.get)
    # refitted on all the truth at the chosen gamma: a direct fit there gives the same weights
    direct = cs.fit(votes, truth, method="proximal", gamma=best[1], latent=False, center="zero", x64=True)
    np.testing.assert_array_equal(direct.annotators["weight"], res.annotators["weight"])
    assert res.diagnostics["gamma"] == pytest.approx(float(best[1][:-1]) / 100 * res.diagnostics["gamma_max"], rel=1e-12)
    assert res.params["gamma"] == "cv"


def test_gamma_cv_with_latent_left_open_chooses_the_pair(crowd, supervised_cv):
    """latent=None and partial truth: both variants on the grid; the supervised half scores as above,
    the latent half as the independent loop, and the best pair is the one refitted."""
    votes, truth = crowd
    res = cs.fit(votes, truth, method="proximal", gamma="cv", center="zero", x64=True)
    scores = {(r["latent"], r["gamma"]): r["heldout_loglik"] for r in res.diagnostics["selection"]["scores"]}
    assert len(scores) == 2 * len(R.GAMMA_CV_GRID)
    for r in supervised_cv.diagnostics["selection"]["scores"]:
        assert scores[(False, r["gamma"])] == r["heldout_loglik"]
    want = _independent_scores(votes, truth, [(True, g) for g in R.GAMMA_CV_GRID])
    for k in want:
        assert scores[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    se = {(r["latent"], r["gamma"]): r["se"] for r in res.diagnostics["selection"]["scores"]}
    best = _one_se_choice(scores, se)
    chosen = res.diagnostics["selection"]["chosen"]
    assert (chosen["latent"], chosen["gamma"]) == best
    assert res.diagnostics["variant"].startswith("latent" if best[0] else "supervised")


def test_default_variant_is_unchanged(crowd):
    """No gamma='cv': supervised with truth (however few honeypot programs), latent without."""
    votes, truth = crowd
    assert cs.fit(votes, method="proximal", x64=True).diagnostics["variant"].startswith("latent")
    few = truth[truth["program"].isin(truth["program"].unique()[:3])]
    res = cs.fit(votes, few, method="proximal", x64=True)
    assert res.diagnostics["variant"].startswith("supervised") and "selection" not in res.diagnostics


@pytest.mark.slow  # a subprocess and 60 fits: ~25 s
def test_gamma_cv_is_recorded_in_fit_json(crowd, tmp_path):
    votes, truth = crowd
    v, t = tmp_path / "votes.csv", tmp_path / "truth.csv"
    votes.to_csv(v, index=False)
    truth.to_csv(t, index=False)
    out = tmp_path / "fit"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "crowdstat",
            "fit",
            str(v),
            "--truth",
            str(t),
            "--method",
            "proximal",
            "--gamma",
            "cv",
            "--center",
            "zero",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads((out / "fit.json").read_text())["diagnostics"]["selection"]
    assert d["gamma_grid"] == list(R.GAMMA_CV_GRID) and len(d["scores"]) == 2 * len(R.GAMMA_CV_GRID)  # both variants
    assert d["chosen"]["gamma"] in R.GAMMA_CV_GRID


def test_gamma_cv_bad_input(crowd, tmp_path):
    votes, truth = crowd
    assert R.parse_gamma(" CV ")[1] is True and math.isnan(R.parse_gamma("cv")[0])
    with pytest.raises(ValueError, match="'cv'"):
        R.parse_gamma("cvx")
    with pytest.raises(ValueError, match="needs honeypot truth"):
        cs.fit(votes, method="proximal", gamma="cv")
    few = truth[truth["program"].isin(truth["program"].unique()[:3])]
    with pytest.raises(ValueError, match="at least 5 programs with honeypot truth"):
        cs.fit(votes, few, method="proximal", gamma="cv")
    v = tmp_path / "votes.csv"
    votes.to_csv(v, index=False)
    r = subprocess.run(
        [sys.executable, "-m", "crowdstat", "fit", str(v), "--method", "proximal", "--gamma", "cv", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "needs honeypot truth" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
