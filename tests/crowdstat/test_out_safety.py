"""``--out`` never deletes what it did not write (issue 15), written as attacks.

- ``--out .``, the votes file's own directory, any directory holding an input: refused, even with
  ``--force``; an existing file: refused (never renamed away); a non-empty directory that is not an
  earlier output of the same tool: refused unless ``--force``.
- Every output directory carries a manifest (``.crowdstat-output.json``); a rerun replaces it.
- Killed at any point of the directory swap, a later run (or :func:`recover_output_dir`) finds
  the old or the new complete output, and the temporary directories of killed runs are cleaned,
  only those that carry this tool's marker.
- ``--out`` below a file or in a directory that cannot be written: one line, exit 2.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crowdstat.io import atomic as A

ROOT = Path(__file__).resolve().parents[2]
GOOD = "program,line,annotator,label\np,1,a,1\np,1,b,-1\np,2,a,1\nq,1,b,1\n"


def _tree(d: Path) -> dict:
    """Every file under ``d`` with its bytes (hidden ones included)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _data(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "votes.csv").write_text(GOOD)
    (d / "notes.txt").write_text("mine")
    return d / "votes.csv"


def _main(argv, capsys):
    from crowdstat.cli import main

    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _one_line(err: str, cmd: str = "fit") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"crowdstat {cmd}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- what --out refuses


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_fit_out_dot_and_the_input_directory_are_refused(tmp_path, monkeypatch, capsys, force):
    votes = _data(tmp_path / "data")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path / "data")
    for out in (".", tmp_path / "data", tmp_path, "..", os.getcwd()):
        rc, err = _main(["fit", "votes.csv", "--method", "majority", "--out", out, *force], capsys)
        assert rc == 2, (out, err)
        _one_line(err)
        assert _tree(tmp_path) == before
    monkeypatch.chdir(ROOT)
    rc, err = _main(["fit", votes, "--method", "majority", "--out", tmp_path / "data", *force], capsys)
    assert rc == 2 and "input" in _one_line(err)
    assert _tree(tmp_path) == before


def test_fit_out_at_an_existing_file_is_refused(tmp_path, capsys):
    votes = _data(tmp_path / "data")
    target = tmp_path / "result.txt"
    target.write_text("precious")
    for force in ([], ["--force"]):
        rc, err = _main(["fit", votes, "--method", "majority", "--out", target, *force], capsys)
        assert rc == 2 and "not a directory" in _one_line(err)
        assert target.read_text() == "precious"
    rc, err = _main(["fit", votes, "--method", "majority", "--out", votes], capsys)  # the input itself
    assert rc == 2 and votes.read_text() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "result.txt"]


