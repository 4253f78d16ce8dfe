"""The project's figure style and the figures of the study (matplotlib, imported lazily; Agg backend without a display).

One style for every figure the project writes (docs/figures, ``crowdstat compare``, ``make demo``,
the benchmarks, the RL study):

- :data:`PALETTE`: the Okabe-Ito colour-blind-safe colours, most legible first (yellow, the
  faintest on white, last); :func:`series_style` adds line styles and markers so that 20+ series
  stay distinct: ``ax.plot(x, y, **series_style(i))``. :data:`KIND_COLORS` fixes one colour per
  annotator kind (expert, novice, spammer, ...) across figures; :data:`NEUTRAL` is for references.
- :func:`style_axes` labels both axes (say the unit: "seconds", "nats per line"), adds a light grid
  and, for axes that count steps / rounds / tasks, integer ticks.
- :func:`legend_outside` puts an axes' legend right of (or below) its data area, never over it;
  :func:`figure_legend` one legend for a row of panels. :func:`save_figure` saves with a tight
  bounding box, so outside legends are kept.
- :func:`mark_phase_end` draws a labelled vertical line where a phase ends (e.g. the last
  honeypot task); :func:`symlog_axis` a symmetric-log axis whose tick labels do not collide,
  :func:`log_axis` a log axis labelled 0.2, 0.5, 1, 2 rather than 2 x 10^-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "PALETTE",
    "NEUTRAL",
    "LINESTYLES",
    "MARKERS",
    "KIND_COLORS",
    "series_style",
    "kind_style",
    "new_figure",
    "style_axes",
    "legend_outside",
    "figure_legend",
    "mark_phase_end",
    "symlog_axis",
    "log_axis",
    "save_figure",
    "plot_trajectories",
    "plot_reliabilities",
]

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (faint on white: last)
)
NEUTRAL = "#7F7F7F"  # references (y = x, tolerances, "perfect calibration"), never a data series
LINESTYLES: tuple = ("-", "--", ":", "-.")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
KIND_COLORS: dict[str, str] = {
    "expert": "#009E73",
    "reliable": "#56B4E9",
    "novice": "#0072B2",
    "spammer": "#000000",
    "adversary": "#D55E00",
    "twocoin": "#E69F00",
    "examples": "#CC79A7",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def series_style(i: int) -> dict:
    """Colour, line style and marker of series ``i`` (0-based): ``ax.plot(x, y, **series_style(i))``.

    The colour cycles through :data:`PALETTE` (8), the line style changes after each full colour
    cycle and the marker cycles with period 7, so (colour, line style, marker) is distinct for the
    first 32 series and the colour alone for the first 8.
    """
    i = int(i)
    if i < 0:
        raise ValueError(f"series index must be >= 0, got {i}")
    n = len(PALETTE)
    return {"color": PALETTE[i % n], "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}


def kind_style(kind: str, i: int = 0) -> dict:
    """The style of an annotator kind: its :data:`KIND_COLORS` colour (else ``series_style(i)``'s), solid line."""
    st = series_style(i)
    st["color"] = KIND_COLORS.get(str(kind), st["color"])
    st["linestyle"] = "-"
    return st


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    """``plt.subplots`` with constrained layout (room for outside legends and colour bars), ``squeeze=False``."""
    plt = _plt()
    if figsize is None:
        figsize = (5.2 * ncols + 1.8, 4.0 * nrows)
    kw.setdefault("layout", "constrained")
    kw.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, figsize=figsize, **kw)


def style_axes(ax, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None, *, integer_x=False, integer_y=False):
    """Label the axes (include the unit), add a light grid; ``integer_x`` / ``integer_y`` for counts (steps, rounds, tasks)."""
    from matplotlib.ticker import MaxNLocator

    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if integer_y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def legend_outside(ax, where: str = "right", fontsize: float = 8, **kw):
    """The legend of ``ax`` outside its data area: ``where="right"`` (upper left corner at the axes' right edge) or ``"below"``."""
    if where == "right":
        kw.setdefault("loc", "upper left")
        kw.setdefault("bbox_to_anchor", (1.02, 1.0))
    elif where == "below":
        kw.setdefault("loc", "upper center")
        kw.setdefault("bbox_to_anchor", (0.5, -0.18))
        kw.setdefault("ncol", 3)
    else:
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    kw.setdefault("borderaxespad", 0.0)
    kw.setdefault("frameon", False)
    return ax.legend(fontsize=fontsize, **kw)


