"""Figures (matplotlib, imported lazily; Agg backend when there is no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_trajectories"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_trajectories(sequential_results: dict, one_shot: dict, true_p=None, path=None, title=None):
    """Sequential weight trajectories (one panel per lam) next to one-shot weights.

    Parameters
    ----------
    sequential_results : {label: FitResult}
        Sequential fits (with ``trajectory``), e.g. one per lam.
    one_shot : {label: FitResult}
        One-shot fits whose ``annotators.weight`` is drawn as a bar chart.
    true_p : array-like, optional
        True reliabilities; their logits are drawn as dashed reference lines.
    """
    plt = _plt()
    n = len(sequential_results) + 1
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    axes = axes[0]
    cmap = plt.get_cmap("tab10")
    true_w = None
    if true_p is not None:
        tp = np.clip(np.asarray(true_p, float), 1e-6, 1 - 1e-6)
        true_w = np.log(tp) - np.log1p(-tp)
    for ax, (label, res) in zip(axes, sequential_results.items()):
        traj = res.trajectory
        x = np.arange(1, len(traj) + 1)
        for i, col in enumerate(traj.columns):
            ax.plot(x, traj[col].to_numpy(), color=cmap(i % 10), lw=1.4, label=str(col))
            if true_w is not None:
                ax.axhline(true_w[i], color=cmap(i % 10), ls="--", lw=0.8)
        ax.set_title(f"sequential (eq. 8), {label}")
        ax.set_xlabel("task")
        ax.set_ylabel("weight w = logit(p)")
        ymax = np.nanmax(np.abs(traj.to_numpy()))
        if np.isfinite(ymax) and ymax > 50:
            ax.set_yscale("symlog", linthresh=5)
    ax = axes[-1]
    k = len(one_shot)
    width = 0.8 / max(k + (true_w is not None), 1)
    first = next(iter(one_shot.values()))
    names = first.annotators["annotator"].astype(str).to_numpy()
    idx = np.arange(len(names))
    for j, (label, res) in enumerate(one_shot.items()):
        ax.bar(idx + j * width, res.annotators["weight"].to_numpy(), width, label=label)
    if true_w is not None:
        ax.bar(idx + k * width, true_w, width, color="0.6", label="true logit(p)")
    ax.set_xticks(idx + width * (k - (true_w is None)) / 2, names, rotation=60, fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title("one-shot weights")
    ax.set_ylabel("weight w")
    ax.legend(fontsize=8)
    axes[0].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
