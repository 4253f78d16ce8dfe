"""Active vote allocation: which items get the next votes, from which annotators, and when to stop asking.

A fit gives each line a posterior q_j = P(line correct | votes) and each annotator a sensitivity
s_i = P(says correct | correct) and specificity c_i = P(says wrong | wrong) (one-coin methods:
s_i = c_i = reliability). A new vote V from annotator i on line j is worth the information it
carries about the line's truth Y_j (in nats),

    I(Y_j; V) = H(V) - H(V | Y_j),  P(V = +1) = q_j s_i + (1 - q_j)(1 - c_i),
    H(V | Y_j) = q_j h(s_i) + (1 - q_j) h(c_i)        (h = binary entropy),

and several new votes on one line are worth the joint information I(Y_j; V_1, ..., V_r), computed
exactly over the 2^r vote patterns (votes are independent given the truth). An item is a program
(an annotator reviews all its lines, ``unit="program"``, the cRLHF design and the Label Studio task)
or a line (``unit="line"``); a program's worth is the sum over its lines (the lines' truths are
independent under the posterior). Information from votes independent given Y is submodular in the
set of votes, so the batch is chosen greedily (lazily re-scored; within 1 - 1/e of the best batch).

**Stopping rule.** A program is *decided* when every line decision (posterior > tau) is right with
probability at least ``confidence``: prod_j max(q_j, 1 - q_j) >= confidence (its hard reward is then
the true one with that probability). Decided programs and honeypot lines get no new votes.

**Honeypots** teach about annotators, not lines. With ``a_i - 1`` right and ``b_i - 1`` wrong honeypot
votes so far, annotator i's accuracy has the posterior Beta(a_i, b_i); n more honeypot votes (K right)
are worth I(p_i; K) = h(Beta(a, b)) - E_K h(Beta(a + K, b + n - K)), K ~ BetaBinomial(n, a, b) (differential
entropies). A share ``honeypot_fraction`` of the budget goes, greedily by this information, to the
annotators the honeypots have told least about (new annotators first), each on a honeypot item they
have not seen (the one with the fewest votes).

:func:`propose` takes a :class:`~crowdstat.api.FitResult` (or its tables) and returns a
:class:`Proposal`; ``crowdstat next`` is its command (docs/allocation.md).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import betaln, digamma, gammaln

from crowdstat import spec as _spec

__all__ = [
    "Proposal",
    "vote_information",
    "joint_information",
    "honeypot_information",
    "program_confidence",
    "check_options",
    "plan",
    "propose",
    "UNITS",
    "MAX_NEW_PER_LINE",
]

UNITS = ("program", "line")
#: at most this many new votes per line in one batch (the joint information enumerates 2^r patterns)
MAX_NEW_PER_LINE = 8


def _h(p):
    """Binary entropy in nats (0 at 0 and 1)."""
    p = jnp.clip(p, 0.0, 1.0)
    return -(jax.scipy.special.xlogy(p, p) + jax.scipy.special.xlogy(1.0 - p, 1.0 - p))


@jax.jit
def vote_information(q, sens, spec):
    """I(Y_j; V_i) in nats for every line j (posterior ``q``) and annotator i: shape (n_lines, m)."""
    q = q[:, None]
    p_pos = q * sens[None, :] + (1.0 - q) * (1.0 - spec[None, :])
    return jnp.maximum(_h(p_pos) - (q * _h(sens)[None, :] + (1.0 - q) * _h(spec)[None, :]), 0.0)


def _pattern_entropy(q, like1, like0):
    """H(V) of vote patterns with likelihoods like1 = P(pattern | correct), like0 = P(pattern | wrong)."""
    p = q * like1 + (1.0 - q) * like0
    return float(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)))


def joint_information(q: float, sens, spec) -> float:
    """I(Y; V_1..V_r) of r new votes (annotators with sensitivities ``sens``, specificities ``spec``)
    on one line with posterior ``q``, exactly over the 2^r vote patterns."""
    like1, like0 = np.ones(1), np.ones(1)
    cond = 0.0
    for s, c in zip(np.asarray(sens, float), np.asarray(spec, float), strict=True):
        like1 = np.concatenate([like1 * s, like1 * (1 - s)])
        like0 = np.concatenate([like0 * (1 - c), like0 * c])
        cond += q * _hb(s) + (1 - q) * _hb(c)
    return max(_pattern_entropy(q, like1, like0) - cond, 0.0)


def _hb(p: float) -> float:
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log1p(-p))


def _beta_entropy(a, b):
    return betaln(a, b) - (a - 1) * digamma(a) - (b - 1) * digamma(b) + (a + b - 2) * digamma(a + b)


def honeypot_information(a: float, b: float, n: int) -> float:
    """I(p; K) in nats: what n honeypot votes (K right) teach about an accuracy p ~ Beta(a, b)."""
    return _honeypot_information(float(a), float(b), int(n))


@functools.lru_cache(maxsize=65536)
def _honeypot_information(a: float, b: float, n: int) -> float:
    if n <= 0:
        return 0.0
    k = jnp.arange(n + 1) * 1.0  # the default float type
    # BetaBinomial(n, a, b) pmf in log space
    logpmf = gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0) + betaln(a + k, b + n - k) - betaln(a, b)
    post = _beta_entropy(a + k, b + n - k)
    return float(jnp.maximum(_beta_entropy(a, b) - jnp.sum(jnp.exp(logpmf) * post), 0.0))


def program_confidence(q, line_program, n_programs: int) -> np.ndarray:
    """P(every line decision of the program is right) = prod_j max(q_j, 1 - q_j), per program."""
    q = np.asarray(q, np.float64)
    logc = np.log(np.maximum(np.maximum(q, 1.0 - q), 1e-300))
    return np.exp(np.bincount(np.asarray(line_program), weights=logc, minlength=n_programs))


@dataclasses.dataclass
class Proposal:
    """What :func:`propose` returns.

    Attributes
    ----------
    assignments : DataFrame
        ``program, line, annotator, kind, gain``: one row per proposed vote (``unit="program"``: one row
        per program and annotator, ``line`` empty), ``kind`` "vote" or "honeypot", ``gain`` the
        information it adds given the rows above it (nats), in the order chosen.
    programs : DataFrame
        ``program, n_lines, n_votes, confidence, decided``: every program, with the stopping rule.
    summary : dict
        Budget, unit, confidence, how many programs are decided, information proposed.
    """

    assignments: pd.DataFrame
    programs: pd.DataFrame
    summary: dict


class _Lines:
    """The lines the allocation sees: the fit's lines, then lines of ``programs`` that have no votes yet."""

    def __init__(self, result, programs: pd.DataFrame | None, prior: float | None):
        table = result.table
        if table is None:
            raise ValueError("propose: the fit result holds no vote table (pass the FitResult that crowdstat.fit returned)")
        a = table.arrays
        prog_ids = [str(p) for p in table.programs]
        line_program = np.asarray(a.line_program, np.int64)
        line_no = np.asarray(table.line_numbers, np.int64)
        q = result.lines["posterior"].to_numpy(np.float64)
        truth = np.asarray(a.truth, np.int64)
        unknown = truth == 0
        if prior is None:
            prior = float(result.diagnostics.get("class_prior", np.mean(q[unknown]) if unknown.any() else 0.5))
        self.prior = float(np.clip(prior, 1e-6, 1 - 1e-6))
        extra_prog, extra_line = [], []
        if programs is not None:
            index = {p: i for i, p in enumerate(prog_ids)}
            have = pd.Series(line_no).groupby(line_program).apply(set).to_dict()
            for p, n in zip(programs["program"].astype(str), programs["n_lines"].astype(int), strict=True):
                if p not in index:
                    index[p] = len(prog_ids)
                    prog_ids.append(p)
                i = index[p]
                for ln in range(1, n + 1):
                    if ln not in have.get(i, set()):
                        extra_prog.append(i)
                        extra_line.append(ln)
        self.programs = np.array(prog_ids, dtype=object)
        self.line_program = np.concatenate([line_program, np.asarray(extra_prog, np.int64)])
        self.line_no = np.concatenate([line_no, np.asarray(extra_line, np.int64)])
        self.q = np.concatenate([q, np.full(len(extra_prog), self.prior)])
        self.truth = np.concatenate([truth, np.zeros(len(extra_prog), np.int64)])
        self.n_fit_lines = len(q)


