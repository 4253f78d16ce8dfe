"""Round operations on a Label Studio server: push, status, pull, and the local crowd's votes.

Used by ``rl labelstudio`` (:mod:`rl.crowd.labelstudio_cli`) and by ``rl loop`` with
``annotate = "labelstudio"`` (:mod:`rl.crowd.ls_backend`). A round lives in a directory:

- ``round.json``: the manifest of :func:`rl.crowd.ls_round.build_push` plus the server's URL, the
  project id and each task key's task id (it holds the annotator accounts' passwords: keep it local);
- ``truth.csv``: the honeypot truth (``program,line,truth``), never sent to the server;
- ``programs.csv``: ``program,n_lines`` of every pushed program (for ``crowdstat fit --programs``);
- after ``pull``: ``votes.csv`` (:data:`rl.crowd.ls_round.DETAIL_COLUMNS`) and ``pull.json`` (the report);
- ``overlap.json`` (adaptive rounds, :func:`set_overlaps`): task key -> annotations wanted, where a task's
  overlap was raised above the push's ``per_program``.

Annotator accounts (``<id>@crowd.local``) and their passwords are kept in ``accounts.json`` next to the
server file, so later rounds log in with the same ones.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from crowdstat.io.atomic import atomic_write_csv, atomic_write_json
from rl.crowd import ls_round
from rl.crowd.ls_server import LabelStudioError, call_driver, read_server_json

__all__ = ["accounts", "push_round", "read_round", "round_status", "pull_round", "post_votes", "wait_round", "wanted", "set_overlaps"]


def accounts(server_file: str | Path, annotators: list[str]) -> dict[str, str]:
    """Passwords of ``annotators`` (``accounts.json`` beside the server file; new ones are generated and saved)."""
    f = Path(server_file).with_name("accounts.json")
    known = json.loads(f.read_text()) if f.exists() else {}
    for a in annotators:
        known.setdefault(a, {"email": ls_round.account(a), "password": secrets.token_urlsafe(12)})
    atomic_write_json(f, known)
    return {a: known[a]["password"] for a in annotators}


def push_round(
    server_file: str | Path,
    round_dir: str | Path,
    programs: list[dict],
    *,
    honeypots: dict[str, dict[int, int]] | None = None,
    annotators: list[str],
    per_program: int | None,
    seed: int = 0,
    title: str = "rl line labels",
    project_id: int | None = None,
    key_prefix: str = "",
) -> dict:
    """Create (or reuse ``project_id``) the project, import one task per program, sign up the annotators."""
    server = read_server_json(server_file)
    rd = Path(round_dir)
    if (rd / "round.json").exists():
        raise LabelStudioError(f"{rd / 'round.json'}: this round was pushed already (pull it, or use a new round directory)")
    request, manifest = ls_round.build_push(
        programs,
        honeypots=honeypots,
        annotators=annotators,
        per_program=per_program,
        seed=seed,
        title=title,
        passwords=accounts(server_file, annotators),
        key_prefix=key_prefix,
    )
    reply = call_driver("push", {**request, "url": server["url"], "token": server["token"], "project_id": project_id})
    keys = [t["key"] for t in manifest["tasks"]]
    manifest.update(
        url=server["url"],
        project_id=reply["project_id"],
        task_ids=dict(zip(keys, reply["task_ids"])),
        invite_url=reply["invite_url"],
        users=reply["users"],
    )
    rd.mkdir(parents=True, exist_ok=True)
    truth = [(p, int(ln), v) for p, t in manifest["honeypots"].items() for ln, v in sorted(t.items(), key=lambda kv: int(kv[0]))]
    atomic_write_csv(rd / "truth.csv", ["program", "line", "truth"], truth)
    atomic_write_csv(
        rd / "programs.csv", ["program", "n_lines"], [(str(p["program"]), _n_lines(p["code"])) for p in programs if p["lines"]]
    )
    atomic_write_json(rd / "round.json", manifest)
    return manifest


def _n_lines(code: str) -> int:
    return code.count("\n") + (0 if code.endswith("\n") else 1)


def read_round(round_dir: str | Path) -> dict:
    f = Path(round_dir) / "round.json"
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelStudioError(f"{f}: no pushed round here (run `rl labelstudio push` first)") from None
    except ValueError as e:
        raise LabelStudioError(f"{f}: damaged round manifest: {e}") from None
    for k in ("project_id", "tasks", "task_ids", "url"):
        if k not in m:
            raise LabelStudioError(f"{f}: field {k!r} missing (not written by rl labelstudio push?)")
    return m


def _server(manifest: dict, server_file: str | Path) -> dict:
    server = read_server_json(server_file)
    if server["url"] != manifest["url"]:
        raise LabelStudioError(f"{server_file}: server {server['url']} is not the round's server {manifest['url']}")
    return server


def wanted(round_dir: str | Path, manifest: dict | None = None) -> dict[int, int]:
    """Task id -> annotations wanted: the push's ``per_program`` (None: every annotator), or ``overlap.json``'s."""
    m = manifest or read_round(round_dir)
    f = Path(round_dir) / "overlap.json"
    raised = json.loads(f.read_text()) if f.exists() else {}
    base = m.get("per_program") or len(m["annotators"])
    return {tid: int(raised.get(key, base)) for key, tid in m["task_ids"].items()}


def set_overlaps(server_file: str | Path, round_dir: str | Path, overlaps: dict[str, int]) -> dict:
    """Set the annotations wanted of the round's tasks (task key -> overlap) on the server, then in ``overlap.json``.

    Label Studio keeps a task's overlap and its ``is_labeled`` flag (which its label stream reads) per task;
    the driver sets both (``is_labeled``: the task already has that many annotations).
    """
    m = read_round(round_dir)
    server = _server(m, server_file)
    unknown = sorted(set(overlaps) - set(m["task_ids"]))
    if unknown:
        raise LabelStudioError(f"{round_dir}: set_overlaps: task keys not in the round: {unknown[:5]}")
    req = {"url": server["url"], "token": server["token"], "overlaps": {str(m["task_ids"][k]): int(n) for k, n in overlaps.items()}}
    reply = call_driver("overlap", req)
    f = Path(round_dir) / "overlap.json"
    atomic_write_json(f, {**(json.loads(f.read_text()) if f.exists() else {}), **{k: int(n) for k, n in overlaps.items()}})
    return reply


def round_status(server_file: str | Path, round_dir: str | Path) -> dict:
    """``{"tasks", "done", "annotations", "cancelled", "need"}`` of the round's tasks (done: >= need annotations).

    An adaptive round (``overlap.json``) adds ``wanted`` (annotations wanted in all); ``need`` is then the
    largest overlap and a task is done at its own overlap.
    """
    m = read_round(round_dir)
    server = _server(m, server_file)
    reply = call_driver("status", {"url": server["url"], "token": server["token"], "project_id": m["project_id"]})
    need = wanted(round_dir, m)
    rows = [t for t in reply["tasks"] if t["id"] in need]
    st = {
        "tasks": len(need),
        "done": sum(t["total_annotations"] >= need[t["id"]] for t in rows),
        "annotations": sum(t["total_annotations"] for t in rows),
        "cancelled": sum(t["cancelled_annotations"] for t in rows),
        "need": max(need.values()),
    }
    if (Path(round_dir) / "overlap.json").exists():
        st["wanted"] = sum(need.values())
    return st


def wait_round(server_file, round_dir, *, timeout: float, poll_seconds: float, progress: bool = True) -> dict:
    """Poll :func:`round_status` until every task has enough annotations or ``timeout`` passes; the last status."""
    from tqdm.auto import tqdm

    t0 = time.time()
    st = round_status(server_file, round_dir)
    with tqdm(total=st["tasks"], desc="labelstudio: tasks done", disable=not progress, initial=st["done"]) as bar:
        while st["done"] < st["tasks"] and time.time() - t0 < timeout:
            time.sleep(min(poll_seconds, max(0.0, timeout - (time.time() - t0))))
            st = round_status(server_file, round_dir)
            bar.n = st["done"]
            bar.set_postfix(annotations=st["annotations"], skipped=st["cancelled"])
            bar.refresh()
    return st


def pull_round(server_file: str | Path, round_dir: str | Path, out: str | Path | None = None) -> tuple[list[tuple], dict]:
    """Export the round through the API into ``out`` (default ``round_dir/votes.csv``) and ``pull.json``."""
    m = read_round(round_dir)
    server = _server(m, server_file)
    reply = call_driver("pull", {"url": server["url"], "token": server["token"], "project_id": m["project_id"]})
    rows, report = ls_round.votes_from_export(reply["tasks"], reply["users"], m)
    ls_round.write_votes(Path(out) if out else Path(round_dir) / "votes.csv", rows)
    atomic_write_json(Path(round_dir) / "pull.json", report)
    return rows, report


def post_votes(round_dir: str | Path, votes: list[tuple], lead_time: float = 5.0) -> dict:
    """The local crowd: each annotator logs in as its own account and posts its ``votes`` (program, line, annotator, +1|-1)."""
    m = read_round(round_dir)
    anns = ls_round.crowd_annotations(m, m["task_ids"], votes, lead_time=lead_time)
    return call_driver("annotate", {"url": m["url"], "annotators": anns})
