"""What "better" means: metrics of line posteriors and annotator reliabilities (docs/study.md, "Metrics").

Array functions (``jax.numpy``; jit- and vmap-able; an optional boolean ``mask`` selects the
entries that count, so replicates of one shape vmap without ragged arrays):

- :func:`line_accuracy`: mean [predicted == truth], predicted +1 (correct) iff posterior > tau.
- :func:`log_loss`: mean -log P(truth | votes), P clipped to [eps, 1 - eps] (eps = 1e-6).
- :func:`brier`: mean (P_j - y_j)^2 with y_j = 1 for a correct line.
- :func:`calibration_bins` / :func:`expected_calibration_error`: equal-width bins on [0, 1] of the
  posterior P(line correct) (bin b = [b/B, (b+1)/B), the last bin closed; B = 10 by default),
  ECE = sum_b (n_b / n) |mean_b(y) - mean_b(P)|. This is the binary-event ECE of the reliability
  diagram of P(correct), not the "top-label confidence" ECE of multiclass papers.
- :func:`reliability_rmse`: sqrt(mean (p_hat_i - p_i)^2).
- :func:`roc_auc`: the Mann-Whitney statistic P(score_pos > score_neg) + 1/2 P(tie), from average
  ranks (ties get the mean of their ranks). :func:`detection_auc` scores annotators by
  ``-reliability`` against "is a spammer or adversary".
- :func:`honeypots_needed`: smallest number of honeypots at which an accuracy curve reaches a target.

Intervals (host, NumPy): :func:`bootstrap_ci` (percentile bootstrap; key first, resamples by
``vmap``) and :func:`replicate_interval` (mean and interval over simulation replicates: bootstrap
inside the bounds of a bounded metric, else Student-t; plus the 2.5/97.5% quantiles).
:func:`reliability_diagram` / :func:`plot_reliability_diagram` draw calibration.

Truth is coded +1 (correct) / -1 (wrong) as everywhere in crowdstat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "line_accuracy",
    "log_loss",
    "brier",
    "calibration_bins",
    "expected_calibration_error",
    "reliability_rmse",
    "roc_auc",
    "detection_auc",
    "honeypots_needed",
    "bootstrap_ci",
    "replicate_interval",
    "reliability_diagram",
    "plot_reliability_diagram",
]


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _mask(mask, like):
    return jnp.ones(jnp.shape(like), bool) if mask is None else jnp.asarray(mask, bool)


def _wmean(values, mask):
    w = mask.astype(values.dtype)
    return jnp.sum(values * w) / jnp.sum(w)  # nan when nothing is selected


def line_accuracy(posterior, truth, tau=0.5, mask=None):
    """Fraction of lines whose decision (+1 iff posterior > tau) equals the truth (+1 / -1)."""
    posterior = _float(posterior)
    pred = jnp.where(posterior > tau, 1, -1)
    ok = (pred == jnp.asarray(truth)).astype(posterior.dtype)
    return _wmean(ok, _mask(mask, posterior))


def log_loss(posterior, truth, eps=1e-6, mask=None):
    """Mean negative log-likelihood of the truth, -log P (correct lines) or -log(1 - P) (wrong)."""
    posterior = jnp.clip(_float(posterior), eps, 1.0 - eps)
    y = jnp.asarray(truth) > 0
    nll = -jnp.where(y, jnp.log(posterior), jnp.log1p(-posterior))
    return _wmean(nll, _mask(mask, posterior))


def brier(posterior, truth, mask=None):
    """Mean squared error of P(correct) against y = 1 (correct) / 0 (wrong)."""
    posterior = _float(posterior)
    y = (jnp.asarray(truth) > 0).astype(posterior.dtype)
    return _wmean((posterior - y) ** 2, _mask(mask, posterior))


def calibration_bins(posterior, truth, n_bins: int = 10, mask=None):
    """Equal-width reliability-diagram bins of P(correct).

    Returns
    -------
    (count, mean_posterior, frac_correct), each of shape (n_bins,); bins without lines have
    count 0 and nan means. Bin b holds P in [b/n_bins, (b+1)/n_bins); P = 1 goes to the last bin.
    """
    posterior = _float(posterior)
    m = _mask(mask, posterior).astype(posterior.dtype)
    y = (jnp.asarray(truth) > 0).astype(posterior.dtype)
    b = jnp.clip(jnp.floor(posterior * n_bins).astype(jnp.int32), 0, n_bins - 1)
    count = jax.ops.segment_sum(m, b, num_segments=n_bins)
    conf = jax.ops.segment_sum(m * posterior, b, num_segments=n_bins) / count
    acc = jax.ops.segment_sum(m * y, b, num_segments=n_bins) / count
    return count, conf, acc


def expected_calibration_error(posterior, truth, n_bins: int = 10, mask=None):
    """ECE = sum_b (n_b / n) |frac_correct_b - mean_posterior_b| over equal-width bins (empty bins add 0)."""
    count, conf, acc = calibration_bins(posterior, truth, n_bins, mask)
    n = jnp.sum(count)
    return jnp.sum(jnp.where(count > 0, count * jnp.abs(acc - conf), 0.0)) / n


def reliability_rmse(p_hat, p_true, mask=None):
    """Root mean squared error of estimated reliabilities against the simulated ones."""
    p_hat = _float(p_hat)
    d = (p_hat - jnp.asarray(p_true, p_hat.dtype)) ** 2
    return jnp.sqrt(_wmean(d, _mask(mask, p_hat)))


def roc_auc(scores, positive, mask=None):
    """ROC AUC = Mann-Whitney U / (n_pos n_neg) with average ranks for ties.

    Equals P(score of a random positive > score of a random negative) + 1/2 P(equal). nan when
    there is no positive or no negative among the selected entries.
    """
    scores = _float(scores)
    sel = _mask(mask, scores)
    pos = jnp.asarray(positive, bool) & sel
    neg = ~jnp.asarray(positive, bool) & sel
    # Unselected entries go to +inf so that they are never below a selected score.
    s = jnp.where(sel, scores, jnp.inf)
    srt = jnp.sort(s)
    lo = jnp.searchsorted(srt, s, side="left")
    hi = jnp.searchsorted(srt, s, side="right")
    rank = (lo + hi + 1).astype(scores.dtype) / 2.0  # 1-based average rank among the selected scores
    n_pos = jnp.sum(pos).astype(scores.dtype)
    n_neg = jnp.sum(neg).astype(scores.dtype)
    u = jnp.sum(jnp.where(pos, rank, 0.0)) - n_pos * (n_pos + 1) / 2.0
    return jnp.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), jnp.nan)


def detection_auc(reliability, is_bad, mask=None):
    """AUC of flagging spammers/adversaries (``is_bad``) by low estimated reliability (score = -reliability)."""
    return roc_auc(-_float(reliability), is_bad, mask)


def honeypots_needed(n_honeypots, accuracy, target):
    """Smallest ``n_honeypots[i]`` (ascending grid) with ``accuracy[..., i] >= target``; nan if none.

    ``accuracy`` may have leading (e.g. replicate) axes; the grid is the last axis.
    """
    x = _float(n_honeypots)
    acc = _float(accuracy)
    ok = acc >= target
    idx = jnp.argmax(ok, axis=-1)
    return jnp.where(jnp.any(ok, axis=-1), x[idx], jnp.nan)


# ----------------------------------------------------------------------------------------------
# Intervals (host)


def bootstrap_ci(key, values, stat=jnp.mean, n_boot: int = 2000, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of ``stat(values)`` (resampling the first axis).

    ``key``: int seed or JAX key (split once; the resamples are vmapped). Returns
    ``{"estimate", "lo", "hi", "n", "n_boot", "level"}``.
    """
    from crowdstat.study.simulate import canonicalize_key

    key = canonicalize_key(key)
    values = jnp.asarray(values)
    n = values.shape[0]
    idx = jax.random.randint(key, (n_boot, n), 0, n)
    boots = np.asarray(jax.vmap(lambda i: stat(values[i]))(idx), np.float64)
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(boots, [a, 1.0 - a])
    return {"estimate": float(stat(values)), "lo": float(lo), "hi": float(hi), "n": int(n), "n_boot": int(n_boot), "level": level}


