"""Independent test oracles for crowdstat, written from the statement of the estimators alone (docs/math.md).

Plain Python (dict loops) and dense NumPy; nothing here imports crowdstat or JAX. These are
deliberately slow and obvious: every function is a literal transcription of one formula.

Data model used by the oracles
------------------------------
``votes``: list of tuples ``(program, line, annotator, label)`` with ``program`` and
``annotator`` strings, ``line`` int and ``label`` in {+1, -1}.
``truth``: dict ``{(program, line): +1 | -1}`` (honeypot lines).
``w``: dict ``{annotator: float}``.

Conventions fixed on top of the statement: programs and annotators are
ordered by first appearance in the vote table; lines ascending inside a program; the
posterior of every voted line uses the final weights (eq. 7).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict

import numpy as np

DELTA = 1e-6


# --------------------------------------------------------------------------- scalars


def sigmoid(x: float) -> float:
    """Stable logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def clip_prob(p: float, delta: float = DELTA) -> float:
    """docs/math.md: probabilities given by users are clipped to [delta, 1-delta] before any logit."""
    return min(max(p, delta), 1.0 - delta)


def log1pexp(x: float) -> float:
    """log(1 + exp(x)) without overflow."""
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


def binary_entropy(v: float) -> float:
    """H(v) = -v log v - (1-v) log(1-v), with 0 log 0 = 0."""
    h = 0.0
    if v > 0:
        h -= v * math.log(v)
    if v < 1:
        h -= (1 - v) * math.log1p(-v)
    return h


# --------------------------------------------------------------------------- orders


def programs_in_order(votes) -> list[str]:
    return list(OrderedDict.fromkeys(p for p, _, _, _ in votes))


def annotators_in_order(votes) -> list[str]:
    return list(OrderedDict.fromkeys(a for _, _, a, _ in votes))


def lines_in_order(votes) -> list[tuple[str, int]]:
    """(program, line) pairs: programs by first appearance, lines ascending."""
    by_prog: dict[str, set] = OrderedDict((p, set()) for p in programs_in_order(votes))
    for p, l, _, _ in votes:
        by_prog[p].add(l)
    return [(p, l) for p, ls in by_prog.items() for l in sorted(ls)]


def votes_by_line(votes) -> dict:
    out = defaultdict(list)
    for p, l, a, e in votes:
        out[(p, l)].append((a, e))
    return out


# --------------------------------------------------------------------------- eq. (7)


def line_logits(votes, w: dict, prior: float = 0.5, prior_logit: float | None = None, delta: float = DELTA) -> dict:
    """l_j = logit(p0) + sum_i eps_ij w_i, by a dict loop over the votes."""
    base = logit(clip_prob(prior, delta)) if prior_logit is None else prior_logit
    l = {key: base for key in lines_in_order(votes)}
    for p, line, a, e in votes:
        l[(p, line)] += e * w[a]
    return l


def posteriors(votes, w: dict, prior: float = 0.5, prior_logit: float | None = None, delta: float = DELTA) -> dict:
    return {k: sigmoid(v) for k, v in line_logits(votes, w, prior, prior_logit, delta).items()}


def n_votes(votes) -> dict:
    c = defaultdict(int)
    for p, l, _, _ in votes:
        c[(p, l)] += 1
    return c


def rewards(post: dict, tau: float = 0.5, n_lines: dict | None = None) -> list[dict]:
    """s = c/k (c = #{P_j > tau}), s_soft = mean P_j, coverage = k / n_lines, per program in order."""
    by_prog: dict[str, list] = OrderedDict()
    for (p, l), v in post.items():
        by_prog.setdefault(p, []).append((l, v))
    out = []
    for p, items in by_prog.items():
        items.sort()
        k = len(items)
        c = sum(1 for _, v in items if v > tau)
        nl = k if n_lines is None else n_lines[p]
        out.append(
            dict(
                program=p,
                reward=c / k,
                reward_soft=sum(v for _, v in items) / k,
                n_lines=nl,
                n_annotated=k,
                coverage=k / nl,
                lines=[l for l, _ in items],
                posteriors=[v for _, v in items],
            )
        )
    return out


# --------------------------------------------------------------------------- eq. (8)