def _annotator_rates(result, available, prior_reliability):
    ann = result.annotators
    ids = [str(x) for x in ann["annotator"]]
    rel = ann["reliability"].to_numpy(np.float64)
    sens = ann["sensitivity"].to_numpy(np.float64) if "sensitivity" in ann else rel.copy()
    spec = ann["specificity"].to_numpy(np.float64) if "specificity" in ann else rel.copy()
    if prior_reliability is None:
        # the median fitted reliability, kept inside [0.5, 0.99]: on a small or unanimous round it can be 1
        prior_reliability = float(np.clip(np.median(rel), 0.5, 0.99)) if len(rel) else 0.7
    if not 0.5 <= prior_reliability < 1:
        raise ValueError(f"prior_reliability: expected a number in [0.5, 1), got {prior_reliability!r}")
    new = [str(x) for x in (available or []) if str(x) not in set(ids)]
    ids += new
    sens = np.concatenate([sens, np.full(len(new), prior_reliability)])
    spec = np.concatenate([spec, np.full(len(new), prior_reliability)])
    use = np.ones(len(ids), bool) if available is None else np.isin(np.array(ids, dtype=object), [str(x) for x in available])
    return np.array(ids, dtype=object), np.clip(sens, 1e-6, 1 - 1e-6), np.clip(spec, 1e-6, 1 - 1e-6), use


