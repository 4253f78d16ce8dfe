"""The atomic writers give files and directories the modes plain open() / mkdir() would (issue 20)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from crowdstat.io.atomic import atomic_write_csv, atomic_write_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_dirs_follow_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        atomic_write_jsonl(tmp_path / "sub" / "c.jsonl", [{"a": 1}], parents=True)
        atomic_write_csv(tmp_path / "d.csv", ["a"], [[1]])

        def writer(d):
            (d / "inner.csv").write_text("a\n")
            atomic_write_json(d / "fit.json", {})

        atomic_write_dir(tmp_path / "out", writer, tool="test")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        os.mkdir(tmp_path / "plain_dir")
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    assert _mode(tmp_path / "plain.txt") == want_file and _mode(tmp_path / "plain_dir") == want_dir
    for name in ("a.txt", "b.json", "sub/c.jsonl", "d.csv", "out/inner.csv", "out/fit.json", "out/.crowdstat-output.json"):
        assert _mode(tmp_path / name) == want_file, name
    assert _mode(tmp_path / "out") == want_dir


def test_replacing_keeps_the_existing_mode(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and _mode(p) == 0o640


def test_umask_is_not_changed(tmp_path):
    # the writers read the umask without leaving it changed (checked in a fresh process)
    code = textwrap.dedent(
        f"""
        import os
        os.umask(0o027)
        from crowdstat.io.atomic import atomic_write_text
        atomic_write_text({str(tmp_path / "x")!r}, "x")
        print(oct(os.umask(0)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "0o27"
