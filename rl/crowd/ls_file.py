"""``rl export`` / ``rl import`` in Label Studio's per-program task format, without a server.

The file round trip uses the tasks and labelling page of the server path (:mod:`rl.crowd.ls_round`):
**one task per program**, ``data = {"key", "code", "lines"}`` (an opaque key, the numbered listing,
one entry ``{"n", "text"}`` per annotated line), and :data:`rl.crowd.ls_round.LABEL_CONFIG`, whose
choice for the i-th annotated line is the control ``line_<i>`` on the text ``text_<i>``.

- :func:`export_tasks`: ``(tasks, manifest)``. Tasks come in an order shuffled with the seed and carry
  no program id (honeypot mutants are not told apart by id or position); the **manifest** (kept
  locally, ``<out>.manifest.json``) maps each key to its program and lines, and ``rl import`` needs it.
  With predictions each task gets one Label Studio prediction (:func:`prediction`).
- :func:`load_predictions`: a crowdstat reward file (``rewards.jsonl``: program, lines, posteriors,
  tau, method) -> per program the posteriors P(line correct) and tau.
- :func:`read_export`: Label Studio's JSON export (a list of tasks); its JSON-MIN and CSV exports are
  refused with a one-line message that says to export as JSON.
- :func:`votes_from_tasks`: the per-program tasks of an export + the manifest -> votes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from crowdstat.io.rewards import read_rewards
from rl.crowd import ls_round

__all__ = [
    "MANIFEST_KIND",
    "manifest_path",
    "config_path",
    "code_digest",
    "export_tasks",
    "load_predictions",
    "prediction",
    "read_export",
    "read_manifest",
    "is_per_program",
    "votes_from_tasks",
]

MANIFEST_KIND = "rl export labelstudio"
_EXPORT_AS_JSON = "rl import reads Label Studio's full JSON export: in Label Studio, Export -> JSON, and import that file"


def code_digest(listing: str) -> str:
    """The SHA-1 of a task's listing (``data.code``), kept in the manifest to match tasks to it."""
    return hashlib.sha1(listing.encode("utf-8")).hexdigest()


def manifest_path(out: str | Path) -> Path:
    """The manifest written next to the task file ``out`` (``tasks.json`` -> ``tasks.manifest.json``)."""
    return Path(out).with_suffix(".manifest.json")


def config_path(out: str | Path) -> Path:
    """The labelling configuration written next to the task file (``tasks.json`` -> ``tasks.config.xml``)."""
    return Path(out).with_suffix(".config.xml")


# ------------------------------------------------------------------------------ export


