"""rl.tasks.mutants: each operator on a small function, determinism, and sandbox-verified mutants."""

import difflib
import random

import pytest

from rl.execution import sandbox
from rl.tasks import benchmarks, lines, mutants

SRC = """\
def f(xs, n):
    total = 0
    for i in range(1, n):
        if xs[i] > 0 and i % 2 == 0:
            total += xs[i] * 2
    return total
"""


def _texts(op, src=SRC, prompt=""):
    return {c.program.split("\n")[c.wrong_lines[0] - 1].strip(): c for c in mutants.candidates(src, prompt, (op,))[op]}


def test_const_off_by_one():
    got = mutants.candidates(SRC, operators=("const_off_by_one",), rng=random.Random(1))["const_off_by_one"]
    lines_changed = sorted(c.program.split("\n")[c.wrong_lines[0] - 1].strip() for c in got)
    # 0 (line 2), 0 and 2 (line 4), 2 (line 5); never the 1 inside range()
    assert len(got) == 4
    assert all("range(1, n)" in c.program for c in got)
    for c in got:
        old = SRC.split("\n")[c.wrong_lines[0] - 1]
        new = c.program.split("\n")[c.wrong_lines[0] - 1]
        diff = [(a, b) for a, b in zip(old, new) if a != b]
        assert len(old) == len(new) or "-1" in new  # one digit changed (or 0 -> -1)
        assert diff or "-1" in new
    assert any(t.endswith("total = 1") or t.endswith("total = -1") for t in lines_changed)


def test_range_bound():
    got = mutants.candidates(SRC, operators=("range_bound",))["range_bound"]
    assert len(got) == 1
    new = got[0].program.split("\n")[2].strip()
    assert new in {"for i in range(1, n + 1):", "for i in range(1, n - 1):", "for i in range(2, n):", "for i in range(0, n):"}
    assert got[0].wrong_lines == (3,)


def test_arith_op():
    t = _texts("arith_op")
    assert set(t) == {"total -= xs[i] * 2", "total += xs[i] + 2", "if xs[i] > 0 and i // 2 == 0:"}
    # precedence is kept by parenthesising: c - a * b -> c - (a + b)
    t2 = _texts("arith_op", "def g(a, b, c):\n    return c - a * b\n")
    assert "return c - (a + b)" in t2 and "return c + a * b" in t2


def test_compare_op():
    assert set(_texts("compare_op")) == {"if xs[i] >= 0 and i % 2 == 0:", "if xs[i] > 0 and i % 2 != 0:"}
    assert set(_texts("compare_op", "def g(x, s):\n    return x not in s\n")) == {"return x in s"}


def test_wrong_name_uses_names_bound_earlier():
    seen: dict[int, set[str]] = {}
    for seed in range(40):
        for c in mutants.candidates(SRC, operators=("wrong_name",), rng=random.Random(seed))["wrong_name"]:
            seen.setdefault(c.wrong_lines[0], set()).add(c.program.split("\n")[c.wrong_lines[0] - 1].strip())
    assert seen[6] == {"return xs", "return n", "return i"}
    # on line 3 only names bound before it (the parameters, `total`); `i` is bound on line 3 itself
    assert seen[3] == {"for i in range(1, xs):", "for i in range(1, total):"}
    assert min(seen) == 3


def test_remove_stmt_marks_line_before_gap():
    got = {c.description: c for c in mutants.candidates(SRC, operators=("remove_stmt",))["remove_stmt"]}
    assert set(got) == {"remove_stmt: deleted line 2 `total = 0`", "remove_stmt: deleted line 6 `return total`"}
    assert got["remove_stmt: deleted line 2 `total = 0`"].wrong_lines == (1,)  # the def line before the gap
    assert got["remove_stmt: deleted line 6 `return total`"].wrong_lines == (5,)
    # HumanEval: the gap opens the completion -> the first line after it
    prompt = "def h(x):\n"
    src = prompt + "    y = x + 1\n    return y\n"
    got = {c.program: c.wrong_lines for c in mutants.candidates(src, prompt, ("remove_stmt",))["remove_stmt"]}
    assert got == {prompt + "    return y\n": (2,), prompt + "    y = x + 1\n": (2,)}


def test_wrong_return_negate_boolop():
    src = "def g(x):\n    if x > 3:\n        return True\n    while not x:\n        x = 1\n    return x > 1 or x < 0\n"
    assert set(_texts("wrong_return", src)) == {"return False", "return True"}
    assert set(_texts("wrong_return", "def g(x):\n    return x * 2\n")) == {"return None"}
    assert set(_texts("wrong_return", "def g(x):\n    return 7\n")) == {"return 8"}
    assert set(_texts("negate_cond", src)) == {"if not x > 3:", "while x:"}
    assert set(_texts("bool_op", src)) == {"return x > 1 and x < 0"}