def check_options(budget, unit, confidence, honeypot_fraction, per_annotator):
    if not (isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget >= 0):
        raise ValueError(f"budget: expected an integer >= 0, got {budget!r}")
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1):
        raise ValueError(f"confidence: expected a number in [0.5, 1), got {confidence!r}")
    if not (isinstance(honeypot_fraction, (int, float)) and 0 <= honeypot_fraction <= 1):
        raise ValueError(f"honeypot_fraction: expected a number in [0, 1], got {honeypot_fraction!r}")
    if per_annotator is not None and not (isinstance(per_annotator, (int, np.integer)) and per_annotator >= 1):
        raise ValueError(f"per_annotator: expected an integer >= 1 or None, got {per_annotator!r}")


class _Greedy:
    """Lazy greedy over (item, annotator) pairs: the joint information of each line's new votes, exactly."""

    def __init__(self, q, sens, spec, voted, item_lines):
        self.q, self.sens, self.spec, self.voted, self.item_lines = q, sens, spec, voted, item_lines
        self.state: dict[int, tuple[np.ndarray, np.ndarray, float, int]] = {}  # line -> like1, like0, H(V), r
        self.hs, self.hc = np.array([_hb(x) for x in sens]), np.array([_hb(x) for x in spec])

    def _line_state(self, j):
        return self.state.get(j, (np.ones(1), np.ones(1), 0.0, 0))

    def gain(self, item, a) -> float:
        total = 0.0
        for j in self.item_lines[item]:
            if self.voted[j, a]:
                continue
            like1, like0, h, r = self._line_state(j)
            if r >= MAX_NEW_PER_LINE:
                continue
            s, c, q = self.sens[a], self.spec[a], self.q[j]
            hn = _pattern_entropy(q, np.concatenate([like1 * s, like1 * (1 - s)]), np.concatenate([like0 * (1 - c), like0 * c]))
            total += max(hn - h - (q * self.hs[a] + (1 - q) * self.hc[a]), 0.0)
        return total

    def add(self, item, a) -> None:
        for j in self.item_lines[item]:
            if self.voted[j, a]:
                continue
            like1, like0, _, r = self._line_state(j)
            if r >= MAX_NEW_PER_LINE:
                continue
            s, c = self.sens[a], self.spec[a]
            l1, l0 = np.concatenate([like1 * s, like1 * (1 - s)]), np.concatenate([like0 * (1 - c), like0 * c])
            self.state[j] = (l1, l0, _pattern_entropy(self.q[j], l1, l0), r + 1)
            self.voted[j, a] = True


def _choose_votes(greedy: _Greedy, items, cand_annotators, budget, load, per_annotator):
    """Lazy greedy: pop the best (stale scores re-scored), accept while budget and capacity last."""
    first = np.asarray(vote_information(jnp.asarray(greedy.q), jnp.asarray(greedy.sens), jnp.asarray(greedy.spec)))
    first = np.where(greedy.voted, 0.0, first)
    heap = []
    for item in items:
        g = first[greedy.item_lines[item]].sum(axis=0)
        heap += [(-float(g[a]), int(item), int(a), 0) for a in cand_annotators if g[a] > 1e-12]
    heapq.heapify(heap)
    version = dict.fromkeys(items, 0)
    out: list[tuple[int, int, float]] = []
    while heap and len(out) < budget:
        neg, item, a, ver = heapq.heappop(heap)
        if per_annotator is not None and load[a] >= per_annotator:
            continue
        if ver != version[item]:
            g = greedy.gain(item, a)
            if g > 1e-12:
                heapq.heappush(heap, (-g, item, a, version[item]))
            continue
        greedy.add(item, a)
        version[item] += 1
        load[a] += 1
        out.append((item, a, -neg))
    return out