def sequential(
    votes,
    truth: dict,
    lam: float = 1.0,
    nu: float = 0.7,
    pbar_honeypot: float = 0.99,
    w_max: float = math.inf,
    delta: float = DELTA,
    prior: float = 0.5,
):
    """Eq. (8) task by task. Returns (w, trajectory) with trajectory a list of (program, dict w)."""
    annotators = annotators_in_order(votes)
    w = {a: logit(clip_prob(nu, delta)) for a in annotators}
    prior_logit = logit(clip_prob(prior, delta))
    lp_honeypot = logit(clip_prob(pbar_honeypot, delta))
    lp_cap = logit(1.0 - delta)
    by_line = votes_by_line(votes)
    lines_of = OrderedDict((p, []) for p in programs_in_order(votes))
    for p, l in lines_in_order(votes):
        lines_of[p].append(l)
    trajectory = []
    for p, lines in lines_of.items():
        pre = dict(w)  # all updates of the task from the pre-task reliabilities
        step = defaultdict(float)
        for line in lines:
            vs = by_line[(p, line)]
            if (p, line) in truth:
                r = truth[(p, line)]
                lp = lp_honeypot
            else:
                lj = prior_logit + sum(e * pre[a] for a, e in vs)
                if lj == 0:
                    continue
                r = 1 if lj > 0 else -1
                lp = min(abs(lj), lp_cap)
            for a, e in vs:
                step[a] += lam * (e * r) * lp
        for a in annotators:
            w[a] = min(max(pre[a] + step[a], -w_max), w_max)
        trajectory.append((p, dict(w)))
    return w, trajectory


# --------------------------------------------------------------------------- majority


def majority(votes, delta: float = DELTA):
    """Returns (posterior dict, reliability dict or None per annotator, weight dict).

    P_j = #correct / #votes. Reliability = fraction of the annotator's votes agreeing with the
    majority label of their line, over lines whose majority is not a tie. An annotator with no
    such vote gets reliability None (undefined; the tests skip such cases).
    """
    by_line = votes_by_line(votes)
    post, maj = {}, {}
    for key in lines_in_order(votes):
        vs = by_line[key]
        pos = sum(1 for _, e in vs if e > 0)
        post[key] = pos / len(vs)
        diff = 2 * pos - len(vs)
        maj[key] = 0 if diff == 0 else (1 if diff > 0 else -1)
    agree, total = defaultdict(int), defaultdict(int)
    for p, l, a, e in votes:
        if maj[(p, l)] != 0:
            total[a] += 1
            agree[a] += int(e == maj[(p, l)])
    rel, wt = {}, {}
    for a in annotators_in_order(votes):
        if total[a] == 0:
            rel[a] = None
            wt[a] = None
        else:
            rel[a] = agree[a] / total[a]
            wt[a] = logit(clip_prob(rel[a], delta))
    return post, rel, wt


# --------------------------------------------------------------------------- dense L1 logistic


def design(votes, truth: dict, annotators: list[str] | None = None):
    """E (n x m) over the honeypot lines (in line order), t (n,), and the line keys."""
    annotators = annotators_in_order(votes) if annotators is None else annotators
    col = {a: i for i, a in enumerate(annotators)}
    keys = [k for k in lines_in_order(votes) if k in truth]
    row = {k: j for j, k in enumerate(keys)}
    E = np.zeros((len(keys), len(annotators)))
    for p, l, a, e in votes:
        if (p, l) in row:
            E[row[(p, l)], col[a]] = e
    t = np.array([float(truth[k]) for k in keys])
    return E, t, keys


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x, dtype=float)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def smooth_loss(E, t, w, b: float = 0.0) -> float:
    return float(np.sum(_log1pexp(-t * (E @ w + b))))


def objective(E, t, w, gamma: float, b: float = 0.0) -> float:
    """f(w) = sum_j log(1 + exp(-t_j (E w)_j)) + gamma ||w||_1 (intercept b unpenalised)."""
    return smooth_loss(E, t, w, b) + gamma * float(np.sum(np.abs(w)))


def gradient(E, t, w, b: float = 0.0) -> np.ndarray:
    """Gradient of the smooth part: -E^T (t * sigmoid(-t * (E w + b)))."""
    return -E.T @ (t * _sigmoid(-t * (E @ w + b)))


def lipschitz(E) -> float:
    """L = ||E||_2^2 / 4."""
    return float(np.linalg.norm(E, 2) ** 2 / 4.0) if E.size else 0.0


def soft_threshold(x, thr):
    return np.sign(x) * np.maximum(np.abs(x) - thr, 0.0)


def gamma_max(E, t) -> float:
    """||E^T t||_inf / 2: the smallest gamma with w* = 0."""
    return float(np.max(np.abs(E.T @ t)) / 2.0) if E.size else 0.0


def dual_value(nu) -> float:
    return float(sum(binary_entropy(float(v)) for v in np.asarray(nu).ravel()))


