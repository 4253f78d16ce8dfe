"""Human line labelling: export programs as tasks, import the results as a vote table.

``rl export --programs FILE --format {labelstudio,csv} --out FILE [--seed S] [--predictions REWARDS]``
    FILE is JSONL with ``program`` and ``code`` (e.g. the ``programs.jsonl`` of ``rl annotate``
    or a rollout file). The annotated lines are the record's ``lines`` when given, else
    :func:`rl.tasks.lines.annotated_lines` of ``code`` (after the record's ``prompt``, when ``code``
    starts with it).

    * ``labelstudio``: the tasks of the Label Studio server path (:mod:`rl.crowd.ls_file`,
      :mod:`rl.crowd.ls_round`), **one task per program** with a choice per annotated line::

          {"data": {"key": "t0001", "code": "1 | def f(x):\\n2 |     return x", "lines": [{"n": 2, "text": "2 |     return x"}]}}

      in an order shuffled with ``--seed``; the key is opaque (program ids and honeypots stay out of
      the tasks). Next to ``OUT`` (``tasks.json``) go ``tasks.config.xml``, the labelling config to
      paste into the project (:data:`LABEL_CONFIG`: the i-th line's choice is the control ``line_<i>``),
      and ``tasks.manifest.json`` (key -> program and lines; keep it, ``rl import`` needs it).
      ``--predictions`` (a crowdstat ``rewards.jsonl``) adds a Label Studio prediction per task: the
      aggregate's choice per line with its posterior as score (:func:`rl.crowd.ls_file.prediction`).
    * ``csv``: ``program,line,code,annotator,label`` with one row per annotated line and
      ``annotator``/``label`` left empty for the annotator to fill (label: correct/wrong,
      +1/-1 or 1/0).

``rl import --results FILE --format {labelstudio,csv} [--manifest FILE] --out votes.csv``
    * ``labelstudio``: Label Studio's JSON export (a list of tasks with ``data`` and
      ``annotations``; each annotation has ``completed_by`` (a user id, or an object with
      ``email``/``id``), ``result`` (a list of regions) and ``was_cancelled``). The annotator
      id is the user's email when the export has it, else the user id. The legacy key
      ``completions`` is read like ``annotations``. JSON-MIN and CSV exports are refused with a
      message that says to export as JSON.

      Per-program tasks (of this ``rl export``) need ``--manifest``: per task and annotator the latest
      annotation counts, a cancelled (skipped) one gives no vote, every ``line_<i>`` result is a vote
      on the task's i-th line (exactly one of ``correct``/``wrong``), an unmarked line is no vote;
      results of other controls are ignored, tasks of other exports skipped and counted.
      One-task-per-line tasks (``data.program``, ``data.line``: older ``rl export``) are still read:
      every non-cancelled annotation must hold exactly one ``choices`` region from ``label``.
    * ``csv``: the exported sheet, filled in. Rows with an empty ``label`` are skipped (their
      count is reported); a label without an annotator is an error.

    Writes the vote table of docs/formats.md (``program,line,annotator,label`` with +1/-1) in
    task order, atomically. Every error names the file and the task index (0-based, with the task
    id when present) or the CSV data row (1-based), and what is wrong.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from crowdstat.io.atomic import atomic_write_csv, atomic_write_text
from crowdstat.io.jsonl import read_objects
from rl.crowd import ls_file, ls_round
from rl.tasks import lines as _lines

__all__ = [
    "LABEL_CONFIG",
    "add_export_arguments",
    "run_export",
    "add_import_arguments",
    "run_import",
    "load_programs",
    "export_labelstudio",
    "export_csv",
    "import_labelstudio",
    "import_labelstudio_report",
    "import_csv",
]

#: the labelling page of the per-program tasks (the server path's): the i-th line's choice is ``line_<i>``
LABEL_CONFIG = ls_round.LABEL_CONFIG
#: the choice control of the older one-task-per-line tasks (still read by ``rl import``)
CONTROL = "label"
_CHOICES = {"correct": 1, "wrong": -1}
_CSV_LABELS = {"correct": 1, "+1": 1, "1": 1, "wrong": -1, "-1": -1, "0": -1}


# ------------------------------------------------------------------------------ export


def load_programs(path: Path) -> list[dict]:
    """Programs to export: dicts with program, code, lines (annotated, ascending)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: programs file not found")
    out, seen = [], set()
    for _, where, rec in read_objects(path, ("program", "code")):
        pid, code = str(rec["program"]), rec["code"]
        if not isinstance(code, str):
            raise ValueError(f"{where}: code must be a string")
        if pid in seen:
            raise ValueError(f"{where}: duplicate program id {pid!r}")
        seen.add(pid)
        n = len(code.split("\n"))
        if rec.get("lines") is not None:
            ls = rec["lines"]
            if (
                not isinstance(ls, list)
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in ls)
                or not all(1 <= x <= n for x in ls)
            ):
                raise ValueError(f"{where}: lines must be a list of line numbers in 1..{n}, got {ls!r}")
            ls = sorted(set(ls))
        else:
            prompt = rec.get("prompt") or ""
            ls = _lines.annotated_lines(code, prompt if code.startswith(prompt) else "")
        if not ls:
            print(f"warning: {where}: program {pid!r} has no annotated lines; not exported", file=sys.stderr)
            continue
        out.append({"program": pid, "code": code, "lines": ls})
    if not out:
        raise ValueError(f"{path}: no programs to export")
    return out