def load_predictions(path: str | Path) -> tuple[dict[str, tuple[dict[int, float], float]], str]:
    """``({program: ({line: posterior}, tau)}, model_version)`` from a crowdstat reward file.

    ``model_version`` names the source: ``crowdstat <method> (<parent dir>/<file name>)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: predictions file not found")
    recs = read_rewards(path)
    post = {r["program"]: (dict(zip(r["lines"], (float(p) for p in r["posteriors"]))), float(r["tau"])) for r in recs}
    methods = "+".join(sorted({r["method"] for r in recs}))
    return post, f"crowdstat {methods} ({Path(path.parent.name) / path.name})"


def prediction(key: str, lines: list[int], posteriors: dict[int, float], tau: float, model_version: str) -> dict | None:
    """One Label Studio prediction for a task: a ``line_<i>`` choice per line that has a posterior.

    The choice is ``correct`` when the posterior p = P(line correct) exceeds ``tau`` (the reward's rule),
    else ``wrong``; each result's ``score`` is the posterior of the choice shown (p, or 1 - p), and the
    prediction's ``score`` the smallest of them (Label Studio lists the lowest-scored tasks first, so
    the least certain programs come first). None when no line of the task has a posterior.
    """
    result, scores = [], []
    for i, ln in enumerate(lines):
        if ln not in posteriors:
            continue
        p = posteriors[ln]
        ok = p > tau
        score = round(p if ok else 1.0 - p, 6)
        scores.append(score)
        result.append(
            {
                "id": f"{key}-line{i}",
                "from_name": ls_round.control_name(i),
                "to_name": f"text_{i}",
                "type": "choices",
                "value": {"choices": ["correct" if ok else "wrong"]},
                "score": score,
            }
        )
    if not result:
        return None
    return {"model_version": model_version, "score": min(scores), "result": result}


def export_tasks(
    programs: list[dict], *, seed: int = 0, key_prefix: str = "", predictions: tuple[dict, str] | None = None, source: str = "predictions"
) -> tuple[list[dict], dict]:
    """``(tasks, manifest)`` for ``programs`` (dicts with program, code, lines); see the module docstring.

    ``predictions``: the value of :func:`load_predictions` (of the file ``source``); programs it does not
    hold get no prediction (their ids are listed in ``manifest["no_prediction"]``).
    """
    tasks, rows = ls_round.build_tasks(programs, seed=seed, key_prefix=key_prefix)
    for t, row in zip(tasks, rows):  # so rl import notices a manifest of another export
        row["code_sha1"] = code_digest(t["data"]["code"])
    manifest: dict = {"kind": MANIFEST_KIND, "seed": seed, "tasks": rows, "predictions": None}
    if predictions is not None:
        post, version = predictions
        missing = []
        for t, row in zip(tasks, rows):
            pred = None
            if row["program"] in post:
                posteriors, tau = post[row["program"]]
                pred = prediction(row["key"], row["lines"], posteriors, tau, version)
            if pred is None:
                missing.append(row["program"])
            else:
                t["predictions"] = [pred]
        if len(missing) == len(rows):
            raise ValueError(f"{source}: no exported program has posteriors in this reward file (are they the same programs?)")
        manifest.update(predictions=version, no_prediction=missing)
    return tasks, manifest


# ------------------------------------------------------------------------------ import


def read_export(path: str | Path) -> list:
    """The tasks of a Label Studio JSON export; JSON-MIN, CSV and TSV exports raise a one-line ValueError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: results file not found") from None
    head = text.lstrip("\ufeff \t\r\n")[:1]
    try:
        tasks = json.loads(text)
    except ValueError as e:
        first = text.lstrip("\ufeff").split("\n", 1)[0]
        if head not in ("[", "{") and ("," in first or "\t" in first):
            raise ValueError(f"{path}: this is a CSV/TSV export, not JSON; {_EXPORT_AS_JSON}") from None
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: expected a JSON list of tasks (Label Studio's 'JSON' export), got {type(tasks).__name__}")
    for t in tasks:
        if isinstance(t, dict) and "data" not in t and ("annotator" in t or "annotation_id" in t):
            raise ValueError(f"{path}: this is Label Studio's JSON-MIN export (flat rows with 'annotator'), not JSON; {_EXPORT_AS_JSON}")
    return tasks


def is_per_program(data: dict) -> bool:
    """Whether a task's data is the per-program format (``key`` and a list of line entries)."""
    return "key" in data and isinstance(data.get("lines"), list) and all(isinstance(e, dict) for e in data["lines"])


def read_manifest(path: str | Path) -> dict:
    """The manifest written by ``rl export`` (key -> program and lines)."""
    path = Path(path)
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: manifest not found (rl export writes it next to the task file as <name>.manifest.json)") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(m, dict) or not isinstance(m.get("tasks"), list):
        raise ValueError(f"{path}: not a manifest of rl export (no 'tasks' list)")
    for i, r in enumerate(m["tasks"]):
        if not (isinstance(r, dict) and isinstance(r.get("key"), str) and "program" in r and isinstance(r.get("lines"), list)):
            raise ValueError(f"{path}: tasks[{i}]: expected an object with key, program and lines")
    return m


def _choice(r, aw: str, n: int) -> tuple[int, int] | None:
    """``(line index, +1|-1)`` of one result; None for a result of another control."""
    name = r.get("from_name", "") if isinstance(r, dict) else ""
    if not isinstance(name, str) or not name.startswith("line_"):
        return None  # a control the team added (a comment box, ...): not a vote
    idx = name[5:]
    if not idx.isdigit() or int(idx) >= n:
        raise ValueError(f"{aw}: result from {name!r}: the task has {n} lines (controls line_0..line_{n - 1})")
    if r.get("type") != "choices":
        raise ValueError(f"{aw}: result from {name!r} has type {r.get('type')!r}, expected 'choices'")
    ch = (r.get("value") or {}).get("choices")
    if not isinstance(ch, list) or len(ch) != 1 or ch[0] not in ls_round.CHOICES:
        raise ValueError(f"{aw}: result from {name!r}: choices must be exactly one of ['correct', 'wrong'], got {ch!r}")
    return int(idx), ls_round.CHOICES[ch[0]]


def votes_from_tasks(tasks: list, manifest: dict, path: Path, annotator) -> tuple[list[tuple[str, int, str, int]], dict]:
    """Votes ``(program, line, annotator, +1|-1)`` from per-program tasks, and a report.

    Per task and annotator the latest annotation counts (Label Studio keeps one per edit); a cancelled
    (skipped) latest annotation gives no vote; an unmarked line gives no vote. Tasks whose key is not
    in the manifest (another export in the same project) are skipped and counted. ``annotator``: the
    function that turns ``completed_by`` into the annotator id (file and task in its error).
    Errors name the file, the task index (and id) and the annotation index.
    """
    rows = {r["key"]: r for r in manifest["tasks"]}
    rep = {"tasks": 0, "foreign_tasks": 0, "cancelled": 0, "replaced": 0, "unmarked": 0}
    votes = []
    for i, t in enumerate(tasks):
        where = f"{path}: task {i}" + (f" (id {t['id']})" if "id" in t else "")
        d = t["data"]
        if not is_per_program(d):
            raise ValueError(f"{where}: a one-task-per-line task among per-program ones (data has no 'key' and line entries)")
        m = rows.get(d["key"])
        if m is None:
            rep["foreign_tasks"] += 1
            continue
        got = [e.get("n") for e in d["lines"]]
        if got != m["lines"]:
            raise ValueError(f"{where}: data.lines {got} differ from the manifest's lines {m['lines']} for key {d['key']!r}")
        if "code_sha1" in m and code_digest(str(d.get("code"))) != m["code_sha1"]:
            raise ValueError(f"{where}: data.code is not the program of key {d['key']!r} in the manifest (the manifest of another export?)")
        rep["tasks"] += 1
        anns = t.get("annotations", t.get("completions", []))
        if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
            raise ValueError(f"{where}: 'annotations' must be a list of objects")
        latest = ls_round.latest_per_annotator(anns)
        rep["replaced"] += len(anns) - len(latest)
        for a in latest.values():
            aw = f"{where}, annotation {next(j for j, x in enumerate(anns) if x is a)}"
            who = annotator(a.get("completed_by"), aw)
            if a.get("was_cancelled"):
                rep["cancelled"] += 1
                continue
            res = a.get("result")
            if not isinstance(res, list):
                raise ValueError(f"{aw}: 'result' must be a list")
            marked: dict[int, int] = {}
            for r in res:
                c = _choice(r, aw, len(m["lines"]))
                if c is not None:
                    if c[0] in marked:
                        raise ValueError(f"{aw}: line {m['lines'][c[0]]} ({r['from_name']}) has two results")
                    marked[c[0]] = c[1]
            rep["unmarked"] += len(m["lines"]) - len(marked)
            votes += [(str(m["program"]), m["lines"][k], who, marked[k]) for k in sorted(marked)]
    if rep["tasks"] == 0:
        raise ValueError(f"{path}: no task of this export is in the manifest (keys {sorted(rows)[:3]}...): wrong manifest?")
    order = {r["program"]: k for k, r in enumerate(manifest["tasks"])}
    votes.sort(key=lambda v: (order[v[0]], v[1], v[2]))
    return votes, rep
