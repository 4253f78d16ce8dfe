"""Streaming fits: :class:`OnlineFit` takes votes as they arrive and gives what a full refit on all of them gives.

    from crowdstat.online import OnlineFit

    fit = OnlineFit("em2", x64=True)
    res = fit.update(round_1_votes, truth=round_1_truth)   # a crowdstat.api.FitResult
    res = fit.update(round_2_votes)                        # = crowdstat.fit(all votes so far, method="em2")
    fit.save("state.npz"); fit = OnlineFit.load("state.npz")

What "the same" means, method by method (docs/streaming.md):

- ``em1``, ``em2``: EM restarted from the previous line posteriors (new lines: their majority-vote
  fraction) and run to the refit's stopping rule. It reaches the refit's fixed point where the
  likelihood has one maximum in reach of both starts (identifiable crowds); EM from different
  starts can end on different local optima, so on a crowd that is not identifiable the two can
  differ. Each update costs EM cycles over the whole history (an E-step needs every vote), but
  few of them.
- ``proximal``: the supervised L1-logistic (convex: one optimum) restarted from the previous weights
  and intercept, to the refit's duality gap; the latent variant is an EM (as em1).
- ``sequential``: eq. 8 over the new tasks only, from the previous weights: O(new votes) for the
  weights; a task is a program's votes in one batch, so the fit equals the refit on the same order
  of tasks when each program's votes come in one batch (a program seen again is a task again).

Every method ends with the posteriors of all lines (eq. 7 or the E-step), O(history) each update.
The table grows in place (:mod:`crowdstat.online._store`); the kernels run on arrays padded to
powers of two, so they compile once per doubling of the history, not once per batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdstat import __version__
from crowdstat._typing import VoteArrays
from crowdstat.api import FitResult, _result, degeneracy_warnings
from crowdstat.estimators.registry import make_configs
from crowdstat.estimators.result import EstimatorFit
from crowdstat.io.tables import read_votes
from crowdstat.online._models import MODELS
from crowdstat.online._store import Buffer, VoteStore

__all__ = ["OnlineFit", "STREAMING_METHODS", "STATE_FILE", "StateError", "fit_command"]

#: the methods :class:`OnlineFit` runs
STREAMING_METHODS: tuple[str, ...] = tuple(MODELS)
#: the state file ``crowdstat fit --save-state`` / ``--warm-start`` writes in the output directory
STATE_FILE = "state.npz"
STATE_VERSION = 1
_STORE_ARRAYS = ("program_lines", "program_size", "line_program", "line_number", "truth", "n_votes_line", "v_line", "v_ann", "v_label")


class StateError(ValueError):
    """A state file that cannot be read, or that does not match what it is asked to continue."""


def _jsonable(params: dict) -> dict:
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in params.items()}


def _from_json(params: dict) -> dict:
    return {k: (math.inf if v == "inf" else v) for k, v in params.items()}


class OnlineFit:
    """A fit that grows with the votes (module docstring).

    Parameters
    ----------
    method : one of :data:`STREAMING_METHODS`
    **params
        The parameters of :func:`crowdstat.fit` for that method (defaults filled in the same way);
        ``calibrate`` and ``interval`` need refits and are refused.

    Attributes
    ----------
    store : VoteStore
        The votes so far; ``store.table()`` is the :class:`~crowdstat.io.tables.VoteTable` of the history.
    n_updates : int
        Batches taken.
    """

    def __init__(self, method: str, **params):
        if method not in MODELS:
            raise ValueError(f"method: streaming runs {STREAMING_METHODS}, got {method!r}")
        self.common, self.cfg = make_configs(method, params)
        for name, off in (("calibrate", "none"), ("interval", None)):
            if getattr(self.common, name, off) != off:
                raise ValueError(f"{name}: not available when streaming (it refits the whole table); got {getattr(self.common, name)!r}")
        self.method = method
        self.params = {**dataclasses.asdict(self.common), **dataclasses.asdict(self.cfg)}
        self.store = VoteStore()
        self.model: Any = MODELS[method](method, self.cfg, self.common)
        self.n_updates = 0
        self._est: EstimatorFit | None = None
        self._result: FitResult | None = None

    def reserve(self, votes: int = 0, lines: int = 0, programs: int = 0, annotators: int = 0) -> None:
        """Make room for this many votes, lines, programs and annotators in all: the kernels compile for
        these padded sizes once, instead of again each time the history doubles."""
        self.store.reserve(votes, lines, programs, annotators)

    @property
    def dtype(self):
        import jax.numpy as jnp

        return jnp.float64 if self.common.x64 else jnp.float32

    def update(self, votes, truth=None, programs=None, result: bool = True) -> FitResult | None:
        """Take a batch of new votes (path or DataFrame, as :func:`crowdstat.fit` reads them) and refit.

        ``truth`` holds the honeypot truth of lines of this batch; ``programs`` the sizes of its
        programs. A vote on a (program, line, annotator) of an earlier batch, a truth that
        contradicts an earlier one and a program size that differs from an earlier one are errors
        (:class:`~crowdstat.io.tables.VoteTableError`, the state unchanged). Returns the
        :class:`~crowdstat.api.FitResult` of all votes so far, or None with ``result=False`` (the
        tables are then built on the first read of :attr:`result`).
        """
        import jax

        batch = read_votes(votes, truth=truth, programs=programs)
        with jax.enable_x64(bool(self.common.x64)):
            merge = self.store.add(batch, votes)
            dev_np, m_cap = self.store.padded()
            dev = VoteArrays(*(jax.numpy.asarray(x) for x in dev_np))
            if self.method == "sequential":
                a = batch.arrays
                mini = VoteArrays(
                    a.line,
                    merge.batch_annotator[a.annotator].astype(np.int32),
                    a.label,
                    a.line_program,
                    self.store.truth.view()[merge.batch_line],
                    a.program_size,
                )
                self._est = self.model.step(self.store, merge, dev, m_cap, self.dtype, mini)
            else:
                self._est = self.model.step(self.store, merge, dev, m_cap, self.dtype)
            self._dev = dev
        self.n_updates += 1
        self._result = None
        return self.result if result else None

    @property
    def result(self) -> FitResult:
        """The :class:`~crowdstat.api.FitResult` of all votes so far (as :func:`crowdstat.fit` gives it)."""
        if self._est is None:
            raise ValueError("OnlineFit: no fit yet: update() makes one (a loaded state gets its result at its next update)")
        if self._result is None:
            import jax

            with jax.enable_x64(bool(self.common.x64)):
                self._result = self._build()
        return self._result

    def _build(self) -> FitResult:
        import jax.numpy as jnp

        from crowdstat.estimators import posterior

        est, store = self._est, self.store
        assert est is not None
        dtype = self.dtype
        post = np.zeros(self._dev.truth.shape[0], np.dtype(jnp.dtype(dtype).name))  # padded: one compiled kernel per doubling
        post[: store.n_lines] = est.posterior
        rw = posterior.rewards(jnp.asarray(post), self._dev, jnp.asarray(self.common.tau, dtype))
        rw = type(rw)(*(np.asarray(x)[: store.n_programs] for x in rw))
        diagnostics = dict(est.diagnostics)
        diagnostics["dtype"] = str(jnp.dtype(dtype))
        diagnostics["streaming"] = {"updates": self.n_updates}
        table = store.table()
        found = degeneracy_warnings(est.weight, est.posterior, table.arrays.truth, getattr(self.cfg, "w_max", math.inf))
        if found:
            diagnostics["warnings"] = [*diagnostics.get("warnings", []), *found]
        trajectory = None
        if self.method == "sequential" and self.model.keep and self.model.traj:
            mat = self.model.trajectory_matrix(store.n_annotators)
            idx = pd.Index(np.asarray(store.programs, dtype=object)[np.concatenate(self.model.task_program)], name="program")
            trajectory = pd.DataFrame(mat, index=idx, columns=table.annotators)
        res = _result(table, self.method, dict(self.params), est.weight, est.reliability, est.posterior, rw, diagnostics, trajectory)
        for k, v in est.annotator_columns.items():
            res.annotators[k] = np.asarray(v)
        return res

    # -- state on disk ------------------------------------------------------------------------------
    def state_arrays(self) -> dict:
        """Everything :meth:`load` needs, as arrays (the ``.npz`` members)."""
        s = self.store
        meta = {
            "state_version": STATE_VERSION,
            "crowdstat_version": __version__,
            "method": self.method,
            "params": _jsonable(self.params),
            "n_updates": self.n_updates,
        }
        out = {
            "meta": np.asarray(json.dumps(meta)),
            "programs": np.asarray(s.programs, dtype=str),
            "annotators": np.asarray(s.annotators, dtype=str),
        }
        out.update({name: getattr(s, name).view() for name in _STORE_ARRAYS})
        out.update({f"model_{k}": np.asarray(v) for k, v in self.model.state().items()})
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state to ``path`` (``.npz``; docs/formats.md, "state.npz")."""
        path = Path(path)
        with open(path, "wb") as f:
            np.savez_compressed(f, **self.state_arrays())
        return path

    def save_dir(self, out_dir: str | os.PathLike, *, force: bool = False, inputs=()) -> Path:
        """The outputs of ``crowdstat fit`` (lines.csv, annotators.csv, rewards.jsonl, fit.json, ...) plus ``state.npz``, atomically."""
        return self.result.save(out_dir, force=force, inputs=inputs, extra=lambda tmp: self.save(tmp / STATE_FILE))

    @classmethod
    def load(cls, path: str | os.PathLike) -> OnlineFit:
        """The :class:`OnlineFit` saved at ``path`` (a ``.npz`` file, or a ``crowdstat fit`` output directory holding state.npz)."""
        path = Path(path)
        if path.is_dir():
            if not (path / STATE_FILE).is_file():
                raise StateError(f"{path}: no {STATE_FILE} here (write one with crowdstat fit --save-state, or OnlineFit.save_dir)")
            path = path / STATE_FILE
        elif not path.exists():
            raise StateError(f"{path}: no such state file or output directory")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError) as e:
            raise StateError(f"{path}: not a crowdstat streaming state ({type(e).__name__}: {e})") from None
        if meta.get("state_version") != STATE_VERSION:
            raise StateError(f"{path}: state version {meta.get('state_version')!r}, this crowdstat reads {STATE_VERSION}")
        self = cls(meta["method"], **{k: v for k, v in _from_json(meta["params"]).items()})
        s = self.store
        s.programs = [str(x) for x in arrays.pop("programs")]
        s.annotators = [str(x) for x in arrays.pop("annotators")]
        s.program_index = {x: k for k, x in enumerate(s.programs)}
        s.annotator_index = {x: k for k, x in enumerate(s.annotators)}
        for name in _STORE_ARRAYS:
            old = getattr(s, name)
            setattr(s, name, Buffer(old.data.dtype, arrays.pop(name), fill=old.fill))
        self.model.restore({k[len("model_") :]: v for k, v in arrays.items() if k.startswith("model_")})
        self.n_updates = int(meta["n_updates"])
        return self


