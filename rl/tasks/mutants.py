"""A honeypot factory: mutants of canonical solutions with known wrong lines.

A mutation operator changes one AST node of the canonical program on one annotated line
(:func:`rl.tasks.lines.annotated_lines`; for HumanEval, never the prompt). The mutant's text is the
canonical text with only that node's source segment replaced by ``ast.unparse`` of the mutated
node (parenthesised when needed), so every other line keeps its exact text; a candidate is
accepted only if the new text parses to exactly the mutated AST. ``wrong_lines`` are the
1-based lines of the mutant program that the mutation changed.

Operators (:data:`OPERATORS`):

``const_off_by_one``  an integer literal ``c`` becomes ``c + 1`` or ``c - 1`` (not inside ``range()``).
``range_bound``       a ``range()`` bound ``e`` becomes ``e + 1`` / ``e - 1`` (stop, or start when given).
``arith_op``          ``+ -> -``, ``- -> +``, ``* -> +``, ``/ -> *``, ``// -> /``, ``% -> //``, ``** -> *``
                      (binary operators and augmented assignments).
``compare_op``        ``< <=``, ``> >=``, ``== !=``, ``in / not in``, ``is / is not`` (each way).
``wrong_name``        a variable read becomes another variable of the same function that is bound
                      on an earlier line (or is a parameter).
``remove_stmt``       a simple statement with siblings is deleted. Its wrong line is the annotated
                      line just *before* the gap (the line after it when the gap opens the
                      completion).
``wrong_return``      ``return e``: a bool literal is negated, a number literal gets ``+ 1``,
                      otherwise ``e`` becomes the value of another ``return`` of the function, or
                      ``None``.
``negate_cond``       the test of an ``if``/``elif``/``while``/conditional expression is negated.
``bool_op``           ``and <-> or``.

Every mutant is run in the sandbox on the problem's tests; one that passes them all (an
equivalent mutant, or one the tests cannot see) is dropped. Choice of sites is deterministic
given ``seed`` (``random.Random(f"{seed}:{task_id}")``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import random
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rl.tasks import lines as _lines

__all__ = ["Mutant", "Candidate", "OPERATORS", "candidates", "generate", "MutantRun"]

OPERATORS = (
    "const_off_by_one",
    "range_bound",
    "arith_op",
    "compare_op",
    "wrong_name",
    "remove_stmt",
    "wrong_return",
    "negate_cond",
    "bool_op",
)

_ARITH = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Add,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_CMP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutant:
    """One mutant program.

    task_id: the problem; operator: one of OPERATORS; program: the full mutant program text;
    wrong_lines: 1-based lines of ``program`` the mutation changed (see the module docstring for
    ``remove_stmt``); description: what changed, for people.
    """

    task_id: str
    operator: str
    program: str
    wrong_lines: tuple[int, ...]
    description: str


@dataclass(frozen=True)
class Candidate:
    """A mutant before execution: the program text, its wrong lines and a description."""

    operator: str
    program: str
    wrong_lines: tuple[int, ...]
    description: str


@dataclass
class MutantRun:
    """The result of :func:`generate`: kept mutants and per-operator counts.

    stats[operator] = {"candidates": sites found, "tried": run in the sandbox,
    "kept": failing (kept), "dropped": passing every test (dropped)}. ``skipped_problems`` lists
    problems whose canonical solution itself fails in the sandbox.
    """

    mutants: list[Mutant]
    stats: dict[str, dict[str, int]]
    skipped_problems: list[str] = field(default_factory=list)


def _parse(src: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(src)
    except (SyntaxError, ValueError):
        return None


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    par = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            par[child] = node
    return par


class _Ctx:
    """Canonical source, its tree, annotated lines and helpers shared by the operators."""

    def __init__(self, src: str, prompt: str):
        self.src = src
        self.prompt = prompt
        self.tree = _parse(src)
        self.ann = set(_lines.annotated_lines(src, prompt)) if self.tree is not None else set()
        self.lines = src.split("\n")
        self.nodes = list(ast.walk(self.tree)) if self.tree is not None else []
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.parent = _parents(self.tree) if self.tree is not None else {}

    def single_line(self, node: ast.AST) -> bool:
        return getattr(node, "lineno", None) is not None and node.lineno == node.end_lineno and node.lineno in self.ann

    def _col(self, ln: int, byte_col: int) -> int:
        return len(self.lines[ln - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def replace(self, node: ast.AST, mutate: Callable[[ast.AST, ast.AST], ast.AST]) -> str | None:
        """Mutant source: ``mutate(copy_of_node, copy_of_tree)`` returns the node that replaces
        ``node``'s segment (it may edit the copy in place). None if no text realises the AST."""
        tree2 = copy.deepcopy(self.tree)
        nodes2 = list(ast.walk(tree2))
        target = nodes2[self.index[id(node)]]
        par2 = _parents(tree2)
        new = mutate(target, tree2)
        if new is None:
            return None
        if new is not target:  # splice into the parent
            p = par2[target]
            for name, value in ast.iter_fields(p):
                if value is target:
                    setattr(p, name, new)
                    break
                if isinstance(value, list) and any(v is target for v in value):
                    setattr(p, name, [new if v is target else v for v in value])
                    break
            else:  # pragma: no cover
                return None
        want = ast.dump(tree2)
        ln = node.lineno
        line = self.lines[ln - 1]
        a, b = self._col(ln, node.col_offset), self._col(ln, node.end_col_offset)
        text = ast.unparse(new)
        for t in (text, f"({text})"):
            new_line = line[:a] + t + line[b:]
            if new_line == line:
                return None
            out = "\n".join(self.lines[: ln - 1] + [new_line] + self.lines[ln:])
            got = _parse(out)
            if got is not None and ast.dump(got) == want:
                return out
        return None

    def describe(self, op: str, out: str, ln: int) -> str:
        return f"{op}: line {ln}: `{self.lines[ln - 1].strip()}` -> `{out.split(chr(10))[ln - 1].strip()}`"


