"""Pass/fail decided where the program cannot reach it: tests as input/output pairs.

A test of the shape ``assert <expression>`` whose expression compares calls of the program's
functions with values the test itself spells out (``assert f(2, 3) == 5``, ``assert 5 == f(2, 3)``,
``assert f(x) is True``, ``assert abs(f(x) - 1.5) < 1e-6``, ``assert f(x)``, ``assert not f(x)``,
``assert sorted(f(x)) == [1, 2]``, ...) is *converted*: the sandboxed process only evaluates the
calls (``f(2, 3)``) and returns their values as plain data (None, bool, int, float, complex, str,
bytes, list, tuple, dict, set, frozenset); the caller decodes them strictly (:func:`decode_value`)
and evaluates the rest of the assertion itself (:func:`decide`), on those plain values, with the
real built-ins. The expected side of the assertion never enters the sandbox, and nothing the
program does in its own process (patching built-ins, the harness's frames, its result channel)
can make a wrong value compare equal. What cannot be converted (loops, helper state, names the
test binds) still runs inside the sandboxed process, as before: such tests are reported as
``verdict="in_process"`` (``"mixed"`` when a job has both kinds).

Conversion (:func:`plan_tests`) is generic Python: a test is one ``assert`` (optionally after
statements, which run in the sandbox before the calls), or the one-assert wrapper
``def F(candidate):\\n    assert ...\\nF(name)`` that :mod:`rl.tasks.benchmarks` builds for
HumanEval. A call is *untrusted* (evaluated in the sandbox) when it calls a plain name that is not
one of the pure built-ins below (with ``entry_points`` given: exactly those names); everything
else in the expression must be literals, pure built-ins (``abs``, ``len``, ``sorted``, ``set``,
``math.isclose``, ...), arithmetic and comparisons.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from dataclasses import dataclass, field

__all__ = [
    "IOTest",
    "Plan",
    "plan_tests",
    "convert_test",
    "shadowed_names",
    "decode_value",
    "decide",
    "MalformedOutput",
    "MAX_DEPTH",
    "VERDICTS",
]

VERDICTS = ("io", "in_process", "mixed")
#: Nesting depth of a returned value beyond which it is not plain data (the runner refuses it too).
MAX_DEPTH = 100
_V = "__rl_v"  # the name of the decoded values in the trusted expression

# Pure functions the trusted side may apply to returned values (never the program's own).
_SAFE_FUNCS = {
    f.__name__: f
    for f in (abs, round, len, sorted, set, frozenset, list, tuple, dict, str, int, float, bool, complex, sum, min, max, all, any, reversed)
}
_SAFE_FUNCS["type"] = type
_SAFE_MATH = {"fabs", "isclose", "sqrt", "floor", "ceil", "isnan", "isinf", "isfinite", "pi", "e", "inf", "nan", "trunc", "log", "exp"}
_TAINT_FREE_OPS = (ast.Mult, ast.Mod, ast.Pow, ast.LShift, ast.MatMult)  # no returned value may flow into these


class _NotConvertible(Exception):
    pass


class MalformedOutput(ValueError):
    """The sandboxed process's outputs are not well-formed plain data."""


@dataclass(frozen=True)
class IOTest:
    """One converted test: ``prefix`` (statements run in the sandbox first, may be ""), ``calls``
    (expressions evaluated in the sandbox; their values come back), ``expr`` (the assertion's
    condition with the calls replaced by ``__rl_v[i]``, evaluated by the caller), ``message``
    (the assert's literal message, if any)."""

    prefix: str
    calls: tuple[str, ...]
    expr: str
    message: str = ""
    code: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Plan:
    """Per test of a job: its :class:`IOTest`, or None (the test runs in the sandbox as is)."""

    tests: tuple[IOTest | None, ...]

    @property
    def kind(self) -> str:
        n_io = sum(t is not None for t in self.tests)
        if n_io == 0:
            return "in_process"
        return "io" if n_io == len(self.tests) else "mixed"

    def wire(self) -> list:
        """What the sandboxed process gets for each test: None (run the test source) or
        ``[prefix, [call, ...]]`` (never the assertion's expected side)."""
        return [None if t is None else [t.prefix, list(t.calls)] for t in self.tests]


# ------------------------------------------------------------------------------------------- planning


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(self.new, node.ctx), node) if node.id == self.old else node


