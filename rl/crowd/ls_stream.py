"""``rl labelstudio listen``: a Label Studio webhook receiver that keeps a crowdstat fit current, one event at a time.

Label Studio posts a webhook for every annotation saved (docs/streaming.md, "Per annotation event
(Label Studio webhooks)"). The listener turns each event of the round's project into votes and one
request to a ``crowdstat stream`` subprocess (an :class:`crowdstat.online.OnlineFit` in its own
process: rl reaches crowdstat only through its host-only I/O and its command line), and writes the
outputs of ``crowdstat fit`` after each:

- Payloads (Label Studio 1.23.2, ``label_studio/webhooks``): parsed and checked against the round by
  :func:`rl.crowd.ls_events.parse_event` (the round: :class:`rl.crowd.ls_events.StreamRound`).
- Votes: the annotation's ``line_<i>`` choices, read by :func:`rl.crowd.ls_round.votes_from_export`
  (the parser of ``rl labelstudio pull``), so the annotator is named as the pull names it (the
  round's annotator id of the account, else its e-mail, else the user id) and a cancelled (skipped)
  annotation gives no vote. Per task and annotator the latest annotation counts, as in the pull.
- The fit: the listener keeps every annotation it saw (id -> task, annotator, time, votes) and the
  vote log the fit was made on. After an event it compares the votes the annotations now give with
  the log: only new votes -> one ``update`` request with them (the online path); a vote changed or
  removed (an edit that changes a choice, a skip after an answer, a deletion) -> a ``refit`` request
  on the whole changed log (crowdstat does not rewrite history: a **refit**, said so in the log line
  and counted in ``listener.json``); nothing different -> no request.
- Catch-up (:meth:`Listener.sync`): Label Studio does not resend events, so annotations saved while
  no listener ran are read from the project's JSON export (the ``pull`` of ``rl labelstudio pull``,
  :func:`rl.crowd.ls_events.export_annotations`) and reconciled with the annotations seen: the
  export's become the record, and the fit follows as after an event (new votes only: one online
  update; a vote changed or removed: a refit; nothing: no request, no write). One log line
  ``sync: N annotations, K new, C changed, D removed: ...``. ``rl labelstudio listen`` syncs once at
  start, after registering its webhook; while serving, the sync is a step of the event worker.
- The subprocess (:class:`rl.crowd.ls_stream_proc.StreamProcess`): ``python -m crowdstat stream
  --method M OPTIONS --out WORK`` (``--warm-start OUT`` when the log is not empty), JSON lines on its
  stdin and stdout. A refused request leaves its fit as it was; a crash fails the event, and the next
  event starts a new one with ``--warm-start OUT`` (the last event written). ``WORK`` is the hidden
  sibling ``.NAME.crowdstat-stream`` of ``OUT``, removed at :meth:`Listener.stop`.
- Outputs (``--out``, one atomic directory swap per event, :func:`crowdstat.io.atomic.atomic_write_dir`):
  the files ``crowdstat stream`` wrote in WORK (lines.csv, annotators.csv, rewards.jsonl, fit.json
  and state.npz, as ``crowdstat fit --save-state``: hard links), ``listener.json`` (annotations seen,
  vote log, counts), and the inputs that reproduce the fit: ``votes.csv`` (the log, in the order
  fitted), ``truth.csv`` (honeypot truth of the voted lines), ``programs.csv``. ``crowdstat fit
  OUT/votes.csv --truth OUT/truth.csv --programs OUT/programs.csv`` with the same method is the
  refit the outputs equal. ``resume=True`` continues from them.
- HTTP (:func:`rl.crowd.ls_events.make_server`, a ``ThreadingHTTPServer``): ``POST /webhook`` needs the shared secret in the
  ``X-Crowdstat-Secret`` header (403 otherwise, nothing read); a body that is not JSON, or lacks a
  field, is 400; an event of another project, of a task that is not in the round, or an action not
  handled is 422; every refusal is one log line. An accepted event is answered at once (Label
  Studio waits ``WEBHOOK_TIMEOUT`` = 1 s for it, inside the annotator's save) and applied by one
  worker thread in arrival order, under one lock. ``GET /status`` (same header) reports the counts.
- ``sequential`` is refused (:data:`SEQUENTIAL_REFUSED`): eq. 8 takes a program's votes as one task.
"""

