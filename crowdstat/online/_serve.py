"""``crowdstat stream``: one :class:`~crowdstat.online.OnlineFit` kept in a long-running process, fed by JSON lines.

The process reads one request per line on stdin and writes one reply line per request on stdout
(flushed), so that a caller that must not load JAX itself (``rl labelstudio listen``) keeps a fit
current through a pipe (docs/cli.md, "crowdstat stream"; docs/streaming.md):

- ``{"op": "update", "votes": [[program, line, annotator, label], ...], "truth": [[program, line, truth], ...]}``:
  :meth:`OnlineFit.update` with these new votes (``truth``, optional: the honeypot truth of lines
  of this batch, as ``update`` takes it);
- ``{"op": "refit", "votes": [...], "truth": [...]}``: a new ``OnlineFit`` (the same method and
  parameters) on exactly these votes, in this order: what a caller sends when a vote it sent
  before changed or went away (crowdstat does not rewrite history);
- ``{"op": "status"}``: the method, parameters and votes so far, nothing computed.

After each update or refit the outputs of ``crowdstat fit --save-state`` (lines.csv,
annotators.csv, rewards.jsonl, fit.json, state.npz) replace ``--out`` as one atomic directory
swap, then the reply ``{"ok": true, "op", "n_votes", "n_new", "n_updates", "seconds", "out"}``
(``warnings``: the fit's warnings, one line each, when there are any). A request that cannot be
applied (not JSON, a bad row, a duplicate vote, a truth that contradicts an earlier one,
OnlineFit's own errors) is answered ``{"ok": false, "error": "<one line>"}`` naming the request
and the table row (``votes:ROW:COLUMN``, rows counted from 1), and the fit stays as it was (an
error inside the estimator reloads the last state written). A blank line is no request; end of
input ends the process with status 0.

``sequential`` is refused (:data:`SEQUENTIAL_REFUSED`): a task of eq. 8 is a program's votes in one
batch, and a stream's batches are one annotator's votes on one program.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd

from crowdstat.io.tables import VoteTableError, read_frame, read_votes
from crowdstat.online import STATE_FILE, OnlineFit, StateError

__all__ = ["STREAM_METHODS", "SEQUENTIAL_REFUSED", "RequestError", "Stream", "check_method", "open_fit", "read_programs", "run"]

#: the methods ``crowdstat stream`` runs
STREAM_METHODS = ("em1", "em2", "proximal")
SEQUENTIAL_REFUSED = (
    "--method sequential: not for crowdstat stream: eq. 8 takes a program's votes in one batch as one task, and a "
    "stream's batch is one annotator's votes on one program (a task of one voter only teaches it to agree with itself; "
    "docs/streaming.md); use em1, em2 or proximal, or crowdstat fit --warm-start once per round"
)
_OPS = {"update": {"op", "votes", "truth"}, "refit": {"op", "votes", "truth"}, "status": {"op"}}
_VOTE_COLUMNS = ["program", "line", "annotator", "label"]
_TRUTH_COLUMNS = ["program", "line", "truth"]
_MAX_ERROR = 2000


class RequestError(ValueError):
    """A request that is refused before the fit is touched; the message is one line."""


def _flat(text: Any) -> str:
    return " ".join(str(text).split())


def check_method(method: str) -> None:
    """A method ``crowdstat stream`` runs, or a one-line ValueError (sequential: why)."""
    if method == "sequential":
        raise ValueError(SEQUENTIAL_REFUSED)
    if method not in STREAM_METHODS:
        raise ValueError(f"--method {method}: crowdstat stream runs {', '.join(STREAM_METHODS)}")


def open_fit(method: str | None, options: Callable[[str], tuple[dict, set]], warm_start: str | None) -> OnlineFit:
    """The fit a stream starts from: the state saved in ``warm_start``, else a new one of ``method``.

    ``options(method) -> (params, given)``: the :func:`crowdstat.fit` parameters of the command
    line for a method and the names of those given explicitly. With ``warm_start`` the method and
    parameters are the state's; a ``method`` or a given parameter that differs from them is an error.
    """
    if warm_start is not None:
        of = OnlineFit.load(warm_start)
        if of.method == "sequential":
            raise StateError(f"--warm-start {warm_start}: its state is a --method sequential fit; {SEQUENTIAL_REFUSED}")
        if method not in (None, of.method):
            raise StateError(f"--warm-start {warm_start}: its state is a --method {of.method} fit, not --method {method}")
        params, given = options(of.method)
        for k in sorted(given):
            if k in params and k != "progress" and of.params.get(k) != params[k]:
                raise StateError(f"--warm-start {warm_start}: {k} = {params[k]!r} differs from the state's {k} = {of.params.get(k)!r}")
        return of
    if method is None:
        raise ValueError(f"--method: give one of {', '.join(STREAM_METHODS)} (or --warm-start PREVIOUS_OUT)")
    check_method(method)
    params, _ = options(method)
    return OnlineFit(method, **{k: v for k, v in params.items() if k != "progress"})


def read_programs(path: str) -> pd.DataFrame:
    """``program,n_lines`` of ``--programs``, checked once at the start (FILE:ROW:COLUMN on an error)."""
    df, rows, name = read_frame(path, "program")
    missing = [c for c in ("program", "n_lines") if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)} (expected program,n_lines)")
    n = pd.to_numeric(df["n_lines"], errors="coerce")
    bad = ~(n.between(1, 10**9) & (n == n.round()))
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ValueError(f"{name}:{rows[i]}:n_lines: expected an integer >= 1, got {df['n_lines'].iloc[i]!r}")
    dup = df["program"].astype(str).duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise ValueError(f"{name}:{rows[i]}:program: program {df['program'].iloc[i]!r} appears twice")
    return df[["program", "n_lines"]]


def _rows(req: dict, key: str, columns: list[str], required: bool) -> pd.DataFrame | None:
    if key not in req:
        if required:
            raise RequestError(f"no {key!r} (a list of [{', '.join(columns)}] rows)")
        return None
    rows = req[key]
    if not isinstance(rows, list):
        raise RequestError(f"{key!r}: expected a list of [{', '.join(columns)}] rows, got {type(rows).__name__}")
    for i, r in enumerate(rows, 1):
        if not isinstance(r, list) or len(r) != len(columns):
            raise RequestError(f"{key}:{i}: expected [{', '.join(columns)}], got {_flat(json.dumps(r))[:200]}")
        for c, x in zip(columns, r):
            if isinstance(x, (list, dict)):
                raise RequestError(f"{key}:{i}:{c}: expected a string or a number, got {_flat(json.dumps(x))[:200]}")
    return pd.DataFrame(rows, columns=columns) if rows else None


def _named(e: VoteTableError, name: str) -> str:
    """The problems of a table read from a request, ``NAME:ROW:COLUMN: what`` (the frame's name replaced)."""
    lines = [x[len(e.source) :] if x.startswith(e.source) else f":{x}" for x in e.located()]
    return "; ".join(f"{name}{x}" for x in lines)


class Stream:
    """The requests of one ``crowdstat stream`` process (module docstring) around one :class:`OnlineFit`.

    ``fit``: the fit to continue (fresh or loaded); ``out``: the output directory; ``programs``:
    the ``program,n_lines`` frame of ``--programs`` (each request gets the rows of its programs).
    """

    def __init__(
        self,
        fit: OnlineFit,
        out: str | Path,
        programs: pd.DataFrame | None = None,
        *,
        programs_name: str = "--programs",
        force: bool = False,
        inputs=(),
    ):
        self.fit = fit
        self.out = Path(out).resolve()
        self.programs, self.programs_name = programs, programs_name
        self.force, self.inputs = force, tuple(inputs)
        self.n_requests = self.n_errors = 0
        self._saved = False  # whether --out holds this process's fit (restore from it on an estimator error)
        self._warm_start: Path | None = None

    @property
    def n_votes(self) -> int:
        return int(self.fit.store.n_votes)

    def status(self) -> dict:
        return {
            "ok": True,
            "op": "status",
            "method": self.fit.method,
            "params": {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in self.fit.params.items()},
            "n_votes": self.n_votes,
            "n_updates": self.fit.n_updates,
            "out": str(self.out),
        }

    def handle(self, line: str) -> dict:
        """The reply to one request line."""
        self.n_requests += 1
        try:
            return self._handle(line)
        except Exception as e:  # one line, never a traceback; the fit is the last good one
            self.n_errors += 1
            if isinstance(e, (RequestError, VoteTableError)):
                msg = str(e)
            elif isinstance(e, (ValueError, TypeError)):
                msg = _flat(e)
            else:
                msg = f"internal error: {type(e).__name__}: {_flat(e)}"
            return {"ok": False, "error": f"request {self.n_requests}: {msg}"[:_MAX_ERROR]}

    def _handle(self, line: str) -> dict:
        try:
            req = json.loads(line)
        except ValueError as e:
            raise RequestError(f"not JSON: {_flat(e)}") from None
        if not isinstance(req, dict):
            raise RequestError(f"expected a JSON object, got {type(req).__name__}")
        op = req.get("op")
        if op not in _OPS:
            raise RequestError(f"'op': expected one of {', '.join(_OPS)}, got {_flat(json.dumps(op))[:80]}")
        extra = sorted(set(req) - _OPS[op])
        if extra:
            raise RequestError(f"{op}: unknown field(s) {extra} (it takes {sorted(_OPS[op])})")
        if op == "status":
            return self.status()
        votes = _rows(req, "votes", _VOTE_COLUMNS, True)
        truth = _rows(req, "truth", _TRUTH_COLUMNS, False)
        if votes is None:
            raise RequestError(f"{op}: 'votes' is empty (a request brings at least one vote)")
        progs = None
        if self.programs is not None:
            names = votes["program"].astype(str)
            known = self.programs["program"].astype(str)
            missing = list(dict.fromkeys(names[~names.isin(known)]))
            if missing:
                shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise RequestError(f"{self.programs_name}:program: no size for program(s) {shown} of the request's votes")
            progs = self.programs[known.isin(set(names))]
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if op == "update":
                new = self._update(votes, truth, progs)
            else:
                new = self._refit(votes, truth, progs)
        reply = {
            "ok": True,
            "op": op,
            "n_votes": self.n_votes,
            "n_new": new,
            "n_updates": self.fit.n_updates,
            "seconds": round(time.perf_counter() - t0, 6),
            "out": str(self.out),
        }
        found = list(dict.fromkeys(_flat(w.message) for w in caught))
        if found:
            reply["warnings"] = found
        return reply

    def _read_error(self, e: VoteTableError, votes, truth, progs) -> RequestError:
        """Which table of the request the error is about (each is read again alone to tell)."""
        for name, args in (("votes", (votes,)), ("truth", (votes, truth)), ("programs", (votes, None, progs))):
            if name != "votes" and args[-1] is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    read_votes(*args)
            except VoteTableError as e2:
                return RequestError(self._sizes_error(e2) if name == "programs" else _named(e2, name))
        # the batch is valid alone: it clashes with the votes so far (a repeated vote, another truth or size)
        cols = {c for _, c, _ in e.problems}
        if cols == {"n_lines"}:
            return RequestError(self._sizes_error(e))
        return RequestError(_named(e, "truth" if cols == {"truth"} else "votes"))

    def _sizes_error(self, e: VoteTableError) -> str:
        """A problem with the sizes of ``--programs`` (its rows here are of the request's subset: not shown)."""
        name = self.programs_name
        return "; ".join(f"{name}:{c}: {_flat(m)}" if c else f"{name}: {_flat(m)}" for _, c, m in e.problems[:20])

    def _save(self) -> None:
        self.fit.save_dir(self.out, force=self.force, inputs=self.inputs)
        self._saved = True

    def _update(self, votes, truth, progs) -> int:
        before = self.n_votes
        try:
            self.fit.update(votes, truth=truth, programs=progs, result=False)
        except VoteTableError as e:  # read or merge refused: nothing changed
            raise self._read_error(e, votes, truth, progs) from None
        except BaseException:
            self._restore()
            raise
        try:
            self._save()
        except BaseException:
            self._restore()
            raise
        return self.n_votes - before

    def _refit(self, votes, truth, progs) -> int:
        fresh = OnlineFit(self.fit.method, **self.fit.params)
        try:
            fresh.update(votes, truth=truth, programs=progs, result=False)
        except VoteTableError as e:
            raise self._read_error(e, votes, truth, progs) from None
        old, self.fit = self.fit, fresh
        try:
            self._save()
        except BaseException:
            self.fit = old
            raise
        return self.n_votes

    def _restore(self) -> None:
        """Back to the last fit written (an error inside the estimator may have left the store half-updated)."""
        if self._saved and (self.out / STATE_FILE).is_file():
            self.fit = OnlineFit.load(self.out)
        elif self._warm_start is not None:
            self.fit = OnlineFit.load(self._warm_start)
        else:
            self.fit = OnlineFit(self.fit.method, **self.fit.params)


def run(
    fit: OnlineFit,
    out: str | Path,
    *,
    programs: pd.DataFrame | None = None,
    programs_name: str = "--programs",
    warm_start: str | None = None,
    force: bool = False,
    inputs=(),
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Serve requests from ``stdin`` until its end (module docstring); exit status 0."""
    if stdin is None:
        if isinstance(sys.stdin, io.TextIOWrapper):  # a bad byte spoils its request (not JSON), not the process
            sys.stdin.reconfigure(encoding="utf-8", errors="replace")
        stdin = sys.stdin
    if stdout is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8")
        stdout = sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    s = Stream(fit, out, programs, programs_name=programs_name, force=force, inputs=inputs)
    s._warm_start = Path(warm_start) if warm_start is not None else None
    start = f"continuing {warm_start} ({s.n_votes} votes)" if warm_start is not None else "a new fit"
    print(f"crowdstat stream: --method {fit.method}, {start} -> {s.out}; one JSON request a line on stdin", file=stderr, flush=True)
    for line in stdin:
        if not line.strip():
            continue
        reply = s.handle(line)
        stdout.write(json.dumps(reply, allow_nan=False) + "\n")
        stdout.flush()
    print(f"crowdstat stream: {s.n_requests} requests ({s.n_errors} refused), {s.n_votes} votes -> {s.out}", file=stderr, flush=True)
    return 0
