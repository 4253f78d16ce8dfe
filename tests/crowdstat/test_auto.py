"""method="auto" (the default of crowdstat.fit): a choice made from the data, and said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import crowdstat as cs
from crowdstat.api import AUTO_CANDIDATES, AUTO_FOLDS


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("auto") / "sim"
    pop = "expert:3@0.95,novice:4@0.7,spammer:2,twocoin:2@0.95/0.5"
    subprocess.run([sys.executable, "-m", "crowdstat", "simulate", "--population", pop, "--seed", "3", "--out", str(out)], check=True)
    return out


def _heldout_score(sim, method, extra):
    """An independent re-computation of one candidate's held-out score (same folds as fit)."""
    table = cs.read_votes(str(sim / "votes.csv"), truth=str(sim / "truth.csv"))
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    order = np.random.default_rng(0).permutation(np.unique(lp[t != 0]))
    ll, n = 0.0, 0
    for k in range(AUTO_FOLDS):
        lines = np.flatnonzero(np.isin(lp, order[k::AUTO_FOLDS]) & (t != 0))
        held = t.copy()
        held[lines] = 0
        import dataclasses

        tab = dataclasses.replace(table, arrays=table.arrays._replace(truth=held))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = cs.fit(tab, method=method, **extra).lines["posterior"].to_numpy()[lines]
        p = np.clip(p, 1e-6, 1 - 1e-6)
        ll += float(np.sum(np.where(t[lines] > 0, np.log(p), np.log1p(-p))))
        n += len(lines)
    return ll / n


def test_auto_is_the_default_and_picks_the_best_held_out_candidate(sim):
    r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), calibrate="none")  # the raw held-out score
    auto = r.diagnostics["auto"]
    assert set(auto["scores"]) == set(AUTO_CANDIDATES) and "held-out" in auto["why"]
    assert auto["chosen"] == max(auto["scores"], key=auto["scores"].get) and r.method == auto["chosen"]
    for m, extra in AUTO_CANDIDATES.items():
        assert auto["scores"][m] == pytest.approx(_heldout_score(sim, m, extra), rel=1e-6)
    # the refit uses every honeypot: its posteriors equal a direct fit of the chosen method
    direct = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method=auto["chosen"], **AUTO_CANDIDATES[auto["chosen"]])
    assert np.allclose(direct.lines["posterior"], r.lines["posterior"])


def _calibrated_score(sim, method, extra):
    """Independently: the held-out posteriors of every honeypot line (same folds), then each candidate map
    fitted on the other folds' pairs and scored on the fold's lines; the best map's mean log-likelihood."""
    from crowdstat.estimators import calibration as C

    table = cs.read_votes(str(sim / "votes.csv"), truth=str(sim / "truth.csv"))
    t, lp = np.asarray(table.arrays.truth), np.asarray(table.arrays.line_program)
    order = np.random.default_rng(0).permutation(np.unique(lp[t != 0]))
    folds = [np.flatnonzero(np.isin(lp, order[k::AUTO_FOLDS]) & (t != 0)) for k in range(AUTO_FOLDS)]
    held = np.full(t.shape, np.nan)
    import dataclasses

    for lines in folds:
        masked = t.copy()
        masked[lines] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            held[lines] = (
                cs.fit(dataclasses.replace(table, arrays=table.arrays._replace(truth=masked)), method=method, **extra)
                .lines["posterior"]
                .to_numpy()[lines]
            )
    best = {}
    n_pos = int((t[t != 0] > 0).sum())
    kinds = ["none", "temperature", "platt", "affine"] + (["isotonic"] if min(n_pos, int((t != 0).sum()) - n_pos) >= 20 else [])
    for kind in kinds:
        p = held.copy()
        for i, lines in enumerate(folds):
            if kind != "none":
                rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
                p[lines] = C.fit_map(kind, held[rest], t[rest])(held[lines])
        q = np.clip(p[np.concatenate(folds)], 1e-6, 1 - 1e-6)
        y = t[np.concatenate(folds)] > 0
        best[kind] = float(np.mean(np.where(y, np.log(q), np.log1p(-q))))
    top = max(best, key=best.get)
    return best[top], top


