"""rl.execution.sandbox under attack: programs written against the harness itself.

Each test is an attack from issue 15: the root-side cleanup following a planted symlink, a unix
socket connecting out, reading host processes' command lines, /dev/shm and SysV shared memory
outliving the job, and samples that break the harness (a very deep directory tree, garbage on
the result descriptor) ending the whole run. Tests run in both isolation modes where they make
sense: ``bwrap`` (skipped with a reason when bubblewrap is not installed; ``make sandbox-deps``
installs it) and ``process`` (the fallback), where the result must report honestly what it did
not isolate.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from rl.execution.sandbox import Job, Limits, Sandbox

FAST = Limits(timeout_s=3, cpu_s=5, memory_mb=512, file_size_mb=1, max_output_bytes=4000, max_processes=32)
NORMAL = Job("def f(x):\n    return x + 1\n", tests=("assert f(1) == 2",))


def _bwrap_unusable() -> str:
    """Why the bubblewrap mode cannot run here ("" when it can): not installed, or refused (e.g.
    a container that allows no mount namespaces)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (make sandbox-deps)"
    try:
        Sandbox(workers=1, limits=FAST, isolation="bwrap").close()
    except Exception as e:
        return f"bubblewrap cannot start a sandbox here: {e}"
    return ""


NO_BWRAP = _bwrap_unusable()
HAVE_BWRAP = not NO_BWRAP
MODES = [pytest.param("bwrap", marks=pytest.mark.skipif(bool(NO_BWRAP), reason=NO_BWRAP)), "process"]
# Run in the same worker after an attack: the entries of /tmp and /dev/shm (in the process mode
# these are the host's, shared with anything else running: tests look for their own names only).
LOOK = "import os\nprint(' '.join(n for r in ('/tmp', '/dev/shm') for n in os.listdir(r)))\n"


def job_dirs(cwd: str) -> set[str]:
    """The names a job with working directory ``cwd`` created in the temporary root."""
    outer = os.path.basename(os.path.dirname(cwd))
    return {outer, os.path.basename(cwd), os.path.basename(cwd) + "-moved"}


def sandbox(mode: str) -> Sandbox:
    return Sandbox(workers=1, limits=FAST, isolation=mode)


@pytest.fixture
def canary(tmp_path):
    """A directory outside the sandbox with a file in it, both owned by the caller."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    os.chmod(tmp_path, 0o755)
    return d


# ------------------------------------------------------------------ cleanup never follows links


@pytest.mark.parametrize("mode", MODES)
def test_symlink_swapped_for_the_work_dir_is_not_followed_by_the_cleanup(mode, canary):
    """The program moves its work dir away and plants a symlink to the canary in its place; the
    root-side cleanup must remove the link (and the moved dir), never the canary's files."""
    prog = (
        "import os\n"
        "cwd = os.getcwd()\n"
        "print(cwd)\n"
        "open('junk', 'w').write('x')\n"
        "moved = cwd + '-moved'\n"
        "try:\n"
        "    os.rename(cwd, moved)\n"
        f"    os.symlink({str(canary)!r}, cwd)\n"
        "    print('swapped', moved)\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    with sandbox(mode) as sb:
        r = sb.run(Job(prog))
        assert r.status == "passed", r
        assert (canary / "precious.txt").read_text() == "keep me"
        assert sorted(os.listdir(canary)) == ["precious.txt"]
        # nothing of the job is left where the next job (same worker) could see it
        r2 = sb.run(Job(LOOK))
        left = job_dirs(r.stdout.split()[0]) & set(r2.stdout.split())
        assert r2.status == "passed" and not left, (r.stdout, r2)
    if "swapped" in r.stdout:
        assert not os.path.lexists(r.stdout.split()[-1])  # the renamed work dir did not outlive the job


# ------------------------------------------------------------------ network


@pytest.fixture
def unix_listener(tmp_path):
    """A host unix socket at a filesystem path anyone may connect to; yields (path, accepted list)."""
    d = f"/tmp/rl-attack-{uuid.uuid4().hex[:12]}"
    os.mkdir(d)
    os.chmod(d, 0o777)
    path = os.path.join(d, "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(4)
    srv.settimeout(0.2)
    accepted: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.settimeout(1)
                try:
                    accepted.append(c.recv(100))
                except OSError:
                    accepted.append(b"")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, accepted
    stop.set()
    t.join(2)
    srv.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("mode", MODES)
def test_unix_socket_at_a_host_path_cannot_connect_out_or_is_reported(mode, unix_listener):
    path, accepted = unix_listener
    prog = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\ns.sendall(b'leak')\ns.close()\n"
    with sandbox(mode) as sb:
        r = sb.run(Job(prog))
        time.sleep(0.3)
        assert r.isolation == sb.isolation == mode
        if mode == "bwrap":
            assert r.status == "failed" and r.exception_type in ("FileNotFoundError", "ConnectionRefusedError", "PermissionError"), r
            assert accepted == []
            assert r.network_isolated is True and sb.network_isolated is True
        else:
            # without bubblewrap the host's filesystem is visible: never claim isolation
            assert r.network_isolated is False and sb.network_isolated is False
            assert sb.netns_error


@pytest.mark.parametrize("mode", MODES)
def test_abstract_unix_socket_and_tcp_cannot_connect_out(mode):
    name = f"\0rl-attack-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(1)
    try:
        prog = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})\n"
        with sandbox(mode) as sb:
            r = sb.run(Job(prog))
            if r.status == "passed":
                pytest.fail("an abstract unix socket of the host was reachable")
            assert r.exception_type in ("ConnectionRefusedError", "FileNotFoundError"), r
    finally:
        srv.close()


