"""The webhook payloads of ``rl labelstudio listen`` (:mod:`rl.crowd.ls_stream`): the round and the events.

- :class:`StreamRound`: a pushed round (``round.json`` of ``rl labelstudio push``), its honeypot truth
  and program sizes, and how the pull names a Label Studio user.
- :func:`parse_event`: a webhook body -> ``(action, annotations, deleted ids)``, or :class:`Refused`
  with an HTTP status (400: malformed or lacking a field; 422: another project, a task not in the
  round, an action not handled). Payloads (Label Studio 1.23.2, ``label_studio/webhooks``):
  ``{"action", "project": {...}, ...}`` with ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``:
  ``"annotation"`` (every field of the annotation: ``id``, ``task``, ``completed_by`` (a user id),
  ``result``, ``was_cancelled``, ``created_at``, ``updated_at``, ...) and ``"task"`` (every field of
  the task, ``data`` among them); ``ANNOTATIONS_CREATED`` (bulk): lists under the same keys;
  ``ANNOTATIONS_DELETED``: ``"annotations": [{"id"}]`` only.
- :func:`make_server`: the listener's HTTP side (``POST /webhook``, ``GET /status``, the secret header).
- :func:`export_annotations`: the annotations of the round's tasks in a JSON export (the ``pull``
  action of ``ls_driver.py``, as ``rl labelstudio pull`` reads it), for the listener's catch-up sync.

Importing it loads nothing of the fit (no JAX, numpy or pandas; tests/rl/test_ls_stream.py checks it).
"""

from __future__ import annotations

import csv
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rl.crowd import ls_ops

__all__ = [
    "ACTIONS",
    "MAX_BODY",
    "SECRET_HEADER",
    "WEBHOOK_PATH",
    "Refused",
    "StreamRound",
    "export_annotations",
    "make_server",
    "parse_event",
    "read_truth",
]

#: the header that carries the shared secret (Label Studio sends a webhook's ``headers`` with every post)
SECRET_HEADER = "X-Crowdstat-Secret"
WEBHOOK_PATH = "/webhook"
MAX_BODY = 32 * 2**20
#: the webhook actions the listener takes (and registers)
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


def read_truth(path: str | Path) -> dict[str, dict[int, int]]:
    """``program,line,truth`` (+1/-1, 1/0, correct/wrong) -> program -> {line: +1|-1}."""
    codes = {"+1": 1, "1": 1, "correct": 1, "-1": -1, "0": -1, "wrong": -1}
    out: dict[str, dict[int, int]] = {}
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: truth file not found")
    with path.open(encoding="utf-8", newline="") as f:
        r = csv.DictReader(f)
        if not {"program", "line", "truth"} <= set(r.fieldnames or []):
            raise ValueError(f"{path}: expected columns program,line,truth, got {r.fieldnames}")
        for i, row in enumerate(r, 2):
            v = codes.get((row["truth"] or "").strip().lower())
            if v is None or not (row["line"] or "").strip().isdigit():
                raise ValueError(f"{path}:{i}: bad line {row['line']!r} or truth {row['truth']!r}")
            out.setdefault(row["program"], {})[int(row["line"])] = v
    return out


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


def export_annotations(export, rnd: StreamRound) -> list[dict]:
    """The annotations of the round's tasks in Label Studio's JSON export (a list of tasks, each with
    ``data.key`` and every annotation), as webhook events carry them (``task``: the task id).

    Tasks are matched by ``data.key`` as :func:`rl.crowd.ls_round.votes_from_export` matches them
    (tasks of other rounds in the project are left out); a task of the round under another id, or an
    annotation without an integer ``id`` or a user, is a one-line ValueError.
    """
    if not isinstance(export, list):
        raise ValueError(f"export: expected a list of tasks, got {type(export).__name__}")
    out = []
    ids = rnd.manifest["task_ids"]
    for i, t in enumerate(export):
        key = ((t.get("data") if isinstance(t, dict) else None) or {}).get("key")
        if key not in rnd.by_key:
            continue
        if t.get("id") != ids[key]:
            raise ValueError(f"export: task {key!r} has id {t.get('id')!r}, the round's task {key!r} is {ids[key]} (another server?)")
        for a in t.get("annotations") or []:
            cb = a.get("completed_by") if isinstance(a, dict) else None
            if not (isinstance(a, dict) and _is_int(a.get("id")) and (_is_int(cb) or (isinstance(cb, dict) and _is_int(cb.get("id"))))):
                raise ValueError(f"export: task {ids[key]} (item {i}): an annotation without an integer 'id' and 'completed_by'")
            if not isinstance(a.get("result") or [], list):
                raise ValueError(f"export: annotation {a['id']}: 'result' must be a list")
            out.append({**a, "task": ids[key]})
    return out


def make_server(listener, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP side of a :class:`rl.crowd.ls_stream.Listener`: ``POST`` :data:`WEBHOOK_PATH` -> its
    ``submit``, ``GET /status`` -> its ``status``, both behind its ``authorised`` (the secret header);
    each refusal through its ``refuse`` (one log line)."""

    class Handler(_Handler):
        pass

    Handler.listener = listener
    return _Server((host, port), Handler)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    listener: Any  # rl.crowd.ls_stream.Listener: authorised, refuse, submit, status
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
