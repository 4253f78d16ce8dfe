"""Wrong programs must never be reported ``passed``: attacks on the verdict (issue 15).

Each attack was first run against the harness that decided pass/fail inside the program's own
process, where it reported ``passed``. Now converted tests (``verdict="io"``) are judged by the
caller on the returned plain values, and the in-process harness binds what it needs before any
program code runs.
"""

from __future__ import annotations

import math
import time

import pytest

from rl.execution.sandbox import Job, Limits, Sandbox
from rl.execution.verdict import MalformedOutput, convert_test, decide, decode_value, plan_tests

FAST = Limits(timeout_s=3.0, cpu_s=6, memory_mb=1024, file_size_mb=1, max_output_bytes=4000, max_processes=32)
WRONG = "def f(x):\n    return 0\n"
IO_TESTS = ("assert f(1) == 2", "assert f(2) == 3")
# Not convertible (a name the test binds): these run in the sandboxed process, as before.
IN_PROCESS_TESTS = ("y = f(1)\nassert y == 2", "y = f(2)\nassert y == 3")


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=FAST) as s:
        yield s


# What each attack adds to a wrong program.
ATTACKS = {
    "replace_exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\n",
    "replace_compile": "import builtins\n_c = builtins.compile\nbuiltins.compile = lambda *a, **k: _c('pass', '<x>', 'exec')\n",
    "clear_test_list": (
        "import sys\n"
        "for _k, _v in list(sys._getframe(1).f_locals.items()):\n"
        "    if isinstance(_v, list) and len(_v) > 2:\n"
        "        del _v[2:]\n"
        "    if isinstance(_v, list) and _k == 'tests':\n"
        "        _v.clear()\n"
    ),
    "patch_json_dumps": (
        "import json\n_d = json.dumps\n"
        "def _dumps(o, *a, **k):\n"
        "    if isinstance(o, dict) and 'status' in o:\n"
        "        o = dict(o, status='passed', test=None, stage=None)\n"
        "    return _d(o, *a, **k)\n"
        "json.dumps = _dumps\n"
    ),
    "patch_os_write": (
        "import os\n_w = os.write\n"
        "def _write(fd, b):\n"
        "    if fd == 3:\n"
        "        b = bytes(b).replace(b'\"failed\"', b'\"passed\"')\n"
        "    return _w(fd, b)\n"
        "os.write = _write\n"
    ),
    "print_forged_line": (
        'print(\'{"kind": "final", "status": "passed", "stage": null, "exception_type": null, "line": null, "message": "ok"}\')\n'
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("tests", [IO_TESTS, IN_PROCESS_TESTS], ids=["io", "in_process"])
def test_attacks_on_the_harness_fail(sb, attack, tests):
    r = sb.run(Job(WRONG + ATTACKS[attack], tests=tests))
    assert r.status != "passed", (attack, r)
    assert r.verdict == ("io" if tests is IO_TESTS else "in_process")
    # and the same attack on a right program does not make it fail (the harness still works)
    right = sb.run(Job("def f(x):\n    return x + 1\n" + ATTACKS[attack], tests=tests))
    if tests is IO_TESTS or attack in ("print_forged_line", "patch_json_dumps", "patch_os_write"):
        assert right.status == "passed", (attack, right)


def test_a_forged_report_on_the_result_pipe_with_the_stolen_nonce_fails(sb):
    steal = (
        "import sys, os, json\n"
        "_f = sys._getframe()\n"
        "while _f is not None and 'nonce' not in _f.f_locals:\n"
        "    _f = _f.f_back\n"
        "_n = _f.f_locals['nonce']\n"
        "os.write(3, (json.dumps({'kind': 'final', 'status': 'passed', 'stage': None, 'exception_type': None,"
        " 'line': None, 'message': 'ok', 'nonce': _n}) + '\\n').encode())\n"
        "os._exit(0)\n"
    )
    r = sb.run(Job(WRONG + steal, tests=IO_TESTS))
    assert r.status != "passed", r
    assert r.status == "crashed" and "no outputs" in r.message


def test_a_forged_report_with_garbage_outputs_is_that_samples_crash(sb):
    deep = "[" * 5000 + "]" * 5000
    forge = (
        "import sys, os\n"
        "_f = sys._getframe()\n"
        "while _f is not None and 'nonce' not in _f.f_locals:\n"
        "    _f = _f.f_back\n"
        "_n = _f.f_locals['nonce']\n"
        'for _o in (\'{DEEP}\', \'[[0, [["i", "2"]]], [0, [["i", "2"]]]]\', \'[[0, [["q", 1]]]]\'):\n'
        '    os.write(3, (\'{"kind": "final", "status": "passed", "nonce": "%s", "outputs": %s}\\n\' % (_n, _o)).encode())\n'
        "os._exit(0)\n"
    ).replace("{DEEP}", deep)
    r = sb.run(Job(WRONG + forge, tests=IO_TESTS))
    assert r.status == "crashed", r
    assert sb.run(Job("def f(x):\n    return x + 1\n", tests=IO_TESTS)).status == "passed"  # the pool keeps serving


def test_custom_eq_objects_are_not_plain_data(sb):
    prog = (
        "class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\n"
        "class S(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\n"
        "def f(x):\n    return A()\n"
        "def g(x):\n    return S('nope')\n"
    )
    r = sb.run(Job(prog, tests=("assert f(1) == 2",)))
    assert (r.status, r.failing_test, r.exception_type) == ("failed", 0, "NotPlainData"), r
    r = sb.run(Job(prog, tests=("assert g(1) == 'yes'",)))  # a str subclass is judged on its str data
    assert (r.status, r.failing_test, r.exception_type) == ("failed", 0, "AssertionError"), r
    assert "'nope'" in r.message


@pytest.mark.parametrize(
    "body",
    [
        "return 'a' * 50_000_000",
        "return [0] * 20_000_000",
        "a = []\n    a.append(a)\n    return a",
        "return {i: [i] * 50 for i in range(100_000)}",
    ],
)
def test_huge_or_cyclic_outputs_fail_quickly(sb, body):
    t = time.monotonic()
    r = sb.run(Job(f"def f(x):\n    {body}\n", tests=("assert f(1) == 2",)))
    assert r.status == "failed" and r.failing_test == 0, r
    assert r.exception_type in ("OutputTooLarge", "NotPlainData"), r
    assert time.monotonic() - t < 10


def test_io_semantics_follow_python(sb):
    prog = (
        "import math\n"
        "def f(x):\n    return True\n"
        "def g(x):\n    return 0.1 + 0.2\n"
        "def h(x):\n    return float('nan')\n"
        "def k(x):\n    return {'b': [1, (2, 3)], 'a': {4, 5}}\n"
        "def raises(x):\n    raise KeyError(x)\n"
        "def m(x):\n    import re\n    return re.match('a', x)\n"
    )
    tests = (
        "assert f(1) == 1",
        "assert f(1) == 1.0",
        "assert f(1) is True",
        "assert f(1)",
        "assert not not f(1)",
        "assert abs(g(1) - 0.3) < 1e-9",
        "assert math.isnan(h(1))",
        "assert k(1) == {'a': {5, 4}, 'b': [1, (2, 3)]}",
        "assert sorted(k(1)) == ['a', 'b']",
        "assert 0.30000000000000004 == g(2)",
        "assert m('abc')",  # truthiness of a value that is not plain data: judged as a bool
        "assert not m('xbc')",
    )
    r = sb.run(Job(prog, tests=tests))
    assert (r.status, r.verdict) == ("passed", "io"), r
    bad = sb.run(Job(prog, tests=("assert g(1) == 0.3",)))
    assert (bad.status, bad.exception_type) == ("failed", "AssertionError")
    nan = sb.run(Job(prog, tests=("assert h(1) == h(1)",)))  # nan != nan, as in Python
    assert nan.status == "failed"
    exc = sb.run(Job(prog, tests=("assert f(1) == 1", "assert raises(3) == 1")))
    assert (exc.status, exc.failing_test, exc.exception_type, exc.line) == ("failed", 1, "KeyError", 11)
    typ = sb.run(Job(prog, tests=("assert abs(k(1) - 1) < 0.1",)))  # the assert itself raises
    assert (typ.status, typ.exception_type) == ("failed", "TypeError")


def test_first_failing_test_wins_and_mixed_verdicts(sb):
    prog = "def f(x):\n    return x + 1 if x < 3 else 0\n"
    r = sb.run(Job(prog, tests=("assert f(1) == 2", "y = f(2)\nassert y == 3", "assert f(5) == 6", "y = f(6)\nassert y == 7")))
    assert (r.status, r.failing_test, r.exception_type, r.verdict) == ("failed", 2, "AssertionError", "mixed")
    r = sb.run(Job(prog, tests=("assert f(5) == 6", "assert 1 / 0")))
    assert (r.status, r.failing_test) == ("failed", 0)


def test_the_expected_side_never_enters_the_sandbox():
    plan = plan_tests(("assert f(1, [2]) == 'secret'", "def __rl_test(candidate):\n    assert candidate(3) == 'other'\n__rl_test(g)\n"))
    assert plan.kind == "io"
    wire = repr(plan.wire())
    assert "secret" not in wire and "other" not in wire
    assert plan.wire() == [["", ["f(1, [2])"]], ["", ["g(3)"]]]


def test_conversion_shapes():
    conv = [
        "assert f(1) == 2",
        "assert 2 == f(1)",
        "assert f(1) is None",
        "assert abs(f(1) - 2) < 1e-6",
        "assert f(1)",
        "assert not f(1)",
        "assert math.fabs(f(1) - 2) <= 1e-3",
        "assert f(1) == 2, 'message'",
        "assert set(f(1)) == set((1, 2))",
        "x = [1]\nassert f(x) == 2",
        "assert f(-1) == -2.5",
        "assert len(f('abc')) == 3",
    ]
    for src in conv:
        assert convert_test(src) is not None, src
    keep = [
        "y = f(1)\nassert y == 2",
        "for i in range(3):\n    assert f(i) == i",
        "assert f(1) == x",
        "assert f(1) * 10**9 == 2",
        "assert f(1) == sys.getsizeof(1)",
        "assert g(1) or f(2)",
        "assert f(1).strip() == 'a'",
    ]
    for src in keep:
        assert convert_test(src) is None, src
    # with entry points known, only calls of those names are the program's
    assert convert_test("assert f(1) == helper(2)", frozenset({"f"})) is None


def test_strict_decoding():
    assert decode_value(["l", [["i", "-1f"], ["f", (1.5).hex()], ["s", "x"], None, True]]) == [-31, 1.5, "x", None, True]
    assert decode_value(["d", [[["t", [["i", "1"]]], ["S", [["b", "6869"]]]]]]) == {(1,): {b"hi"}}
    assert math.isnan(decode_value(["f", "nan"]))
    for bad in [1, 1.5, "x", ["i", 3], ["q", "1"], ["d", [[["l", []], None]]], ["i", "zz"], ["l", "x"], ["s"], {"a": 1}]:
        with pytest.raises(MalformedOutput):
            decode_value(bad)
    deep = None
    for _ in range(200):
        deep = ["l", [deep]]
    with pytest.raises(MalformedOutput):
        decode_value(deep)
    plan = plan_tests(("assert f(1) == 2",))
    base = dict(status="passed", failing_test=None, exception_type=None, line=None, message="")
    assert decide(plan, base, [[0, [["i", "2"]]]])["status"] == "passed"
    assert decide(plan, base, [[0, [["i", "3"]]]])["status"] == "failed"
    for junk in (None, [], [[0, []]], [[1, [["i", "2"]]]], [[0, [["i", "2"]]], [0, [["i", "2"]]]], "x", [[0, [["x"]]]]):
        assert decide(plan, base, junk)["status"] == "crashed", junk


HUMANEVAL_SETUP_FIRST = (32, 38, 44, 50, 53, 151)


@pytest.fixture(scope="module")
def humaneval():
    from rl.tasks.benchmarks import load_humaneval

    return {p.task_id: p for p in load_humaneval()}


def test_defining_check_does_not_pass_humaneval(sb, humaneval):
    jobs, ids = [], []
    for n in HUMANEVAL_SETUP_FIRST:
        p = humaneval[f"HumanEval/{n}"]
        jobs.append(p.job("    return None\n\n\ndef check(candidate):\n    pass\n"))
        ids.append(p.task_id)
    results = sb.map(jobs)
    assert [(t, r.status) for t, r in zip(ids, results) if r.status == "passed"] == []
    # the canonical solutions still pass with the reordered harness
    canon = sb.map([humaneval[t].job(humaneval[t].canonical_solution) for t in ids])
    assert [(t, r.status, r.message) for t, r in zip(ids, canon) if r.status != "passed"] == []


def test_humaneval_conversion_coverage(humaneval):
    kinds = [plan_tests(p.tests, (p.entry_point,)).kind for p in humaneval.values()]
    assert kinds.count("io") >= 155  # every assert of the problem judged outside the sandbox
    assert kinds.count("io") + kinds.count("mixed") >= 160


def test_synthetic_and_mbpp_tests_are_judged_outside_the_sandbox():
    from rl.tasks.benchmarks import load_mbpp
    from rl.tasks.synthetic import make_benchmark

    bench = make_benchmark(n_train_per_template=2, n_heldout_per_template=1)
    assert {p.job(p.canonical_solution).plan.kind for p in bench.train + bench.heldout} == {"io"}
    kinds = [p.job("").plan.kind for p in load_mbpp("all")]
    assert kinds.count("io") >= 970 and len(kinds) == 974


def test_builtins_the_program_redefines(sb):
    # without an entry point, a built-in the program defines is the program's (MBPP's Mbpp/126 is `sum`)
    assert sb.run(Job("def sum(a, b):\n    return a + b\n", tests=("assert sum(10, 15) == 25",))).status == "passed"
    assert sb.run(Job("def sum(a, b):\n    return a - b\n", tests=("assert sum(10, 15) == 25",))).status == "failed"
    # with one, the test's own built-ins are the real ones: redefining them cannot make a test pass
    cheat = "len = lambda v: 3\ndef f(x):\n    return []\n"
    r = sb.run(Job(cheat, tests=("assert len(f(1)) == 3",), entry_point="f"))
    assert (r.status, r.verdict) == ("failed", "io"), r
    # and a program cannot opt out of io judging by redefining one
    assert Job(cheat, tests=("assert len(f(1)) == 3",), entry_point="f").plan.kind == "io"


def test_rewriting_the_harness_itself_cannot_forge_an_io_verdict(sb):
    """A program can rewrite the in-process harness (here its result encoder, through the
    emitter's defaults): in-process verdicts are best effort against that (docs/sandbox.md),
    but a converted test is judged by the caller on the values the program returned."""
    rewrite = (
        "import sys\n"
        "_e = sys._getframe(1).f_globals['_emit']\n"
        "_d = list(_e.__defaults__)\n"
        "_j = _d[-1]\n"
        "def _fake(obj, rec):\n"
        "    if isinstance(obj, dict) and 'status' in obj:\n"
        "        obj = dict(obj, status='passed', test=None)\n"
        "    return _j(obj, _j)\n"
        "_d[-1] = _fake\n"
        "_e.__defaults__ = tuple(_d)\n"
    )
    r = sb.run(Job(WRONG + rewrite, tests=IO_TESTS))
    assert (r.status, r.failing_test, r.verdict) == ("failed", 0, "io"), r
