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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["MajorityVote", "DawidSkene", "OneCoinDawidSkene"]

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


@dataclass
class MajorityVote:
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

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        return self.fit(data).labels_

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        return self.fit(data).probas_


@dataclass
class DawidSkene:
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