def figure_legend(fig, ax=None, where: str = "right", fontsize: float = 8, handles=None, labels=None, **kw):
    """One legend for the whole figure (handles of ``ax``, or given), outside every panel.

    Needs a constrained-layout figure (:func:`new_figure`), which reserves the room for it.
    """
    if handles is None:
        handles, labels = (ax or fig.axes[0]).get_legend_handles_labels()
    loc = {"right": "outside right upper", "below": "outside lower center"}.get(where)
    if loc is None:
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    if where == "below":
        kw.setdefault("ncol", min(len(handles), 6) or 1)
    kw.setdefault("frameon", False)
    return fig.legend(handles, labels, loc=loc, fontsize=fontsize, **kw)


def mark_phase_end(ax, x: float, label: str, color: str = NEUTRAL, text: bool = False):
    """A dash-dot vertical line at ``x`` where a phase ends (e.g. "honeypots end (task 24)").

    ``label`` goes to the legend (so it never covers data); ``text=True`` also writes it along the
    line, at the top of the axes, on a white box.
    """
    line = ax.axvline(x, color=color, lw=1.1, ls="-.", zorder=1, label=label)
    if text:
        ax.text(
            x,
            0.98,
            f" {label}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="top",
            fontsize=7.5,
            color="0.25",
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    return line


def symlog_axis(ax, linthresh: float, axis: str = "y", max_abs: float | None = None):
    """Symmetric-log scale with ticks at 0 and +-10^k (10^k >= ``linthresh`` only), so labels near 0 do not overlap."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if max_abs is None:
        lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
        max_abs = max(abs(lo), abs(hi))
    k0 = int(np.ceil(np.log10(linthresh)))
    k1 = max(k0, int(np.ceil(np.log10(max(max_abs, linthresh)))))
    ks = list(range(k0, k1 + 1))
    if len(ks) > 5:  # every other decade: keep ~5 labels per side
        ks = ks[::2]
    ticks = sorted([0.0] + [10.0**k for k in ks] + [-(10.0**k) for k in ks])

    def fmt(v, _pos):
        if v == 0:
            return "0"
        k = int(round(np.log10(abs(v))))
        body = f"{10**k:g}" if -1 <= k <= 2 else f"10^{{{k}}}"
        sign = "-" if v < 0 else ""
        return f"${sign}{body}$"

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=linthresh)
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(fmt))
    target.set_minor_locator(NullLocator())


def _compact(v: float) -> str:
    """Short tick label: 0.02, 5, 300, 20k, 1M, 1e-05."""
    if v <= 0:
        return f"{v:g}"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div and v >= 1e4:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def log_axis(ax, axis: str = "y"):
    """Log scale with short plain tick labels (0.2, 1, 20k, 1M rather than 2 x 10^-1, 1e+06).

    Call after plotting: ticks at 1, 2, 5 x 10^k when the data span up to 2.5 decades, at 10^k beyond.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    span = np.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span <= 2.5 else (1.0,)))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: _compact(v)))
    target.set_minor_formatter(NullFormatter())


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Save with a tight bounding box (keeps outside legends), create the folder, close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    _plt().close(fig)
    return path


def _honeypot_tasks(res) -> np.ndarray | None:
    """Boolean per task (the trajectory's rows) of a FitResult: does the program carry honeypot truth?"""
    table = getattr(res, "table", None)
    if table is None or getattr(table, "arrays", None) is None:
        return None
    a = table.arrays
    is_hp = np.zeros(table.n_programs, bool)
    truth = np.asarray(a.truth)
    is_hp[np.asarray(a.line_program)[truth != 0]] = True
    return is_hp


