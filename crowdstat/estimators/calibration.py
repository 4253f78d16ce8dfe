"""Recalibration of any method's line posteriors from the honeypot lines (docs/calibration.md).

A map g: [0, 1] -> [0, 1] is fitted on pairs (held-out posterior of a honeypot line, its truth) and
applied to the posteriors of the lines without truth:

- ``platt``: g(p) = sigmoid(a logit(p) + b), fitted by Newton's method on the log-likelihood with
  Platt's (1999) smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keep a and b finite
  when the posteriors separate the truth (the 0/1 posteriors of ``sequential``);
- ``temperature``: the one-parameter special case b = 0 (g(1/2) = 1/2: the decisions at tau = 1/2
  and the ranking are unchanged);
- ``affine``: g(p) = b + a p with g(0) = b and g(1) = a + b in [1e-6, 1 - 1e-6], the maximum-likelihood
  fit (concave; projected Newton on the box) with Platt's smoothed targets. Written as
  a p + (1 - a) c, c = b / (1 - a), it is a linear pool of the posterior and a constant: the
  posterior is taken at face value with weight a and replaced by a base rate otherwise. It is the
  shape of over-confident posteriors whose saturated ends are wrong at a fixed rate (EM with many
  annotators of few votes each, whose estimated confusions sit at 0 or 1), which a sigmoid of the
  logit cannot fit: logits of +-13.8 map to a constant only if the whole map is flat;
- ``isotonic``: the monotone step function of pool-adjacent-violators (PAV), tied posteriors pooled
  first, linear between knots and constant beyond them (scikit-learn's ``IsotonicRegression`` with
  ``out_of_bounds="clip"``), then clipped to [1 / (2 (n + 1)), 1 - 1 / (2 (n + 1))] with n the
  honeypot lines used: a step of lines that were all correct says P >= 1 - O(1/n), not P = 1.

Logits are taken of posteriors clipped to [1e-6, 1 - 1e-6] (|logit| <= 13.8), so 0/1 posteriors are
usable inputs. Cross-fitting (:func:`heldout_posteriors`): the honeypot programs are split into K
folds (:func:`honeypot_folds`, the folds of ``method="auto"``), the method is refitted K times with
one fold's truth masked (a callback: this module never imports :mod:`crowdstat.api`), and every
honeypot line contributes the posterior of the fit that did not see its truth. :func:`recalibrate`
fits the map on all the held-out pairs, applies it, and reports the cross-fitted ECE (10 equal-width
bins) and log-loss before and after (the "after" figures fit the map on K - 1 folds of held-out
pairs and score the K-th).

``calibrate="auto"`` chooses the map from the data (:func:`select_map`): each candidate of
:data:`CANDIDATES` (``none``, the identity, always among them; ``isotonic`` only with
:data:`ISOTONIC_MIN_PER_CLASS` honeypot lines of each class) is scored by the held-out log-loss of
the same K-fold over honeypot programs run on the held-out pairs (:func:`map_scores`: a map fitted on
K - 1 folds' pairs scores the K-th, so no honeypot scores a map fitted on itself), and the smallest
score wins, a tie going to the simpler map. Choosing ``none`` leaves the posteriors as they are.

NumPy only: the maps are fitted on at most a few thousand pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crowdstat.estimators.registry import CALIBRATE

__all__ = [
    "KINDS",
    "FOLDS",
    "CANDIDATES",
    "MIN_PER_CLASS",
    "ISOTONIC_MIN_PER_CLASS",
    "CalibrationMap",
    "ece",
    "log_loss",
    "clipped_logit",
    "fit_platt",
    "fit_affine",
    "pav",
    "fit_isotonic",
    "fit_map",
    "choose_kind",
    "auto_candidates",
    "map_scores",
    "select_map",
    "honeypot_folds",
    "heldout_posteriors",
    "crossfit_scores",
    "recalibrate",
    "from_record",
    "INTERVAL_COLUMNS",
    "map_intervals",
]

#: the values of the ``calibrate`` parameter
KINDS = CALIBRATE
#: folds over honeypot programs (fewer honeypot programs: one fold per program, at least 2)
FOLDS = 5
#: ``auto``'s candidate maps, simplest first: the smallest held-out log-loss wins, a tie the simpler
#: (``none`` is the identity, so ``auto`` never has a worse held-out score than not calibrating)
CANDIDATES = ("none", "temperature", "platt", "affine", "isotonic")
#: ``auto`` calibrates only when each truth class has this many honeypot lines (else: not calibrated)
MIN_PER_CLASS = 5
#: ``auto`` has isotonic among its candidates only when each truth class has this many honeypot lines:
#: a step function fitted on fewer is mostly noise, and its held-out score (on a handful of lines per
#: fold) too noisy to be told from Platt's
ISOTONIC_MIN_PER_CLASS = 20
#: two held-out scores closer than this (relative) are a tie
TIE_RTOL = 1e-9
#: posteriors are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before a logit (|logit| <= 13.8)
LOGIT_EPS = 1e-6
N_BINS = 10
#: line columns holding an interval of the posterior (bootstrap intervals, bayes credible intervals)
INTERVAL_COLUMNS = (("posterior_lower", "posterior_upper"), ("ci_low", "ci_high"))


def clipped_logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


def ece(p, y, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of n_b / n |fraction correct - mean P|
    (bin b holds P in [b/n_bins, (b+1)/n_bins), P = 1 the last; y: truth, > 0 = correct)."""
    p = np.asarray(p, np.float64)
    y = (np.asarray(y) > 0).astype(np.float64)
    if p.size == 0:
        return float("nan")
    b = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, y, n_bins) - np.bincount(b, p, n_bins))  # n_b |frac - mean|
    return float(gap.sum() / p.size) if n.sum() else float("nan")


