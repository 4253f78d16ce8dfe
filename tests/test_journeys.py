"""Every command block of README.md and docs/*.md is either run here (a journey) or says why not.

How blocks are found and marked: tests/journeys.py. A documented command that stops working
fails this test; a new command block without a marker fails the classification test.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.journeys import PAGES, ROOT, blocks, journeys

JOURNEYS = journeys()


def test_every_command_block_is_a_journey_or_says_why_not():
    unmarked = [b.where for p in PAGES for b in blocks(p) if b.is_command and b.marker is None]
    assert not unmarked, "command blocks without <!-- journey: NAME --> or <!-- not-run: REASON -->: " + ", ".join(unmarked)
    empty = [b.where for p in PAGES for b in blocks(p) if b.marker and b.marker[0] == "not-run" and not b.marker[1]]
    assert not empty, "not-run markers need a reason: " + ", ".join(empty)


def test_markers_sit_on_code_blocks():
    """A marker comment must be followed by a code block (else it marks nothing)."""
    from tests.journeys import EXEMPT, MARKER

    marked = {(b.page, b.line) for p in PAGES for b in blocks(p) if b.marker and b.marker[1] not in EXEMPT.values()}
    n_markers = sum(bool(MARKER.match(ln.strip())) for p in PAGES for ln in p.read_text().splitlines())
    assert n_markers == len(marked)


def _copy_checkout(dst):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())


@pytest.mark.parametrize("journey", [pytest.param(j, id=j.id, marks=[pytest.mark.slow] if j.slow else []) for j in JOURNEYS])
def test_journey(journey, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    if journey.in_repo:
        _copy_checkout(work)
    (work / ".venv").symlink_to(ROOT / ".venv")
    shared = ROOT.parent / "shared"
    if shared.exists() and not (tmp_path / "shared").exists():
        (tmp_path / "shared").symlink_to(shared)  # ../shared/datasets, as beside the checkout
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "REPO": str(ROOT),
        "MPLBACKEND": "Agg",
        "RL_TORCH_THREADS": "1",
        "CROWDSTAT_DATASETS": str(shared / "datasets") if shared.exists() else "",
    }
    script = "set -euo pipefail\n" + journey.script()
    r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"{journey.id} failed (exit {r.returncode})\n--- script\n{script}\n--- stderr (tail)\n{r.stderr[-4000:]}"