def export_labelstudio(
    programs: list[dict], *, seed: int = 0, predictions: tuple[dict, str] | None = None, source: str = "predictions"
) -> tuple[list[dict], dict]:
    """``(tasks, manifest)``: one Label Studio task per program (:func:`rl.crowd.ls_file.export_tasks`)."""
    return ls_file.export_tasks(programs, seed=seed, predictions=predictions, source=source)


def export_csv(programs: list[dict]) -> str:
    """The CSV sheet to fill in: one row per annotated line, ``annotator`` and ``label`` empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["program", "line", "code", "annotator", "label"])
    for p in programs:
        src = p["code"].split("\n")
        for ln in p["lines"]:
            w.writerow([p["program"], ln, src[ln - 1], "", ""])
    return buf.getvalue()


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--programs", type=Path, required=True, help="JSONL with program, code (and optionally lines)")
    p.add_argument("--format", choices=("labelstudio", "csv"), default="labelstudio")
    p.add_argument("--out", type=Path, required=True, help="task file to write (labelstudio: also <name>.config.xml, <name>.manifest.json)")
    p.add_argument("--seed", type=int, default=0, help="labelstudio: seed of the task order (default 0)")
    p.add_argument(
        "--predictions",
        type=Path,
        metavar="REWARDS",
        help="labelstudio: a crowdstat rewards.jsonl whose line posteriors become each task's pre-annotation",
    )


def run_export(args: argparse.Namespace) -> int:
    try:
        if args.predictions is not None and args.format != "labelstudio":
            raise ValueError("--predictions needs --format labelstudio")
        progs = load_programs(args.programs)
        preds = ls_file.load_predictions(args.predictions) if args.predictions is not None else None
        if args.format == "labelstudio":
            tasks, manifest = export_labelstudio(progs, seed=args.seed, predictions=preds, source=str(args.predictions))
    except ValueError as e:
        print(f"rl export: error: {e}", file=sys.stderr)
        return 2
    n = sum(len(p["lines"]) for p in progs)
    if args.format == "csv":
        atomic_write_text(args.out, export_csv(progs), parents=True)
        print(f"rl export: {len(progs)} programs, {n} lines -> {args.out}")
        return 0
    cfg, man = ls_file.config_path(args.out), ls_file.manifest_path(args.out)
    manifest["programs"] = str(args.programs)
    atomic_write_text(args.out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", parents=True)
    atomic_write_text(cfg, LABEL_CONFIG, parents=True)
    atomic_write_text(man, json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", parents=True)
    extra = ""
    if preds is not None:
        n_pred = len(tasks) - len(manifest["no_prediction"])
        extra = f", pre-annotations from {manifest['predictions']} on {n_pred} of them"
    print(f"rl export: {len(progs)} programs, {n} lines -> {len(tasks)} tasks (one per program){extra} -> {args.out}")
    print(f"  labelling config (paste under Settings -> Labeling Interface -> Code): {cfg}")
    print(f"  manifest (keep it; rl import --manifest needs it): {man}")
    return 0


# ------------------------------------------------------------------------------ import


def _annotator(cb, where: str) -> str:
    if isinstance(cb, dict):
        for k in ("email", "id"):
            if cb.get(k) not in (None, ""):
                return str(cb[k])
        raise ValueError(f"{where}: completed_by has neither 'email' nor 'id'")
    if isinstance(cb, bool) or cb is None or (isinstance(cb, str) and not cb.strip()) or not isinstance(cb, (int, str)):
        raise ValueError(f"{where}: missing or invalid completed_by {cb!r}")
    return str(cb)


def import_labelstudio_report(path: Path, manifest: Path | None = None) -> tuple[list[tuple[str, int, str, int]], dict]:
    """Votes ``(program, line, annotator, +1|-1)`` from a Label Studio JSON export, and a report
    (per-program tasks: tasks, foreign_tasks, cancelled, replaced, unmarked; empty for per-line tasks)."""
    path = Path(path)
    tasks = ls_file.read_export(path)
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("data"), dict):
            where = f"{path}: task {i}" + (f" (id {t['id']})" if isinstance(t, dict) and "id" in t else "")
            raise ValueError(f"{where}: expected an object with a 'data' object")
    if not (tasks and ls_file.is_per_program(tasks[0]["data"])):
        return _votes_per_line(tasks, path), {}
    if manifest is None:
        raise ValueError(
            f"{path}: per-program tasks (data.key {tasks[0]['data']['key']!r}): pass --manifest FILE, "
            "the <name>.manifest.json that rl export wrote next to the task file"
        )
    votes, rep = ls_file.votes_from_tasks(tasks, ls_file.read_manifest(manifest), path, _annotator)
    if not votes:
        raise ValueError(f"{path}: no votes (no annotations, or every one cancelled or left unmarked)")
    return votes, rep


def import_labelstudio(path: Path, manifest: Path | None = None) -> list[tuple[str, int, str, int]]:
    """Votes ``(program, line, annotator, +1|-1)`` from a Label Studio JSON export (see the module docstring)."""
    return import_labelstudio_report(path, manifest)[0]


def _votes_per_line(tasks: list[dict], path: Path) -> list[tuple[str, int, str, int]]:
    """Votes from one-task-per-line tasks (``data.program``, ``data.line``; the older rl export)."""
    votes: list[tuple[str, int, str, int]] = []
    first: dict[tuple[str, int, str], str] = {}
    for i, t in enumerate(tasks):
        where = f"{path}: task {i}" + (f" (id {t['id']})" if "id" in t else "")
        d = t["data"]
        for k in ("program", "line"):
            if k not in d:
                raise ValueError(f"{where}: data has no {k!r} (was the task file made by rl export?)")
        line = d["line"]
        if isinstance(line, str) and line.strip().isdigit():
            line = int(line)
        if not isinstance(line, int) or isinstance(line, bool) or line < 0:
            raise ValueError(f"{where}: data.line must be a non-negative integer, got {d['line']!r}")
        program = str(d["program"])
        anns = t.get("annotations", t.get("completions", []))
        if not isinstance(anns, list):
            raise ValueError(f"{where}: 'annotations' must be a list")
        for j, a in enumerate(anns):
            aw = f"{where}, annotation {j}"
            if not isinstance(a, dict):
                raise ValueError(f"{aw}: expected an object")
            if a.get("was_cancelled"):
                continue
            who = _annotator(a.get("completed_by"), aw)
            res = a.get("result")
            if not isinstance(res, list):
                raise ValueError(f"{aw}: 'result' must be a list")
            mine = [r for r in res if isinstance(r, dict) and r.get("from_name") == CONTROL]
            if len(mine) != 1:
                raise ValueError(f"{aw}: expected exactly one result from {CONTROL!r}, found {len(mine)}")
            r = mine[0]
            if r.get("type") != "choices":
                raise ValueError(f"{aw}: result type {r.get('type')!r}, expected 'choices'")
            ch = (r.get("value") or {}).get("choices")
            if not isinstance(ch, list) or len(ch) != 1 or ch[0] not in _CHOICES:
                raise ValueError(f"{aw}: choices must be exactly one of ['correct', 'wrong'], got {ch!r}")
            key = (program, line, who)
            if key in first:
                raise ValueError(f"{aw}: annotator {who!r} labelled program {program!r} line {line} again (first in {first[key]})")
            first[key] = f"task {i}"
            votes.append((program, line, who, _CHOICES[ch[0]]))
    if not votes:
        raise ValueError(f"{path}: no (non-cancelled) annotations")
    return votes


def import_csv(path: Path) -> tuple[list[tuple[str, int, str, int]], int]:
    """Votes from a filled-in CSV sheet, and the number of rows skipped for an empty label."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: results file not found")
    with path.open(encoding="utf-8") as f:
        head = f.read(4096).lstrip("\ufeff \t\r\n")[:1]
    if head in ("[", "{"):  # a Label Studio export: JSON-MIN is refused by read_export, JSON goes with --format labelstudio
        ls_file.read_export(path)
        raise ValueError(f"{path}: this is JSON, not the CSV sheet: import Label Studio's JSON export with --format labelstudio")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in ("program", "line", "annotator", "label") if c not in cols]
        if "annotation_id" in cols:  # never in the sheet of rl export
            raise ValueError(
                f"{path}: this is Label Studio's CSV export, not the rl export sheet; "
                "export as JSON (Export -> JSON) and use --format labelstudio"
            )
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (header: {cols})")
        votes: list[tuple[str, int, str, int]] = []
        first: dict[tuple[str, int, str], int] = {}
        skipped, codings = 0, set()
        for row, r in enumerate(reader, 1):
            where = f"{path}: row {row}"
            lab = (r["label"] or "").strip().lower()
            who = (r["annotator"] or "").strip()
            if not lab:
                skipped += 1
                continue
            if lab not in _CSV_LABELS:
                raise ValueError(f"{where}, column label: unknown label {r['label']!r} (expected correct/wrong, +1/-1 or 1/0)")
            if not who:
                raise ValueError(f"{where}, column annotator: empty annotator for a labelled line")
            prog = (r["program"] or "").strip()
            if not prog:
                raise ValueError(f"{where}, column program: empty program id")
            try:
                line = int((r["line"] or "").strip())
                if line < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{where}, column line: {r['line']!r} is not a non-negative integer") from None
            key = (prog, line, who)
            if key in first:
                raise ValueError(f"{where}: annotator {who!r} labelled program {prog!r} line {line} twice (first at row {first[key]})")
            first[key] = row
            votes.append((prog, line, who, _CSV_LABELS[lab]))
            codings.add(lab)
    if "0" in codings and "-1" in codings:
        raise ValueError(f"{path}: labels mix the 1/0 coding with -1 (is 0 wrong or no vote?)")
    if not votes:
        raise ValueError(f"{path}: no labelled rows")
    return votes, skipped


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, required=True, help="Label Studio JSON export (Export -> JSON), or the filled-in CSV")
    p.add_argument("--format", choices=("labelstudio", "csv"), default="labelstudio")
    p.add_argument("--manifest", type=Path, help="labelstudio: the <name>.manifest.json rl export wrote next to the task file")
    p.add_argument("--out", type=Path, required=True, help="vote table (CSV) to write")


def run_import(args: argparse.Namespace) -> int:
    try:
        rep: dict = {}
        if args.format == "labelstudio":
            (votes, rep), skipped = import_labelstudio_report(args.results, args.manifest), 0
        else:
            votes, skipped = import_csv(args.results)
    except ValueError as e:
        print(f"rl import: error: {e}", file=sys.stderr)
        return 2
    atomic_write_csv(
        args.out,
        ["program", "line", "annotator", "label"],
        [(p, ln, a, "+1" if lab == 1 else "-1") for p, ln, a, lab in votes],
        parents=True,
    )
    n_prog = len({v[0] for v in votes})
    n_ann = len({v[2] for v in votes})
    extra = f", {skipped} unlabelled rows skipped" if skipped else ""
    if rep:
        extra += f" ({rep['tasks']} tasks; {rep['cancelled']} skipped by the annotator, {rep['unmarked']} lines left unmarked"
        extra += f", {rep['replaced']} earlier versions replaced" if rep["replaced"] else ""
        extra += f", {rep['foreign_tasks']} tasks of other exports ignored)" if rep["foreign_tasks"] else ")"
    print(f"rl import: {len(votes)} votes on {n_prog} programs from {n_ann} annotators{extra} -> {args.out}")
    return 0