from __future__ import annotations

import copy
import hmac
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path

from crowdstat.io.atomic import MANIFEST, atomic_write_csv, atomic_write_dir, atomic_write_json
from rl.crowd import ls_round
from rl.crowd.ls_events import SECRET_HEADER, Refused, StreamRound, export_annotations, make_server, parse_event
from rl.crowd.ls_stream_proc import STREAM_COMMAND, STREAM_ENV, StreamError, StreamProcess, stream_flags

__all__ = [
    "SECRET_ENV",
    "LISTENER_FILE",
    "STREAM_METHODS",
    "SEQUENTIAL_REFUSED",
    "Listener",
]

#: the environment variable ``rl labelstudio listen`` reads the secret from
SECRET_ENV = "RL_LS_WEBHOOK_SECRET"
#: the listener's own state in the output directory
LISTENER_FILE = "listener.json"
#: the methods the listener fits (sequential: see SEQUENTIAL_REFUSED)
STREAM_METHODS = ("em1", "em2", "proximal")
SEQUENTIAL_REFUSED = (
    "--method sequential: not per annotation event: eq. 8 takes a program's votes as one task, and one "
    "annotation is one annotator's votes (a task of one voter only teaches it to agree with itself); "
    "use em1, em2 or proximal, or pull the round and run crowdstat fit --warm-start per round"
)
_SYNC = object()  # a sync's place in the worker's queue
_LISTENER_VERSION = 1


def _label(x: int) -> str:
    return "+1" if x == 1 else "-1"


