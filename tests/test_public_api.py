"""Public names: every ``__all__`` entry resolves, every public module declares ``__all__``, and the
crowdstat modules are reachable as attributes from a bare ``import crowdstat`` (lazy ``__getattr__``).

The imports run in fresh interpreters, so this process's modules and settings never leak into the
answers (in particular, reachability is checked before anything else imported the submodules).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crowdstat", "rl")
# A program run by a fresh interpreter (the sandbox's worker), not a module to import. The
# ``__main__`` modules (``python -m`` entry points, which run the CLI on import) are skipped too.
SKIP = {"rl.execution.worker"}

_WALK = r"""
import ast, importlib, inspect, json, pkgutil, sys

SKIP = set(json.loads(sys.argv[1]))
report = {"modules": [], "import_errors": {}, "unresolved": {}, "no_all": {}}


def public_definitions(module):
    # Names the module itself binds at top level (def, class, assignment), not starting with "_".
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return sorted({n for n in names if not n.startswith("_")})


def visit(name):
    if name in SKIP or name.rsplit(".", 1)[-1] == "__main__":
        return
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report["import_errors"][name] = f"{type(exc).__name__}: {exc}"
        return
    report["modules"].append(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        private = any(part.startswith("_") for part in name.split("."))
        public = public_definitions(module)
        if public and not private:
            report["no_all"][name] = public
    else:
        missing = []
        for attr in exported:
            try:
                getattr(module, attr)
            except Exception as exc:  # noqa: BLE001 - AttributeError, or a lazy import that fails
                missing.append(f"{attr} ({type(exc).__name__}: {exc})")
        if missing:
            report["unresolved"][name] = missing
    if hasattr(module, "__path__"):
        for info in pkgutil.iter_modules(module.__path__, name + "."):
            visit(info.name)


for package in sys.argv[2:]:
    visit(package)
print(json.dumps(report))
"""

_REACH = r"""
import json, sys
import crowdstat

unreachable = {}
for dotted in json.loads(sys.argv[1]):
    obj = crowdstat
    for part in dotted.split(".")[1:]:
        try:
            obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001
            unreachable[dotted] = f"{type(exc).__name__}: {exc}"
            break
print(json.dumps(unreachable))
"""


def _run(code: str, *args: str) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


@pytest.fixture(scope="module")
def report() -> dict:
    """One walk over both packages (imports every module once), shared by the tests below."""
    return _run(_WALK, json.dumps(sorted(SKIP)), *PACKAGES)


def test_every_module_imports(report):
    assert {"crowdstat.api", "rl.loop"} <= set(report["modules"]), report["modules"]  # the walk really went deep
    errors = report["import_errors"]
    assert not errors, "modules that fail to import:\n" + "\n".join(f"{m}: {e}" for m, e in sorted(errors.items()))


def test_every_name_in_all_resolves(report):
    unresolved = report["unresolved"]
    assert not unresolved, "names in __all__ that do not resolve:\n" + "\n".join(
        f"{m}: {', '.join(names)}" for m, names in sorted(unresolved.items())
    )


def test_public_modules_declare_all(report):
    """A module that defines public names says which are its interface (private modules and
    packages that only document their submodules are exempt)."""
    no_all = report["no_all"]
    assert not no_all, "modules defining public names without __all__:\n" + "\n".join(
        f"{m}: defines {', '.join(names)}" for m, names in sorted(no_all.items())
    )


def test_crowdstat_modules_reachable_from_import_crowdstat(report):
    """``import crowdstat`` then ``crowdstat.io.rewards``, ``crowdstat.estimators.l1.solve``, ...:
    every public crowdstat module (no ``_`` component) is an attribute chain away, loaded lazily."""
    modules = [m for m in report["modules"] if m.startswith("crowdstat.") and _is_public(m)]
    for required in ("crowdstat.io", "crowdstat.estimators", "crowdstat.estimators.l1", "crowdstat.study", "crowdstat.spec"):
        assert required in modules, f"{required} is missing from the package walk"
    unreachable = _run(_REACH, json.dumps(modules))
    assert not unreachable, "crowdstat modules not reachable as attributes after `import crowdstat`:\n" + "\n".join(
        f"{m}: {e}" for m, e in sorted(unreachable.items())
    )
