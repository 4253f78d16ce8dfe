"""crowdstat.study.metrics against hand-computed values and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdstat.study import metrics as M

POST = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.5])
TRUTH = np.array([1, -1, -1, 1, 1, -1])  # y = 1, 0, 0, 1, 1, 0


def test_accuracy_hand():
    # decisions (P > 0.5): +, +, -, +, -, - ; right: 1, 0, 1, 1, 0, 1
    assert float(M.line_accuracy(POST, TRUTH)) == pytest.approx(4 / 6)
    mask = np.array([1, 1, 1, 0, 0, 0], bool)
    assert float(M.line_accuracy(POST, TRUTH, mask=mask)) == pytest.approx(2 / 3)
    assert float(M.line_accuracy(POST, TRUTH, tau=0.85)) == pytest.approx(4 / 6)  # + - - - - -: right 1,1,1,0,0,1


def test_log_loss_and_brier_hand_and_sklearn():
    from sklearn.metrics import brier_score_loss, log_loss

    y = (TRUTH > 0).astype(int)
    hand_ll = -np.mean([np.log(0.9), np.log(0.2), np.log(0.7), np.log(0.6), np.log(0.1), np.log(0.5)])
    assert float(M.log_loss(POST, TRUTH)) == pytest.approx(hand_ll, rel=1e-12)
    assert float(M.log_loss(POST, TRUTH)) == pytest.approx(log_loss(y, POST), rel=1e-12)
    hand_b = np.mean([0.01, 0.64, 0.09, 0.16, 0.81, 0.25])
    assert float(M.brier(POST, TRUTH)) == pytest.approx(hand_b, rel=1e-12)
    assert float(M.brier(POST, TRUTH)) == pytest.approx(brier_score_loss(y, POST), rel=1e-12)
    # clipping: P = 0 on a correct line costs -log(1e-6), not inf
    assert float(M.log_loss(np.array([0.0]), np.array([1]))) == pytest.approx(-np.log(1e-6))


def test_ece_hand():
    # 2 bins: [0, .5) holds P = .3, .1 (y = 0, 1): conf .2, acc .5, |.3| x 2/6
    #         [.5, 1] holds P = .9, .8, .6, .5 (y = 1, 0, 1, 0): conf .7, acc .5, |.2| x 4/6
    assert float(M.expected_calibration_error(POST, TRUTH, n_bins=2)) == pytest.approx(0.3 * 2 / 6 + 0.2 * 4 / 6)
    count, conf, acc = M.calibration_bins(POST, TRUTH, n_bins=2)
    np.testing.assert_allclose(count, [2, 4])
    np.testing.assert_allclose(conf, [0.2, 0.7])
    np.testing.assert_allclose(acc, [0.5, 0.5])
    # 10 bins: every line alone in its bin except none; P = 1.0 goes to the last bin
    c10, _, _ = M.calibration_bins(np.array([1.0, 0.95, 0.0]), np.array([1, 1, -1]), n_bins=10)
    assert c10[9] == 2 and c10[0] == 1
    assert float(M.expected_calibration_error(np.array([1.0, 0.0]), np.array([1, -1]))) == 0.0
    d = M.reliability_diagram(POST, TRUTH, n_bins=2)
    assert d["ece"] == pytest.approx(0.3 * 2 / 6 + 0.2 * 4 / 6) and len(d["edges"]) == 3


def test_rmse_hand():
    assert float(M.reliability_rmse([0.9, 0.5, 0.2], [0.8, 0.5, 0.4])) == pytest.approx(np.sqrt((0.01 + 0 + 0.04) / 3))


def test_roc_auc_ties_average_ranks_hand_and_sklearn():
    from sklearn.metrics import roc_auc_score

    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    pos = np.array([0, 0, 1, 1, 1, 0], bool)
    # pairs (pos, neg): .35>.1, .35<.4, .35<.4 | .8 > all 3 | .4>.1, .4=.4, .4=.4  -> (1 + 3 + 1 + .5 + .5) / 9
    assert float(M.roc_auc(scores, pos)) == pytest.approx(6 / 9)
    assert float(M.roc_auc(scores, pos)) == pytest.approx(roc_auc_score(pos, scores))
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)
    p = rng.random(200) < 0.3
    assert float(M.roc_auc(s, p)) == pytest.approx(roc_auc_score(p, s), rel=1e-12)
    mask = rng.random(200) < 0.5
    assert float(M.roc_auc(s, p, mask=mask)) == pytest.approx(roc_auc_score(p[mask], s[mask]), rel=1e-12)
    assert np.isnan(float(M.roc_auc(s, np.zeros(200, bool))))


def test_detection_auc():
    rel = np.array([0.95, 0.5, 0.8, 0.3, 0.55])
    bad = np.array([0, 1, 0, 1, 0], bool)
    assert float(M.detection_auc(rel, bad)) == 1.0
    assert float(M.detection_auc(1 - rel, bad)) == 0.0


def test_honeypots_needed():
    grid = np.array([0, 5, 10, 20, 40])
    acc = np.array([[0.6, 0.8, 0.9, 0.95, 0.97], [0.6, 0.7, 0.85, 0.88, 0.89]])
    np.testing.assert_array_equal(M.honeypots_needed(grid, acc, 0.9), [10.0, np.nan])
    assert float(M.honeypots_needed(grid, acc[0], 0.5)) == 0.0


def test_metrics_vmap_and_jit():
    post = jnp.stack([jnp.asarray(POST), 1 - jnp.asarray(POST)])
    acc = jax.jit(jax.vmap(M.line_accuracy, in_axes=(0, None)))(post, jnp.asarray(TRUTH))
    np.testing.assert_allclose(acc, [4 / 6, 3 / 6])  # 1 - P: decisions - - + - + -
    auc = jax.vmap(M.roc_auc, in_axes=(0, None))(post, jnp.asarray(TRUTH > 0))
    assert auc.shape == (2,)


def test_replicate_interval_and_bootstrap():
    from scipy import stats

    v = np.array([0.8, 0.85, 0.9, 0.75, 0.95])
    r = M.replicate_interval(v)
    half = stats.t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5)
    assert r["mean"] == pytest.approx(0.85) and r["lo"] == pytest.approx(0.85 - half) and r["hi"] == pytest.approx(0.85 + half)
    assert r["n"] == 5
    r2 = M.replicate_interval(np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 6.0]]))
    np.testing.assert_allclose(r2["mean"], [2.0, 4.0])
    np.testing.assert_array_equal(r2["n"], [2, 3])
    b1 = M.bootstrap_ci(0, v, n_boot=500)
    b2 = M.bootstrap_ci(jax.random.key(0), v, n_boot=500)
    assert b1 == b2 and b1["lo"] <= 0.85 <= b1["hi"] and b1["lo"] >= 0.75 and b1["hi"] <= 0.95


def test_plot_reliability_diagram(tmp_path):
    d = {"a": M.reliability_diagram(POST, TRUTH), "b": M.reliability_diagram(1 - POST, TRUTH)}
    M.plot_reliability_diagram(d, tmp_path / "r.png", title="t")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_bounded_replicate_intervals_stay_inside_the_bounds():
    """Two replicates 0.80 and 0.99 gave a t-interval [-0.31, 2.10] (the issue saw 0.896 [0.684, 1.108]):
    with bounds the interval is a bootstrap interval inside the data's range, and below 3 replicates none."""
    v = np.array([0.80, 0.99])
    t = M.replicate_interval(v)
    assert t["hi"] > 1.0 or np.isnan(t["hi"])  # the old t-interval leaves [0, 1] (now: no interval at n = 2)
    b = M.replicate_interval(v, bounds=(0.0, 1.0))
    assert np.isnan(b["lo"]) and np.isnan(b["hi"]) and b["mean"] == pytest.approx(0.895)
    v = np.array([0.97, 0.99, 1.0, 1.0, 0.98])
    b = M.replicate_interval(v, bounds=(0.0, 1.0))
    assert 0.97 <= b["lo"] < b["mean"] < b["hi"] <= 1.0 and b["method"] == "percentile bootstrap"
    t = M.replicate_interval(v)
    assert t["hi"] > 1.0  # what the t-interval did
    arr = np.array([[0.0, 0.5], [0.0, 0.7], [0.0, 0.6], [0.0, np.nan]])
    b = M.replicate_interval(arr, bounds=(0.0, 1.0))
    assert b["lo"][0] == b["hi"][0] == 0.0 and 0.5 <= b["lo"][1] <= b["hi"][1] <= 0.7
    with pytest.raises(ValueError, match="outside the bounds"):
        M.replicate_interval(np.array([0.5, 1.2, 0.3]), bounds=(0.0, 1.0))
