"""Annotatable lines of a program, and the line truth of generated code.

Line numbers are always 1-based line numbers of the **full program text** (for HumanEval,
``prompt + completion``; for MBPP the completion is the whole program).

Annotated lines (:func:`annotated_lines`)
-----------------------------------------
A line is annotated when it lies in the completion (the part after ``prompt``; the line on
which the completion starts counts when it holds any completion text) and it is

* not blank,
* not a comment-only line,
* not part of a bare string-literal statement (a docstring), when the program parses.

Every physical line of a multi-line statement is annotated on its own (it is what an
annotator sees). For HumanEval the prompt (signature + docstring) is never annotated.

Line truth (:func:`line_truth`), the rule
-----------------------------------------
``+1`` = correct, ``-1`` = wrong, for every annotated line.

1. The program passed all its tests: every annotated line is correct.
2. Otherwise the annotated lines are grouped into *units* (one simple statement, one
   compound-statement header such as ``for ...:``/``elif ...:``/``except ...:``, or one other
   line such as ``else:``), each normalised to ``(depth, ast.unparse(...))``. The program's
   units are aligned to the canonical program's with ``difflib.SequenceMatcher`` twice: on
   the plain normalised text and after renaming locally bound names to ``v0, v1, ...`` in
   order of first appearance. The alignment that leaves fewer lines unmatched wins (ties: the
   plain one), so renamed variables alone do not make lines wrong; its unmatched units are
   *diff-wrong*. When the alignment says
   canonical units are missing at a gap, the unit just before the gap is diff-wrong (the unit
   after it when the gap is at the very start).
3. The *raise line*: ``ExecResult.line`` when it is an annotated line (the innermost frame of
   the program's traceback; the error line for a syntax error).
4. Wrong lines = all lines of the diff-wrong units, plus the raise line (``raise_line="union"``,
   the default). If this is empty (the program fails yet matches the canonical solution
   line for line, e.g. the failure comes from the unannotated prompt), the last annotated line
   is wrong.

When the program does not parse, units are single lines normalised by collapsing whitespace
and dropping comments (for both programs), and only the plain alignment is used.
See docs/annotation.md for the measured agreement of this rule with hand labels.
"""

from __future__ import annotations

import ast
import copy
import difflib
import warnings
from dataclasses import dataclass

__all__ = [
    "annotated_lines",
    "completion_start_line",
    "diff_wrong_lines",
    "line_truth",
    "truth_for_problem",
    "RAISE_LINE_MODES",
]

RAISE_LINE_MODES = ("union", "fallback", "ignore")


def _parse(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def completion_start_line(code: str, prompt: str = "") -> int:
    """1-based line of ``code`` on which the completion (the text after ``prompt``) starts."""
    if not prompt:
        return 1
    if not code.startswith(prompt):
        raise ValueError("the program does not start with its prompt")
    return prompt.count("\n") + 1


def _docstring_lines(tree: ast.Module) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def annotated_lines(code: str, prompt: str = "") -> list[int]:
    """The annotated line numbers of ``code`` (see the module docstring), ascending."""
    start = completion_start_line(code, prompt)
    text_lines = code.split("\n")
    tree = _parse(code)
    doc = _docstring_lines(tree) if tree is not None else set()
    out = []
    for i, t in enumerate(text_lines, 1):
        if i < start:
            continue
        if i == start and prompt and not prompt.endswith("\n"):
            t = t[len(prompt) - prompt.rfind("\n") - 1 :]  # only the completion's part of that line
        s = t.strip()
        if not s or s.startswith("#") or i in doc:
            continue
        out.append(i)
    return out


# --------------------------------------------------------------------------- units


_COMPOUND = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
)
if hasattr(ast, "TryStar"):
    _COMPOUND = _COMPOUND + (ast.TryStar,)
if hasattr(ast, "Match"):
    _COMPOUND = _COMPOUND + (ast.Match,)


def _header_text(node: ast.AST) -> str:
    """ast.unparse of a compound statement's header only (``if x > 0:``)."""
    n = copy.copy(node)
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        if hasattr(n, field):
            setattr(n, field, [] if field != "body" else [ast.Pass()])
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        n.decorator_list = []
    if isinstance(n, ast.Try) or (hasattr(ast, "TryStar") and isinstance(n, ast.TryStar)):
        return "try:"
    text = ast.unparse(n)
    return text.split("\n")[0]


def _norm_line(t: str) -> str:
    t = t.split("#")[0] if "#" in t and "'" not in t and '"' not in t else t
    return " ".join(t.split())