def test_auto_with_honeypots_calibrates_by_default_and_scores_the_calibrated_candidates(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"))
    auto = r.diagnostics["auto"]
    assert auto["calibrate"] == "auto" and "after the calibration map" in auto["why"]
    for m, extra in AUTO_CANDIDATES.items():
        score, kind = _calibrated_score(sim, m, extra)
        assert auto["scores"][m] == pytest.approx(score, rel=1e-6) and auto["maps"][m] == kind
        assert auto["scores_raw"][m] == pytest.approx(_heldout_score(sim, m, extra), rel=1e-6)
        assert auto["scores"][m] >= auto["scores_raw"][m] - 1e-12  # "none" is a candidate map
    assert auto["chosen"] == max(auto["scores"], key=auto["scores"].get) and r.method == auto["chosen"]
    cal = r.diagnostics["calibration"]
    assert cal["requested"] == "auto" and cal["kind"] == auto["maps"][auto["chosen"]]
    # the delivered posteriors are those of calibrate="auto" on a direct fit of the chosen method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = cs.fit(str(sim / "votes.csv"), str(sim / "truth.csv"), method=auto["chosen"], calibrate="auto", **auto["params"])
    assert np.allclose(direct.lines["posterior"], r.lines["posterior"], atol=1e-6)
    assert np.allclose(direct.rewards["reward_soft"], r.rewards["reward_soft"], atol=1e-6)


def test_auto_cli_calibrates_by_default_and_obeys_calibrate_none(sim, tmp_path):
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "crowdstat", "fit", str(sim / "votes.csv"), "--truth", str(sim / "truth.csv")]
    ra = subprocess.run([*base, "--out", str(tmp_path / "a")], check=True, capture_output=True, text=True)
    rb = subprocess.run([*base, "--calibrate", "none", "--out", str(tmp_path / "b")], check=True, capture_output=True, text=True)
    said = [ln for ln in ra.stdout.splitlines() if ln.startswith("  calibrat")]
    assert len(said) == 1 and not [ln for ln in rb.stdout.splitlines() if ln.startswith("  calibrat")]
    a = json.loads((tmp_path / "a" / "fit.json").read_text())
    b = json.loads((tmp_path / "b" / "fit.json").read_text())
    assert a["diagnostics"]["auto"]["calibrate"] == "auto" and "calibration" in a["diagnostics"]
    assert b["diagnostics"]["auto"]["calibrate"] == "none" and "calibration" not in b["diagnostics"]
    kind = a["diagnostics"]["calibration"]["kind"]
    assert (f"calibrated on the honeypots ({kind})" in said[0]) if kind != "none" else ("no map beat" in said[0])


def test_auto_without_honeypots_compares_bic_of_the_em_models(sim):
    r = cs.fit(str(sim / "votes.csv"), method="auto")
    auto = r.diagnostics["auto"]
    assert "calibration" not in r.diagnostics and "posterior_raw" not in r.lines  # nothing to calibrate on, no warning
    assert set(auto["scores"]) == {"em1", "em2"} and "BIC" in auto["why"] and auto["chosen"] == min(auto["scores"], key=auto["scores"].get)
    em1 = cs.fit(str(sim / "votes.csv"), method="em1")
    m, n = em1.annotators.shape[0], len(cs.read_votes(str(sim / "votes.csv")).arrays.label)
    assert auto["scores"]["em1"] == pytest.approx(-2 * em1.diagnostics["log_likelihood"] + (m + 1) * np.log(n))


def test_auto_rejects_method_parameters(sim):
    with pytest.raises(TypeError, match="takes only the common parameters"):
        cs.fit(str(sim / "votes.csv"), method="auto", lam=0.1)


def test_auto_default_calibration_is_skipped_silently_where_no_map_can_be_fitted(sim, tmp_path):
    """>= 5 honeypot programs but one truth class: the default does not calibrate and does not warn;
    calibrate="auto" asked for explicitly still says why it did nothing."""
    import pandas as pd

    truth = pd.read_csv(sim / "truth.csv").assign(truth=1)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    assert truth["program"].nunique() >= AUTO_FOLDS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = cs.fit(str(sim / "votes.csv"), str(tmp_path / "truth.csv"))
    auto = r.diagnostics["auto"]
    assert auto["calibrate"] == "none" and "one truth class" in auto["calibrate_why"] and "calibration" not in r.diagnostics
    assert auto["scores"] == pytest.approx(auto["scores_raw"])
    with pytest.warns(UserWarning, match="one truth class"):
        cs.fit(str(sim / "votes.csv"), str(tmp_path / "truth.csv"), calibrate="auto")