def log_loss(p, y, eps: float = LOGIT_EPS) -> float:
    """Mean -log P(truth), P clipped to [eps, 1 - eps] (the study's log-loss)."""
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    yy = np.asarray(y) > 0
    return float(-np.mean(np.where(yy, np.log(p), np.log1p(-p)))) if p.size else float("nan")


@dataclass(frozen=True)
class CalibrationMap:
    """A fitted map: ``platt`` / ``temperature`` (a, b: sigmoid(a logit(p) + b)), ``affine`` (a, b: b + a p),
    ``isotonic`` (knots x -> y, clipped to [lo, hi]) or ``none`` (the identity, ``auto``'s choice when no
    map beats it)."""

    kind: str
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    lo: float = 0.0
    hi: float = 1.0

    def __call__(self, p) -> np.ndarray:
        p = np.asarray(p, np.float64)
        if self.kind == "none":  # auto's identity map
            return p.copy()
        if self.kind == "isotonic":
            return np.clip(np.interp(p, self.x, self.y), self.lo, self.hi)
        if self.kind == "affine":
            return self.b + self.a * np.clip(p, 0.0, 1.0)
        return _sigmoid(self.a * clipped_logit(p) + self.b)

    def record(self) -> dict:
        if self.kind == "none":
            return {"kind": "none", "formula": "p (the identity)"}
        if self.kind == "isotonic":
            return {"kind": self.kind, "knots_posterior": list(self.x), "knots_calibrated": list(self.y), "clip": [self.lo, self.hi]}
        if self.kind == "affine":
            return {"kind": self.kind, "a": self.a, "b": self.b, "formula": "b + a * p"}
        return {"kind": self.kind, "a": self.a, "b": self.b, "formula": "sigmoid(a * logit(clip(p, 1e-6, 1 - 1e-6)) + b)"}


def _check_pairs(p, y) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, np.float64).ravel()
    y = np.asarray(y).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"calibration: expected as many posteriors as truths (> 0), got {p.size} and {y.size}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("calibration: posteriors must be finite numbers in [0, 1]")
    return p, (y > 0).astype(np.float64)


