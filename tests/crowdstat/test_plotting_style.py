"""The shared figure style (crowdstat.study.plotting) and the experiments' output routing (--out, --plot-only).

Style: distinct series styles, a distinct colour-blind-safe palette, legends outside the data area
(bounding boxes from the renderer), reliability-diagram bins with few lines neither joined nor
filled, symlog tick labels that do not collide. Routing: a quick or --out run writes under its own
folder and leaves the committed docs/figures and experiments/results byte-identical.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.colors import to_rgb  # noqa: E402

from crowdstat.study import metrics as M  # noqa: E402
from crowdstat.study import plotting as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
COMMITTED = [ROOT / "docs" / "figures", ROOT / "experiments" / "results"]


def _bbox(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends(fig):
    return [leg for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg is not None]


def _assert_legends_outside(fig):
    fig.canvas.draw()
    legends = _legends(fig)
    assert legends, "the figure has no legend"
    for leg in legends:
        lb = _bbox(leg, fig)
        for ax in fig.axes:
            if ax.get_visible():
                assert not _overlaps(lb, ax.get_window_extent()), f"legend {[t.get_text() for t in leg.get_texts()][:3]} covers an axes"


# ---------------------------------------------------------------------------------------------
# style


def test_series_style_distinct_for_20_series():
    styles = [P.series_style(i) for i in range(20)]
    combos = {(s["color"], str(s["linestyle"]), s["marker"]) for s in styles}
    assert len(combos) == 20
    assert len({s["color"] for s in styles[:8]}) == 8  # the first 8 differ by colour alone
    assert all(set(s) == {"color", "linestyle", "marker"} for s in styles)
    with pytest.raises(ValueError):
        P.series_style(-1)


def test_palette_colours_pairwise_distinct():
    rgb = [np.array(to_rgb(c)) for c in P.PALETTE]
    assert len(P.PALETTE) >= 8
    for a, b in combinations(rgb, 2):
        assert np.abs(a - b).max() > 0.15
    neutral = np.array(to_rgb(P.NEUTRAL))
    assert all(np.abs(neutral - c).max() > 0.15 for c in rgb)
    assert len(set(P.KIND_COLORS.values())) == len(P.KIND_COLORS)


@pytest.mark.parametrize("where", ["right", "below"])
def test_legend_outside_lies_outside_the_axes(where):
    fig, axes = P.new_figure(1, 2)
    for ax in axes[0]:
        for i in range(10):
            ax.plot(np.arange(5), np.arange(5) * i, label=f"series {i}", **P.series_style(i))
        P.style_axes(ax, "round", "reward (nats)", integer_x=True)
    P.legend_outside(axes[0, 1], where)
    P.figure_legend(fig, axes[0, 0], where="right")
    _assert_legends_outside(fig)
    ticks = axes[0, 0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))  # integer ticks on a count axis
    assert axes[0, 0].get_xlabel() == "round" and axes[0, 0].get_ylabel() == "reward (nats)"
    P._plt().close(fig)


def test_reliability_diagram_legend_outside_and_sparse_bins_not_joined(tmp_path):
    rng = np.random.default_rng(0)
    post = np.concatenate([rng.uniform(0.9, 1.0, 200), rng.uniform(0.0, 0.1, 50), [0.35, 0.55, 0.62]])  # 3 bins of one line
    truth = np.where(rng.uniform(size=post.size) < post, 1, -1)
    d = {"a": M.reliability_diagram(post, truth), "b": M.reliability_diagram(1 - post, truth)}
    fig = M.plot_reliability_diagram(d, None, title="t", min_count=10)
    _assert_legends_outside(fig)
    ax = fig.axes[0]
    for line in ax.get_lines():
        if line.get_label() == "a (ECE {:.3f})".format(d["a"]["ece"]):
            y = np.asarray(line.get_ydata(), float)
            small = (d["a"]["count"] > 0) & (d["a"]["count"] < 10)
            assert np.isnan(y[small]).all() and small.sum() == 3  # the joined curve skips the 1-line bins
    hollow = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "none" and len(ln.get_xdata())]
    assert sum(len(ln.get_xdata()) for ln in hollow) >= 3  # ... which are drawn hollow instead
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel().startswith("lines per bin")  # the counts below
    P._plt().close(fig)


def test_reliabilities_figure_legend_outside():
    ann = pd.DataFrame({"true_p": [0.3, 0.5, 0.9], "reliability[em1]": [0.32, 0.52, 0.88], "reliability[majority]": [0.4, 0.5, 0.8]})
    fig = P.plot_reliabilities(ann)
    _assert_legends_outside(fig)
    P._plt().close(fig)


def test_symlog_tick_labels_do_not_overlap():
    fig, axes = P.new_figure(1, 1, figsize=(4, 3))
    ax = axes[0, 0]
    x = np.arange(1, 121)
    ax.plot(x, 3.0 * x**1.5)
    ax.plot(x, -(1.1**x))
    P.symlog_axis(ax, 2)
    fig.canvas.draw()
    ticks = ax.get_yticks()
    assert 0 in ticks and not any(0 < abs(t) < 2 for t in ticks)
    boxes = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text() and t.get_visible()]
    ylo, yhi = ax.get_ylim()
    boxes = [b for b, t in zip(boxes, ticks) if ylo <= t <= yhi]
    assert len(boxes) >= 3
    for a, b in combinations(boxes, 2):
        assert not _overlaps(a, b)
    P._plt().close(fig)


def test_mark_phase_end_is_a_labelled_vertical_line():
    fig, axes = P.new_figure(1, 1)
    line = P.mark_phase_end(axes[0, 0], 24.5, "honeypots end (task 24)")
    assert list(line.get_xdata()) == [24.5, 24.5] and line.get_label() == "honeypots end (task 24)"
    P._plt().close(fig)


# ---------------------------------------------------------------------------------------------
# experiments: where they write


def _digest(paths) -> dict:
    """sha256 of every file under ``paths`` (files or folders), except the RL study's (written by its own runs)."""
    files = [p for d in paths for p in ([d] if d.is_file() else sorted(d.rglob("*"))) if p.is_file() and not p.name.startswith("rl_")]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture()