# ------------------------------------------------------------------ host processes


@pytest.mark.parametrize("mode", MODES)
def test_host_command_lines_are_not_readable(mode):
    secret = f"rl-canary-{uuid.uuid4().hex}"
    canary_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", secret])
    try:
        prog = (
            "import os\nfound = []\n"
            "for p in os.listdir('/proc'):\n"
            "    try:\n"
            "        if p.isdigit() and SECRET in open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'):\n"
            "            found.append(p)\n"
            "    except OSError:\n"
            "        pass\n"
            "print(found)\n"
        )
        with sandbox(mode) as sb:
            r = sb.run(Job(prog, setup=f"SECRET = {secret!r}"))
        assert r.status == "passed", r
        if mode == "bwrap":
            assert r.stdout.strip() == "[]", r
        else:
            # documented: without bubblewrap /proc is the host's
            assert r.isolation == "process"
    finally:
        canary_proc.kill()
        canary_proc.wait()


# ------------------------------------------------------------------ leftovers in /dev/shm and SysV IPC

_SHM_PROG = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget(KEY, 4096, 0o1666)  # IPC_CREAT | 0666
assert shmid >= 0, os.strerror(ctypes.get_errno())
with open(SHM_FILE, 'w') as f:
    f.write('left behind')
os.rename(os.getcwd(), '/dev/shm/' + MOVED)  # a renamed work dir, where the runner may do so
"""

_SHM_CHECK = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
seg = libc.shmget(KEY, 0, 0)
file_left = os.path.exists(SHM_FILE) or os.path.exists('/dev/shm/' + MOVED)
print(seg, file_left)
"""


def _host_has_segment(key: int) -> bool:
    with open("/proc/sysvipc/shm") as f:
        next(f)
        return any(int(ln.split()[0]) == key for ln in f if ln.strip())


@pytest.mark.parametrize("mode", MODES)
def test_dev_shm_files_and_sysv_segments_do_not_outlive_the_job_or_the_pool(mode):
    key = int.from_bytes(os.urandom(3), "big") + 0x52_000000
    tag = uuid.uuid4().hex[:12]
    setup = f"KEY = {key}\nSHM_FILE = '/dev/shm/rl-attack-{tag}'\nMOVED = 'rl-attack-moved-{tag}'"
    with sandbox(mode) as sb:
        r = sb.run(Job(_SHM_PROG, setup=setup))
        assert r.status in ("passed", "failed"), r  # failed: the rename was refused
        r2 = sb.run(Job(_SHM_CHECK, setup=setup))
        assert r2.status == "passed", r2
        assert r2.stdout.split() == ["-1", "False"], (r, r2)  # gone before the next job
    assert not os.path.exists(f"/dev/shm/rl-attack-{tag}")
    assert not os.path.exists(f"/dev/shm/rl-attack-moved-{tag}")
    assert not _host_has_segment(key)