def _units_by_line(code: str, tree: ast.Module | None) -> dict[int, tuple[int, str]]:
    """line -> (unit id = first line of the unit, normalised key) for the lines of statements."""
    out: dict[int, tuple[int, str]] = {}
    if tree is None:
        return out
    src_lines = code.split("\n")

    def body_start(stmts: list[ast.stmt]) -> int | None:
        return stmts[0].lineno if stmts else None

    def add(first: int, last: int, key: str) -> None:
        for ln in range(first, last + 1):
            out.setdefault(ln, (first, key))

    def visit(stmts: list[ast.stmt], depth: int) -> None:
        for s in stmts:
            if isinstance(s, _COMPOUND):
                b = body_start(s.body)
                last = max(s.lineno, b - 1) if b is not None and b > s.lineno else s.lineno
                key = _header_text(s)
                if isinstance(s, ast.If) and src_lines[s.lineno - 1].lstrip().startswith("elif"):
                    key = "el" + key
                add(s.lineno, last, f"{depth}|{key}")
                for d in getattr(s, "decorator_list", []):
                    add(d.lineno, d.end_lineno or d.lineno, f"{depth}|@{ast.unparse(d)}")
                visit(s.body, depth + 1)
                for h in getattr(s, "handlers", []):
                    hb = body_start(h.body)
                    hl = max(h.lineno, hb - 1) if hb is not None and hb > h.lineno else h.lineno
                    hn = copy.copy(h)
                    hn.body = [ast.Pass()]
                    add(h.lineno, hl, f"{depth}|{ast.unparse(hn).split(chr(10))[0]}")
                    visit(h.body, depth + 1)
                for c in getattr(s, "cases", []):
                    cn = copy.copy(c)
                    cn.body = [ast.Pass()]
                    add(c.pattern.lineno, c.pattern.lineno, f"{depth + 1}|{ast.unparse(cn).split(chr(10))[0]}")
                    visit(c.body, depth + 2)
                orelse = getattr(s, "orelse", [])
                if (
                    isinstance(s, ast.If)
                    and len(orelse) == 1
                    and isinstance(orelse[0], ast.If)
                    and src_lines[orelse[0].lineno - 1].lstrip().startswith("elif")
                ):
                    visit(orelse, depth)  # an elif stays at this depth
                else:
                    visit(orelse, depth + 1)
                visit(getattr(s, "finalbody", []), depth + 1)
            else:
                add(s.lineno, s.end_lineno or s.lineno, f"{depth}|{ast.unparse(s)}")

    visit(tree.body, 0)
    return out


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name):
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node

    def visit_arg(self, node: ast.arg):
        if node.arg in self.mapping:
            node = copy.copy(node)
            node.arg = self.mapping[node.arg]
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler):
        self.generic_visit(node)
        if node.name in self.mapping:
            node.name = self.mapping[node.name]
        return node


def _renamed(tree: ast.Module) -> ast.Module:
    """A copy of ``tree`` with locally bound names renamed v0, v1, ... by first appearance."""
    bound: set[str] = set()
    occ: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
            occ.append((node.lineno, node.col_offset, node.arg))
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                bound.add(node.id)
            occ.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
            occ.append((node.lineno, node.col_offset, node.name))
    mapping: dict[str, str] = {}
    for _, _, name in sorted(occ):
        if name in bound and name not in mapping:
            mapping[name] = f"v{len(mapping)}"
    return _Renamer(mapping).visit(copy.deepcopy(tree))


@dataclass(frozen=True)
class _Units:
    ids: list[int]  # unit id (first line) per unit, in order
    keys: list[str]
    lines: dict[int, list[int]]  # unit id -> its annotated lines


def _units(code: str, lines: list[int], tree: ast.Module | None) -> _Units:
    src = code.split("\n")
    by_line = _units_by_line(code, tree)
    ids: list[int] = []
    keys: list[str] = []
    members: dict[int, list[int]] = {}
    for ln in lines:
        if ln in by_line:
            uid, key = by_line[ln]
        else:  # else:/finally:/closing brackets of nothing, or an unparsable program
            raw = src[ln - 1]
            depth = len(raw) - len(raw.lstrip())
            uid, key = ln, f"L{depth}|{_norm_line(raw)}"
        if uid not in members:
            members[uid] = []
            ids.append(uid)
            keys.append(key)
        members[uid].append(ln)
    return _Units(ids, keys, members)


def _unmatched(a: _Units, b: _Units) -> set[int]:
    """Unit ids of ``a`` not matched to ``b`` (gap rule for units missing from ``a``)."""
    bad: set[int] = set()
    sm = difflib.SequenceMatcher(None, a.keys, b.keys, autojunk=False)
    for tag, i1, i2, _, _ in sm.get_opcodes():
        if tag in ("replace", "delete"):
            bad.update(a.ids[i1:i2])
        elif tag == "insert" and a.ids:
            bad.add(a.ids[i1 - 1] if i1 > 0 else a.ids[0])
    return bad


