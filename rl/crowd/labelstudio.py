"""Human line labelling: export programs as tasks, import the results as a vote table.

``rl export --programs FILE --format {labelstudio,csv} --out FILE``
    FILE is JSONL with ``program`` and ``code`` (e.g. the ``programs.jsonl`` of ``rl annotate``
    or a rollout file). The annotated lines are the record's ``lines`` when given, else
    :func:`rl.tasks.lines.annotated_lines` of ``code`` (after the record's ``prompt``, when ``code``
    starts with it).

    * ``labelstudio``: a JSON list of tasks, **one task per annotated line**::

          {"data": {"program": "p1", "line": 12, "line_text": "    return x",
                    "code": "  11 | ...\\n>>12 |     return x\\n...", "lines": [11, 12, 14]}}

      ``code`` is the whole program with line numbers and ``>>`` at the line to judge. The
      labelling configuration is :data:`LABEL_CONFIG` (also written next to the task file as
      ``<out stem>.config.xml``): one ``Choices`` named ``label`` with ``correct`` / ``wrong``.
    * ``csv``: ``program,line,code,annotator,label`` with one row per annotated line and
      ``annotator``/``label`` left empty for the annotator to fill (label: correct/wrong,
      +1/-1 or 1/0).

``rl import --results FILE --format {labelstudio,csv} --out votes.csv``
    * ``labelstudio``: Label Studio's JSON export (a list of tasks with ``data`` and
      ``annotations``; each annotation has ``completed_by`` (a user id, or an object with
      ``email``/``id``), ``result`` (a list of regions) and ``was_cancelled``). Cancelled
      (skipped) annotations are ignored; every other annotation must hold exactly one
      ``choices`` region from ``label`` with exactly one of ``correct``/``wrong``. The annotator
      id is the user's email when the export has it, else the user id. The legacy key
      ``completions`` is read like ``annotations``.
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
    "import_csv",
]

LABEL_CONFIG = """\
<View>
  <Header value="Program $program: is line $line correct?"/>
  <View style="font-family: monospace; white-space: pre; overflow-x: auto">
    <Text name="code" value="$code"/>
  </View>
  <Header value="Line $line"/>
  <View style="font-family: monospace; white-space: pre">
    <Text name="line_text" value="$line_text"/>
  </View>
  <Choices name="label" toName="line_text" choice="single-radio" required="true" showInline="true">
    <Choice value="correct"/>
    <Choice value="wrong"/>
  </Choices>
</View>
"""
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


def _listing(code: str, mark: int) -> str:
    src = code.split("\n")
    if src and src[-1] == "":
        src = src[:-1]
    w = len(str(len(src)))
    return "\n".join(f"{'>>' if i == mark else '  '}{i:>{w}} | {t}" for i, t in enumerate(src, 1))


def export_labelstudio(programs: list[dict]) -> list[dict]:
    """One Label Studio task per annotated line (see the module docstring)."""
    tasks = []
    for p in programs:
        src = p["code"].split("\n")
        for ln in p["lines"]:
            tasks.append(
                {
                    "data": {
                        "program": p["program"],
                        "line": ln,
                        "line_text": src[ln - 1],
                        "code": _listing(p["code"], ln),
                        "lines": list(p["lines"]),
                    }
                }
            )
    return tasks


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
    p.add_argument("--out", type=Path, required=True, help="task file to write")


def run_export(args: argparse.Namespace) -> int:
    try:
        progs = load_programs(args.programs)
    except ValueError as e:
        print(f"rl export: error: {e}", file=sys.stderr)
        return 2
    n = sum(len(p["lines"]) for p in progs)
    if args.format == "labelstudio":
        atomic_write_text(args.out, json.dumps(export_labelstudio(progs), ensure_ascii=False, indent=1) + "\n", parents=True)
        cfg = Path(args.out).with_suffix(".config.xml")
        atomic_write_text(cfg, LABEL_CONFIG, parents=True)
        print(f"rl export: {len(progs)} programs, {n} line tasks -> {args.out} (labelling config: {cfg})")
    else:
        atomic_write_text(args.out, export_csv(progs), parents=True)
        print(f"rl export: {len(progs)} programs, {n} lines -> {args.out}")
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


def import_labelstudio(path: Path) -> list[tuple[str, int, str, int]]:
    """Votes ``(program, line, annotator, +1|-1)`` from a Label Studio JSON export."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: results file not found") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: expected a JSON list of tasks (Label Studio's 'JSON' export), got {type(tasks).__name__}")
    votes, first = [], {}
    for i, t in enumerate(tasks):
        where = f"{path}: task {i}" + (f" (id {t['id']})" if isinstance(t, dict) and "id" in t else "")
        if not isinstance(t, dict) or not isinstance(t.get("data"), dict):
            raise ValueError(f"{where}: expected an object with a 'data' object")
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
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in ("program", "line", "annotator", "label") if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (header: {cols})")
        votes, first, skipped, codings = [], {}, 0, set()
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
    p.add_argument("--results", type=Path, required=True, help="Label Studio JSON export, or the filled-in CSV")
    p.add_argument("--format", choices=("labelstudio", "csv"), default="labelstudio")
    p.add_argument("--out", type=Path, required=True, help="vote table (CSV) to write")


def run_import(args: argparse.Namespace) -> int:
    try:
        if args.format == "labelstudio":
            votes, skipped = import_labelstudio(args.results), 0
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
    print(f"rl import: {len(votes)} votes on {n_prog} programs from {n_ann} annotators{extra} -> {args.out}")
    return 0