class Listener:
    """The streaming fit of one round (module docstring); :meth:`serve` puts it behind HTTP.

    ``method`` / ``params``: the method and :func:`crowdstat.fit` parameters of the fit (a fresh
    start), passed to ``crowdstat stream`` as its options
    (:func:`rl.crowd.ls_stream_proc.stream_flags`); ``resume=True`` continues the listener state in
    ``out`` (its method and parameters). ``users``: a function ``uid -> e-mail or None`` asked once
    for a user id that is not one of the round's accounts (``rl labelstudio listen``: the server's
    user list); ``log``: one line per event. ``stream_command``: the fit process (default
    :data:`rl.crowd.ls_stream_proc.STREAM_COMMAND`); ``env``: its environment (default this one, with
    :data:`rl.crowd.ls_stream_proc.STREAM_ENV` where unset). The process starts here: a bad option
    is the ValueError of its one error line.
    """

    def __init__(
        self,
        rnd: StreamRound,
        out: str | Path,
        method: str = "em2",
        params: dict | None = None,
        *,
        secret: str,
        resume: bool = False,
        users: Callable[[int], str | None] | None = None,
        log: Callable[[str], None] = print,
        stream_command: Sequence[str] = STREAM_COMMAND,
        env: dict | None = None,
    ):
        if not secret:
            raise ValueError(f"the shared secret is empty (give --secret or ${SECRET_ENV})")
        self.rnd, self.out, self.secret = rnd, Path(out), secret
        self.users, self.log = users, log
        self.lock = threading.Lock()  # around every change of the fit and of the state below
        self.votes: list[tuple[str, int, str, int]] = []  # the vote log the fit was made on, in order
        self.annotations: dict[int, dict] = {}  # annotation id -> {task, uid, who, updated_at, created_at, cancelled, votes}
        self.stats = {"events": 0, "online": 0, "refits": 0, "unchanged": 0, "syncs": 0, "errors": 0}
        self.refused = 0  # posts refused (4xx), counted apart from the applied events' stats
        self.inputs = tuple(p for p in (rnd.dir / "round.json", rnd.truth_path, rnd.programs_path) if p.exists())
        self.stream_command = list(stream_command)
        self.env = env if env is not None else {**STREAM_ENV, **os.environ}
        #: where ``crowdstat stream`` writes (a hidden sibling of ``out``; its files are linked into ``out``)
        self.work = self.out.parent / f".{self.out.name}.crowdstat-stream"
        self.stream: StreamProcess | None = None  # holds a fit of exactly self.votes while it runs
        self.restarts = 0
        state = self.out / LISTENER_FILE
        if resume:
            self._load()
        else:
            if state.exists():
                raise ValueError(f"{self.out}: holds a listener state ({LISTENER_FILE}): continue it with --resume, or use another --out")
            self._set_method(method, dict(params or {}))
        self._queue: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self.received = self.applied = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        with self.lock:
            self._start_stream()

    # -- method, state -------------------------------------------------------------------------
    def _set_method(self, method: str, params: dict) -> None:
        if method == "sequential":
            raise ValueError(SEQUENTIAL_REFUSED)
        if method not in STREAM_METHODS:
            raise ValueError(f"--method: the listener fits {', '.join(STREAM_METHODS)}, got {method!r}")
        self.flags = stream_flags(method, params)
        self.method, self.params = method, params

    def _state(self) -> dict:
        return {
            "version": _LISTENER_VERSION,
            "round": str(self.rnd.dir.resolve()),
            "project_id": self.rnd.project_id,
            "method": self.method,
            "params": self.params,
            "stats": {**self.stats, "refused": self.refused},
            "emails": {str(k): v for k, v in self.rnd.emails.items()},
            "annotations": {str(k): v for k, v in self.annotations.items()},
            "votes": [list(v) for v in self.votes],
        }

    def _load(self) -> None:
        f = self.out / LISTENER_FILE
        try:
            st = json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{f}: no listener state to resume (start without --resume)") from None
        except ValueError as e:
            raise ValueError(f"{f}: not a listener state: {e}") from None
        if not isinstance(st, dict) or st.get("version") != _LISTENER_VERSION:
            raise ValueError(f"{f}: not a listener state of this version ({_LISTENER_VERSION})")
        if st.get("project_id") != self.rnd.project_id:
            raise ValueError(f"{f}: the state is of project {st.get('project_id')}, the round's project is {self.rnd.project_id}")
        self._set_method(st["method"], st["params"])
        self.stats.update({k: v for k, v in st["stats"].items() if k in self.stats})
        self.refused = max(getattr(self, "refused", 0), int(st["stats"].get("refused", 0)))
        self.rnd.emails.update({int(k): v for k, v in st["emails"].items()})
        self.annotations = {int(k): v for k, v in st["annotations"].items()}
        self.votes = [(str(p), int(ln), str(w), int(lab)) for p, ln, w, lab in st["votes"]]

    # -- the crowdstat stream process -------------------------------------------------------------
    def _start_stream(self) -> None:
        """Start ``crowdstat stream``: on the fit saved in ``out`` (state.npz) when the log has votes, else a new one."""
        argv = [*self.stream_command]
        if self.votes:
            argv += ["--warm-start", str(self.out)]
        else:
            argv += ["--method", self.method, *self.flags]
        argv += ["--out", str(self.work)]
        if self.rnd.sizes is not None:
            argv += ["--programs", str(self.rnd.programs_path)]
        proc = StreamProcess(argv, env=self.env)
        try:
            st = proc.request({"op": "status"})
        except StreamError as e:
            proc.kill()
            raise ValueError(str(e)) from None
        if st["n_votes"] != len(self.votes):
            proc.kill()
            raise ValueError(f"{self.out}: state.npz holds {st['n_votes']} votes, {LISTENER_FILE} {len(self.votes)}")
        self.stream = proc

    def _stop_stream(self, kill: bool = False) -> None:
        if self.stream is not None:
            self.stream.kill() if kill else self.stream.close()
            self.stream = None

    def _request(self, op: str, votes: list[tuple]) -> dict:
        """One update or refit of the fit process; a process that is gone is started again from the
        last saved state (``--warm-start OUT``: the log before this event) and asked once more."""
        req = {"op": op, **self._rows(votes)}
        for attempt in (1, 2):
            if self.stream is not None and not self.stream.alive():
                e = self.stream.exit_error()
                self._restarted(e)
            if self.stream is None:
                self._start_stream()
            assert self.stream is not None
            try:
                return self.stream.request(req)
            except StreamError as e:
                if e.refused or attempt == 2:
                    raise
                self._restarted(e)
        raise AssertionError("unreachable")

    def _restarted(self, why: StreamError) -> None:
        pid = self.stream.pid if self.stream is not None else None
        self._stop_stream(kill=True)
        self.restarts += 1
        self.log(f"crowdstat stream (pid {pid}) is gone ({why}); starting a new one with --warm-start {self.out}")

    def stream_status(self) -> dict:
        """The fit process's own report (method, parameters, votes)."""
        with self.lock:
            if self.stream is not None and not self.stream.alive():
                self._restarted(self.stream.exit_error())
            if self.stream is None:
                self._start_stream()
            assert self.stream is not None
            return self.stream.request({"op": "status"})

    # -- outputs ---------------------------------------------------------------------------------
    def _write(self, tmp: Path) -> None:
        if self.votes:  # the fit crowdstat stream wrote (it waits for the next request: its files stay put)
            for f in sorted(self.work.iterdir()):
                if f.is_file() and f.name != MANIFEST:
                    try:
                        os.link(f, tmp / f.name)
                    except OSError:  # a file system without hard links
                        shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / LISTENER_FILE, self._state())
        atomic_write_csv(tmp / "votes.csv", ls_round.VOTE_COLUMNS, [(p, ln, w, _label(lab)) for p, ln, w, lab in self.votes])
        voted = {(p, ln) for p, ln, _, _ in self.votes}
        truth = [(p, ln, _label(v)) for p, t in self.rnd.truth.items() for ln, v in sorted(t.items()) if (p, ln) in voted]
        atomic_write_csv(tmp / "truth.csv", ["program", "line", "truth"], truth)
        if self.rnd.sizes is not None:
            progs = dict.fromkeys(p for p, _, _, _ in self.votes)
            atomic_write_csv(tmp / "programs.csv", ["program", "n_lines"], [(p, self.rnd.sizes[p]) for p in progs])

    def _save(self) -> None:
        atomic_write_dir(self.out, self._write, tool="crowdstat fit", inputs=self.inputs)

    # -- votes -----------------------------------------------------------------------------------
    def _email(self, uid: int) -> str | None:
        if uid not in self.rnd.emails and self.users is not None:
            email = self.users(uid)
            if email:
                self.rnd.emails[uid] = email
        return self.rnd.emails.get(uid)

    def _record(self, ann: dict) -> dict:
        """The listener's record of one annotation: its annotator (named as the pull names it) and votes."""
        cb = ann["completed_by"]
        uid = cb["id"] if isinstance(cb, dict) else cb
        email = self._email(uid) or (cb.get("email") if isinstance(cb, dict) else None)
        tid = ann["task"]
        key = self.rnd.task_key[tid]
        export = [{"data": {"key": key}, "annotations": [ann]}]
        rows, rep = ls_round.votes_from_export(export, [{"id": uid, "email": email}] if email else [], self.rnd.manifest)
        who = self.rnd.annotator(uid, email)
        for r in rep["bad_results"]:
            self.log(f"  annotation {ann['id']}: result ignored (unknown control or choice): {r['from_name']!r} {r['choices']!r}")
        return {
            "task": tid,
            "uid": uid,
            "who": who,
            "updated_at": ann.get("updated_at"),
            "created_at": ann.get("created_at"),
            "cancelled": bool(ann.get("was_cancelled")),
            "votes": [[int(r[1]), int(r[3])] for r in rows],
        }

    def current_votes(self) -> dict[tuple[str, int, str], int]:
        """(program, line, annotator) -> label: per task and annotator the latest annotation's votes (as the pull)."""
        by_task: dict[int, list[dict]] = {}
        for aid, rec in self.annotations.items():
            by_task.setdefault(rec["task"], []).append({"id": aid, "completed_by": rec["uid"], **rec})
        out = {}
        for tid, recs in by_task.items():
            prog = self.rnd.program(tid)
            for rec in ls_round.latest_per_annotator(recs).values():
                if not rec["cancelled"]:
                    out.update({(prog, ln, rec["who"]): lab for ln, lab in rec["votes"]})
        return out

    def _rows(self, votes: list[tuple]) -> dict:
        """The ``votes`` and ``truth`` rows of a request: the honeypot truth of the lines these votes are on."""
        pairs = dict.fromkeys((p, ln) for p, ln, _, _ in votes)
        truth = [[p, ln, self.rnd.truth[p][ln]] for p, ln in pairs if ln in self.rnd.truth.get(p, {})]
        return {"votes": [list(v) for v in votes], "truth": truth}

    def _refresh(self) -> tuple[str, int, int]:
        """Bring the fit to the votes the annotations give (not saved): ``(kind, votes added, votes changed or removed)``."""
        old = {(p, ln, w): lab for p, ln, w, lab in self.votes}
        new = self.current_votes()
        changed = [k for k, lab in old.items() if new.get(k) != lab]
        order = self.rnd.order
        added = sorted((k for k, lab in new.items() if old.get(k) != lab), key=lambda k: (order[k[0]], k[1], k[2]))
        if not changed and not added:
            return "unchanged", 0, 0
        fresh = [(*k, new[k]) for k in added]
        if not changed:
            self._request("update", fresh)
            self.votes, kind = self.votes + fresh, "online"
        else:  # crowdstat does not rewrite history: a new fit on the changed log
            votes = [v for v in self.votes if new.get(v[:3]) == v[3]] + fresh
            if votes:
                self._request("refit", votes)
            else:  # no vote left: the next vote starts a new fit
                self._stop_stream()
            self.votes, kind = votes, "refit"
        return kind, len(added), len(changed)

    def apply(self, action: str, anns: list[dict], deleted: list[int]) -> str:
        """Apply one accepted event (the worker's step; callable directly); returns its log line."""

        def step() -> tuple[str, bool]:
            what, unseen = [], 0
            for a in anns:
                rec = self.annotations[a["id"]] = self._record(a)
                what.append(f"program {self.rnd.program(rec['task'])} by {rec['who']} ({len(rec['votes'])} votes"
                            + (", skipped)" if rec["cancelled"] else ")"))  # fmt: skip
            for aid in deleted:
                gone = self.annotations.pop(aid, None)
                if gone is None:
                    unseen += 1
                else:
                    what.append(f"program {self.rnd.program(gone['task'])} by {gone['who']} (annotation {aid} deleted)")
            if unseen:
                what.append(f"{unseen} annotation(s) never seen by this listener")
            return f"{action} {'; '.join(what) or '(no annotation)'}", False

        return self._change(action, step, event=True)

    def sync(self, fetch: Callable[[], tuple[list, list]]) -> str:
        """Catch up with the annotations Label Studio holds (module docstring); returns the log line.

        ``fetch() -> (export, users)``: the project's JSON export and its users (the ``pull`` action of
        ``ls_driver.py``). While serving, the sync is a step of the worker: after the events queued
        before it, before those that arrive while the export is read (an event the export already
        holds is then an unchanged save).
        """
        if not self._threads:
            return self._sync(fetch)
        done: queue.Queue = queue.Queue()
        self._queue.put((_SYNC, fetch, done))
        return done.get()

    def _sync(self, fetch: Callable[[], tuple[list, list]]) -> str:
        try:
            export, users = fetch()
            anns = export_annotations(export, self.rnd)
        except Exception as e:  # the export is not read: nothing changes
            with self.lock:
                self.stats["errors"] += 1
            line = f"sync: error, export not read ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
            self.log(line)
            return line

        def step() -> tuple[str, bool]:
            self.rnd.emails.update({int(u["id"]): u["email"] for u in users if u.get("email")})
            old, recs = self.annotations, {a["id"]: self._record(a) for a in anns}
            for k, rec in recs.items():  # an edit applied after the export was read stays
                if k in old and str(old[k].get("updated_at") or "") > str(rec.get("updated_at") or ""):
                    recs[k] = old[k]
            new = sum(k not in old for k in recs)
            changed = sum(k in old and old[k] != rec for k, rec in recs.items())
            removed = sum(k not in recs for k in old)
            self.annotations = recs
            return f"sync: {len(recs)} annotations, {new} new, {changed} changed, {removed} removed", bool(new or changed or removed)

        return self._change("sync", step, event=False)

    def _change(self, action: str, step: Callable[[], tuple[str, bool]], *, event: bool) -> str:
        """Under the lock: ``step()`` changes the annotations (returns the line's head and whether to
        save them whatever the votes), the fit follows (:meth:`_refresh`), the outputs are written when
        anything changed; on an error the last saved state comes back. Returns the log line."""
        t0 = time.perf_counter()
        with self.lock:
            saved = (copy.deepcopy(self.annotations), dict(self.stats))
            try:
                head, keep = step()
                kind, n_add, n_chg = self._refresh()
                self.stats["events"] += event
                self.stats[{"online": "online", "refit": "refits", "unchanged": "unchanged"}[kind] if event else "syncs"] += 1
                if kind != "unchanged" or keep:
                    self._save()
                fit = {"unchanged": "no change in the votes, no update", "online": f"online update (+{n_add} votes)"}.get(kind) or (
                    f"refit on {len(self.votes)} votes ({n_chg} changed or removed, {n_add} new: crowdstat does not rewrite history)"
                )
                took = time.perf_counter() - t0
                line = f"{head}: {fit}; {len(self.votes)} votes in all; {took:.2f} s"
            except Exception as e:  # the event is dropped, the last saved state comes back
                self.annotations, self.stats = saved
                self.stats["errors"] += 1
                if not (isinstance(e, StreamError) and e.refused):
                    self._stop_stream(kill=True)  # it may hold the dropped votes: the next event starts it from the saved state
                self._restore()
                what = "event" if event else "sync"
                line = f"{action}: error, {what} not applied ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
        self.log(line)
        return line

    def _restore(self) -> None:
        if (self.out / LISTENER_FILE).exists():
            stats = dict(self.stats)
            self._load()
            self.stats = stats
        else:
            self.votes, self.annotations = [], {}

    # -- HTTP ------------------------------------------------------------------------------------
    def authorised(self, headers) -> bool:
        got = headers.get(SECRET_HEADER) or ""
        return hmac.compare_digest(got.encode("utf-8", "replace"), self.secret.encode("utf-8"))

    def refuse(self, status: int, message: str, client: str = "") -> tuple[int, dict]:
        with self._cond:
            self.refused += 1
        self.log(f"refused ({status}){' from ' + client if client else ''}: {message}")
        return status, {"ok": False, "error": message}

    def submit(self, body: bytes, client: str = "") -> tuple[int, dict]:
        """Queue an authorised event for the worker: ``(200, ...)``, or a 4xx with its reason."""
        try:
            action, anns, deleted = parse_event(body, self.rnd)
        except Refused as e:
            return self.refuse(e.status, str(e), client)
        with self._cond:
            self.received += 1
            self._queue.put((action, anns, deleted))
        return 200, {"ok": True, "queued": action}

    def status(self) -> dict:
        with self._cond:
            return {
                "received": self.received,
                "applied": self.applied,
                "pending": self.received - self.applied,
                "votes": len(self.votes),
                "method": self.method,
                **self.stats,
                "refused": self.refused,
                "stream_pid": self.stream.pid if self.stream is not None else None,
                "stream_restarts": self.restarts,
            }

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every accepted event is applied; False at the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.applied >= self.received, timeout=timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item[0] is _SYNC:
                item[2].put(self._sync(item[1]))
                continue
            try:
                self.apply(*item)
            finally:
                with self._cond:
                    self.applied += 1
                    self._cond.notify_all()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start the HTTP server and the worker in background threads; the address bound."""
        self._httpd = make_server(self, host, port)
        worker = threading.Thread(target=self._work, name="ls-stream-worker", daemon=True)
        server = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="ls-stream-http", daemon=True)
        self._threads = [worker, server]
        worker.start()
        server.start()
        host_, port_ = self._httpd.server_address[:2]
        return str(host_), int(port_)

    def stop(self, drain: bool = True) -> None:
        """Stop taking events; with ``drain``, apply the queued ones first."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if not drain:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[0] is _SYNC:
                    item[2].put("sync: not run, the listener stopped")
                    continue
                with self._cond:
                    self.applied += 1
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout=600)
        self._threads = []
        with self.lock:
            self._stop_stream()
            if self.work.is_dir() and (self.work / MANIFEST).is_file():  # crowdstat stream's own output only
                shutil.rmtree(self.work, ignore_errors=True)