def _choose_honeypots(hp_items, item_truth_lines, voted, record, cand_annotators, budget, load, per_annotator, hp_votes):
    """Greedy by I(p_i; K): each pick gives annotator i the unseen honeypot item with the fewest votes."""
    a_, b_ = record
    n_new = np.zeros(len(a_), np.int64)
    out: list[tuple[int, int, float]] = []

    def score(a, item):
        n = len(item_truth_lines[item])
        return honeypot_information(a_[a], b_[a], int(n_new[a] + n)) - honeypot_information(a_[a], b_[a], int(n_new[a]))

    def next_item(a):
        free = [it for it in hp_items if not voted[item_truth_lines[it], a].all()]
        return min(free, key=lambda it: (hp_votes[it], it)) if free else None

    heap = []
    for a in cand_annotators:
        it = next_item(a)
        if it is not None:
            heap.append((-score(a, it), int(a), int(it), 0))
    heapq.heapify(heap)
    while heap and len(out) < budget:
        _, a, it, _ = heapq.heappop(heap)
        if per_annotator is not None and load[a] >= per_annotator:
            continue
        cur = next_item(a)
        if cur is None:
            continue
        g = score(a, cur)
        if cur != it or (heap and g < -heap[0][0] - 1e-12):
            heapq.heappush(heap, (-g, a, cur, 0))
            continue
        out.append((cur, a, g))
        voted[item_truth_lines[cur], a] = True
        n_new[a] += len(item_truth_lines[cur])
        hp_votes[cur] += 1
        load[a] += 1
        nxt = next_item(a)
        if nxt is not None:
            heapq.heappush(heap, (-score(a, nxt), a, nxt, 0))
    return out


def plan(
    q,
    truth,
    line_program,
    voted,
    sens,
    spec,
    budget: int,
    *,
    unit: str = "program",
    confidence: float = 0.95,
    honeypot_fraction: float = _spec.DEFAULT_HONEYPOT_FRACTION,
    per_annotator: int | None = None,
    candidates=None,
    record=None,
) -> tuple[list[tuple[int, int, str, float]], list[np.ndarray], np.ndarray]:
    """The array core of :func:`propose` (for simulation loops that keep their own arrays).

    Parameters
    ----------
    q, truth, line_program : arrays of shape (n_lines,)
        Posteriors, honeypot truth (+1/-1, 0 = unknown) and program index (0..n_programs-1) per line.
    voted : bool array of shape (n_lines, m)
        Who has voted on what (modified: the proposed assignments are marked).
    sens, spec : arrays of shape (m,)
    candidates : int array, optional
        The annotators that can be asked (default all).
    record : (right, total) arrays of shape (m,), optional
        Honeypot votes so far (default: none).

    Returns
    -------
    rows : list of (item, annotator, kind, gain)
        Items index programs (``unit="program"``) or lines.
    members : list of int arrays
        The lines of each item.
    confidence : array of shape (n_programs,)
        prod_j max(q_j, 1 - q_j) over the program's lines without truth.
    """
    check_options(budget, unit, confidence, honeypot_fraction, per_annotator)
    q = np.asarray(q, np.float64)
    truth = np.asarray(truth)
    line_program = np.asarray(line_program, np.int64)
    m = voted.shape[1]
    n_prog = int(line_program.max()) + 1 if len(line_program) else 0
    hp = truth != 0
    conf = program_confidence(np.where(hp, 1.0, q), line_program, n_prog)
    decided = conf >= confidence
    if unit == "program":
        order = np.argsort(line_program, kind="stable")
        bounds = np.searchsorted(line_program[order], np.arange(n_prog + 1))
        members = [order[bounds[i] : bounds[i + 1]] for i in range(n_prog)]
    else:
        members = [np.array([j]) for j in range(len(q))]
    item_program = np.array([line_program[mm[0]] if len(mm) else -1 for mm in members], np.int64)
    item_lines = [mm[~hp[mm]] for mm in members]
    item_truth = [mm[hp[mm]] for mm in members]
    vote_items = [i for i in range(len(members)) if len(item_lines[i]) and not decided[item_program[i]]]
    hp_items = [i for i in range(len(members)) if len(item_truth[i])]
    cand = np.arange(m) if candidates is None else np.asarray(candidates, np.int64)
    right, total = (np.zeros(m), np.zeros(m)) if record is None else (np.asarray(record[0], float), np.asarray(record[1], float))
    n_hp = round(honeypot_fraction * budget) if hp_items else 0
    load = np.zeros(m, np.int64)
    hp_votes = {i: int(voted[item_truth[i]].any(axis=0).sum()) for i in hp_items}
    picked_hp = _choose_honeypots(
        hp_items, item_truth, voted, (1.0 + right, 1.0 + total - right), cand, n_hp, load, per_annotator, hp_votes
    )
    greedy = _Greedy(
        q, np.clip(np.asarray(sens, float), 1e-6, 1 - 1e-6), np.clip(np.asarray(spec, float), 1e-6, 1 - 1e-6), voted, item_lines
    )
    picked = _choose_votes(greedy, vote_items, cand, budget - len(picked_hp), load, per_annotator)
    rows = [(i, a, "vote", g) for i, a, g in picked] + [(i, a, "honeypot", g) for i, a, g in picked_hp]
    return rows, members, conf


