"""One annotation round on a Label Studio server, without the server: requests, manifest, votes.

Pure functions (standard library only), so everything here is tested without Label Studio:

- :data:`LABEL_CONFIG`: the labelling page of **one task per program**: the numbered program on top,
  then one row per annotated line (its number and text) with a ``correct`` / ``wrong`` choice,
  repeated over the task's ``lines`` by Label Studio's ``Repeater`` tag; the choice of line ``i``
  (0-based position in ``lines``) is the control ``line_<i>``. A line left unmarked is no vote.
- :func:`build_push`: the ``push`` request of :mod:`rl.crowd.ls_driver` and the round's **manifest**
  (kept locally as ``round.json``): tasks carry only an opaque ``key`` (``t0001``, ...), the listing
  and the lines; program ids, honeypot flags and honeypot truth stay in the manifest. Honeypot
  programs are shuffled in among the others with the seed.
- :func:`votes_from_export`: Label Studio's JSON export -> vote rows. Per task and annotator the
  latest non-draft annotation counts (an edit replaces the answer; Label Studio keeps one annotation
  per edit, so the latest ``updated_at`` wins); a cancelled (skipped) latest annotation is reported,
  not counted; unmarked lines give no vote.
- :func:`crowd_annotations`: votes of simulated annotators -> the ``annotate`` request that posts them
  through the API as each annotator's own account (the local crowd).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from crowdstat.io.atomic import atomic_write_csv

__all__ = [
    "LABEL_CONFIG",
    "CHOICES",
    "VOTE_COLUMNS",
    "DETAIL_COLUMNS",
    "control_name",
    "task_data",
    "account",
    "build_tasks",
    "build_push",
    "latest_per_annotator",
    "votes_from_export",
    "crowd_annotations",
    "write_votes",
]

LABEL_CONFIG = """\
<View>
  <Header value="Program $key: mark each line correct or wrong (leave a line unmarked when unsure)"/>
  <View style="font-family: monospace; white-space: pre; overflow-x: auto; background: #f7f7f7; padding: 8px">
    <Text name="code" value="$code"/>
  </View>
  <Repeater on="$lines" indexFlag="{{idx}}">
    <View style="display: flex; align-items: center; gap: 16px; border-top: 1px solid #ddd">
      <View style="font-family: monospace; white-space: pre; min-width: 480px">
        <Text name="text_{{idx}}" value="$lines[{{idx}}].text"/>
      </View>
      <Choices name="line_{{idx}}" toName="text_{{idx}}" choice="single-radio" showInline="true">
        <Choice value="correct"/>
        <Choice value="wrong"/>
      </Choices>
    </View>
  </Repeater>