def test_prompt_is_never_mutated_and_bad_operator():
    prompt = "def g(x, k=3):\n    '''Doc 1 < 2.'''\n"
    src = prompt + "    return x + k\n"
    for cs in mutants.candidates(src, prompt).values():
        for c in cs:
            assert c.program.startswith(prompt) and c.wrong_lines == (3,)
    with pytest.raises(ValueError, match="unknown mutation operator"):
        mutants.candidates(src, prompt, ("swap_everything",))
    assert all(not v for v in mutants.candidates("def broken(:\n").values())


def _difflib_changed(canon: str, mut: str, prompt: str):
    """Independent check: lines of ``mut`` whose whitespace-normalised text differs from ``canon``."""
    norm = lambda s: [" ".join(t.split()) for t in s.split("\n")]  # noqa: E731
    ops = [o for o in difflib.SequenceMatcher(None, norm(canon), norm(mut), autojunk=False).get_opcodes() if o[0] != "equal"]
    if len(ops) == 1 and ops[0][0] == "delete":  # a removed statement: the annotated line before the gap
        j = ops[0][3] + 1  # first mutant line after the gap (1-based)
        ann = lines.annotated_lines(mut, prompt)
        before = [ln for ln in ann if ln < j]
        return {before[-1]} if before else {min(ln for ln in ann if ln >= j)}
    assert all(o[0] == "replace" and o[2] - o[1] == o[4] - o[3] for o in ops), ops
    return {j + 1 for o in ops for j in range(o[3], o[4])}


@pytest.fixture(scope="module")
def run():
    probs = benchmarks.load_humaneval()[:4] + benchmarks.load_mbpp()[:3]
    with sandbox.Sandbox(workers=2, limits=sandbox.Limits(timeout_s=2.0)) as sb:
        r = mutants.generate(probs, per_problem=3, seed=7, sandbox=sb)
        again = mutants.generate(probs[:2], per_problem=3, seed=7, sandbox=sb)
        rerun = sb.map([sandbox.Job(m.program, _prob(probs, m.task_id).tests, _prob(probs, m.task_id).setup) for m in r.mutants])
    return probs, r, again, rerun


def _prob(probs, tid):
    return next(p for p in probs if p.task_id == tid)


def test_kept_mutants_fail_and_wrong_lines_match_difflib(run):
    probs, r, _, rerun = run
    per = {p.task_id: sum(m.task_id == p.task_id for m in r.mutants) for p in probs}
    # HumanEval/2 (`return number % 1.0`) has only 2 killable sites; every other problem gets 3
    assert per == {**{p.task_id: 3 for p in probs}, "HumanEval/2": 2}, per
    assert all(res.status != "passed" for res in rerun)  # re-run: each kept mutant fails a test
    for m in r.mutants:
        p = _prob(probs, m.task_id)
        prompt = p.prompt if p.source == "humaneval" else ""
        assert _difflib_changed(p.canonical_program, m.program, prompt) == set(m.wrong_lines), m.description
        # rl.tasks.lines' rule recovers the same wrong lines from the failing mutant
        assert lines.diff_wrong_lines(m.program, p.canonical_program, prompt) == set(m.wrong_lines), m.description
        assert set(m.wrong_lines) <= set(lines.annotated_lines(m.program, prompt))
    s = r.stats
    assert sum(v["kept"] for v in s.values()) == len(r.mutants)
    assert all(v["tried"] == v["kept"] + v["dropped"] for v in s.values())


def test_deterministic_given_seed(run):
    probs, r, again, _ = run
    first_two = [m for m in r.mutants if m.task_id in {probs[0].task_id, probs[1].task_id}]
    assert again.mutants == first_two
    other = mutants.candidates(probs[0].canonical_program, probs[0].prompt, rng=random.Random(99))
    assert sum(map(len, other.values())) > 5


def test_equivalent_mutants_are_dropped():
    weak = benchmarks.Problem(
        task_id="toy/1",
        prompt="",
        entry_point="f",
        tests=("assert f(5) == 1",),
        setup="",
        canonical_solution="def f(x):\n    if x > 0:\n        return 1\n    return 0\n",
        source="mbpp",
    )
    r = mutants.generate([weak], per_problem=None, seed=0)
    kept = {m.description for m in r.mutants}
    # x >= 0, x > 1 and `return 1` (the last line) cannot be seen by f(5) == 1
    assert r.stats["compare_op"] == {"candidates": 1, "tried": 1, "kept": 0, "dropped": 1}
    assert any("return 0` -> `return 1`" in d for d in [c.description for c in mutants.candidates(weak.canonical_program)["wrong_return"]])
    assert not any("return 0` -> `return 1`" in d for d in kept)
    assert r.stats["negate_cond"]["kept"] == 1
    with pytest.raises(ValueError, match="per_problem must be a positive int"):
        mutants.generate([weak], per_problem=0)
