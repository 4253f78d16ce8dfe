"""The bubblewrap (``bwrap``) command line that :mod:`rl.execution.sandbox` starts its workers in.

Inside: a read-only view of only the interpreter (its prefix) and the site-packages directories
(plus the system's shared libraries, which the interpreter and extension modules link against),
a fresh /proc of the sandbox's own pid namespace, a minimal /dev, private size-capped tmpfs on
/tmp and /dev/shm, new pid, network, IPC and UTS namespaces (and cgroup when possible), the
worker as pid 1 (``--as-pid-1``: it is the zygote), ``--die-with-parent``, ``--new-session``,
and no_new_privs (bubblewrap always sets it). Standard library only; see docs/sandbox.md.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading

__all__ = ["kept_names", "ZYGOTE_CAPS", "find_bwrap", "readonly_view", "bwrap_argv", "spawn"]

# Started as root, bubblewrap creates no user namespace (it would map root alone, and runners
# must drop to a uid of their own), so the worker keeps root with only the capabilities the
# zygote uses: make each job's directory the runner's (CHOWN), become the runner's uid
# (SETUID, SETGID), kill what a program left (KILL), remove what it wrote (DAC_OVERRIDE,
# FOWNER: its directories are 0700 and /tmp is sticky). Runners drop all of them.
ZYGOTE_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID")
# Shared libraries the interpreter and compiled extensions load (merged-/usr systems have
# symlinks /lib -> usr/lib etc., which are recreated; otherwise the directories are bound).
_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")
_TOP_LIB_DIRS = ("/lib", "/lib64", "/lib32", "/libx32")


def find_bwrap() -> str | None:
    """The ``bwrap`` executable on PATH (or the standard places), if installed."""
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def readonly_view(site_dirs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """What the sandbox sees (read-only): ``(paths bound at the same place, (target, link) symlinks)``.

    The interpreter's prefix(es) and executable, the given site-packages directories and the
    system's library directories, each by its real path; nothing else of the host (no /etc, no
    home directories, no repository, no /run with its sockets)."""
    exe = os.path.realpath(sys.executable)
    wanted = [os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, *site_dirs)]
    if not any(_under(exe, p) for p in wanted):
        wanted.append(exe)
    wanted += [d for d in _LIB_DIRS if os.path.isdir(d)]
    links = []
    for d in _TOP_LIB_DIRS:
        if os.path.islink(d):
            links.append((os.readlink(d), d))
        elif os.path.isdir(d):
            wanted.append(d)
    if os.path.isfile("/etc/ld.so.cache"):
        wanted.append("/etc/ld.so.cache")  # the dynamic loader's index (it searches the default places without it)
    paths: list[str] = []
    for p in sorted(set(wanted), key=lambda p: (p.count("/"), p)):
        if os.path.exists(p) and not any(_under(p, q) for q in paths):
            paths.append(p)
    return paths, links


def kept_names(site_dirs: list[str]) -> dict[str, list[str]]:
    """The entries of the private /tmp and /dev/shm that hold a read-only bound path (their first
    component): the per-job sweep must leave them (root-owned, mode 0755: a runner cannot write there)."""
    paths, _ = readonly_view(site_dirs)
    out: dict[str, list[str]] = {"/tmp": [], "/dev/shm": []}
    for p in paths:
        for root in out:
            if _under(p, root) and p != root:
                out[root].append(os.path.relpath(p, root).split(os.sep)[0])
    return {k: sorted(set(v)) for k, v in out.items()}


def bwrap_argv(bwrap: str, site_dirs: list[str], tmp_mb: int) -> list[str]:
    """bubblewrap's arguments up to (not including) ``--`` and the command.

    ``tmp_mb``: the size of each of the private /tmp and /dev/shm."""
    argv = [bwrap]
    if os.geteuid() == 0:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL"]
        for cap in ZYGOTE_CAPS:
            argv += ["--cap-add", cap]
    else:
        argv += ["--unshare-all"]  # a user namespace too (an unprivileged bwrap needs one)
    argv += ["--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox"]
    # The private file systems first: a bound path below /tmp (a checkout or venv there, e.g. a CI
    # clone) is then mounted onto the private /tmp instead of being hidden by it.
    size = str(int(tmp_mb) * 1024 * 1024)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp", "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
    paths, links = readonly_view(site_dirs)
    made: set[str] = set()
    for p in paths:
        # bubblewrap would create the missing parents (e.g. /root for /root/.pyenv/...) mode
        # 0700, which the runners' uid could not traverse: create them 0755 first
        parent = os.path.dirname(p)
        ancestors = []
        while parent not in ("/", "") and parent not in made:
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(ancestors):
            argv += ["--perms", "0755", "--dir", d]
            made.add(d)
        argv += ["--ro-bind", p, p]
    for target, link in links:
        argv += ["--symlink", target, link]
    argv += ["--chdir", "/"]
    return argv


_SPAWN_LOCK = threading.Lock()
_SPAWN_QUEUE: queue.SimpleQueue | None = None
_SPAWN_PID = 0


def _spawn_loop(q: queue.SimpleQueue) -> None:
    while True:
        fn, box = q.get()
        try:
            box.put((True, fn()))
        except BaseException as e:  # handed to the caller
            box.put((False, e))


def spawn(fn):
    """Call ``fn`` (which starts a worker process) on one long-lived thread of this process.

    bubblewrap's ``--die-with-parent`` (PR_SET_PDEATHSIG) fires when the *thread* that started it
    ends, and workers are also started from the short-lived threads of ``Sandbox.map`` when
    one is replaced; started from here, a worker lives until its Sandbox closes or this process
    ends."""
    global _SPAWN_QUEUE, _SPAWN_PID
    with _SPAWN_LOCK:
        if _SPAWN_QUEUE is None or _SPAWN_PID != os.getpid():
            _SPAWN_QUEUE, _SPAWN_PID = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_spawn_loop, args=(_SPAWN_QUEUE,), name="rl-sandbox-spawner", daemon=True).start()
        q = _SPAWN_QUEUE
    box: queue.SimpleQueue = queue.SimpleQueue()
    q.put((fn, box))
    ok, value = box.get()
    if not ok:
        raise value
    return value