def fit_command(
    votes, truth, programs, method: str, params: dict, given: set, warm_start, out, force: bool, inputs
) -> tuple[FitResult, Path]:
    """``crowdstat fit --warm-start PREV`` / ``--save-state``: the fit of the votes so far, written to ``out`` with its state.

    ``warm_start`` (an earlier output directory holding state.npz) continues that fit with the new
    ``votes``; the method and the parameters are the state's, and a ``method`` (other than auto)
    or a parameter named in ``given`` that differs from them is an error. Without it, a fresh
    streaming fit of ``method`` starts from ``votes``.
    """
    if warm_start is not None:
        of = OnlineFit.load(warm_start)
        if method not in ("auto", of.method):
            raise StateError(f"--warm-start {warm_start}: its state is a --method {of.method} fit, not --method {method}")
        for k in sorted(given):
            if k in params and k != "progress" and of.params.get(k) != params[k]:
                raise StateError(f"--warm-start {warm_start}: {k} = {params[k]!r} differs from the state's {k} = {of.params.get(k)!r}")
    else:
        if method not in MODELS:
            raise ValueError(f"--save-state: streaming runs --method {', '.join(STREAMING_METHODS)}, got --method {method}")
        of = OnlineFit(method, **{k: v for k, v in params.items() if k != "progress"})
    res = of.update(votes, truth=truth, programs=programs)
    assert res is not None
    res.inputs = tuple(x for x in (votes, truth, programs) if isinstance(x, (str, os.PathLike)))
    return res, of.save_dir(out, force=force, inputs=inputs)