# ------------------------------------------------------------------ samples that break the harness


@pytest.mark.parametrize("mode", MODES)
def test_a_very_deep_directory_tree_is_that_samples_result_and_the_pool_keeps_serving(mode):
    prog = "import os\nprint(os.getcwd())\nfor _ in range(1100):\n    os.mkdir('d')\n    os.chdir('d')\nopen('leaf', 'w').write('x')\n"
    with sandbox(mode) as sb:
        rs = sb.map([Job(prog), NORMAL, Job(prog), NORMAL])
        assert rs[0].status in ("passed", "crashed"), rs[0]
        assert rs[2].status in ("passed", "crashed"), rs[2]
        assert rs[1].status == rs[3].status == "passed", rs
        r = sb.run(Job(LOOK))
        mine = job_dirs(rs[0].stdout.strip()) | job_dirs(rs[2].stdout.strip())
        assert r.status == "passed" and not mine & set(r.stdout.split()), (rs, r)


@pytest.mark.parametrize(
    "garbage",
    [
        "os.write(3, b'[' * 60000 + b'\\n')",
        "os.write(3, b'{\"kind\": \"final\", \"status\": ' + b'[' * 60000 + b'\\n')",
        "os.write(3, bytes(range(256)) * 200)",
        'os.write(3, b\'{"kind": "final", "nonce": {}, "status": "passed"}\\n\')',
    ],
)
def test_garbage_on_the_result_descriptor_is_that_samples_crash_and_the_pool_keeps_serving(garbage):
    prog = f"import os\n{garbage}\nos._exit(0)\n"
    with Sandbox(workers=1, limits=FAST) as sb:
        rs = sb.map([Job(prog, tests=("assert False",)), NORMAL])
        assert rs[0].status == "crashed", rs[0]
        assert rs[0].message
        assert rs[1].status == "passed", rs[1]
        assert sb.run(NORMAL).status == "passed"


def test_a_worker_reply_error_becomes_a_crashed_result_and_the_worker_is_replaced(monkeypatch):
    """Whatever goes wrong in the harness for one sample (here: the worker reports an internal
    error) is that sample's ``crashed`` result, and the next sample runs on a fresh worker."""
    with Sandbox(workers=1, limits=FAST) as sb:
        w = sb._all[0]
        real = w.request
        monkeypatch.setattr(w, "request", lambda job, limits: {"ok": False, "error": "RecursionError()"})
        r = sb.run(NORMAL)
        assert r.status == "crashed" and "RecursionError" in r.message, r
        monkeypatch.setattr(w, "request", real)
        assert sb.run(NORMAL).status == "passed"
        assert sb.restarts == 1
        w2 = sb._all[0]
        monkeypatch.setattr(w2, "request", lambda job, limits: {"ok": True, "result": {"status": "passed", "bogus": 1}})
        r = sb.run(NORMAL)
        assert r.status == "crashed" and "malformed result" in r.message, r
        assert sb.run(NORMAL).status == "passed"
        assert sb.restarts == 2


# ------------------------------------------------------------------ reporting


def test_every_result_says_which_isolation_it_ran_under():
    with Sandbox(workers=1, limits=FAST) as sb:
        r = sb.run(NORMAL)
    assert r.isolation in ("bwrap", "process")
    assert r.to_dict()["isolation"] == r.isolation
    if HAVE_BWRAP:
        assert r.isolation == "bwrap", sb.isolation_warning