</View>
"""
CHOICES = {"correct": 1, "wrong": -1}
VOTE_COLUMNS = ["program", "line", "annotator", "label"]
#: the pulled vote table: the vote columns, then the Label Studio user id, timestamps and seconds spent
DETAIL_COLUMNS = VOTE_COLUMNS + ["annotator_id", "created_at", "updated_at", "lead_time"]


def control_name(index: int) -> str:
    """The choice control of the ``index``-th annotated line of a task (0-based)."""
    return f"line_{index}"


def task_data(key: str, code: str, lines: list[int]) -> dict:
    """The ``data`` of one task: the numbered listing and one entry per annotated line."""
    src = code.split("\n")
    if src and src[-1] == "":
        src = src[:-1]
    w = len(str(len(src)))
    listing = "\n".join(f"{i:>{w}} | {t}" for i, t in enumerate(src, 1))
    return {"key": key, "code": listing, "lines": [{"n": ln, "text": f"{ln:>{w}} | {src[ln - 1]}"} for ln in lines]}


def account(annotator: str, domain: str = "crowd.local") -> str:
    """The Label Studio e-mail of an annotator id (``expert01`` -> ``expert01@crowd.local``)."""
    return annotator if "@" in annotator else f"{annotator}@{domain}"


def build_tasks(programs: list[dict], *, seed: int = 0, key_prefix: str = "") -> tuple[list[dict], list[dict]]:
    """``(tasks, rows)``: one task per program with annotated lines, in an order shuffled with ``seed``.

    ``programs``: dicts with ``program``, ``code`` and ``lines`` (annotated lines, ascending). A task is
    ``{"data": task_data(key, code, lines)}`` with the opaque key ``<key_prefix>t0001``, ...; ``rows``
    (the manifest's ``tasks``) map each key to its program id and lines. Honeypot programs are thus
    hidden among the others (by position and by id). Used by :func:`build_push` and ``rl export``.
    """
    ids = [str(p["program"]) for p in programs]
    if len(set(ids)) != len(ids):
        raise ValueError("program ids must be unique")
    order = list(range(len(programs)))
    random.Random(f"order/{seed}").shuffle(order)  # honeypots hidden among the others, not first
    tasks, rows = [], []
    for k, i in enumerate(order, 1):
        p = programs[i]
        if not p["lines"]:
            continue
        key = f"{key_prefix}t{k:04d}"
        tasks.append({"data": task_data(key, p["code"], list(p["lines"]))})
        rows.append({"key": key, "program": str(p["program"]), "lines": list(p["lines"])})
    if not tasks:
        raise ValueError("no program with annotated lines to push")
    return tasks, rows


def build_push(
    programs: list[dict],
    *,
    honeypots: dict[str, dict[int, int]] | None = None,
    annotators: list[str],
    per_program: int | None,
    seed: int = 0,
    title: str = "rl line labels",
    passwords: dict[str, str] | None = None,
    key_prefix: str = "",
) -> tuple[dict, dict]:
    """``(request, manifest)`` for one round.

    ``programs``: dicts with ``program``, ``code`` and ``lines`` (annotated lines, ascending).
    ``honeypots``: program -> {line: +1/-1}, the truth of the honeypot programs (kept in the manifest
    only). ``annotators``: annotator ids (accounts ``<id>@crowd.local``), ``passwords`` theirs.
    ``per_program``: the project's overlap (annotations per task; None: every annotator). Label Studio's
    community edition has no per-task assignment: its label stream hands each task to annotators
    until ``per_program`` have annotated it. ``key_prefix``: prepended to the task keys (``r001-t0001``),
    so several rounds can share one project.
    """
    honeypots = honeypots or {}
    ids = [str(p["program"]) for p in programs]
    if len(set(ids)) != len(ids):
        raise ValueError("program ids must be unique")
    unknown = sorted(set(honeypots) - set(ids))
    if unknown:
        raise ValueError(f"honeypot truth for programs not in the round: {unknown[:5]}")
    if not annotators or len(set(annotators)) != len(annotators):
        raise ValueError(f"annotators must be a non-empty list of distinct ids, got {annotators!r}")
    if per_program is not None and not 1 <= per_program <= len(annotators):
        raise ValueError(f"per_program must be between 1 and the number of annotators {len(annotators)}, got {per_program!r}")
    tasks, rows = build_tasks(programs, seed=seed, key_prefix=key_prefix)
    passwords = passwords or {}
    accounts = [{"annotator": a, "email": account(a), "password": passwords.get(a, "")} for a in annotators]
    title = title[:50]  # Label Studio's limit
    request = {
        "title": title,
        "label_config": LABEL_CONFIG,
        "maximum_annotations": per_program or len(annotators),
        "tasks": tasks,
        "annotators": [{"email": a["email"], "password": a["password"]} for a in accounts if a["password"]],
    }
    manifest = {
        "title": title,
        "per_program": per_program,
        "tasks": rows,
        "honeypots": {p: {str(ln): v for ln, v in t.items()} for p, t in honeypots.items()},
        "annotators": accounts,
    }
    return request, manifest


def _user_of(completed_by) -> int | str | None:
    if isinstance(completed_by, dict):
        return completed_by.get("id", completed_by.get("email"))
    return completed_by


def latest_per_annotator(anns: list[dict]) -> dict[object, dict]:
    """Per annotator (user id, else e-mail), the annotation with the latest ``updated_at`` (then
    ``created_at``, then id): Label Studio keeps an annotation per edit, the latest is the answer."""
    best: dict[object, tuple] = {}
    for a in anns:
        who = _user_of(a.get("completed_by"))
        key = (str(a.get("updated_at") or ""), str(a.get("created_at") or ""), a.get("id") or 0)
        if who not in best or key > best[who][0]:
            best[who] = (key, a)
    return {w: a for w, (_, a) in best.items()}


def votes_from_export(export: list[dict], users: list[dict], manifest: dict) -> tuple[list[tuple], dict]:
    """Vote rows (:data:`DETAIL_COLUMNS`) and a report from a Label Studio JSON export.

    Tasks are matched to programs by ``data.key`` through the manifest (tasks of other rounds in the
    same project are ignored). The annotator is the manifest's id of the account (``expert01``), else
    the account's e-mail, else the user id. Report: ``tasks``, ``annotations`` counted, ``cancelled``
    (skipped) ones, ``replaced`` (older annotations of the same annotator and task), ``unmarked``
    lines, ``foreign_tasks`` and ``bad_results`` (results from unknown controls or choices).
    """
    by_key = {t["key"]: t for t in manifest["tasks"]}
    email = {u["id"]: u.get("email") for u in users}
    name_of = {a["email"].lower(): a["annotator"] for a in manifest.get("annotators", [])}
    rep: dict[str, Any] = {
        "tasks": 0,
        "annotations": 0,
        "cancelled": [],
        "replaced": 0,
        "unmarked": 0,
        "foreign_tasks": 0,
        "bad_results": [],
    }
    rows = []
    for t in export:
        m = by_key.get((t.get("data") or {}).get("key"))
        if m is None:
            rep["foreign_tasks"] += 1
            continue
        rep["tasks"] += 1
        anns = [a for a in t.get("annotations") or [] if isinstance(a, dict)]
        latest = latest_per_annotator(anns)
        rep["replaced"] += len(anns) - len(latest)
        for uid, a in sorted(latest.items(), key=lambda kv: str(kv[0])):
            mail = email.get(uid) or (a["completed_by"].get("email") if isinstance(a.get("completed_by"), dict) else None)
            who = name_of.get((mail or "").lower(), mail or str(uid))
            if a.get("was_cancelled"):
                rep["cancelled"].append({"program": m["program"], "annotator": who})
                continue
            rep["annotations"] += 1
            marked = {}
            for r in a.get("result") or []:
                name, ch = r.get("from_name", ""), ((r.get("value") or {}).get("choices") or [None])
                idx = name[5:] if name.startswith("line_") else ""
                if not idx.isdigit() or int(idx) >= len(m["lines"]) or len(ch) != 1 or ch[0] not in CHOICES:
                    rep["bad_results"].append({"program": m["program"], "annotator": who, "from_name": name, "choices": ch})
                    continue
                marked[m["lines"][int(idx)]] = CHOICES[ch[0]]
            rep["unmarked"] += len(m["lines"]) - len(marked)
            for ln in sorted(marked):
                rows.append((m["program"], ln, who, marked[ln], uid, a.get("created_at"), a.get("updated_at"), a.get("lead_time")))
    order = {t["program"]: i for i, t in enumerate(manifest["tasks"])}
    rows.sort(key=lambda r: (order[r[0]], r[1], r[2]))
    return rows, rep


def crowd_annotations(manifest: dict, task_ids: dict[str, int], votes: list[tuple], lead_time: float = 5.0) -> list[dict]:
    """The ``annotate`` request's annotators for votes ``(program, line, annotator, +1|-1)``.

    ``task_ids``: task key -> Label Studio task id. One annotation per annotator and program, with a
    result per voted line; lines without a vote stay unmarked.
    """
    pos = {t["program"]: (t["key"], {ln: i for i, ln in enumerate(t["lines"])}) for t in manifest["tasks"]}
    acc = {a["annotator"]: a for a in manifest["annotators"]}
    per: dict[str, dict[str, list]] = {}
    for prog, ln, who, lab in votes:
        if prog not in pos or int(ln) not in pos[prog][1]:
            raise ValueError(f"vote on program {prog!r} line {ln}: not a pushed line")
        if who not in acc:
            raise ValueError(f"vote by {who!r}: no account in the round (annotators: {sorted(acc)[:10]})")
        idx = pos[prog][1][int(ln)]
        value = {"choices": ["correct" if int(lab) == 1 else "wrong"]}
        per.setdefault(who, {}).setdefault(prog, []).append(
            {"from_name": control_name(idx), "to_name": f"text_{idx}", "type": "choices", "value": value}
        )
    out = []
    for who in sorted(per):
        anns = [{"task": task_ids[pos[p][0]], "result": res, "lead_time": lead_time} for p, res in per[who].items()]
        out.append({"email": acc[who]["email"], "password": acc[who]["password"], "annotations": anns})
    return out


def write_votes(path: str | Path, rows: list[tuple], detail: bool = True) -> None:
    """The vote table (labels ``+1``/``-1``), with the Label Studio columns when ``detail``."""
    cols = DETAIL_COLUMNS if detail else VOTE_COLUMNS
    fmt = [(p, ln, a, "+1" if lab == 1 else "-1", *rest) for p, ln, a, lab, *rest in rows]
    atomic_write_csv(Path(path), cols, [r[: len(cols)] for r in fmt], parents=True)