def _func_of(ctx: _Ctx, node: ast.AST) -> ast.AST | None:
    p = ctx.parent.get(node)
    while p is not None and not isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        p = ctx.parent.get(p)
    return p


def _in_range_call(ctx: _Ctx, node: ast.AST) -> bool:
    p = ctx.parent.get(node)
    while p is not None and not isinstance(p, ast.stmt):
        if isinstance(p, ast.Call) and isinstance(p.func, ast.Name) and p.func.id == "range":
            return True
        p = ctx.parent.get(p)
    return False


def _mk(ctx: _Ctx, op: str, node: ast.AST, mutate) -> Candidate | None:
    out = ctx.replace(node, mutate)
    if out is None:
        return None
    return Candidate(op, out, (node.lineno,), ctx.describe(op, out, node.lineno))


def _op_const(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, ast.Constant) and type(n.value) is int and ctx.single_line(n) and not _in_range_call(ctx, n):
            d = rng.choice((1, -1))

            def m(t, _tree, d=d):
                t.value = t.value + d
                return t

            yield n, m


def _op_range(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "range" and n.args and 1 <= len(n.args) <= 3:
            arg = n.args[1] if len(n.args) >= 2 and rng.random() < 0.7 else n.args[0]
            if not ctx.single_line(arg):
                continue
            d = rng.choice((1, -1))

            def m(t, _tree, d=d):
                if isinstance(t, ast.Constant) and type(t.value) is int:
                    return ast.Constant(t.value + d)
                return ast.BinOp(t, ast.Add() if d > 0 else ast.Sub(), ast.Constant(1))

            yield arg, m


def _op_arith(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH and ctx.single_line(n):

            def m(t, _tree):
                t.op = _ARITH[type(t.op)]()
                return t

            yield n, m
        elif isinstance(n, ast.AugAssign) and type(n.op) in _ARITH and ctx.single_line(n):

            def m(t, _tree):
                t.op = _ARITH[type(t.op)]()
                return t

            yield n, m


def _op_compare(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, ast.Compare) and ctx.single_line(n):
            ks = [k for k, o in enumerate(n.ops) if type(o) in _CMP]
            if not ks:
                continue
            k = rng.choice(ks)

            def m(t, _tree, k=k):
                t.ops = list(t.ops)
                t.ops[k] = _CMP[type(t.ops[k])]()
                return t

            yield n, m


def _bindings(fn: ast.AST) -> dict[str, int]:
    """name -> first line where the function binds it (parameters: the def line)."""
    out: dict[str, int] = {}
    a = fn.args
    for arg in a.posonlyargs + a.args + a.kwonlyargs + ([a.vararg] if a.vararg else []) + ([a.kwarg] if a.kwarg else []):
        out.setdefault(arg.arg, 0)
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            if n.id not in out or out[n.id] > n.lineno:
                out[n.id] = n.lineno
    return out


def _op_name(ctx: _Ctx, rng: random.Random):
    cache: dict[int, dict[str, int]] = {}
    for n in ctx.nodes:
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and ctx.single_line(n):
            fn = _func_of(ctx, n)
            if fn is None or isinstance(fn, ast.Lambda):
                continue
            b = cache.setdefault(id(fn), _bindings(fn))
            if n.id not in b:
                continue
            others = sorted(k for k, first in b.items() if k != n.id and first < n.lineno)
            if not others:
                continue
            new = rng.choice(others)

            def m(t, _tree, new=new):
                t.id = new
                return t

            yield n, m


def _op_remove(ctx: _Ctx, rng: random.Random):
    """Yields finished candidates (a deletion changes line numbers)."""
    for n in ctx.nodes:
        for name in ("body", "orelse", "finalbody"):
            body = getattr(n, name, None)
            if not isinstance(body, list) or len(body) < 2:
                continue
            for s in body:
                if (
                    isinstance(s, (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))
                    or isinstance(s, _lines._COMPOUND)
                    or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                ):
                    continue
                span = range(s.lineno, s.end_lineno + 1)
                if not all(ln in ctx.ann for ln in span):
                    continue
                # the statement must own its lines (no `a = 1; b = 2`)
                seg = ast.get_source_segment(ctx.src, s) or ""
                own = "\n".join(ctx.lines[ln - 1] for ln in span).strip()
                if seg.strip() != own:
                    continue
                out = "\n".join(ctx.lines[: s.lineno - 1] + ctx.lines[s.end_lineno :])
                if _parse(out) is None:
                    continue
                ann2 = _lines.annotated_lines(out, ctx.prompt)
                before = [ln for ln in ann2 if ln < s.lineno]
                wrong = before[-1] if before else next((ln for ln in ann2 if ln >= s.lineno), None)
                if wrong is None:
                    continue
                desc = f"remove_stmt: deleted line {s.lineno} `{ctx.lines[s.lineno - 1].strip()}`" + (
                    f" (+{len(span) - 1} continuation lines)" if len(span) > 1 else ""
                )
                yield Candidate("remove_stmt", out, (wrong,), desc)


def _op_return(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if not (isinstance(n, ast.Return) and n.value is not None and ctx.single_line(n.value)):
            continue
        v = n.value
        if isinstance(v, ast.Constant) and isinstance(v.value, bool):

            def m(t, _tree):
                return ast.Constant(not t.value)
        elif isinstance(v, ast.Constant) and type(v.value) in (int, float):

            def m(t, _tree):
                return ast.Constant(t.value + 1)
        elif isinstance(v, ast.Constant) and v.value is None:
            continue
        else:
            fn = _func_of(ctx, n)
            mine = ast.unparse(v)
            alts = []
            if fn is not None:
                alts = sorted(
                    {
                        ast.unparse(r.value)
                        for r in ast.walk(fn)
                        if isinstance(r, ast.Return) and r.value is not None and _func_of(ctx, r) is fn
                    }
                    - {mine}
                )
            alt = rng.choice(alts) if alts else "None"

            def m(t, _tree, alt=alt):
                return ast.parse(alt, mode="eval").body

        yield v, m


def _op_negate(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, (ast.If, ast.While, ast.IfExp)) and ctx.single_line(n.test):

            def m(t, _tree):
                if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
                    return t.operand
                return ast.UnaryOp(ast.Not(), t)

            yield n.test, m


def _op_boolop(ctx: _Ctx, rng: random.Random):
    for n in ctx.nodes:
        if isinstance(n, ast.BoolOp) and ctx.single_line(n):

            def m(t, _tree):
                t.op = ast.Or() if isinstance(t.op, ast.And) else ast.And()
                return t

            yield n, m


_SITES = {
    "const_off_by_one": _op_const,
    "range_bound": _op_range,
    "arith_op": _op_arith,
    "compare_op": _op_compare,
    "wrong_name": _op_name,
    "remove_stmt": _op_remove,
    "wrong_return": _op_return,
    "negate_cond": _op_negate,
    "bool_op": _op_boolop,
}


def candidates(program: str, prompt: str = "", operators=OPERATORS, rng: random.Random | None = None) -> dict[str, list[Candidate]]:
    """All mutants of ``program`` per operator (no execution). ``prompt`` is not mutated."""
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {sorted(unknown)}; expected some of {OPERATORS}")
    rng = rng or random.Random(0)
    ctx = _Ctx(program, prompt)
    out: dict[str, list[Candidate]] = {op: [] for op in operators}
    if ctx.tree is None:
        return out
    for op in operators:
        seen = set()
        for item in _SITES[op](ctx, rng):
            cand = item if isinstance(item, Candidate) else _mk(ctx, op, *item)
            if cand is None or cand.program == program or cand.program in seen:
                continue
            seen.add(cand.program)
            out[op].append(cand)
    return out


def _order(per_op: dict[str, list[Candidate]], rng: random.Random) -> list[Candidate]:
    """Round-robin over operators in a random order, a random site of each in turn."""
    pools = {op: rng.sample(c, len(c)) for op, c in per_op.items() if c}
    ops = rng.sample(sorted(pools), len(pools))
    out: list[Candidate] = []
    while any(pools[o] for o in ops):
        for o in ops:
            if pools[o]:
                out.append(pools[o].pop())
    return out


def generate(
    problems,
    per_problem: int | None = 3,
    seed: int = 0,
    sandbox=None,
    operators=OPERATORS,
    tries_per_mutant: int = 3,
    progress: bool = False,
) -> MutantRun:
    """Mutants of each problem's canonical program that fail at least one test.

    per_problem: mutants to keep per problem (None: every failing candidate). At most
    ``tries_per_mutant * per_problem`` candidates per problem are run (in the order of
    :func:`_order`); the first ``per_problem`` failing ones are kept.
    sandbox: an open :class:`rl.execution.sandbox.Sandbox` (default: a 2-worker one with a 2 s timeout).
    """
    from rl.execution import sandbox as _sb

    if per_problem is not None and (not isinstance(per_problem, int) or per_problem < 1):
        raise ValueError(f"per_problem must be a positive int or None, got {per_problem!r}")
    stats = {op: Counter() for op in operators}
    plan: list[tuple[object, list[Candidate]]] = []
    for p in problems:
        rng = random.Random(f"{seed}:{p.task_id}")
        prompt = p.prompt if p.source == "humaneval" else ""
        per_op = candidates(p.canonical_program, prompt, operators, rng)
        for op, cs in per_op.items():
            stats[op]["candidates"] += len(cs)
        order = _order(per_op, rng)
        if per_problem is not None:
            order = order[: tries_per_mutant * per_problem]
        plan.append((p, order))
    jobs = []
    for p, order in plan:
        jobs.append(_sb.Job(program=p.canonical_program, tests=p.tests, setup=p.setup, entry_point=p.entry_point))
        jobs += [_sb.Job(program=c.program, tests=p.tests, setup=p.setup, entry_point=p.entry_point) for c in order]
    own = sandbox is None
    sb = _sb.Sandbox(workers=2, limits=_sb.Limits(timeout_s=2.0, cpu_s=4)) if own else sandbox
    try:
        results = sb.map(jobs, progress=progress)
    finally:
        if own:
            sb.close()
    mutants: list[Mutant] = []
    skipped: list[str] = []
    k = 0
    for p, order in plan:
        canon, res = results[k], results[k + 1 : k + 1 + len(order)]
        k += 1 + len(order)
        if canon.status != "passed":
            skipped.append(p.task_id)
            continue
        kept = 0
        for c, r in zip(order, res):
            if per_problem is not None and kept >= per_problem:
                break
            stats[c.operator]["tried"] += 1
            if r.status == "passed":
                stats[c.operator]["dropped"] += 1
                continue
            stats[c.operator]["kept"] += 1
            kept += 1
            mutants.append(Mutant(p.task_id, c.operator, c.program, c.wrong_lines, c.description))
    return MutantRun(
        mutants, {op: {key: int(c[key]) for key in ("candidates", "tried", "kept", "dropped")} for op, c in stats.items()}, skipped
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m rl.tasks.mutants --benchmark humaneval``: kept/dropped counts per operator."""
    from rl.tasks import benchmarks

    ap = argparse.ArgumentParser(prog="python -m rl.tasks.mutants", description=main.__doc__)
    ap.add_argument("--benchmark", choices=benchmarks.BENCHMARKS, default="humaneval")
    ap.add_argument("--per-problem", type=int, default=0, help="0: run every candidate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    a = ap.parse_args(argv)
    probs = benchmarks.load(a.benchmark)[: a.limit]
    run = generate(probs, per_problem=a.per_problem or None, seed=a.seed, progress=True)
    print(
        f"{a.benchmark}: {len(probs)} problems, {len(run.mutants)} mutants kept, "
        f"{len(run.skipped_problems)} problems skipped (canonical fails: {run.skipped_problems})"
    )
    print(f"{'operator':18s} {'candidates':>10s} {'tried':>6s} {'kept':>6s} {'dropped':>8s} {'kept %':>7s}")
    for op, s in run.stats.items():
        pct = 100 * s["kept"] / s["tried"] if s["tried"] else float("nan")
        print(f"{op:18s} {s['candidates']:10d} {s['tried']:6d} {s['kept']:6d} {s['dropped']:8d} {pct:7.1f}")
    tot = {key: sum(s[key] for s in run.stats.values()) for key in ("candidates", "tried", "kept", "dropped")}
    print(
        f"{'total':18s} {tot['candidates']:10d} {tot['tried']:6d} {tot['kept']:6d} {tot['dropped']:8d} "
        f"{100 * tot['kept'] / max(tot['tried'], 1):7.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