def study():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module("_study")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_output_routing_never_targets_committed_files_unless_full(study, tmp_path):
    from types import SimpleNamespace as NS

    quick = study.outputs("exp9", NS(out=None, quick=True))
    assert quick.results == study.CACHE / "exp9" / "quick" and quick.figures.parent == quick.results and quick.kind == "quick"
    custom = study.outputs("exp9", NS(out=None, quick=False), custom=True)
    assert custom.results == study.CACHE / "exp9" / "custom"
    full = study.outputs("exp9", NS(out=None, quick=False))
    assert (full.results, full.figures, full.kind) == (study.RESULTS, study.FIGURES, "full")
    out = study.outputs("exp9", NS(out=str(tmp_path), quick=True))
    assert (out.results, out.figures, out.kind) == (tmp_path, tmp_path / "figures", "quick")
    assert "niceness" in study.cpu_note() and "load average" in study.cpu_note()


@pytest.mark.parametrize("name", ["exp2_honeypots", "exp4_robustness", "exp5_compute_time", "exp1_trajectories"])
def test_plot_only_with_out_writes_there_only(name, tmp_path):
    for f in (ROOT / "experiments" / "results").glob(f"{name}*"):
        shutil.copy(f, tmp_path / f.name)
    before = _digest(COMMITTED)
    r = subprocess.run(
        [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--plot-only", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert _digest(COMMITTED) == before


def test_plot_only_without_results_says_so(tmp_path):
    r = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "exp2_honeypots.py"), "--plot-only", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode != 0 and "no results to plot" in r.stderr


@pytest.mark.slow
def test_quick_run_with_out_leaves_committed_files_unchanged(tmp_path):
    before = _digest(COMMITTED)
    cmd = [sys.executable, str(EXPERIMENTS / "exp1_trajectories.py"), "--quick", "--replicates", "1", "--out", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"exp1_trajectories.json", "exp1_trajectories_curves.csv", "exp1_trajectories.png"} <= names
    assert '"run_kind": "quick"' in (tmp_path / "exp1_trajectories.json").read_text()
    assert _digest(COMMITTED) == before


def test_real_data_report_only_with_out(tmp_path):
    datasets = pytest.importorskip("crowdstat.io.datasets")
    try:
        anchors = datasets.datasets_root() / "ANCHORS.md"
    except Exception as exc:  # noqa: BLE001 - no shared data folder here
        pytest.skip(f"no datasets folder: {exc}")
    if not anchors.exists():
        pytest.skip("no ANCHORS.md")
    shutil.copy(ROOT / "experiments" / "results" / "real_data.json", tmp_path / "real_data.json")
    before = _digest([*COMMITTED, ROOT / "docs" / "real_data.md"])
    r = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "real_data.py"), "--report-only", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "figures" / "real_data_accuracy.png").exists()
    assert "figures/real_data_accuracy.png" in (tmp_path / "real_data.md").read_text()
    assert _digest([*COMMITTED, ROOT / "docs" / "real_data.md"]) == before
