"""The ``rl`` command line: ``rl --help`` lists every command without importing any (no torch,
transformers or jax), and ``rl CMD`` imports CMD's module only. Each probe runs in a fresh subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "peft", "trl", "accelerate", "jax", "jaxlib", "datasets"}


def _run_main(argv: list[str]) -> tuple[int, str, set[str]]:
    """(exit status, stdout, modules loaded) of ``rl.cli.main(argv)`` in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        "from rl.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('\\nMODULES=' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code or 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out, _, mods = p.stdout.rpartition("\nMODULES=")
    return p.returncode, out, set(json.loads(mods))


def test_help_lists_every_command_and_loads_nothing_heavy():
    code, out, mods = _run_main(["--help"])
    assert code == 0
    for name, (_, helptext) in COMMANDS.items():
        assert name in out, name
        assert helptext.split()[0] in out
    assert not ({m.split(".")[0] for m in mods} & HEAVY), sorted({m.split(".")[0] for m in mods} & HEAVY)
    assert not {mod for mod, _ in COMMANDS.values()} & mods  # no command module imported
    assert not any(m.startswith("crowdstat") for m in mods)


@pytest.mark.parametrize("command", ["check", "loop"])
def test_a_command_imports_its_module_only(command):
    code, out, mods = _run_main([command, "--help"])
    assert code == 0 and f"usage: rl {command}" in out
    mine = COMMANDS[command][0]
    assert mine in mods
    assert not ({mod for mod, _ in COMMANDS.values()} - {mine}) & mods
    assert not ({m.split(".")[0] for m in mods} & HEAVY)  # neither module loads torch to build its options


def test_unknown_command_is_a_usage_error():
    code, _, mods = _run_main(["nope"])
    assert code == 2
    assert not {mod for mod, _ in COMMANDS.values()} & mods