def fit_platt(p, y, temperature: bool = False, max_iter: int = 100) -> CalibrationMap:
    """Platt scaling P(correct | p) = sigmoid(a logit(p) + b) (``temperature``: b = 0) by Newton's
    method on the log-likelihood of Platt's smoothed targets (module docstring). Damped steps with a
    tiny ridge (1e-10) keep it well posed when every posterior is the same."""
    p, yy = _check_pairs(p, y)
    n_pos, n_neg = yy.sum(), yy.size - yy.sum()
    target = np.where(yy > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = clipped_logit(p)
    X = z[:, None] if temperature else np.stack([z, np.ones_like(z)], 1)
    theta = np.zeros(X.shape[1])
    theta[0] = 1.0

    def nll(th):
        s = X @ th
        return float(np.sum(np.logaddexp(0.0, s) - target * s))

    f = nll(theta)
    for _ in range(max_iter):
        q = _sigmoid(X @ theta)
        grad = X.T @ (q - target)
        hess = (X * (q * (1 - q))[:, None]).T @ X + 1e-10 * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8:  # backtracking: the log-likelihood never decreases
            new = theta - t * step
            fn = nll(new)
            if fn <= f + 1e-12 * abs(f):
                break
            t *= 0.5
        done = abs(f - fn) <= 1e-12 * max(1.0, abs(f)) or np.max(np.abs(new - theta)) < 1e-10
        theta, f = new, min(f, fn)
        if done:
            break
    a = float(theta[0])
    b = 0.0 if temperature else float(theta[1])
    return CalibrationMap("temperature" if temperature else "platt", a=a, b=b)


def fit_affine(p, y, max_iter: int = 100) -> CalibrationMap:
    """The map g(p) = b + a p maximising the log-likelihood of Platt's smoothed targets (module
    docstring) over g(0) = b and g(1) = a + b in [LOGIT_EPS, 1 - LOGIT_EPS] (a < 0 allowed, as Platt's).

    Every g(p) is a convex combination of g(0) and g(1), so the log-likelihood is finite and concave on
    that box: projected Newton (variables at a bound whose gradient points out of the box held fixed),
    with a backtracking search along the projected path that never lets the log-likelihood decrease."""
    p, yy = _check_pairs(p, y)
    n_pos, n_neg = yy.sum(), yy.size - yy.sum()
    target = np.where(yy > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.stack([1 - p, p], 1)  # g(p) = X @ (g(0), g(1))
    lb, ub = LOGIT_EPS, 1 - LOGIT_EPS

    def nll(th):
        q = X @ th
        return float(-np.sum(target * np.log(q) + (1 - target) * np.log1p(-q)))

    # start: least squares with a tiny ridge towards the identity (g(0), g(1)) = (0, 1), clipped into the box.
    # Where the data identify g it changes nothing (the optimum is unique); an end they do not identify (every
    # posterior 0, say) stays at the identity's instead of an arbitrary value that could turn the map around.
    ridge = 1e-8 * max(1.0, float(p.size))
    theta = np.linalg.solve(X.T @ X + ridge * np.eye(2), X.T @ target + ridge * np.array([0.0, 1.0]))
    theta = np.clip(theta, lb, ub)
    f = nll(theta)
    for _ in range(max_iter):
        q = X @ theta
        grad = -X.T @ (target / q - (1 - target) / (1 - q))
        hess = (X * (target / q**2 + (1 - target) / (1 - q) ** 2)[:, None]).T @ X + 1e-10 * np.eye(2)
        free = ~(((theta <= lb) & (grad > 0)) | ((theta >= ub) & (grad < 0)))
        if not free.any():
            break
        step = np.zeros(2)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        t, fn, new = 1.0, f, theta
        while t > 1e-10:  # backtracking along the projected path: the log-likelihood never decreases
            new = np.clip(theta - t * step, lb, ub)
            fn = nll(new)
            if fn <= f:
                break
            t *= 0.5
        else:
            break
        done = abs(f - fn) <= 1e-13 * max(1.0, abs(f)) or np.max(np.abs(new - theta)) < 1e-12
        theta, f = new, fn
        if done:
            break
    return CalibrationMap("affine", a=float(theta[1] - theta[0]), b=float(theta[0]))


def pav(x, y, w=None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) least-squares fit of y on x by pool-adjacent-violators.

    Equal x are pooled first (weighted mean of their y). Returns (unique sorted x, fitted values)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
    ux, inv = np.unique(x, return_inverse=True)
    sw = np.bincount(inv, w)
    sy = np.bincount(inv, w * y) / sw
    vals: list[float] = []
    wts: list[float] = []
    cnt: list[int] = []
    for v, wt in zip(sy.tolist(), sw.tolist()):
        vals.append(v)
        wts.append(wt)
        cnt.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), cnt.pop()
            ww = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / ww
            wts[-1] = ww
            cnt[-1] += c2
    return ux, np.repeat(vals, cnt)


def fit_isotonic(p, y) -> CalibrationMap:
    """Isotonic regression of the truth on the posterior (PAV), clipped away from 0 and 1 (module docstring)."""
    p, yy = _check_pairs(p, y)
    x, fitted = pav(p, yy)
    # knots: the ends of each constant block (interpolating through them is the same map)
    d = np.diff(fitted) != 0
    keep = np.concatenate([[True], d]) | np.concatenate([d, [True]])
    x, fitted = x[keep], fitted[keep]
    eps = 0.5 / (p.size + 1)
    return CalibrationMap("isotonic", x=tuple(x.tolist()), y=tuple(fitted.tolist()), lo=eps, hi=1 - eps)


def fit_map(kind: str, p, y) -> CalibrationMap:
    """Fit a map of ``kind`` (``platt``, ``temperature``, ``affine`` or ``isotonic``) on (posterior, truth) pairs."""
    if kind == "isotonic":
        return fit_isotonic(p, y)
    if kind == "affine":
        return fit_affine(p, y)
    if kind in ("platt", "temperature"):
        return fit_platt(p, y, temperature=kind == "temperature")
    raise ValueError(f"calibration map: expected platt, temperature, affine or isotonic, got {kind!r}")


def choose_kind(requested: str, n_lines: int, n_pos: int, n_programs: int) -> tuple[str | None, str]:
    """The map to fit (None: none) and why, from the counts of honeypot lines at hand; ``"auto"``:
    choose among :func:`auto_candidates` by :func:`select_map` once the held-out posteriors exist.

    Always none without two honeypot programs or without both truth classes; ``auto`` also needs
    :data:`MIN_PER_CLASS` lines of each class."""
    if requested not in KINDS:
        raise ValueError(f"calibrate: expected one of {KINDS}, got {requested!r}")
    if requested == "none":
        return None, "calibrate='none'"
    n_neg = n_lines - n_pos
    if n_programs < 2:
        return None, f"not calibrated: {n_programs} honeypot program(s), cross-fitting needs at least 2"
    if min(n_pos, n_neg) == 0:
        return None, f"not calibrated: the {n_lines} honeypot lines have one truth class only ({n_pos} correct, {n_neg} wrong)"
    if requested != "auto":
        return requested, f"calibrate={requested!r}"
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        return None, f"not calibrated: auto needs {MIN_PER_CLASS} honeypot lines of each class ({n_pos} correct, {n_neg} wrong)"
    return "auto", f"auto: to be chosen among {', '.join(auto_candidates(n_pos, n_neg)[0])} by held-out log-loss"


def auto_candidates(n_pos: int, n_neg: int) -> tuple[list[str], dict[str, str]]:
    """``auto``'s candidate maps (in :data:`CANDIDATES` order) and, for each one left out, why."""
    excluded = {}
    if min(n_pos, n_neg) < ISOTONIC_MIN_PER_CLASS:
        excluded["isotonic"] = f"needs {ISOTONIC_MIN_PER_CLASS} honeypot lines of each class ({n_pos} correct, {n_neg} wrong)"
    return [k for k in CANDIDATES if k not in excluded], excluded


def _out_of_fold(kind: str, h: np.ndarray, t: np.ndarray, folds: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """``h`` with each fold's lines replaced by a ``kind`` map fitted on the other folds' pairs (a fold
    whose complement has one truth class only keeps ``h``), and the number of such folds."""
    out = h.copy()
    if kind == "none":
        return out, 0
    skipped = 0
    for i, fold in enumerate(folds):
        rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
        yr = t[rest] > 0
        if rest.size == 0 or yr.all() or not yr.any():
            skipped += 1
            continue
        out[fold] = fit_map(kind, h[rest], t[rest])(h[fold])
    return out, skipped


def map_scores(kinds, heldout, truth, folds: list[np.ndarray]) -> dict[str, dict]:
    """Held-out score of each map kind (``none``: the identity) on the held-out pairs of ``folds``'s
    lines: every fold's lines are mapped by a map fitted on the other folds' pairs, then the mean
    log-loss and the ECE of all the fold lines. Returns ``{kind: {"log_loss", "ece", "folds_uncalibrated"}}``."""
    t = np.asarray(truth)
    h = np.asarray(heldout, np.float64)
    lines = np.concatenate(folds)
    y = t[lines]
    out = {}
    for kind in kinds:
        mapped, skipped = _out_of_fold(kind, h, t, folds)
        out[kind] = {"log_loss": log_loss(mapped[lines], y), "ece": ece(mapped[lines], y), "folds_uncalibrated": skipped}
    return out


def select_map(scores: dict[str, dict]) -> str:
    """The kind of smallest held-out log-loss in ``scores`` (:func:`map_scores`); of two within
    :data:`TIE_RTOL` (relative), the one earlier in :data:`CANDIDATES` (the simpler)."""
    best = None
    for kind in sorted(scores, key=CANDIDATES.index):
        s = scores[kind]["log_loss"]
        if best is None or s < scores[best]["log_loss"] - TIE_RTOL * max(1.0, abs(s)):
            best = kind
    if best is None:
        raise ValueError("select_map: no candidate scores")
    return best


def heldout_score(requested: str, heldout, truth, folds: list[np.ndarray]) -> tuple[float, str]:
    """The mean held-out log-likelihood of the honeypot truth of ``folds``'s lines after the map that
    ``calibrate=requested`` would give these held-out posteriors (``auto``: :func:`select_map`'s choice among
    :func:`auto_candidates`, scored by :func:`map_scores`), and that map's kind. ``none``, or too few
    honeypots for a map (:func:`choose_kind`): the raw held-out posteriors, kind ``"none"``."""
    t = np.asarray(truth)
    h = np.asarray(heldout, np.float64)
    lines = np.concatenate(folds) if folds else np.zeros(0, np.int64)
    if not lines.size:
        return 0.0, "none"
    n_pos = int((t[lines] > 0).sum())
    kind, _ = choose_kind(requested, int(lines.size), n_pos, len(folds))  # every fold holds >= 1 program
    if kind is None:
        return -log_loss(h[lines], t[lines]), "none"
    kinds = auto_candidates(n_pos, int(lines.size) - n_pos)[0] if kind == "auto" else [kind]
    scores = map_scores(kinds, h, t, folds)
    best = select_map(scores) if kind == "auto" else kind
    return -scores[best]["log_loss"], best


def honeypot_folds(line_program, truth, k: int = FOLDS, seed: int = 0) -> list[np.ndarray]:
    """K folds of the honeypot lines, whole programs per fold: a seeded permutation of the honeypot
    programs dealt round-robin (``method="auto"``'s folds). Fewer than k programs: one fold each."""
    lp = np.asarray(line_program)
    t = np.asarray(truth)
    progs = np.unique(lp[t != 0])
    order = np.random.default_rng(seed).permutation(progs)
    k = min(k, len(progs))
    return [np.flatnonzero(np.isin(lp, order[i::k]) & (t != 0)) for i in range(k)]


def heldout_posteriors(refit: Callable[[np.ndarray], np.ndarray], truth, folds: list[np.ndarray]) -> np.ndarray:
    """Posterior of every line of ``folds`` from ``refit(truth with that fold masked to 0)`` (nan elsewhere).

    ``refit`` returns the line posteriors of the method fitted with the given truth array."""
    t = np.asarray(truth)
    out = np.full(t.shape, np.nan)
    for lines in folds:
        masked = t.copy()
        masked[lines] = 0
        out[lines] = np.asarray(refit(masked), np.float64)[lines]
    return out


def crossfit_scores(kind: str, heldout, truth, folds: list[np.ndarray]) -> dict:
    """ECE and log-loss of the held-out posteriors of the fold lines, raw (``before``) and after a map
    of ``kind`` fitted on the other folds' pairs (``after``; a fold whose complement has one class only
    keeps its raw posteriors and is counted in ``folds_uncalibrated``; ``none``: after = before)."""
    t = np.asarray(truth)
    h = np.asarray(heldout, np.float64)
    lines = np.concatenate(folds)
    after, skipped = _out_of_fold(kind, h, t, folds)
    y = t[lines]
    return {
        "ece_before": ece(h[lines], y),
        "ece_after": ece(after[lines], y),
        "log_loss_before": log_loss(h[lines], y),
        "log_loss_after": log_loss(after[lines], y),
        "folds_uncalibrated": skipped,
    }


def recalibrate(
    requested: str, posterior, truth, line_program, refit: Callable[[np.ndarray], np.ndarray], heldout=None
) -> tuple[np.ndarray | None, dict]:
    """Cross-fitted recalibration of ``posterior``: (calibrated posterior, record), or (None, record)
    when no map is fitted (record["why"] says why).

    The lines without truth get g(posterior); honeypot lines keep their posterior. ``heldout``: the
    held-out posteriors already computed on :func:`honeypot_folds` (``method="auto"``), else
    ``refit`` (masked truth -> posteriors) is called once per fold. ``auto`` records every
    candidate's held-out score in ``record["selection"]``; when it chooses ``none`` the posteriors
    come back unchanged (the identity map), not None."""
    t = np.asarray(truth)
    lp = np.asarray(line_program)
    hp = t != 0
    n_lines, n_pos = int(hp.sum()), int((t > 0).sum())
    n_programs = int(np.unique(lp[hp]).size)
    kind, why = choose_kind(requested, n_lines, n_pos, n_programs)
    record: dict = {
        "requested": requested,
        "kind": kind or "none",
        "why": why,
        "n_honeypot_lines": n_lines,
        "n_honeypot_programs": n_programs,
    }
    if kind is None:
        return None, record
    folds = honeypot_folds(lp, t)
    h = heldout_posteriors(refit, t, folds) if heldout is None else np.asarray(heldout, np.float64)
    if not np.all(np.isfinite(h[hp])) or np.any((h[hp] < 0) | (h[hp] > 1)):
        record.update(kind="none", why="not calibrated: held-out posteriors outside [0, 1] or not finite")
        return None, record
    record["n_distinct_heldout"] = int(np.unique(np.round(h[hp], 6)).size)
    if kind == "auto":
        kinds, excluded = auto_candidates(n_pos, n_lines - n_pos)
        scores = map_scores(kinds, h, t, folds)
        kind = select_map(scores)
        listed = ", ".join(f"{k} {v['log_loss']:.4f}" for k, v in scores.items())
        why = (
            f"auto: {kind}, the smallest held-out log-loss of the honeypot truth ({listed}; "
            f"{len(folds)}-fold over {n_programs} honeypot programs of the cross-fitted posteriors)"
        )
        if excluded:
            why += "; not compared: " + "; ".join(f"{k} ({v})" for k, v in excluded.items())
        record["selection"] = {
            "score": "mean held-out log-loss: each fold's held-out posteriors mapped by a map fitted on the other folds' pairs",
            "folds": len(folds),
            "candidates": scores,
            "excluded": excluded,
            "chosen": kind,
        }
        record.update(kind=kind, why=why)
    g = CalibrationMap("none") if kind == "none" else fit_map(kind, h[hp], t[hp])
    p = np.asarray(posterior, np.float64)
    out = np.where(hp, p, g(p))
    record.update({"map": g.record(), "folds": len(folds), "n_bins": N_BINS, **crossfit_scores(kind, h, t, folds)})
    return out, record


def from_record(rec: dict) -> CalibrationMap:
    """The map of :meth:`CalibrationMap.record` (fit.json's ``diagnostics["calibration"]["map"]``)."""
    if rec["kind"] == "none":
        return CalibrationMap("none")
    if rec["kind"] == "isotonic":
        lo, hi = rec["clip"]
        return CalibrationMap("isotonic", x=tuple(rec["knots_posterior"]), y=tuple(rec["knots_calibrated"]), lo=lo, hi=hi)
    return CalibrationMap(rec["kind"], a=float(rec["a"]), b=float(rec["b"]))


def map_intervals(columns: dict, record: dict, truth) -> dict:
    """The :data:`INTERVAL_COLUMNS` pairs found in ``columns`` through the map of ``record`` on the lines
    without truth (a monotone map carries the interval's ends over; a decreasing one swaps them). The
    map is taken as fixed: its own estimation error is not in the interval."""
    g = from_record(record["map"])
    hp = np.asarray(truth) != 0
    out = {}
    for lo_name, hi_name in INTERVAL_COLUMNS:
        if lo_name in columns and hi_name in columns:
            lo, hi = np.asarray(columns[lo_name], np.float64), np.asarray(columns[hi_name], np.float64)
            glo, ghi = g(lo), g(hi)
            out[lo_name] = np.where(hp, lo, np.minimum(glo, ghi))
            out[hi_name] = np.where(hp, hi, np.maximum(glo, ghi))
    return out