def test_fit_foreign_directory_needs_force_and_own_output_is_replaced(tmp_path, capsys):
    votes = _data(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    rc, err = _main(["fit", votes, "--method", "majority", "--out", out], capsys)
    assert rc == 2 and "--force" in _one_line(err)
    assert _tree(out) == {"keep.txt": b"old"}
    rc, err = _main(["fit", votes, "--method", "majority", "--out", out, "--force"], capsys)
    assert rc == 0, err
    man = json.loads((out / A.MANIFEST).read_text())
    assert man["tool"] == "crowdstat fit" and man["complete"] is True and man["version"]
    assert sorted(man["files"]) == ["annotators.csv", "fit.json", "lines.csv", "rewards.jsonl"]
    assert not (out / "keep.txt").exists()
    # a rerun replaces its own output without --force; another tool's output needs --force
    rc, err = _main(["fit", votes, "--method", "sequential", "--out", out], capsys)
    assert rc == 0 and (out / "trajectory.csv").exists(), err
    rc, err = _main(["simulate", "--population", "expert:2", "--programs", "3", "--lines", "2", "--out", out], capsys)
    assert rc == 2 and "crowdstat fit" in _one_line(err, "simulate")
    assert (out / "trajectory.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no temporaries left


def test_empty_directory_is_used(tmp_path, capsys):
    votes = _data(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    rc, err = _main(["fit", votes, "--method", "majority", "--out", tmp_path / "empty"], capsys)
    assert rc == 0, err
    assert (tmp_path / "empty" / "lines.csv").exists()


def test_simulate_and_compare_refuse_too(tmp_path, monkeypatch, capsys):
    data = tmp_path / "sim"
    rc, err = _main(["simulate", "--population", "expert:3", "--programs", "4", "--lines", "2", "--out", data], capsys)
    assert rc == 0, err
    monkeypatch.chdir(data)
    before = _tree(tmp_path)
    for force in ([], ["--force"]):
        rc, err = _main(["simulate", "--population", "expert:3", "--out", ".", *force], capsys)
        assert rc == 2, err
        _one_line(err, "simulate")
        args = ["compare", "votes.csv", "--true-lines", "true_lines.csv", "--methods", "majority", "--out", ".", *force]
        rc, err = _main(args, capsys)
        assert rc == 2, err
        _one_line(err, "compare")
    monkeypatch.chdir(ROOT)
    for force in ([], ["--force"]):
        args = ["compare", data / "votes.csv", "--true-lines", data / "true_lines.csv", "--methods", "majority", "--out", data, *force]
        rc, err = _main(args, capsys)
        assert rc == 2 and "input" in _one_line(err, "compare")
    assert _tree(tmp_path) == before
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x").write_text("x")
    rc, err = _main(["simulate", "--population", "expert:3", "--out", tmp_path / "foreign"], capsys)
    assert rc == 2 and "--force" in _one_line(err, "simulate") and (tmp_path / "foreign" / "x").exists()


def test_out_below_a_file_and_unwritable_parent(tmp_path, monkeypatch, capsys):
    votes = _data(tmp_path / "data")
    (tmp_path / "f").write_text("x")
    rc, err = _main(["fit", votes, "--method", "majority", "--out", tmp_path / "f" / "sub"], capsys)
    assert rc == 2 and "not a directory" in _one_line(err) and (tmp_path / "f").read_text() == "x"

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(A.tempfile, "mkdtemp", denied)
    rc, err = _main(["fit", votes, "--method", "majority", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "Permission denied" in _one_line(err) and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the shared function


def _writer(text):
    def write(tmp: Path) -> None:
        (tmp / "a.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text(text)

    return write


def _content(out: Path) -> str:
    a, b = (out / "a.txt").read_text(), (out / "sub" / "b.txt").read_text()
    assert a == b
    man = json.loads((out / A.MANIFEST).read_text())
    assert man["complete"] and sorted(man["files"]) == ["a.txt", "sub/b.txt"]
    return a


def test_atomic_write_dir_refuses_and_replaces(tmp_path, monkeypatch):
    out = tmp_path / "out"
    A.atomic_write_dir(out, _writer("one"), tool="t")
    assert _content(out) == "one"
    A.atomic_write_dir(out, _writer("two"), tool="t")
    assert _content(out) == "two"
    with pytest.raises(A.OutputDirError, match="not an earlier output of 'u'"):
        A.atomic_write_dir(out, _writer("three"), tool="u")
    with pytest.raises(A.OutputDirError, match="input"):
        A.atomic_write_dir(tmp_path, _writer("x"), tool="t", inputs=[out / "a.txt"], force=True)
    monkeypatch.chdir(out)
    with pytest.raises(A.OutputDirError, match="current directory"):
        A.atomic_write_dir(".", _writer("x"), tool="t", force=True)
    with pytest.raises(A.OutputDirError, match="current directory"):
        A.atomic_write_dir(tmp_path, _writer("x"), tool="t", force=True)
    assert _content(out) == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failing_writer_leaves_the_old_output(tmp_path):
    out = tmp_path / "out"
    A.atomic_write_dir(out, _writer("one"), tool="t")

    def boom(tmp):
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        A.atomic_write_dir(out, boom, tool="t")
    assert _content(out) == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


KILL = textwrap.dedent(
    """
    import os, shutil, sys
    from pathlib import Path
    from crowdstat.io import atomic as A
    out, point, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    calls = [0]
    def hook(real):
        def f(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                os._exit(9)
            return real(*a, **k)
        return f
    def write(tmp):
        (tmp / "a.txt").write_text("new")
        if point == "writer":
            os._exit(9)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("new")
    if point == "rename":
        os.rename = hook(os.rename)
        os.replace = hook(os.replace)
    elif point == "rmtree":
        A.shutil.rmtree = hook(shutil.rmtree)
        os.unlink = hook(os.unlink)
    A.atomic_write_dir(out, write, tool="t")
    """
)


@pytest.mark.parametrize("point,n", [("writer", 0)] + [("rename", n) for n in range(1, 8)] + [("rmtree", n) for n in range(1, 7)])
def test_a_kill_anywhere_leaves_the_old_or_the_new_output(tmp_path, point, n):
    out = tmp_path / "out"
    A.atomic_write_dir(out, _writer("old"), tool="t")
    (tmp_path / ".out.tmp-foreign").mkdir()  # someone else's: never touched
    (tmp_path / ".out.tmp-foreign" / "x").write_text("x")
    r = subprocess.run([sys.executable, "-c", KILL, str(out), point, str(n)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 9), r.stderr
    A.recover_output_dir(out, tool="t")
    assert _content(out) in ("old", "new")
    # the next run cleans what the killed one left, and nothing else
    A.atomic_write_dir(out, _writer("next"), tool="t")
    assert _content(out) == "next"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-foreign", "out"]
    assert (tmp_path / ".out.tmp-foreign" / "x").read_text() == "x"


def test_stale_temporaries_are_cleaned_only_with_this_tools_marker(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    for name, tool, pid in (("mine", "t", int(dead)), ("other", "u", int(dead)), ("live", "t", os.getpid())):
        d = tmp_path / f".out.tmp-{name}"
        d.mkdir()
        (d / "f").write_text(name)
        marker = {"tool": tool, "complete": False, "pid": pid, "host": os.uname().nodename}
        (d / A.MANIFEST).write_text(json.dumps(marker))
    A.atomic_write_dir(out, _writer("one"), tool="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-live", ".out.tmp-other", "out"]
