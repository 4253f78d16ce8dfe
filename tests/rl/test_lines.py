"""rl.tasks.lines: annotated lines, the line-truth rule, and its agreement with hand labels."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rl.tasks import lines

DATA = Path(__file__).resolve().parents[1] / "data" / "line_truth"

PROMPT = 'def f(xs):\n    """Sum of xs.\n    >>> f([1])\n    1\n    """\n'
CANON = PROMPT + "    total = 0\n    for x in xs:\n        total += x\n    return total\n"


def _res(status, line=None):
    return SimpleNamespace(status=status, line=line)


def test_annotated_lines_skip_prompt_blank_comment_docstring():
    code = PROMPT + "    # a comment\n    total = 0\n\n    for x in xs:\n        '''inner doc'''\n        total += x\n    return total\n"
    assert lines.annotated_lines(code, PROMPT) == [7, 9, 11, 12]
    # MBPP: the whole program is the completion; the def line is annotated, the docstring is not
    assert lines.annotated_lines('def g():\n    """doc\n    more"""\n    return 1\n') == [1, 4]


def test_annotated_lines_prompt_without_newline_and_mismatch():
    assert lines.annotated_lines("def f():\n    return 1\n", "def f():\n    ") == [2]
    assert lines.annotated_lines("def f():\n    \n", "def f():\n    ") == []
    with pytest.raises(ValueError, match="does not start with its prompt"):
        lines.annotated_lines("x = 1\n", "def f():\n")


def test_diff_ignores_renaming_and_formatting():
    code = PROMPT + "    acc = 0\n    for item in xs:\n        acc = acc + 0 + item\n    return (acc)\n"
    assert lines.diff_wrong_lines(code, CANON, PROMPT) == {8}  # only the changed statement
    code2 = PROMPT + "    s = 0  # start\n    for y in xs:\n        s += y\n    return s\n"
    assert lines.diff_wrong_lines(code2, CANON, PROMPT) == set()


def test_diff_operator_indentation_and_gaps():
    op = CANON.replace("total += x", "total -= x")
    assert lines.diff_wrong_lines(op, CANON, PROMPT) == {8}
    dedent = CANON.replace("        total += x", "    total += x")
    assert lines.diff_wrong_lines(dedent, CANON, PROMPT) == {8}
    # a deleted statement: the line before the gap is wrong
    gone = CANON.replace("        total += x\n", "")
    assert lines.annotated_lines(gone, PROMPT) == [6, 7, 8]
    assert lines.diff_wrong_lines(gone, CANON, PROMPT) == {7}
    # ... or the line after it when the gap opens the completion
    first = CANON.replace("    total = 0\n", "")
    assert lines.diff_wrong_lines(first, CANON, PROMPT) == {6}
    # an extra statement is wrong
    extra = CANON.replace("    return total", "    total *= 2\n    return total")
    assert lines.diff_wrong_lines(extra, CANON, PROMPT) == {9}


def test_diff_multiline_statement_and_syntax_error():
    code = PROMPT + "    total = sum(\n        xs,\n    )\n    return total + 1\n"
    canon = PROMPT + "    total = sum(\n        xs,\n    )\n    return total\n"
    assert lines.diff_wrong_lines(code, canon, PROMPT) == {9}
    code2 = PROMPT + "    total = sum(\n        xs, 1\n    )\n    return total\n"
    assert lines.diff_wrong_lines(code2, canon, PROMPT) == {6, 7, 8}  # the whole statement
    broken = CANON.replace("for x in xs:", "for x in xs")
    assert lines.diff_wrong_lines(broken, CANON, PROMPT) == {7}


def test_line_truth_rule():
    bad = CANON.replace("total += x", "total -= x")
    ann = lines.annotated_lines(bad, PROMPT)
    assert lines.line_truth(bad, CANON, _res("passed"), PROMPT) == {ln: 1 for ln in ann}
    assert lines.line_truth(bad, CANON, True, PROMPT) == {ln: 1 for ln in ann}
    t = lines.line_truth(bad, CANON, _res("failed"), PROMPT)
    assert t == {6: 1, 7: 1, 8: -1, 9: 1}
    # the raise line is added (union), or only used when the diff is empty (fallback)
    assert lines.line_truth(bad, CANON, _res("failed", 9), PROMPT) == {6: 1, 7: 1, 8: -1, 9: -1}
    assert lines.line_truth(bad, CANON, _res("failed", 9), PROMPT, raise_line="fallback")[9] == 1
    assert lines.line_truth(CANON, CANON, _res("failed", 7), PROMPT, raise_line="fallback")[7] == -1
    # a raise line in the (unannotated) prompt is ignored; identical code that fails: last line wrong
    assert lines.line_truth(CANON, CANON, _res("timeout", 2), PROMPT) == {6: 1, 7: 1, 8: 1, 9: -1}
    with pytest.raises(ValueError, match="raise_line must be one of"):
        lines.line_truth(bad, CANON, _res("failed"), PROMPT, raise_line="always")


def _sample():
    return [json.loads(t) for t in (DATA / "sample.jsonl").read_text().splitlines() if t.strip()]


def test_hand_sample_shape():
    recs = _sample()
    assert len(recs) == 30 and len({r["id"] for r in recs}) == 30
    n_wrong_programs = sum(any(lab == -1 for _, lab in r["truth"]) for r in recs)
    assert n_wrong_programs >= 20
    assert {r["benchmark"] for r in recs} == {"humaneval", "mbpp"}
    for r in recs:
        wrong = {ln for ln, lab in r["truth"] if lab == -1}
        assert wrong == {int(k) for k in r["reasons"]}, r["id"]  # one reason per wrong line
        assert all(len(v) > 10 for v in r["reasons"].values())


def test_rule_agrees_with_hand_labels():
    """Recomputes the figure reported in docs/annotation.md (runs the 30 programs)."""
    sys.path.insert(0, str(DATA))
    try:
        import measure
    finally:
        sys.path.remove(str(DATA))
    recs, probs, results = measure.load_and_run()
    # the statuses recorded when the sample was built still hold
    assert [r.status for r in results] == [rec["status"] for rec in recs]
    a = lines.rule_agreement(recs, probs, results)
    assert a["lines"] == sum(len(r["truth"]) for r in recs)
    assert a["line_agreement"] >= 0.93, a
    assert a["program_exact"] >= 0.85, a
    assert a["wrong_recall"] >= 0.9, a
    # the known disagreements: a rewrite with a different structure, a bug the tests miss,
    # a moved statement (the gap is blamed too)
    assert set(a["differ"]) <= {"he4_loop_noabs", "he35_zero_init", "mbpp23_sum_outside"}, a["differ"]


def test_rule_agreement_rejects_mismatched_labels():
    recs = _sample()[:1]
    recs[0] = dict(recs[0], truth=recs[0]["truth"][:-1])
    from rl.tasks import benchmarks

    probs = {p.task_id: p for p in benchmarks.load_humaneval()}
    with pytest.raises(ValueError, match="he3_renamed_ok: hand labels cover lines"):
        lines.rule_agreement(recs, probs, [_res("passed")])