def feasible_nu(E, t, w, gamma: float) -> np.ndarray:
    """nu = sigmoid(-t * E w) scaled by min(1, gamma / ||E^T (t * nu)||_inf)."""
    nu = _sigmoid(-t * (E @ w))
    norm = float(np.max(np.abs(E.T @ (t * nu)))) if E.size else 0.0
    scale = 1.0 if norm <= gamma else gamma / norm
    return nu * scale


def duality_gap(E, t, w, gamma: float) -> tuple[float, float, float]:
    """(f(w), D(nu_scaled), gap = f - D)."""
    f = objective(E, t, w, gamma)
    d = dual_value(feasible_nu(E, t, w, gamma))
    return f, d, f - d


def scalar_bound(eps, gamma: float) -> tuple[float, float]:
    """n = 1: max H(nu) s.t. ||eps||_inf nu <= gamma: nu* = min(1/2, gamma/||eps||_inf); returns (nu*, H(nu*))."""
    nrm = float(np.max(np.abs(eps)))
    nu = 0.5 if nrm == 0 else min(0.5, gamma / nrm)
    return nu, binary_entropy(nu)


def proximal_gradient(
    E, t, gamma: float, accelerated: bool = True, tol: float = 1e-13, maxiter: int = 200_000, stepsize: float | None = None, w0=None
):
    """ISTA / FISTA (with adaptive restart) on f, stopping on the relative duality gap.

    Returns (w, info) with info = dict(iterations, gap, rel_gap, converged).
    """
    n, m = E.shape
    w = np.zeros(m) if w0 is None else np.array(w0, dtype=float)
    L = lipschitz(E)
    if L == 0:
        return np.zeros(m), dict(iterations=0, gap=0.0, rel_gap=0.0, converged=True)
    eta = 1.0 / L if stepsize is None else stepsize
    y, tk = w.copy(), 1.0
    f_prev = objective(E, t, w, gamma)
    for it in range(1, maxiter + 1):
        point = y if accelerated else w
        w_new = soft_threshold(point - eta * gradient(E, t, point), eta * gamma)
        if accelerated:
            f_new = objective(E, t, w_new, gamma)
            if f_new > f_prev:  # adaptive restart (O'Donoghue & Candes): keeps FISTA monotone
                tk = 1.0
                y = w.copy()
                w_new = soft_threshold(y - eta * gradient(E, t, y), eta * gamma)
                f_new = objective(E, t, w_new, gamma)
            tk_new = (1.0 + math.sqrt(1.0 + 4.0 * tk * tk)) / 2.0
            y = w_new + ((tk - 1.0) / tk_new) * (w_new - w)
            tk = tk_new
            f_prev = f_new
        w = w_new
        if it % 10 == 0 or it == maxiter:
            f, d, gap = duality_gap(E, t, w, gamma)
            rel = gap / max(abs(f), 1e-300)
            if rel <= tol:
                return w, dict(iterations=it, gap=gap, rel_gap=rel, converged=True)
    f, d, gap = duality_gap(E, t, w, gamma)
    return w, dict(iterations=maxiter, gap=gap, rel_gap=gap / max(abs(f), 1e-300), converged=False)


def polish(E, t, w, gamma: float, b: float | None = None, iters: int = 50):
    """Newton on the active set with fixed signs, from a near-optimal w (and intercept b if fitted).

    Accepted only if the signs are kept and the KKT conditions hold; otherwise w is returned as is.
    Returns (w, b, ok).
    """
    support = np.flatnonzero(w != 0)
    s = np.sign(w[support])
    with_b = b is not None
    if len(support) == 0 and not with_b:
        ok = bool(np.all(np.abs(gradient(E, t, w)) <= gamma * (1 + 1e-9)))
        return w, 0.0, ok
    cols = E[:, support]
    if with_b:
        cols = np.hstack([cols, np.ones((E.shape[0], 1))])
    theta = np.concatenate([w[support], [b]]) if with_b else w[support].copy()
    pen = np.concatenate([gamma * s, [0.0]]) if with_b else gamma * s
    for _ in range(iters):
        z = cols @ theta
        sig = _sigmoid(-t * z)
        g = -cols.T @ (t * sig) + pen
        h = (cols * (sig * (1 - sig))[:, None]).T @ cols
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            return w, (b if with_b else 0.0), False
        theta = theta - step
        if np.max(np.abs(step)) < 1e-15 * max(1.0, np.max(np.abs(theta))):
            break
    wn = np.zeros_like(w)
    ws = theta[: len(support)]
    bn = float(theta[-1]) if with_b else 0.0
    if len(support) and np.any(np.sign(ws) != s):
        return w, (b if with_b else 0.0), False
    wn[support] = ws
    g_full = gradient(E, t, wn, bn)
    off = np.setdiff1d(np.arange(E.shape[1]), support)
    ok = bool(np.all(np.abs(g_full[off]) <= gamma * (1 + 1e-9)))
    on = g_full[support] + gamma * s
    ok = ok and bool(np.all(np.abs(on) <= 1e-9 * max(1.0, gamma)))
    if with_b:
        ok = ok and abs(float(np.sum(-t * _sigmoid(-t * (E @ wn + bn))))) <= 1e-9
    return (wn, bn, True) if ok else (w, (b if with_b else 0.0), False)


