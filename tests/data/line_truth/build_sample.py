"""Build sample.jsonl from sample_source.py (hand labels as ``# WRONG`` markers).

    .venv/bin/python tests/data/line_truth/build_sample.py

Each record: ``id, task_id, benchmark, code`` (the full program, markers stripped),
``status`` (sandbox outcome when built, for information), ``truth`` (``[[line, +1|-1], ...]``
for every annotated line of rl.tasks.lines.annotated_lines) and ``reasons`` (``{line: reason}`` for
the wrong lines). Only the *set* of annotated lines comes from rl.tasks.lines; the labels come from
the markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from rl.execution import sandbox  # noqa: E402
from rl.tasks import benchmarks, lines  # noqa: E402

MARK = re.compile(r"\s*# WRONG(?:\(missing\))?: (.*)$")


def main() -> None:
    ns: dict = {}
    exec((HERE / "sample_source.py").read_text(), ns)
    probs = {p.task_id: p for p in benchmarks.load_humaneval() + benchmarks.load_mbpp(split="all")}
    out, jobs = [], []
    for s in ns["SAMPLES"]:
        p = probs[s["task_id"]]
        raw = p.prompt + s["completion"] if "completion" in s else s["code"]
        offset = p.prompt.count("\n") if "completion" in s else 0
        kept, reasons = [], {}
        for i, t in enumerate((s.get("completion") or s.get("code")).split("\n"), 1):
            m = MARK.search(t)
            if m:
                reasons[i + offset] = m.group(1).strip()
                t = t[: m.start()]
            kept.append(t)
        code = (p.prompt if "completion" in s else "") + "\n".join(kept)
        assert raw.count("\n") == code.count("\n")
        prompt = p.prompt if p.source == "humaneval" else ""
        ann = lines.annotated_lines(code, prompt)
        missing = set(reasons) - set(ann)
        assert not missing, (s["id"], missing)
        out.append(
            {
                "id": s["id"],
                "task_id": p.task_id,
                "benchmark": p.source,
                "code": code,
                "truth": [[ln, -1 if ln in reasons else 1] for ln in ann],
                "reasons": {str(k): v for k, v in sorted(reasons.items())},
            }
        )
        jobs.append(p.job(code[len(p.prompt) :] if p.source == "humaneval" else code))
    with sandbox.Sandbox(workers=2) as sb:
        res = sb.map(jobs)
    for rec, r in zip(out, res):
        rec["status"] = r.status
    with open(HERE / "sample.jsonl", "w", encoding="utf-8") as f:
        for rec in out:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    for rec in out:
        print(f"{rec['id']:24s} {rec['status']:8s} wrong={sorted(int(k) for k in rec['reasons'])}")


if __name__ == "__main__":
    main()
