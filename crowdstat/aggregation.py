"""crowd-kit style estimators: ``fit`` / ``fit_predict`` / ``fit_predict_proba`` on a task/worker/label frame.

A crowd-kit user switches by changing one import::

    from crowdkit.aggregation import DawidSkene       # before
    from crowdstat.aggregation import DawidSkene      # after
    probas = DawidSkene(n_iter=100).fit_predict_proba(df)   # df: columns task, worker, label

The classes are thin over :func:`crowdstat.fit` (the same compiled estimators): each task is one
"line" of one program, and the two label values of the frame (any hashable values; at most two
distinct ones: these estimators are binary) are mapped to -1 (the smaller under sorting) and +1.
Results use crowd-kit's names and shapes: ``labels_`` (Series task -> label), ``probas_``
(DataFrame task x label, rows summing to 1), ``skills_`` (MajorityVote: Series worker ->
agreement with the majority), ``priors_`` (Series label -> prior) and ``errors_`` (DataFrame
indexed by (worker, observed label), one column per true label, crowd-kit's layout).

Defaults follow crowd-kit's where crowd-kit has the parameter (``n_iter=100``) and reproduce its
numbers: float64 and probabilities clipped at 1e-10, as crowd-kit computes them. Stopping differs:
``tol`` here is the *relative* observed-data log-likelihood gain of :mod:`crowdstat.estimators.dawid_skene`
(crowd-kit's is an absolute gain of its per-vote ELBO), so with the default ``tol`` the two may stop
at different iterations; ``tol=0`` runs exactly ``n_iter`` cycles and then equals crowd-kit's
``DawidSkene(n_iter, tol=-inf)`` to float rounding (tests/crowdstat/test_aggregation.py). Ties of a
majority vote go to the first label in sorted order, as crowd-kit's ``idxmax`` on sorted columns.

``GLAD`` and ``MACE`` run crowdstat's ``glad`` and ``mace`` with crowd-kit's defaults; their accuracies on
the shared sets and where they differ from crowd-kit 1.4.2 (its MACE misaligns workers in its M-step)
are in docs/baselines.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["MajorityVote", "DawidSkene", "OneCoinDawidSkene", "GLAD", "MACE"]

_COLUMNS = ("task", "worker", "label")


def _encode(data: pd.DataFrame, where: str) -> tuple[pd.DataFrame, list]:
    """(votes frame for :func:`crowdstat.fit`, the sorted label values); checks crowd-kit's columns."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame with columns task, worker, label, got {type(data).__name__}")
    missing = [c for c in _COLUMNS if c not in data.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected task, worker, label (crowd-kit's names)")
    if len(data) == 0:
        raise ValueError(f"{where}: the frame has no rows")
    if data[list(_COLUMNS)].isna().any().any():
        bad = data[list(_COLUMNS)].isna().any(axis=1).to_numpy().nonzero()[0][0]
        raise ValueError(f"{where}: row {bad}: a missing task, worker or label")
    for col in ("task", "worker"):
        if data[col].astype(str).nunique() != data[col].nunique():
            raise ValueError(f"{where}: two different {col} ids have the same text form (e.g. 1 and '1')")
    labels = sorted(pd.unique(data["label"]).tolist())
    if len(labels) > 2:
        raise ValueError(f"{where}: {len(labels)} distinct labels {labels[:5]}...; these estimators are binary (two labels)")
    sign = {labels[0]: -1, labels[-1]: 1} if len(labels) == 2 else {labels[0]: 1}
    votes = pd.DataFrame(
        {
            "program": data["task"].astype(str).to_numpy(),
            "line": np.ones(len(data), np.int64),
            "annotator": data["worker"].astype(str).to_numpy(),
            "label": data["label"].map(sign).to_numpy(np.int64),
        }
    )
    dup = votes.duplicated(["program", "annotator"])
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise ValueError(f"{where}: row {i}: worker '{data['worker'].iloc[i]}' labels task '{data['task'].iloc[i]}' twice")
    return votes, labels


def _truth(true_labels, labels: list, where: str) -> pd.DataFrame | None:
    if true_labels is None:
        return None
    s = pd.Series(true_labels)
    bad = sorted(set(s.unique().tolist()) - set(labels))
    if bad:
        raise ValueError(f"{where}: true_labels has labels {bad[:5]} that no worker used ({labels})")
    return pd.DataFrame({"program": s.index.astype(str), "line": 1, "truth": np.where(s.to_numpy() == labels[-1], 1, -1)})


def _originals(col: pd.Series) -> dict:
    """The original id of each text form (fit sees ids as text)."""
    return dict(zip(col.astype(str), col))


def _task_index(data: pd.DataFrame) -> pd.Index:
    """Tasks in first-seen order, with their original values (fit works on their string form)."""
    return pd.Index(pd.unique(data["task"]), name="task")


def _probas(res, data: pd.DataFrame, labels: list) -> pd.DataFrame:
    tasks = _task_index(data)
    post = pd.Series(res.lines["posterior"].to_numpy(np.float64), index=res.lines["program"].to_numpy())
    p = post.reindex(tasks.astype(str)).to_numpy()
    if len(labels) == 1:
        return pd.DataFrame({labels[0]: np.ones(len(tasks))}, index=tasks)
    df = pd.DataFrame({labels[0]: 1.0 - p, labels[1]: p}, index=tasks)
    df.columns.name = "label"
    return df


def _labels(probas: pd.DataFrame) -> pd.Series:
    return probas.idxmax(axis=1).rename("agg_label")


class _Predictor:
    """``fit_predict`` / ``fit_predict_proba`` of every class here: ``fit`` then its ``labels_`` / ``probas_``."""

    def fit_predict(self, data: pd.DataFrame, *args, **kwargs) -> pd.Series:
        return self.fit(data, *args, **kwargs).labels_  # type: ignore[attr-defined]

    def fit_predict_proba(self, data: pd.DataFrame, *args, **kwargs) -> pd.DataFrame:
        return self.fit(data, *args, **kwargs).probas_  # type: ignore[attr-defined]


@dataclass
class MajorityVote(_Predictor):
    """Majority vote (crowd-kit's ``MajorityVote`` without worker weights): ``probas_`` = the share of
    each label among a task's votes; ``skills_`` = each worker's agreement with the majority labels."""

    labels_: pd.Series | None = field(default=None, init=False)
    probas_: pd.DataFrame | None = field(default=None, init=False)
    skills_: pd.Series | None = field(default=None, init=False)

    def fit(self, data: pd.DataFrame) -> MajorityVote:
        import crowdstat as cs

        votes, labels = _encode(data, "MajorityVote.fit")
        res = cs.fit(votes, method="majority", x64=True)
        self.probas_ = _probas(res, data, labels)
        self.labels_ = _labels(self.probas_)
        agree = data["label"].to_numpy() == self.labels_.reindex(data["task"]).to_numpy()
        self.skills_ = pd.Series(agree, index=data["worker"].to_numpy()).groupby(level=0).mean().rename("skill")
        self.skills_.index.name = "worker"
        return self


@dataclass
class DawidSkene(_Predictor):
    """Dawid-Skene by EM with a full 2 x 2 confusion matrix per worker (crowd-kit's ``DawidSkene`` on
    two labels; crowdstat's ``em2``). ``n_iter``: EM cycles at most; ``tol``: relative log-likelihood gain
    at which EM stops (0: run ``n_iter`` cycles; module docstring); ``delta``: probability clip.
    ``fit(data, true_labels=None)``: ``true_labels`` (Series task -> label) clamps those tasks to their
    truth (semi-supervised EM, crowd-kit's argument of the same name)."""

    n_iter: int = 100
    tol: float = 1e-5
    delta: float = 1e-10
    labels_: pd.Series | None = field(default=None, init=False)
    probas_: pd.DataFrame | None = field(default=None, init=False)
    priors_: pd.Series | None = field(default=None, init=False)
    errors_: pd.DataFrame | None = field(default=None, init=False)
    converged_: bool | None = field(default=None, init=False)
    _method = "em2"

    def fit(self, data: pd.DataFrame, true_labels=None) -> DawidSkene:
        import crowdstat as cs

        where = f"{type(self).__name__}.fit"
        votes, labels = _encode(data, where)
        if len(labels) == 1:
            raise ValueError(f"{where}: every vote has the label {labels[0]!r}; EM needs both labels")
        truth = _truth(true_labels, labels, where)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*EM stopped at maxiter.*")
            res = cs.fit(votes, truth, method=self._method, maxiter=int(self.n_iter), tol=float(self.tol), delta=self.delta, x64=True)
        self.converged_ = bool(res.diagnostics.get("converged"))
        self.probas_ = _probas(res, data, labels)
        self.labels_ = _labels(self.probas_)
        # crowd-kit's attributes after its last E-step: the priors and the M-step of the final probabilities
        self.priors_ = self.probas_.mean().rename("prior")
        self.errors_ = self._errors(data, self.probas_)
        return self

    def _errors(self, data: pd.DataFrame, probas: pd.DataFrame) -> pd.DataFrame:
        """P(observed label | true label) per worker from the final probabilities (crowd-kit's M-step and
        layout: rows (worker, observed label), one column per true label)."""
        joined = data[["task", "worker", "label"]].join(probas, on="task").drop(columns=["task"])
        errors = joined.groupby(["worker", "label"]).sum()
        errors = errors / errors.groupby(level="worker").transform("sum")
        errors.columns.name = "true_label"
        return errors

    def fit_predict(self, data: pd.DataFrame, true_labels=None) -> pd.Series:
        return self.fit(data, true_labels).labels_

    def fit_predict_proba(self, data: pd.DataFrame, true_labels=None) -> pd.DataFrame:
        return self.fit(data, true_labels).probas_


@dataclass
class OneCoinDawidSkene(DawidSkene):
    """One-coin Dawid-Skene by EM (crowdstat's ``em1``): one accuracy per worker, the same on both labels;
    ``errors_`` has crowd-kit's layout with P(right) on the diagonal. ``skills_``: the accuracies."""

    skills_: pd.Series | None = field(default=None, init=False)
    _method = "em1"

    def _errors(self, data: pd.DataFrame, probas: pd.DataFrame) -> pd.DataFrame:
        """One accuracy per worker: the expected share of its votes that equal the true label under the final
        probabilities (crowd-kit's one-coin M-step); P(right) on the diagonal, 1 - P(right) off it."""
        p_obs = probas.reindex(data["task"]).to_numpy()[np.arange(len(data)), probas.columns.get_indexer(data["label"])]
        self.skills_ = pd.Series(p_obs, index=pd.Index(data["worker"].to_numpy(), name="worker")).groupby(level=0).mean().rename("skill")
        rows = []
        for w, sk in self.skills_.items():
            for lab in probas.columns:
                rows.append((w, lab, *[sk if t == lab else 1.0 - sk for t in probas.columns]))
        errors = pd.DataFrame(rows, columns=["worker", "label", *probas.columns]).set_index(["worker", "label"])
        errors.columns.name = "true_label"
        return errors


def _binary_votes(data: pd.DataFrame, where: str) -> tuple[pd.DataFrame, list]:
    votes, labels = _encode(data, where)
    if len(labels) == 1:
        raise ValueError(f"{where}: every vote has the label {labels[0]!r}; the model needs both labels")
    return votes, labels


def _by_original(frame: pd.DataFrame, key: str, column: str, originals: dict, name: tuple[str, str]) -> pd.Series:
    """``frame[column]`` as a Series indexed by the original ids of ``frame[key]``; ``name`` = (index name, series name)."""
    s = pd.Series(frame[column].to_numpy(np.float64), index=pd.Index([originals[k] for k in frame[key]], name=name[0]))
    return s.rename(name[1])


@dataclass
class GLAD(_Predictor):
    """GLAD by EM (crowd-kit's ``GLAD``; crowdstat's ``glad``): P(right) = sigmoid(alpha_worker * exp(beta_task)).

    ``n_iter``, ``tol``: EM cycles at most, and the gain of the objective per (vote, label) row below which it
    stops; ``m_step_max_iter``, ``m_step_tol``: the M-step's iterations and gradient tolerance (L-BFGS here,
    scipy's CG in crowd-kit); ``alphas_priors_mean``, ``betas_priors_mean``: the means of the N(mean, 1) priors
    (None: 1, crowd-kit's default; a number here, where crowd-kit takes a Series); ``labels_priors``: Series
    label -> prior (None: uniform). ``silent`` is accepted for crowd-kit compatibility. Fitted: ``labels_``,
    ``probas_``, ``alphas_`` (Series worker -> alpha), ``betas_`` (Series task -> beta, log inverse difficulty,
    crowd-kit's scale), ``converged_``."""

    n_iter: int = 100
    tol: float = 1e-5
    silent: bool = True
    labels_priors: pd.Series | None = None
    alphas_priors_mean: float | None = None
    betas_priors_mean: float | None = None
    m_step_max_iter: int = 25
    m_step_tol: float = 1e-2
    labels_: pd.Series | None = field(default=None, init=False)
    probas_: pd.DataFrame | None = field(default=None, init=False)
    alphas_: pd.Series | None = field(default=None, init=False)
    betas_: pd.Series | None = field(default=None, init=False)
    converged_: bool | None = field(default=None, init=False)

    def _prior(self, labels: list, where: str) -> float:
        if self.labels_priors is None:
            return 0.5
        pr = pd.Series(self.labels_priors, dtype=np.float64)
        if set(pr.index) != set(labels) or not np.isclose(pr.sum(), 1.0):
            raise ValueError(
                f"{where}: labels_priors must give a probability to each of the labels {labels} and sum to 1, got {pr.to_dict()}"
            )
        return float(pr[labels[1]])

    def fit(self, data: pd.DataFrame) -> GLAD:
        import crowdstat as cs

        where = "GLAD.fit"
        votes, labels = _binary_votes(data, where)
        means = {}
        for name, v in (("alpha_mean", self.alphas_priors_mean), ("beta_mean", self.betas_priors_mean)):
            if v is not None and not isinstance(v, (int, float)):
                raise ValueError(f"{where}: {name[:-5]}s_priors_mean: expected None or a number (one mean for all), got {type(v).__name__}")
            means[name] = 1.0 if v is None else float(v)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(EM stopped at maxiter|posteriors within).*")
            res = cs.fit(
                votes,
                method="glad",
                maxiter=int(self.n_iter),
                tol=float(self.tol),
                m_step_maxiter=int(self.m_step_max_iter),
                m_step_tol=float(self.m_step_tol),
                prior=self._prior(labels, where),
                x64=True,
                **means,
            )
        self.converged_ = bool(res.diagnostics.get("converged"))
        self.probas_ = _probas(res, data, labels)
        self.labels_ = _labels(self.probas_)
        self.alphas_ = _by_original(res.annotators, "annotator", "ability", _originals(data["worker"]), ("worker", "alpha"))
        lines = res.lines.assign(beta=np.log(res.lines["inverse_difficulty"].to_numpy(np.float64)))
        self.betas_ = _by_original(lines, "program", "beta", _originals(data["task"]), ("task", "beta"))
        return self


@dataclass
class MACE(_Predictor):
    """MACE (crowd-kit's ``MACE``; crowdstat's ``mace``): each worker knows the answer with probability theta or
    answers from a spam strategy.

    ``n_restarts``, ``n_iter``, ``method`` ("vb" or "em"), ``alpha``, ``beta`` (crowd-kit's Beta prior: ``alpha``
    on spamming, ``beta`` on knowing), ``random_state`` as crowd-kit. ``smoothing`` (em only): None = crowd-kit's
    effective 0.01 / n_labels (crowd-kit 1.4.2 ignores its own ``smoothing`` argument). ``default_noise``: only
    crowd-kit's 0.5 (starts uniform on [1, 2.5]). ``verbose`` is accepted for compatibility. Unlike crowd-kit,
    each restart has its own start (crowd-kit reseeds every restart with ``random_state``), and the M-step keeps
    each worker's counts with that worker (docs/baselines.md). Fitted: ``labels_``, ``probas_``, ``spamming_``
    (workers x [P(spam), P(knows)], workers in order of first appearance), ``thetas_`` (workers x labels in sorted
    order: the spam strategy), ``competence_`` (Series worker -> P(knows))."""

    n_restarts: int = 10
    n_iter: int = 50
    method: str = "vb"
    smoothing: float | None = None
    default_noise: float = 0.5
    alpha: float = 0.5
    beta: float = 0.5
    random_state: int = 0
    verbose: int = 0
    labels_: pd.Series | None = field(default=None, init=False)
    probas_: pd.DataFrame | None = field(default=None, init=False)
    spamming_: np.ndarray | None = field(default=None, init=False)
    thetas_: np.ndarray | None = field(default=None, init=False)
    competence_: pd.Series | None = field(default=None, init=False)

    def fit(self, data: pd.DataFrame) -> MACE:
        import crowdstat as cs

        where = "MACE.fit"
        votes, labels = _binary_votes(data, where)
        if self.default_noise != 0.5:
            raise ValueError(f"{where}: default_noise: only crowd-kit's default 0.5 is supported, got {self.default_noise!r}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*posteriors within.*")
            res = cs.fit(
                votes,
                method="mace",
                inference=self.method,
                n_iter=int(self.n_iter),
                n_restarts=int(self.n_restarts),
                seed=int(self.random_state),
                smoothing=0.01 / len(labels) if self.smoothing is None else float(self.smoothing),
                alpha=float(self.beta),  # the paper's (and crowdstat's) alpha is on knowing, crowd-kit's on spamming
                beta=float(self.alpha),
                x64=True,
            )
        self.probas_ = _probas(res, data, labels)
        self.labels_ = _labels(self.probas_)
        ann = res.annotators
        theta = ann["competence"].to_numpy(np.float64)
        xi_pos = ann["spam_positive"].to_numpy(np.float64)
        self.spamming_ = np.stack([1.0 - theta, theta], axis=1)
        self.thetas_ = np.stack([1.0 - xi_pos, xi_pos], axis=1)
        self.competence_ = _by_original(ann, "annotator", "competence", _originals(data["worker"]), ("worker", "competence"))
        return self