class _Split(ast.NodeTransformer):
    """Replace untrusted calls by ``__rl_v[i]``; reject anything outside the trusted whitelist."""

    def __init__(self, entry_points: frozenset[str], shadowed: frozenset[str] = frozenset()) -> None:
        self.entry_points, self.shadowed = entry_points, shadowed
        self.calls: list[str] = []

    def _untrusted(self, node: ast.AST) -> bool:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            return False
        name = node.func.id
        if self.entry_points:
            return name in self.entry_points
        return name not in _SAFE_FUNCS or name in self.shadowed

    def _placeholder(self, node: ast.Call) -> ast.AST:
        self.calls.append(ast.unparse(node))
        sub = ast.Subscript(ast.Name(_V, ast.Load()), ast.Constant(len(self.calls) - 1), ast.Load())
        return ast.copy_location(sub, node)

    def convert(self, node: ast.AST, may_call: bool = True) -> ast.AST:
        """``may_call``: False where Python might not evaluate the node (a later operand of
        ``and``/``or``, a branch of ``x if c else y``): no untrusted call may sit there."""
        if self._untrusted(node):
            if not may_call:
                raise _NotConvertible("a call that Python may skip")
            return self._placeholder(node)
        return self._trusted(node, may_call)

    def _trusted(self, node: ast.AST, may_call: bool) -> ast.AST:
        c = self.convert
        if isinstance(node, ast.Constant):
            if node.value is Ellipsis:
                raise _NotConvertible("...")
            return node
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return type(node)([c(e, may_call) for e in node.elts], *([ast.Load()] if not isinstance(node, ast.Set) else []))
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _NotConvertible("**")
            return ast.Dict([c(k, may_call) for k in node.keys], [c(v, may_call) for v in node.values])
        if isinstance(node, ast.UnaryOp):
            return ast.UnaryOp(node.op, c(node.operand, may_call))
        if isinstance(node, ast.BinOp):
            left, right = c(node.left, may_call), c(node.right, may_call)
            if isinstance(node.op, _TAINT_FREE_OPS) and (_tainted(left) or _tainted(right)):
                raise _NotConvertible("a returned value in *, %, ** or <<")
            if isinstance(node.op, (ast.Pow, ast.LShift)) and not (
                isinstance(right, ast.Constant) and isinstance(right.value, int) and abs(right.value) <= 64
            ):
                raise _NotConvertible("a big power")
            return ast.BinOp(left, node.op, right)
        if isinstance(node, ast.BoolOp):
            return ast.BoolOp(node.op, [c(v, may_call and i == 0) for i, v in enumerate(node.values)])
        if isinstance(node, ast.IfExp):
            return ast.IfExp(c(node.test, may_call), c(node.body, False), c(node.orelse, False))
        if isinstance(node, ast.Compare):
            return ast.Compare(c(node.left, may_call), node.ops, [c(x, may_call) for x in node.comparators])
        if isinstance(node, ast.Subscript):
            return ast.Subscript(c(node.value, may_call), c(node.slice, may_call), ast.Load())
        if isinstance(node, ast.Slice):
            parts = [None if p is None else c(p, may_call) for p in (node.lower, node.upper, node.step)]
            return ast.Slice(*parts)
        if self._safe_func(node):  # math.pi, math.inf...
            return node
        if isinstance(node, ast.Call) and self._safe_func(node.func):
            args = [c(a, may_call) for a in node.args]
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise _NotConvertible("* or ** arguments")
            return ast.Call(node.func, args, [ast.keyword(k.arg, c(k.value, may_call)) for k in node.keywords])
        raise _NotConvertible(type(node).__name__)

    def _safe_func(self, func: ast.AST) -> bool:
        if isinstance(func, ast.Name):
            return func.id in _SAFE_FUNCS and func.id not in self.shadowed
        is_math = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math"
        return is_math and func.attr in _SAFE_MATH and "math" not in self.shadowed


def _tainted(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == _V for n in ast.walk(node))


def _unwrap(mod: ast.Module) -> tuple[list[ast.stmt], ast.Assert]:
    """(prefix statements, the assert) of a test, or raise _NotConvertible."""
    body = mod.body
    if (
        len(body) == 2
        and isinstance(body[0], ast.FunctionDef)
        and isinstance(body[1], ast.Expr)
        and isinstance(body[1].value, ast.Call)
        and isinstance(body[1].value.func, ast.Name)
        and body[1].value.func.id == body[0].name
    ):
        fn, call = body[0], body[1].value
        params = fn.args
        if (
            len(params.args) == 1
            and not (params.posonlyargs or params.kwonlyargs or params.vararg or params.kwarg or fn.decorator_list)
            and len(call.args) == 1
            and not call.keywords
            and isinstance(call.args[0], ast.Name)
            and len(fn.body) == 1
            and isinstance(fn.body[0], ast.Assert)
        ):
            return [], _Rename(params.args[0].arg, call.args[0].id).visit(fn.body[0])
        raise _NotConvertible("a function wrapper of another shape")
    if body and isinstance(body[-1], ast.Assert):
        return body[:-1], body[-1]
    raise _NotConvertible("not an assert")


