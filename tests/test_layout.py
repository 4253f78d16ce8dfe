"""The code's shape: module and function sizes, no import cycles, no references outside the repository.

Pure file reads, ``ast`` and grimp's static import graph: nothing from the packages is imported.
Each test collects every offender and names them all in its failure message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crowdstat", "rl")

MAX_MODULE_LINES = 600
# The sandbox's worker program is one self-contained script run by a fresh interpreter (it must not
# import the package it lives in), so it cannot be split into modules.
MODULE_LINES_EXEMPT = {"rl/execution/worker.py"}
MAX_FUNCTION_LINES = 100
FUNCTION_DIRS = ("crowdstat", "rl", "experiments", "benchmarks")

# Places outside the repository that the code and docs must not point to. The data sets folder
# ``../shared/datasets`` is the documented data location and stays allowed.
OUTSIDE_REFERENCES = re.compile(r"MATH\.md|STYLE\.md|shared/notes|shared/MATH|\.\./shared/(?!datasets\b)")
REFERENCE_PLACES = ("crowdstat", "rl", "docs", "README.md", "experiments", "benchmarks", "tests")
# Generated outputs are not written by hand.
SKIP_DIRS = {"__pycache__", "results", "cache"}


def _python_files(*tops: str) -> list[Path]:
    files = []
    for top in tops:
        files += [p for p in (ROOT / top).rglob("*.py") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted(files)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_modules_are_at_most_600_lines():
    too_long = []
    for path in _python_files(*PACKAGES):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES and _rel(path) not in MODULE_LINES_EXEMPT:
            too_long.append(f"{_rel(path)}: {n} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(too_long)


def _function_lengths(path: Path):
    """(qualified name, first line, length) of every function and method; decorators excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def test_functions_are_at_most_100_lines():
    too_long = []
    for path in _python_files(*FUNCTION_DIRS):
        for name, line, n in _function_lengths(path):
            if n > MAX_FUNCTION_LINES:
                too_long.append(f"{_rel(path)}:{line}: {name} is {n} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def _strongly_connected_components(nodes, successors):
    """Tarjan's algorithm, iterative (no recursion limit on long import chains)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(successors(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_strongly_connected_components_helper():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    components = _strongly_connected_components(edges, lambda n: edges[n])
    assert sorted(components) == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_no_import_cycles():
    """No cycle among the modules of crowdstat and rl, imports inside functions included.

    grimp reads every import statement (module level, in functions, under TYPE_CHECKING);
    a package ``__init__`` that loads its submodules through ``importlib`` on attribute access
    is invisible to it, which is intended: that is the lazy-loading pattern, not a dependency.
    """
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}

    def successors(module):
        return graph.find_modules_directly_imported_by(module) & modules

    cycles = [c for c in _strongly_connected_components(modules, successors) if len(c) > 1]
    lines = []
    for component in cycles:
        members = set(component)
        edges = []
        for importer in component:
            for imported in sorted(successors(importer) & members):
                where = sorted({d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)})
                edges.append(f"    {importer} -> {imported} (l.{', '.join(map(str, where))})")
        lines.append(f"cycle among {', '.join(component)}:\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def _reference_files() -> list[Path]:
    files = []
    for place in REFERENCE_PLACES:
        path = ROOT / place
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in candidates if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    files = [p for p in files if p != Path(__file__).resolve()]  # this file names the patterns it looks for
    return sorted(files)


def test_no_references_outside_the_repository():
    found = []
    for path in _reference_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # figures and other binary files
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in OUTSIDE_REFERENCES.finditer(line):
                found.append(f"{_rel(path)}:{number}: {match.group(0)!r} in {line.strip()[:120]!r}")
    why = "references to files outside the repository (cite docs/ instead; ../shared/datasets is allowed)"
    assert not found, why + ":\n" + "\n".join(found)