def replicate_interval(values, level: float = 0.95, axis: int = 0, bounds: tuple[float, float] | None = None) -> dict:
    """Mean over replicates with an interval, and quantiles.

    Without ``bounds``: the Student-t interval mean +- t * sd / sqrt(n). With ``bounds`` (a metric
    that lives in [a, b], e.g. accuracy or ECE in [0, 1]): the percentile bootstrap interval of the
    mean (``scipy.stats.bootstrap``, 9,999 resamples, seed 0), which lies inside the range of the
    replicates and hence inside the bounds, where a t-interval of few replicates can leave them
    (0.896 [0.684, 1.108] with 2 replicates). Fewer than 3 finite replicates give no interval
    (``lo = hi = nan``) in both cases. nan replicates are dropped (and counted in ``n``). Returns
    ``{"mean", "lo", "hi", "sd", "q_lo", "q_hi", "n", "level", "method"}`` (arrays when ``values`` has
    more axes).
    """
    from scipy import stats

    v = np.asarray(values, np.float64)
    n = np.sum(np.isfinite(v), axis=axis)
    mean = np.nanmean(v, axis=axis)
    sd = np.nanstd(v, axis=axis, ddof=1) if np.all(n > 1) else np.full_like(mean, np.nan)
    a = (1.0 - level) / 2.0
    q_lo, q_hi = np.nanquantile(v, [a, 1.0 - a], axis=axis)
    if bounds is None:
        t = stats.t.ppf(1.0 - a, np.maximum(n - 1, 1))
        half = t * sd / np.sqrt(np.maximum(n, 1))
        lo, hi = mean - half, mean + half
    else:
        finite = v[np.isfinite(v)]
        if finite.size and (finite.min() < bounds[0] or finite.max() > bounds[1]):
            raise ValueError(f"replicate_interval: values outside the bounds {bounds}: [{finite.min()}, {finite.max()}]")
        lo, hi = _bootstrap_mean(v, level, axis)
    few = n < 3
    lo, hi = np.where(few, np.nan, lo), np.where(few, np.nan, hi)

    def out(x):
        return float(x) if np.ndim(x) == 0 else np.asarray(x)

    return {
        "mean": out(mean),
        "lo": out(lo),
        "hi": out(hi),
        "sd": out(sd),
        "q_lo": out(q_lo),
        "q_hi": out(q_hi),
        "n": out(n) if np.ndim(n) else int(n),
        "level": level,
        "method": "student-t" if bounds is None else "percentile bootstrap",
    }