def convert_test(src: str, entry_points: frozenset[str] = frozenset(), shadowed: frozenset[str] = frozenset()) -> IOTest | None:
    """The :class:`IOTest` of one test's source, or None when it must run in the sandbox as is.

    ``shadowed``: pure built-ins the program or setup may redefine (:func:`shadowed_names`);
    without ``entry_points`` their calls are the program's, as Python would resolve them."""
    try:
        prefix, node = _unwrap(ast.parse(src))
        if prefix and _bound(prefix) & (set(_SAFE_FUNCS) | {"math"}):
            raise _NotConvertible("the test's own statements rebind a built-in")
        split = _Split(entry_points, shadowed)
        expr = split.convert(node.test)
        truth = node.test
        while isinstance(truth, ast.UnaryOp) and isinstance(truth.op, ast.Not):
            truth = truth.operand
        if split.calls and split._untrusted(truth):
            # ``assert f(x)`` / ``assert not f(x)`` judge only the value's truth (a re.Match, say):
            # the sandbox returns that truth as a bool, as Python's ``not not`` makes it.
            split.calls[0] = f"not not ({split.calls[0]})"
        if any(_names_other_than_safe(expr)) or any(isinstance(n, ast.Name) and n.id in shadowed for n in ast.walk(expr)):
            raise _NotConvertible("free names")
        # A message only matters once the assertion has failed: a computed one is left out.
        message = str(node.msg.value) if isinstance(node.msg, ast.Constant) else ""
        expr_src = ast.unparse(ast.fix_missing_locations(expr))
        code = compile(expr_src, "<verdict>", "eval", dont_inherit=True)
    except (_NotConvertible, SyntaxError, ValueError, TypeError, RecursionError):
        return None
    pre = "\n".join(ast.unparse(s) for s in prefix)
    return IOTest(prefix=pre, calls=tuple(split.calls), expr=expr_src, message=message, code=code)


def _names_other_than_safe(expr: ast.AST):
    for n in ast.walk(expr):
        if isinstance(n, ast.Name) and n.id not in _SAFE_FUNCS and n.id not in (_V, "math"):
            yield n.id


@functools.lru_cache(maxsize=4096)
def plan_tests(tests: tuple[str, ...], entry_points: tuple[str, ...] = (), shadowed: tuple[str, ...] = ()) -> Plan:
    """The :class:`Plan` of a job's tests (cached: one parse per distinct arguments)."""
    names, shadow = frozenset(entry_points), frozenset(shadowed)
    return Plan(tuple(convert_test(t, names, shadow) for t in tests))


def _bound(stmts) -> set[str]:
    """Every name the statements bind anywhere (assignments, defs, imports, loop targets...)."""
    out: set[str] = set()
    for s in stmts:
        for n in ast.walk(s):
            if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
                out.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, ast.Import):  # ``import math`` binds the real one
                out.update((a.asname or a.name).split(".")[0] for a in n.names if (a.name, a.asname or "math") != ("math", "math"))
            elif isinstance(n, ast.ImportFrom):
                out.update(a.asname or a.name for a in n.names)
            elif isinstance(n, (ast.Global, ast.Nonlocal)):
                out.update(n.names)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                out.add(n.name)
    return out


_SAFE_WORD = re.compile(r"\b(?:" + "|".join(sorted(_SAFE_FUNCS) + ["math"]) + r")\b")


def shadowed_names(*sources: str) -> tuple[str, ...]:
    """The pure built-ins (and ``math``) that ``sources`` (a program, its setup) bind anywhere:
    for jobs without an entry point, a test's calls of those names are then the program's."""
    hits: set[str] = set()
    for src in sources:
        if not _SAFE_WORD.search(src):
            continue
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # the program fails to compile anyway
        hits |= _bound(tree.body) & (set(_SAFE_FUNCS) | {"math"})
    return tuple(sorted(hits))


# ------------------------------------------------------------------------------------------- outputs