def test_fallback_warns_once_per_sandbox(monkeypatch):
    import rl.execution.sandbox as sandbox_mod

    monkeypatch.setattr(sandbox_mod, "_find_bwrap", lambda: None)
    with pytest.warns(RuntimeWarning, match="bubblewrap") as rec:
        with Sandbox(workers=2, limits=FAST) as sb:
            r = sb.run(NORMAL)
    assert len([w for w in rec if "bubblewrap" in str(w.message)]) == 1
    assert (r.status, r.isolation, sb.isolation) == ("passed", "process", "process")
    assert "bubblewrap" in sb.isolation_warning


def test_a_bwrap_that_cannot_start_falls_back_with_its_reason(monkeypatch, tmp_path):
    """E.g. a container that allows no namespaces: bubblewrap exits with a message at once."""
    import rl.execution.sandbox as sandbox_mod

    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox_mod, "_find_bwrap", lambda: str(fake))
    monkeypatch.setattr(sandbox_mod, "_BWRAP_BROKEN", "")
    with pytest.raises(sandbox_mod.SandboxError, match="Operation not permitted"):
        Sandbox(workers=1, limits=FAST, isolation="bwrap")
    monkeypatch.setattr(sandbox_mod, "_BWRAP_BROKEN", "")
    with pytest.warns(RuntimeWarning, match="bubblewrap could not start a worker .*Operation not permitted"):
        with Sandbox(workers=2, limits=FAST) as sb:
            assert sb.run(NORMAL).status == "passed"
    assert (sb.isolation, sb.network_isolated) == ("process", False)


@pytest.mark.skipif(bool(NO_BWRAP), reason=NO_BWRAP)
def test_bwrap_view_is_read_only_and_minimal():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    prog = (
        "import os, sys\n"
        "def writable(p):\n"
        "    try:\n"
        "        open(os.path.join(p, 'x'), 'w').close()\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
    )
    tests = (
        f"assert not os.path.exists({repo!r} + '/rl')",
        "assert not os.path.exists('/etc/passwd') and not os.path.exists('/home')",
        "assert not any(writable(p) for p in ('/usr/lib', sys.prefix, os.path.dirname(os.__file__)))",
        # /tmp is private: empty but for root-owned, read-only directories that hold bound paths (an
        # interpreter or venv below the host's /tmp, e.g. a CI clone there)
        "assert all(os.stat('/tmp/' + d).st_uid == 0 and not writable('/tmp/' + d) for d in os.listdir('/tmp')) and writable('.')",
        "import numpy",
        "assert os.getpid() > 1 and sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[0] == 1",
    )
    with Sandbox(workers=1, limits=FAST, isolation="bwrap") as sb:
        r = sb.run(Job(prog, tests=tests))
    assert r.status == "passed", r


_SECCOMP_PROG = """\
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def refused(nr, *args):
    r = libc.syscall(nr, *args)
    return r == -1 and ctypes.get_errno() == 1  # EPERM
# unshare(CLONE_NEWUSER), setns, ptrace(TRACEME), keyctl, bpf, io_uring_setup, mount, clone(CLONE_NEWUSER | SIGCHLD)
attempts = [refused(272, 0x10000000), refused(308, 0, 0), refused(101, 0, 0, 0, 0), refused(250, 0, 0),
            refused(321, 0, 0, 0), refused(425, 1, 0), refused(165, 0, 0, 0, 0, 0), refused(56, 0x10000011, 0, 0, 0, 0)]
box = []
t = threading.Thread(target=box.append, args=(1,))
t.start()
t.join()
pid = os.fork()
if pid == 0:
    os._exit(7)
print(all(attempts), attempts, box, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.parametrize("mode", MODES)
def test_seccomp_refuses_namespaces_ptrace_and_kernel_surface_but_threads_and_fork_work(mode):
    with sandbox(mode) as sb:
        if not sb.seccomp:
            pytest.skip("no seccomp filter on this architecture/kernel (x86_64 only)")
        r = sb.run(Job(_SECCOMP_PROG))
    assert r.status == "passed", r
    assert r.stdout.split()[0] == "True" and r.stdout.rstrip().endswith("[1] 7"), r.stdout