def _bootstrap_mean(v: np.ndarray, level: float, axis: int):
    """Percentile bootstrap interval of the nan-mean along ``axis`` (nan where fewer than 2 finite values)."""
    import warnings

    from scipy import stats

    moved = np.moveaxis(v, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    lo, hi = np.full(flat.shape[0], np.nan), np.full(flat.shape[0], np.nan)
    for i, row in enumerate(flat):
        x = row[np.isfinite(row)]
        if x.size < 2:
            continue
        if np.all(x == x[0]):
            lo[i] = hi[i] = x[0]
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=9999, method="percentile", rng=np.random.default_rng(0))
        lo[i], hi[i] = r.confidence_interval.low, r.confidence_interval.high
    shape = moved.shape[:-1]
    return lo.reshape(shape) if shape else lo[0], hi.reshape(shape) if shape else hi[0]


# ----------------------------------------------------------------------------------------------
# Reliability diagram


def reliability_diagram(posterior, truth, n_bins: int = 10, mask=None) -> dict:
    """Data of a reliability diagram: bin edges, counts, mean posterior and fraction correct per bin, ECE."""
    count, conf, acc = calibration_bins(posterior, truth, n_bins, mask)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": np.asarray(count),
        "mean_posterior": np.asarray(conf),
        "frac_correct": np.asarray(acc),
        "ece": float(expected_calibration_error(posterior, truth, n_bins, mask)),
    }


def plot_reliability_diagram(diagrams: dict, path=None, title: str | None = None, min_count: int = 10):
    """Plot ``{label: reliability_diagram(...)}`` on one axes, with the lines per bin below.

    Bins holding fewer than ``min_count`` lines are drawn as hollow markers and not joined to the
    curve (their fraction correct is noise); the lower panel shows the count of every bin.
    Returns the matplotlib figure; saves it to ``path`` when given.
    """
    from crowdstat.study.plotting import NEUTRAL, figure_legend, new_figure, save_figure, series_style, style_axes

    fig, axes = new_figure(2, 1, figsize=(7.6, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    ax, axh = axes[0, 0], axes[1, 0]
    ax.plot([0, 1], [0, 1], color=NEUTRAL, ls="--", lw=1, label="perfect calibration")
    for i, (label, d) in enumerate(diagrams.items()):
        st = series_style(i)
        count = np.asarray(d["count"])
        x, y = np.asarray(d["mean_posterior"], float), np.asarray(d["frac_correct"], float)
        big, small = count >= min_count, (count > 0) & (count < min_count)
        # NaN outside the well-filled bins: the curve joins neighbouring well-filled bins only, never across a gap
        ax.plot(
            np.where(big, x, np.nan),
            np.where(big, y, np.nan),
            color=st["color"],
            ls=st["linestyle"],
            marker=st["marker"],
            ms=5,
            label=f"{label} (ECE {d['ece']:.3f})",
        )
        ax.plot(x[small], y[small], ls="none", marker=st["marker"], ms=5, mfc="none", color=st["color"])
        width = (d["edges"][1] - d["edges"][0]) / (len(diagrams) + 1)
        axh.bar(d["edges"][:-1] + (i + 0.5) * width, count, width=width, color=st["color"])
    if any(((np.asarray(d["count"]) > 0) & (np.asarray(d["count"]) < min_count)).any() for d in diagrams.values()):
        ax.plot([], [], ls="none", marker="o", mfc="none", color="k", label=f"hollow: bin of < {min_count} lines")
    axh.axhline(min_count, color=NEUTRAL, ls=":", lw=1)
    axh.text(1.01, min_count, f"{min_count} lines", transform=axh.get_yaxis_transform(), va="center", fontsize=7, color="0.3")
    ax.set_xlim(-0.03, 1.03)  # room for the markers at 0 and 1
    ax.set_ylim(-0.03, 1.03)
    style_axes(ax, None, "fraction of lines correct", title)
    style_axes(axh, "posterior P(line correct), binned", "lines per bin (log)")
    axh.set_yscale("log")
    figure_legend(fig, ax, where="right", fontsize=7)
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