def decode_value(node, depth: int = 0):
    """A returned value from its tagged form (see the runner's ``_tag`` in worker.py), strictly:
    only the tags below, exact types, bounded depth. Raises :class:`MalformedOutput`."""
    if depth > MAX_DEPTH:
        raise MalformedOutput("nested too deeply")
    if node is None or node is True or node is False:
        return node
    if type(node) is not list or not node or type(node[0]) is not str:
        raise MalformedOutput(f"not a tagged value: {type(node).__name__}")
    tag, rest = node[0], node[1:]
    try:
        if tag in ("i", "f", "c", "s", "b") and not all(type(x) is str for x in rest):
            raise MalformedOutput(f"bad payload for tag {tag!r}")
        if tag == "i" and len(rest) == 1:
            return int(rest[0], 16)
        if tag == "f" and len(rest) == 1:
            return float.fromhex(rest[0])
        if tag == "c" and len(rest) == 2:
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag == "s" and len(rest) == 1:
            return rest[0]
        if tag == "b" and len(rest) == 1:
            return bytes.fromhex(rest[0])
        if len(rest) != 1 or type(rest[0]) is not list:
            raise MalformedOutput(f"bad tag {tag!r}")
        items = rest[0]
        if tag == "d":
            out = {}
            for kv in items:
                if type(kv) is not list or len(kv) != 2:
                    raise MalformedOutput("bad dict item")
                out[decode_value(kv[0], depth + 1)] = decode_value(kv[1], depth + 1)
            return out
        kinds = {"l": list, "t": tuple, "S": set, "F": frozenset}
        if tag in kinds:
            return kinds[tag](decode_value(x, depth + 1) for x in items)
    except MalformedOutput:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # bad hex, unhashable keys...
        raise MalformedOutput(f"bad value for tag {tag!r}: {type(e).__name__}") from None
    raise MalformedOutput(f"unknown tag {tag!r}")


def _short(v, n: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _parse_outputs(raw, plan: Plan) -> dict[int, list]:
    """``[[test index, [tagged value, ...]], ...]`` -> {index: [values]}; MalformedOutput if wrong."""
    if type(raw) is not list:
        raise MalformedOutput("outputs is not a list")
    out: dict[int, list] = {}
    for entry in raw:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not int or type(entry[1]) is not list:
            raise MalformedOutput("bad outputs entry")
        i, vals = entry
        if not 0 <= i < len(plan.tests) or plan.tests[i] is None or i in out or len(vals) != len(plan.tests[i].calls):
            raise MalformedOutput(f"outputs for test {i} do not match its calls")
        out[i] = [decode_value(v) for v in vals]
    return out


def _check(t: IOTest, values: list) -> tuple[bool, str | None]:
    """(passed, exception type) of one converted assertion on the decoded values."""
    try:
        ok = eval(t.code, {"__builtins__": {}, "math": math, _V: values, **_SAFE_FUNCS})  # noqa: S307 - trusted test source, plain data
        return bool(ok), None if ok else "AssertionError"
    except RecursionError:
        return False, "RecursionError"
    except Exception as e:  # the assertion itself raised, as it would have in the program's process
        return False, type(e).__name__


def decide(plan: Plan, result: dict, outputs) -> dict:
    """The final ExecResult fields of a job: the sandbox's own report (``result``) with every
    converted test judged here, on the returned ``outputs``. The first failing test wins, as when
    the tests run in order; a report that claims success without well-formed outputs for every
    converted test is the sample's crash."""
    result = dict(result, verdict=plan.kind)
    if plan.kind == "in_process":
        return result
    status = result.get("status")
    end = None if status == "passed" else result.get("failing_test")
    if status != "passed" and end is None:
        return result  # setup or program failed (or no test was reached): nothing more to judge
    try:
        got = _parse_outputs(outputs if outputs is not None else [], plan)
    except MalformedOutput as e:
        return dict(
            result,
            status="crashed",
            failing_test=None,
            exception_type="MalformedOutput",
            line=None,
            message=f"malformed result record: {e}",
        )
    for i, t in enumerate(plan.tests):
        if end is not None and i >= end:
            break
        if t is None:
            continue
        if i not in got:
            if status == "passed":
                return dict(
                    result,
                    status="crashed",
                    failing_test=i,
                    exception_type="MalformedOutput",
                    line=None,
                    message=f"malformed result record: no outputs for test {i}",
                )
            break
        ok, exc = _check(t, got[i])
        if not ok:
            shown = ", ".join(f"{c} returned {_short(v)}" for c, v in zip(t.calls, got[i]))
            msg = f"{exc}: {t.message}" if t.message and exc == "AssertionError" else exc
            return dict(result, status="failed", failing_test=i, exception_type=exc, line=None, message=f"{msg} (test {i}: {shown})"[:2000])
    return result