def propose(
    result,
    budget: int,
    *,
    unit: str = "program",
    confidence: float = 0.95,
    honeypot_fraction: float = _spec.DEFAULT_HONEYPOT_FRACTION,
    per_annotator: int | None = None,
    annotators=None,
    programs: pd.DataFrame | None = None,
    prior: float | None = None,
    prior_reliability: float | None = None,
) -> Proposal:
    """Propose the next ``budget`` assignments from a fit (module docstring for the rule).

    Parameters
    ----------
    result : FitResult
        What :func:`crowdstat.fit` returned on the votes so far (its ``table`` says who voted on what).
    budget : int
        Assignments to propose: program reviews (``unit="program"``) or line votes (``unit="line"``).
    unit : {"program", "line"}
    confidence : float
        The stopping rule: programs whose line decisions are all right with this probability get no votes.
    honeypot_fraction : float
        Share of the budget for honeypot items (when there are any), spent where they teach most about
        the annotators' reliabilities.
    per_annotator : int, optional
        At most this many assignments per annotator in this batch.
    annotators : list of ids, optional
        Who can be asked (default: every annotator of the fit); ids the fit has not seen are new
        annotators with reliability ``prior_reliability`` (default: the median of the fitted ones).
    programs : DataFrame, optional
        ``program, n_lines``: programs (and lines) with no votes yet, at posterior ``prior`` (default:
        the fit's class prior, else the mean posterior).
    """
    check_options(budget, unit, confidence, honeypot_fraction, per_annotator)
    L = _Lines(result, programs, prior)
    ids, sens, spec, usable = _annotator_rates(result, annotators, prior_reliability)
    a = result.table.arrays
    voted = np.zeros((len(L.q), len(ids)), bool)
    line_idx, ann_idx, label = np.asarray(a.line), np.asarray(a.annotator), np.asarray(a.label)
    voted[line_idx, ann_idx] = True
    on_truth = L.truth[line_idx] != 0
    right = np.bincount(ann_idx[on_truth], weights=(label[on_truth] == L.truth[line_idx][on_truth]), minlength=len(ids))
    total = np.bincount(ann_idx[on_truth], minlength=len(ids)).astype(np.float64)
    rows, members, conf = plan(
        L.q,
        L.truth,
        L.line_program,
        voted,
        sens,
        spec,
        budget,
        unit=unit,
        confidence=confidence,
        honeypot_fraction=honeypot_fraction,
        per_annotator=per_annotator,
        candidates=np.flatnonzero(usable),
        record=(right, total),
    )
    first = [int(members[i][0]) for i, *_ in rows]
    assign = pd.DataFrame(
        {
            "program": pd.Series([L.programs[L.line_program[j]] for j in first], dtype=object),
            "line": pd.array([int(L.line_no[j]) for j in first], dtype="Int64"),
            "annotator": pd.Series([ids[r[1]] for r in rows], dtype=object),
            "kind": pd.Series([r[2] for r in rows], dtype=object),
            "gain": np.array([r[3] for r in rows], np.float64),
        }
    )
    if unit == "program":
        assign = assign.drop(columns="line")
    n_prog = len(L.programs)
    progs = pd.DataFrame(
        {
            "program": L.programs,
            "n_lines": np.bincount(L.line_program, minlength=n_prog),
            "n_votes": np.bincount(L.line_program[line_idx], minlength=n_prog),
            "confidence": conf,
            "decided": conf >= confidence,
        }
    )
    summary = {
        "budget": int(budget),
        "proposed": len(rows),
        "honeypot_assignments": int(sum(r[2] == "honeypot" for r in rows)),
        "unit": unit,
        "confidence": float(confidence),
        "programs": n_prog,
        "programs_decided": int(progs["decided"].sum()),
        "information_nats": float(assign["gain"].sum()),
    }
    return Proposal(assign, progs, summary)