def diff_wrong_lines(code: str, canonical: str, prompt: str = "", canonical_prompt: str | None = None) -> set[int]:
    """Annotated lines of ``code`` that the normalised alignment to ``canonical`` marks wrong.

    ``prompt`` is the part of both programs that is not annotated (HumanEval); pass
    ``canonical_prompt`` only when it differs.
    """
    cprompt = prompt if canonical_prompt is None else canonical_prompt
    a_lines = annotated_lines(code, prompt)
    b_lines = annotated_lines(canonical, cprompt)
    ta, tb = _parse(code), _parse(canonical)
    if ta is None or tb is None:
        ta = tb = None  # both line-normalised, so keys are comparable
    ua, ub = _units(code, a_lines, ta), _units(canonical, b_lines, tb)
    bad = _unmatched(ua, ub)
    if ta is not None and tb is not None:
        ra, rb = _units(code, a_lines, _renamed(ta)), _units(canonical, b_lines, _renamed(tb))
        bad_r = _unmatched(ra, rb)
        lines_r = {ln for uid in bad_r for ln in ra.lines[uid]}
        lines_a = {ln for uid in bad for ln in ua.lines[uid]}
        return lines_r if len(lines_r) < len(lines_a) else lines_a
    return {ln for uid in bad for ln in ua.lines[uid]}


def line_truth(code: str, canonical: str, result, prompt: str = "", *, raise_line: str = "union") -> dict[int, int]:
    """``{line: +1 | -1}`` for every annotated line of ``code`` (the rule of the module docstring).

    Parameters
    ----------
    code, canonical : the full program and the full canonical program (same prompt).
    result : the :class:`rl.execution.sandbox.ExecResult` of ``code`` on the tests (``status``, ``line``),
        or a bool (passed) when no execution details are known.
    prompt : the unannotated prefix of both programs (HumanEval), else "".
    raise_line : "union" (default): the raise line is always wrong; "fallback": only when the
        diff finds nothing; "ignore": never (diff only). For the agreement study.
    """
    if raise_line not in RAISE_LINE_MODES:
        raise ValueError(f"raise_line must be one of {RAISE_LINE_MODES}, got {raise_line!r}")
    lines = annotated_lines(code, prompt)
    if isinstance(result, bool):
        passed, rline = result, None
    else:
        passed, rline = result.status == "passed", result.line
    if passed:
        return {ln: 1 for ln in lines}
    wrong = diff_wrong_lines(code, canonical, prompt)
    if rline in lines and (raise_line == "union" or (raise_line == "fallback" and not wrong)):
        wrong.add(rline)
    if not wrong and lines:
        wrong.add(lines[-1])
    return {ln: (-1 if ln in wrong else 1) for ln in lines}


def truth_for_problem(problem, code: str, result, *, raise_line: str = "union") -> dict[int, int]:
    """:func:`line_truth` for a :class:`rl.tasks.benchmarks.Problem` (its prompt and canonical program)."""
    prompt = problem.prompt if problem.source == "humaneval" else ""
    if prompt and not code.startswith(prompt):
        raise ValueError(f"{problem.task_id}: the program does not start with the HumanEval prompt")
    return line_truth(code, problem.canonical_program, result, prompt, raise_line=raise_line)


def rule_agreement(records, problems: dict, results, *, raise_line: str = "union") -> dict:
    """How often :func:`line_truth` agrees with hand labels.

    ``records``: dicts with ``task_id``, ``code`` and ``truth`` (``[[line, +1|-1], ...]``);
    ``problems``: task_id -> Problem; ``results``: the ExecResult of each record's program.
    Returns line-level agreement, program-level exact match, and per-class counts
    (``wrong_recall`` = hand-wrong lines the rule calls wrong, ``wrong_precision`` = rule-wrong
    lines that are hand-wrong) plus the ids of the programs where they differ.
    """
    n_lines = agree = exact = hw = rw = both_w = 0
    differ = []
    for rec, res in zip(records, results):
        hand = {int(ln): int(lab) for ln, lab in rec["truth"]}
        rule = truth_for_problem(problems[rec["task_id"]], rec["code"], res, raise_line=raise_line)
        if set(rule) != set(hand):
            raise ValueError(
                f"{rec.get('id', rec['task_id'])}: hand labels cover lines {sorted(hand)}, the annotated lines are {sorted(rule)}"
            )
        same = sum(rule[ln] == hand[ln] for ln in hand)
        n_lines += len(hand)
        agree += same
        exact += same == len(hand)
        hw += sum(v == -1 for v in hand.values())
        rw += sum(v == -1 for v in rule.values())
        both_w += sum(hand[ln] == -1 and rule[ln] == -1 for ln in hand)
        if same != len(hand):
            differ.append(rec.get("id", rec["task_id"]))
    n = len(records)
    return {
        "raise_line": raise_line,
        "programs": n,
        "lines": n_lines,
        "line_agreement": agree / n_lines if n_lines else float("nan"),
        "program_exact": exact / n if n else float("nan"),
        "hand_wrong": hw,
        "rule_wrong": rw,
        "both_wrong": both_w,
        "wrong_recall": both_w / hw if hw else float("nan"),
        "wrong_precision": both_w / rw if rw else float("nan"),
        "differ": differ,
    }
