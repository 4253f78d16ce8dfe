"""The sandbox works when the interpreter's environment lives below /tmp (a CI clone's venv there):
bubblewrap's private /tmp must not hide it, and the per-job sweep of /tmp must not remove it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytest.importorskip("numpy")


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_venv_below_tmp_stays_visible_to_every_job(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "tmp_marker_pkg.py").write_text("VALUE = 42\n")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parents[2])!r})\n"
        "from rl.execution.sandbox import Job, Sandbox\n"
        "with Sandbox(workers=1, isolation='bwrap') as sb:\n"
        "    rs = [sb.run(Job('import tmp_marker_pkg, numpy\\nx = tmp_marker_pkg.VALUE', tests=('assert x == 42',))) for _ in range(3)]\n"
        "print([r.status for r in rs], rs[0].isolation)\n"
    )
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "['passed', 'passed', 'passed'] bwrap"