def _mark_honeypots(ax, is_hp) -> None:
    if is_hp is None or not is_hp.any():
        return
    n = int(is_hp.sum())
    if is_hp[:n].all():  # honeypots first (Algorithm 1): one boundary
        mark_phase_end(ax, n + 0.5, f"honeypots end (task {n})")
    else:  # scattered: a rug of the honeypot tasks
        x = np.flatnonzero(is_hp) + 1
        ax.plot(x, np.zeros_like(x, float), "|", transform=ax.get_xaxis_transform(), color=NEUTRAL, ms=8, label="honeypot task")


def plot_trajectories(sequential_results: dict, one_shot: dict, true_p=None, path=None, title=None):
    """Sequential weight trajectories (one panel per lam) next to one-shot weights.

    Parameters
    ----------
    sequential_results : {label: FitResult}
        Sequential fits (with ``trajectory``), e.g. one per lam. Where the fit's table carries
        honeypot truth, the end of the honeypot phase is marked.
    one_shot : {label: FitResult}
        One-shot fits whose ``annotators.weight`` is drawn as a bar chart.
    true_p : array-like, optional
        True reliabilities; their logits are drawn as dashed reference lines (same colour).
    """
    n = len(sequential_results) + 1
    ncols = 2 if n >= 4 else n
    nrows = -(-n // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(5.6 * ncols + 1.6, 4.3 * nrows))
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    axes = axes[:n]
    true_w = None
    if true_p is not None:
        tp = np.clip(np.asarray(true_p, float), 1e-6, 1 - 1e-6)
        true_w = np.log(tp) - np.log1p(-tp)
    for ax, (label, res) in zip(axes, sequential_results.items()):
        traj = res.trajectory
        x = np.arange(1, len(traj) + 1)
        for i, col in enumerate(traj.columns):
            st = series_style(i)
            ax.plot(x, traj[col].to_numpy(), color=st["color"], ls=st["linestyle"], lw=1.3, label=str(col))
            if true_w is not None:
                ax.axhline(true_w[i], color=st["color"], ls=(0, (1, 2)), lw=0.8)
        _mark_honeypots(ax, _honeypot_tasks(res))
        ymax = np.nanmax(np.abs(traj.to_numpy()))
        if np.isfinite(ymax) and ymax > 50:
            symlog_axis(ax, 5, max_abs=ymax)
        style_axes(ax, "task (program, in fit order)", "weight w = logit(p) (dotted: true)", f"sequential (eq. 8), {label}", integer_x=True)
    figure_legend(fig, axes[0], where="right", title="annotator", fontsize=7)
    ax = axes[-1]
    k = len(one_shot)
    width = 0.8 / max(k + (true_w is not None), 1)
    first = next(iter(one_shot.values()))
    names = first.annotators["annotator"].astype(str).to_numpy()
    idx = np.arange(len(names))
    for j, (label, res) in enumerate(one_shot.items()):
        ax.bar(idx + j * width, res.annotators["weight"].to_numpy(), width, color=PALETTE[j % len(PALETTE)], label=label)
    if true_w is not None:
        ax.bar(idx + k * width, true_w, width, color=NEUTRAL, label="true logit(p)")
    ax.set_xticks(idx + width * (k - (true_w is None)) / 2, names, rotation=60, fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    style_axes(ax, "annotator", "weight w = logit(p)", "one-shot weights")
    legend_outside(ax, "right", fontsize=7, title="one-shot fit", bbox_to_anchor=(1.02, 0.45))
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


def plot_reliabilities(annotators, path=None, title: str = "Estimated vs true annotator reliabilities"):
    """Estimated (``reliability[<method>]`` columns) against true (``true_p``) reliabilities, one series per method."""
    fig, axes = new_figure(1, 1, figsize=(6.8, 4.6))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color=NEUTRAL, ls="--", lw=1, label="estimate = truth")
    cols = [c for c in annotators.columns if c.startswith("reliability[")]
    for i, c in enumerate(cols):
        st = series_style(i)
        ax.plot(annotators["true_p"], annotators[c], ls="none", marker=st["marker"], color=st["color"], ms=5, alpha=0.8, label=c[12:-1])
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    style_axes(ax, "true reliability p (probability)", "estimated reliability (probability)", title)
    legend_outside(ax, "right", title="method")
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
