"""Agreement of rl.tasks.lines' rule with the hand labels of sample.jsonl (docs/annotation.md).

.venv/bin/python tests/data/line_truth/measure.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from rl.execution import sandbox  # noqa: E402
from rl.tasks import benchmarks, lines  # noqa: E402


def load_and_run():
    recs = [json.loads(t) for t in (HERE / "sample.jsonl").read_text().splitlines() if t.strip()]
    probs = {p.task_id: p for p in benchmarks.load_humaneval() + benchmarks.load_mbpp(split="all")}
    jobs = []
    for r in recs:
        p = probs[r["task_id"]]
        jobs.append(sandbox.Job(program=r["code"], tests=p.tests, setup=p.setup, entry_point=p.entry_point))
    with sandbox.Sandbox(workers=2) as sb:
        results = sb.map(jobs)
    return recs, probs, results


def main() -> None:
    recs, probs, results = load_and_run()
    for mode in lines.RAISE_LINE_MODES:
        a = lines.rule_agreement(recs, probs, results, raise_line=mode)
        print(
            f"raise_line={mode:8s} line agreement {a['line_agreement']:.3f} ({a['lines']} lines)  "
            f"program exact {a['program_exact']:.3f} ({a['programs']} programs)  "
            f"wrong recall {a['wrong_recall']:.3f} precision {a['wrong_precision']:.3f} "
            f"(hand {a['hand_wrong']}, rule {a['rule_wrong']})  differ: {', '.join(a['differ'])}"
        )


if __name__ == "__main__":
    main()
