"""``rl labelstudio listen``: a Label Studio webhook receiver that keeps a crowdstat fit current, one event at a time.

Label Studio posts a webhook for every annotation saved (docs/streaming.md, "Per annotation event
(Label Studio webhooks)"). The listener turns each event of the round's project into votes and one
:class:`crowdstat.online.OnlineFit` update, and writes the outputs of ``crowdstat fit`` after each:

- Payloads (Label Studio 1.23.2, ``label_studio/webhooks``): ``{"action", "project": {...}, ...}`` with
  ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``: ``"annotation"`` (every field of the annotation:
  ``id``, ``task``, ``completed_by`` (a user id), ``result``, ``was_cancelled``, ``created_at``,
  ``updated_at``, ...) and ``"task"`` (every field of the task, ``data`` among them);
  ``ANNOTATIONS_CREATED`` (bulk): lists under the same keys; ``ANNOTATIONS_DELETED``:
  ``"annotations": [{"id"}]`` only.
- Votes: the annotation's ``line_<i>`` choices, read by :func:`rl.crowd.ls_round.votes_from_export`
  (the parser of ``rl labelstudio pull``), so the annotator is named as the pull names it (the
  round's annotator id of the account, else its e-mail, else the user id) and a cancelled (skipped)
  annotation gives no vote. Per task and annotator the latest annotation counts, as in the pull.
- The fit: the listener keeps every annotation it saw (id -> task, annotator, time, votes) and the
  vote log the fit was made on. After an event it compares the votes the annotations now give with
  the log: only new votes -> one ``OnlineFit.update`` with them (the online path); a vote changed or
  removed (an edit that changes a choice, a skip after an answer, a deletion) -> a new
  ``OnlineFit`` on the whole changed log (crowdstat does not rewrite history: a **refit**, said so in
  the log line and counted in ``listener.json``); nothing different -> no update.
- Outputs (``--out``, one atomic directory swap per event, :func:`crowdstat.io.atomic.atomic_write_dir`):
  lines.csv, annotators.csv, rewards.jsonl, fit.json (as ``crowdstat fit``), state.npz (the
  ``OnlineFit`` state), ``listener.json`` (annotations seen, vote log, counts), and the inputs that
  reproduce the fit: ``votes.csv`` (the log, in the order fitted), ``truth.csv`` (honeypot truth of
  the voted lines), ``programs.csv``. ``crowdstat fit OUT/votes.csv --truth OUT/truth.csv --programs
  OUT/programs.csv`` with the same method is the refit the outputs equal. ``resume=True`` continues
  from them.
- HTTP (standard library ``ThreadingHTTPServer``): ``POST /webhook`` needs the shared secret in the
  ``X-Crowdstat-Secret`` header (403 otherwise, nothing read); a body that is not JSON, or lacks a
  field, is 400; an event of another project, of a task that is not in the round, or an action not
  handled is 422; every refusal is one log line. An accepted event is answered at once (Label
  Studio waits ``WEBHOOK_TIMEOUT`` = 1 s for it, inside the annotator's save) and applied by one
  worker thread in arrival order, under one lock. ``GET /status`` (same header) reports the counts.
- ``sequential`` is refused (:data:`SEQUENTIAL_REFUSED`): eq. 8 takes a program's votes as one task.
"""

from __future__ import annotations

import copy
import csv
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crowdstat.io.atomic import atomic_write_csv, atomic_write_dir, atomic_write_json
from rl.crowd import ls_ops, ls_round

__all__ = [
    "ACTIONS",
    "SECRET_HEADER",
    "SECRET_ENV",
    "LISTENER_FILE",
    "WEBHOOK_PATH",
    "STREAM_METHODS",
    "SEQUENTIAL_REFUSED",
    "Refused",
    "StreamRound",
    "parse_event",
    "Listener",
]

