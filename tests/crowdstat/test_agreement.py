"""Krippendorff's alpha (nominal) of the votes (crowdstat.estimators.agreement), against the `krippendorff`
package and hand-computed small cases; and its place in every fit's diagnostics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crowdstat
from crowdstat.estimators.agreement import krippendorff_alpha_nominal, summary

krippendorff = pytest.importorskip("krippendorff")


def _reference(unit, value) -> float:
    """The krippendorff package on the (coders x units) matrix; one rating per (unit, coder) slot."""
    units = sorted(set(unit))
    slots: dict = {}
    for u, v in zip(unit, value):
        slots.setdefault(u, []).append(v)
    n_coders = max(len(v) for v in slots.values())
    data = np.full((n_coders, len(units)), np.nan)
    for j, u in enumerate(units):
        data[: len(slots[u]), j] = slots[u]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def test_hand_computed_cases():
    # two units, two raters each, both agree: perfect agreement
    assert krippendorff_alpha_nominal([0, 0, 1, 1], [1, 1, -1, -1]) == pytest.approx(1.0)
    # unit 0: (+, -), unit 1: (+, -): n = 4, n_+ = n_- = 2, D_o = 2 * 2 / 1 = 4; alpha = 1 - 3 * 4 / (16 - 8) = -0.5
    assert krippendorff_alpha_nominal([0, 0, 1, 1], [1, -1, 1, -1]) == pytest.approx(-0.5)
    # unit 0: (+, +, -), unit 1: (-, -): n = 5, n_+ = 2, n_- = 3; D_o = (9 - 5) / 2 = 2; alpha = 1 - 4 * 2 / (25 - 13) = 1/3
    assert krippendorff_alpha_nominal([0, 0, 0, 1, 1], [1, 1, -1, -1, -1]) == pytest.approx(1 / 3)
    # a single-vote unit does not count
    assert krippendorff_alpha_nominal([0, 0, 0, 1, 1, 2], [1, 1, -1, -1, -1, 1]) == pytest.approx(1 / 3)


def test_undefined_cases_are_none():
    assert krippendorff_alpha_nominal([], []) is None
    assert krippendorff_alpha_nominal([0, 1, 2], [1, -1, 1]) is None  # no pairable unit
    assert krippendorff_alpha_nominal([0, 0, 1, 1], [1, 1, 1, 1]) is None  # one value: no expected disagreement
    with pytest.raises(ValueError, match="shapes"):
        krippendorff_alpha_nominal([0, 1], [1])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from([-1, 1, 2]), min_size=1, max_size=6), min_size=2, max_size=25),
)
def test_matches_the_krippendorff_package(units):
    unit = [u for u, vs in enumerate(units) for _ in vs]
    value = [v for vs in units for v in vs]
    ours = krippendorff_alpha_nominal(unit, value)
    pairable = [vs for vs in units if len(vs) >= 2]
    if ours is None:
        assert not pairable or len({v for vs in pairable for v in vs}) < 2
        return
    assert ours == pytest.approx(_reference(unit, value), abs=1e-10)


def test_every_fit_reports_it(tmp_path, make_tables):
    votes, truth = make_tables(2)
    res = crowdstat.fit(votes, truth, method="majority")
    ag = res.diagnostics["agreement"]
    t = crowdstat.read_votes(votes)
    line = np.asarray(t.arrays.line)
    assert ag == summary(t.arrays)
    assert ag["krippendorff_alpha_nominal"] == pytest.approx(_reference(line.tolist(), np.asarray(t.arrays.label).tolist()))
    assert ag["pairable_lines"] == int(np.sum(np.bincount(line) >= 2)) and ag["n_lines"] == t.n_lines
    res.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert saved["diagnostics"]["agreement"] == ag


def test_real_set_value():
    from crowdstat.io import datasets

    try:
        votes, _, _ = datasets.load("bluebirds")
    except datasets.DatasetError as e:
        pytest.skip(str(e))
    t = crowdstat.read_votes(votes)
    ours = summary(t.arrays)["krippendorff_alpha_nominal"]
    wide = pd.crosstab(votes["annotator"], votes["program"], values=votes["label"], aggfunc="first").to_numpy(np.float64)
    assert ours == pytest.approx(float(krippendorff.alpha(reliability_data=wide, level_of_measurement="nominal")), abs=1e-10)