def l1_logistic(E, t, gamma: float, tol: float = 1e-13, maxiter: int = 200_000):
    """Tightly converged minimiser of f: FISTA to a relative gap tol, then an active-set Newton polish."""
    w, info = proximal_gradient(E, t, gamma, accelerated=True, tol=tol, maxiter=maxiter)
    wp, _, ok = polish(E, t, w, gamma)
    if ok and objective(E, t, wp, gamma) <= objective(E, t, w, gamma) + 1e-12:
        w = wp
    f, d, gap = duality_gap(E, t, w, gamma)
    info.update(objective=f, dual_value=d, gap=gap, rel_gap=gap / max(abs(f), 1e-300), polished=ok)
    return w, info


def l1_logistic_intercept(E, t, gamma: float, maxiter: int = 200_000, tol: float = 1e-14):
    """min_{w,b} sum_j log(1+exp(-t_j((E w)_j + b))) + gamma ||w||_1 (b unpenalised).

    FISTA on (w, b) with the prox acting on w only, stopped on the prox-gradient fixed point,
    then the active-set Newton polish. Returns (w, b).
    """
    n, m = E.shape
    A = np.hstack([E, np.ones((n, 1))])
    L = float(np.linalg.norm(A, 2) ** 2 / 4.0)
    eta = 1.0 / L
    x = np.zeros(m + 1)
    y, tk = x.copy(), 1.0

    def prox(z):
        out = z.copy()
        out[:m] = soft_threshold(z[:m], eta * gamma)
        return out

    def g(z):
        return -A.T @ (t * _sigmoid(-t * (A @ z)))

    def F(z):
        return float(np.sum(_log1pexp(-t * (A @ z)))) + gamma * float(np.sum(np.abs(z[:m])))

    f_prev = F(x)
    for _ in range(maxiter):
        xn = prox(y - eta * g(y))
        fn = F(xn)
        if fn > f_prev:
            tk, y = 1.0, x.copy()
            xn = prox(y - eta * g(y))
            fn = F(xn)
        tkn = (1 + math.sqrt(1 + 4 * tk * tk)) / 2
        y = xn + ((tk - 1) / tkn) * (xn - x)
        tk = tkn
        done = np.max(np.abs(xn - x)) <= tol * max(1.0, np.max(np.abs(xn)))
        x, f_prev = xn, fn
        if done:
            break
    w, b = x[:m].copy(), float(x[m])
    wp, bp, ok = polish(E, t, w, gamma, b=b)
    return (wp, bp) if ok else (w, b)


# --------------------------------------------------------------------------- closed forms


def single_annotator_l1(a: int, d: int, gamma: float) -> float:
    """argmin_w a log(1+e^{-w}) + d log(1+e^{w}) + gamma |w| (a agreements, d disagreements)."""
    if gamma < (a - d) / 2:
        return logit((a - gamma) / (a + d))
    if gamma < (d - a) / 2:
        return logit((a + gamma) / (a + d))
    return 0.0


def separable_l1(votes, truth: dict, gamma: float) -> dict:
    """When every training line carries exactly one vote, f separates per annotator."""
    agree, disagree = defaultdict(int), defaultdict(int)
    by_line = votes_by_line(votes)
    for key, t in truth.items():
        vs = by_line[key]
        assert len(vs) == 1, "separable case needs exactly one vote per training line"
        a, e = vs[0]
        if e == t:
            agree[a] += 1
        else:
            disagree[a] += 1
    return {a: single_annotator_l1(agree[a], disagree[a], gamma) for a in annotators_in_order(votes)}


# --------------------------------------------------------------------------- helpers for tests


def frame_to_votes(df) -> list[tuple]:
    """A DataFrame with +1/-1 labels to the oracle's vote list (ids as str)."""
    return [(str(p), int(l), str(a), int(e)) for p, l, a, e in df[["program", "line", "annotator", "label"]].itertuples(index=False)]


def frame_to_truth(df) -> dict:
    if df is None:
        return {}
    return {(str(p), int(l)): int(t) for p, l, t in df[["program", "line", "truth"]].itertuples(index=False)}