#: the webhook actions the listener takes (and registers)
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
#: the header that carries the shared secret (Label Studio sends a webhook's ``headers`` with every post)
SECRET_HEADER = "X-Crowdstat-Secret"
#: the environment variable ``rl labelstudio listen`` reads the secret from
SECRET_ENV = "RL_LS_WEBHOOK_SECRET"
#: the listener's own state in the output directory
LISTENER_FILE = "listener.json"
WEBHOOK_PATH = "/webhook"
#: the methods the listener fits (sequential: see SEQUENTIAL_REFUSED)
STREAM_METHODS = ("em1", "em2", "proximal")
SEQUENTIAL_REFUSED = (
    "--method sequential: not per annotation event: eq. 8 takes a program's votes as one task, and one "
    "annotation is one annotator's votes (a task of one voter only teaches it to agree with itself); "
    "use em1, em2 or proximal, or pull the round and run crowdstat fit --warm-start per round"
)
MAX_BODY = 32 * 2**20
_LISTENER_VERSION = 1


class Refused(ValueError):
    """An event refused with an HTTP status (4xx) and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_sizes(path: Path) -> dict[str, int]:
    """``program,n_lines`` (``programs.csv`` of ``rl labelstudio push``) -> program -> n_lines."""
    out: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as f:
        r = csv.DictReader(f)
        if not {"program", "n_lines"} <= set(r.fieldnames or []):
            raise ValueError(f"{path}: expected columns program,n_lines, got {r.fieldnames}")
        for i, row in enumerate(r, 2):
            n = (row["n_lines"] or "").strip()
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"{path}:{i}: column n_lines: {row['n_lines']!r} is not a positive integer")
            out[row["program"]] = int(n)
    return out


class StreamRound:
    """A pushed round (``round.json`` of ``rl labelstudio push``), its honeypot truth and program sizes.

    ``truth``: ``program,line,truth`` (default ``ROUND/truth.csv``, as the pull's fit reads it);
    ``programs``: ``program,n_lines`` (default ``ROUND/programs.csv`` when present).
    """

    def __init__(self, round_dir: str | Path, truth: str | Path | None = None, programs: str | Path | None = None):
        from rl.crowd.labelstudio_cli import read_truth

        self.dir = Path(round_dir)
        self.manifest = m = ls_ops.read_round(self.dir)
        self.project_id = int(m["project_id"])
        self.task_key = {int(tid): key for key, tid in m["task_ids"].items()}
        self.by_key = {t["key"]: t for t in m["tasks"]}
        self.order = {t["program"]: i for i, t in enumerate(m["tasks"])}
        self.truth_path = Path(truth) if truth is not None else self.dir / "truth.csv"
        self.truth = read_truth(self.truth_path) if (truth is not None or self.truth_path.exists()) else {}
        self.programs_path = Path(programs) if programs is not None else self.dir / "programs.csv"
        if programs is not None and not self.programs_path.is_file():
            raise ValueError(f"{self.programs_path}: programs file not found")
        self.sizes = _read_sizes(self.programs_path) if self.programs_path.is_file() else None
        #: user id -> e-mail: the round's accounts (push reply), more from ``users`` callbacks
        self.emails = {int(uid): email for email, uid in (m.get("users") or {}).items()}
        self.names = {a["email"].lower(): a["annotator"] for a in m.get("annotators", [])}

    def annotator(self, uid, email: str | None) -> str:
        """The annotator id of a Label Studio user, as :func:`rl.crowd.ls_round.votes_from_export` names it."""
        return self.names.get((email or "").lower(), email or str(uid))

    def program(self, task_id: int) -> str:
        return self.by_key[self.task_key[task_id]]["program"]


def _project_id(payload: dict):
    p = payload.get("project")
    return p.get("id") if isinstance(p, dict) else p


def parse_event(body: bytes, rnd: StreamRound) -> tuple[str, list[dict], list[int]]:
    """``(action, annotations, deleted ids)`` of a webhook body, or :class:`Refused` (400: malformed, 422: not ours)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused(400, f"malformed JSON: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict):
        raise Refused(400, f"expected a JSON object, got {type(payload).__name__}")
    action = payload.get("action")
    if action not in ACTIONS:
        raise Refused(422, f"action {str(action)[:80]!r} is not handled (this listener takes {', '.join(ACTIONS)})")
    pid = _project_id(payload)
    if not _is_int(pid):
        raise Refused(400, f"{action}: no project id (field 'project')")
    if pid != rnd.project_id:
        raise Refused(422, f"{action}: project {pid} is not the round's project {rnd.project_id}")
    if action == "ANNOTATIONS_DELETED":
        anns = payload.get("annotations")
        if not isinstance(anns, list) or not all(isinstance(a, dict) and _is_int(a.get("id")) for a in anns):
            raise Refused(400, f"{action}: 'annotations' must be a list of objects with an integer id")
        return action, [], [a["id"] for a in anns]
    anns = payload.get("annotation")
    tasks = payload.get("task")
    if action == "ANNOTATIONS_CREATED":
        if not isinstance(anns, list):
            raise Refused(400, f"{action}: 'annotation' must be a list")
        tasks = tasks if isinstance(tasks, list) else []
    else:
        anns, tasks = [anns], [tasks] if isinstance(tasks, dict) else []
    task_data = {t.get("id"): t.get("data") for t in tasks if isinstance(t, dict)}
    for a in anns:
        if not isinstance(a, dict) or not _is_int(a.get("id")) or not _is_int(a.get("task")):
            raise Refused(400, f"{action}: 'annotation' must be an object with integer 'id' and 'task'")
        cb = a.get("completed_by")
        if not (_is_int(cb) or (isinstance(cb, dict) and _is_int(cb.get("id")))):
            raise Refused(400, f"{action}: annotation {a['id']}: 'completed_by' must be a user id")
        if not isinstance(a.get("result", []), list):
            raise Refused(400, f"{action}: annotation {a['id']}: 'result' must be a list")
        if _is_int(a.get("project")) and a["project"] != rnd.project_id:
            raise Refused(422, f"{action}: annotation {a['id']} is of project {a['project']}, not the round's project {rnd.project_id}")
        tid = a["task"]
        if tid not in rnd.task_key:
            raise Refused(422, f"{action}: annotation {a['id']}: task {tid} is not a task of the round {rnd.dir}")
        data = task_data.get(tid)
        if isinstance(data, dict) and data.get("key") != rnd.task_key[tid]:
            raise Refused(422, f"{action}: task {tid} has key {data.get('key')!r}, the round's task {tid} is {rnd.task_key[tid]!r}")
    return action, anns, []


def _label(x: int) -> str:
    return "+1" if x == 1 else "-1"


class Listener:
    """The streaming fit of one round (module docstring); :meth:`serve` puts it behind HTTP.

    ``method`` / ``params``: as :class:`crowdstat.online.OnlineFit` takes them (a fresh start);
    ``resume=True`` continues the listener state in ``out`` (its method and parameters). ``users``:
    a function ``uid -> e-mail or None`` asked once for a user id that is not one of the round's
    accounts (``rl labelstudio listen``: the server's user list); ``log``: one line per event.
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
    ):
        if not secret:
            raise ValueError(f"the shared secret is empty (give --secret or ${SECRET_ENV})")
        self.rnd, self.out, self.secret = rnd, Path(out), secret
        self.users, self.log = users, log
        self.lock = threading.Lock()  # around every change of the fit and of the state below
        self.fit: Any = None
        self.votes: list[tuple[str, int, str, int]] = []  # the vote log the fit was made on, in order
        self.annotations: dict[int, dict] = {}  # annotation id -> {task, uid, who, updated_at, created_at, cancelled, votes}
        self.stats = {"events": 0, "online": 0, "refits": 0, "unchanged": 0, "errors": 0}
        self.refused = 0  # posts refused (4xx), counted apart from the applied events' stats
        self.inputs = tuple(p for p in (rnd.dir / "round.json", rnd.truth_path, rnd.programs_path) if p.exists())
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

    # -- method, state -------------------------------------------------------------------------
    def _set_method(self, method: str, params: dict) -> None:
        from crowdstat.estimators.registry import make_configs

        if method == "sequential":
            raise ValueError(SEQUENTIAL_REFUSED)
        if method not in STREAM_METHODS:
            raise ValueError(f"--method: the listener fits {', '.join(STREAM_METHODS)}, got {method!r}")
        try:
            common, _ = make_configs(method, params)
        except TypeError as e:
            raise ValueError(str(e)) from None
        if common.calibrate != "none" or common.interval is not None:
            raise ValueError("calibrate / interval: not available when streaming (they refit the whole table)")
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
        from crowdstat.online import OnlineFit

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
        self.fit = OnlineFit.load(self.out) if self.votes else None
        if self.fit is not None and self.fit.store.n_votes != len(self.votes):
            raise ValueError(f"{self.out}: state.npz holds {self.fit.store.n_votes} votes, {LISTENER_FILE} {len(self.votes)}")

    def _write(self, tmp: Path) -> None:
        from crowdstat.online import STATE_FILE

        if self.fit is not None:
            self.fit.save(tmp / STATE_FILE)
        atomic_write_json(tmp / LISTENER_FILE, self._state())
        atomic_write_csv(tmp / "votes.csv", ls_round.VOTE_COLUMNS, [(p, ln, w, _label(lab)) for p, ln, w, lab in self.votes])
        voted = {(p, ln) for p, ln, _, _ in self.votes}
        truth = [(p, ln, _label(v)) for p, t in self.rnd.truth.items() for ln, v in sorted(t.items()) if (p, ln) in voted]
        atomic_write_csv(tmp / "truth.csv", ["program", "line", "truth"], truth)
        if self.rnd.sizes is not None:
            progs = dict.fromkeys(p for p, _, _, _ in self.votes)
            atomic_write_csv(tmp / "programs.csv", ["program", "n_lines"], [(p, self.rnd.sizes[p]) for p in progs])

    def _save(self) -> None:
        if self.fit is not None:
            self.fit.result.save(self.out, inputs=self.inputs, extra=self._write)
        else:
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

    def _frames(self, votes: list[tuple]):
        import pandas as pd

        v = pd.DataFrame(votes, columns=ls_round.VOTE_COLUMNS)
        pairs = dict.fromkeys((p, ln) for p, ln, _, _ in votes)
        t = [(p, ln, self.rnd.truth[p][ln]) for p, ln in pairs if ln in self.rnd.truth.get(p, {})]
        truth = pd.DataFrame(t, columns=["program", "line", "truth"]) if t else None
        progs = None
        if self.rnd.sizes is not None:
            names = list(dict.fromkeys(p for p, _, _, _ in votes))
            progs = pd.DataFrame({"program": names, "n_lines": [self.rnd.sizes[p] for p in names]})
        return v, truth, progs

    def _refresh(self) -> tuple[str, int, int]:
        """Bring the fit to the votes the annotations give (not saved): ``(kind, votes added, votes changed or removed)``."""
        from crowdstat.online import OnlineFit

        old = {(p, ln, w): lab for p, ln, w, lab in self.votes}
        new = self.current_votes()
        changed = [k for k, lab in old.items() if new.get(k) != lab]
        order = self.rnd.order
        added = sorted((k for k, lab in new.items() if old.get(k) != lab), key=lambda k: (order[k[0]], k[1], k[2]))
        if not changed and not added:
            return "unchanged", 0, 0
        fresh = [(*k, new[k]) for k in added]
        if not changed:
            fit = self.fit if self.fit is not None else OnlineFit(self.method, **self.params)
            fit.update(*self._frames(fresh), result=False)
            self.fit, self.votes, kind = fit, self.votes + fresh, "online"
        else:  # crowdstat does not rewrite history: a new fit on the changed log
            votes = [v for v in self.votes if new.get(v[:3]) == v[3]] + fresh
            fit = None
            if votes:
                fit = OnlineFit(self.method, **self.params)
                fit.update(*self._frames(votes), result=False)
            self.fit, self.votes, kind = fit, votes, "refit"
        return kind, len(added), len(changed)

    def apply(self, action: str, anns: list[dict], deleted: list[int]) -> str:
        """Apply one accepted event (the worker's step; callable directly); returns its log line."""
        t0 = time.perf_counter()
        with self.lock:
            saved = (copy.deepcopy(self.annotations), dict(self.stats))
            try:
                what, unseen = [], 0
                for a in anns:
                    rec = self._record(a)
                    self.annotations[a["id"]] = rec
                    what.append(f"program {self.rnd.program(rec['task'])} by {rec['who']} ({len(rec['votes'])} votes"
                                + (", skipped)" if rec["cancelled"] else ")"))  # fmt: skip
                for aid in deleted:
                    rec = self.annotations.pop(aid, None)
                    if rec is None:
                        unseen += 1
                    else:
                        what.append(f"program {self.rnd.program(rec['task'])} by {rec['who']} (annotation {aid} deleted)")
                if unseen:
                    what.append(f"{unseen} annotation(s) never seen by this listener")
                kind, n_add, n_chg = self._refresh()
                self.stats["events"] += 1
                self.stats[{"online": "online", "refit": "refits", "unchanged": "unchanged"}[kind]] += 1
                if kind != "unchanged":
                    self._save()
                if kind == "unchanged":
                    fit = "no change in the votes, no update"
                elif kind == "online":
                    fit = f"online update (+{n_add} votes)"
                else:
                    fit = f"refit on {len(self.votes)} votes ({n_chg} changed or removed, {n_add} new: crowdstat does not rewrite history)"
                took = time.perf_counter() - t0
                line = f"{action} {'; '.join(what) or '(no annotation)'}: {fit}; {len(self.votes)} votes in all; {took:.2f} s"
            except Exception as e:  # the event is dropped, the last saved state comes back
                self.annotations, self.stats = saved
                self.stats["errors"] += 1
                self._restore()
                line = f"{action}: error, event not applied ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
        self.log(line)
        return line

    def _restore(self) -> None:
        if (self.out / LISTENER_FILE).exists():
            stats = dict(self.stats)
            self._load()
            self.stats = stats
        else:
            self.fit, self.votes, self.annotations = None, [], {}

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
            try:
                self.apply(*item)
            finally:
                with self._cond:
                    self.applied += 1
                    self._cond.notify_all()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start the HTTP server and the worker in background threads; the address bound."""
        listener = self

        class Handler(_Handler):
            pass

        Handler.listener = listener
        self._httpd = _Server((host, port), Handler)
        worker = threading.Thread(target=self._work, name="ls-stream-worker", daemon=True)
        server = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="ls-stream-http", daemon=True)
        self._threads = [worker, server]
        worker.start()
        server.start()
        return self._httpd.server_address[:2]

    def stop(self, drain: bool = True) -> None:
        """Stop taking events; with ``drain``, apply the queued ones first."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if not drain:
            while True:
                try:
                    self._queue.get_nowait()
                    with self._cond:
                        self.applied += 1
                except queue.Empty:
                    break
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout=600)
        self._threads = []


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    listener: Listener
    server_version = "rl-labelstudio-listen"

    def log_message(self, format, *args):  # noqa: A002 - the listener logs its own one line per request
        pass

    def _reply(self, status: int, obj: dict) -> None:
        body = (json.dumps(obj) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the sender gave up (Label Studio waits 1 s): the event is queued all the same
            pass

    def _check(self, method: str) -> bool:
        lis, client = self.listener, self.client_address[0]
        path = self.path.split("?", 1)[0]
        want = WEBHOOK_PATH if method == "POST" else "/status"
        if path != want:
            self._reply(*lis.refuse(404, f"{method} {path[:100]}: not found (POST {WEBHOOK_PATH}, GET /status)", client))
            return False
        if not lis.authorised(self.headers):
            self._reply(*lis.refuse(403, f"{method} {path}: missing or wrong {SECRET_HEADER} header", client))
            return False
        return True

    def do_GET(self):  # noqa: N802 - http.server's name
        if self._check("GET"):
            self._reply(200, self.listener.status())

    def do_POST(self):  # noqa: N802 - http.server's name
        lis, client = self.listener, self.client_address[0]
        if not self._check("POST"):
            return
        n = self.headers.get("Content-Length")
        if n is None or not n.strip().isdigit():
            self._reply(*lis.refuse(411, "POST without a Content-Length", client))
            return
        if int(n) > MAX_BODY:
            self._reply(*lis.refuse(413, f"body of {int(n)} bytes, over the {MAX_BODY} allowed", client))
            return
        try:
            body = self.rfile.read(int(n))
        except OSError as e:
            self._reply(*lis.refuse(400, f"body not read: {e}", client))
            return
        status, reply = lis.submit(body, client)
        self._reply(status, reply)
