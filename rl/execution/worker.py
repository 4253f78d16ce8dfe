"""The sandbox's worker program: the zygote and the runner, standard library only.

:class:`rl.execution.sandbox.Sandbox` starts this file as ``python -s -S -B`` with ``--worker``
(its compiled code sent over stdin) in a scrubbed environment; nothing here runs in the caller's
process except the constants the caller shares (:data:`STATUSES`, :data:`GRACE_S`, :data:`RUNNER_ENV`)
and the message framing (:func:`write_all`, :func:`write_msg`). The design is described in
:mod:`rl.execution.sandbox` and docs/sandbox.md.
"""

from __future__ import annotations

import builtins
import json
import linecache
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

__all__ = ["STATUSES", "GRACE_S", "RUNNER_ENV", "write_all", "write_msg"]

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "killed")

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
CAP_DAC_READ_SEARCH = 2
# When the sandbox runs as root, runners drop to an unprivileged uid of their own per worker
# (1000000 + the worker's pid; no passwd entry needed), so RLIMIT_NPROC counts each worker's
# programs separately and runners of different workers cannot signal each other.
SANDBOX_UID_BASE = 1_000_000
_RUN_UID = 65534  # nobody, until _worker_main sets the worker's own uid
GRACE_S = 0.5  # after the in-process alarm, how long until SIGKILL
# Modules HumanEval/MBPP programs and the harness use, imported once per zygote. Kept small on
# purpose: every page of the zygote is copied-on-write into each runner, so a big module (hashlib,
# with OpenSSL) would make every fork slower.
_PREIMPORT = (
    "array bisect builtins cmath collections collections.abc copy functools heapq io itertools "
    "linecache math operator random re resource string traceback typing"
).split()

_libc = None


def _get_libc():
    global _libc
    if _libc is None:
        import ctypes

        # dlopen(NULL): the interpreter's own symbols, libc included (ctypes.util.find_library
        # would spawn ldconfig and pull subprocess into the zygote).
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            if not hasattr(_libc, "unshare"):
                raise AttributeError("unshare")
        except (OSError, AttributeError):  # pragma: no cover
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return _libc


def _unshare(flags: int) -> tuple[bool, str]:
    try:
        import ctypes

        libc = _get_libc()
        if libc.unshare(ctypes.c_int(flags)) == 0:
            return True, ""
        err = ctypes.get_errno()
        return False, os.strerror(err)
    except Exception as e:  # pragma: no cover - no libc / no unshare symbol
        return False, repr(e)


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _isolate_network() -> tuple[bool, str]:
    """Put the calling process in a new, empty network namespace (loopback down)."""
    ok, err = _unshare(CLONE_NEWNET)
    if ok:
        return True, ""
    # Unprivileged: a user namespace first (maps our own uid/gid), then the netns.
    uid, gid = os.getuid(), os.getgid()
    ok2, err2 = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if ok2:
        try:
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
            _write_file("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError:
            pass
        return True, ""
    return False, f"unshare(CLONE_NEWNET): {err}; with a user namespace: {err2}"


def _prctl(option: int, arg: int) -> bool:
    try:
        return _get_libc().prctl(option, arg, 0, 0, 0) == 0
    except Exception:  # pragma: no cover
        return False


def _read_msg(fd: int):
    """The next message of :func:`write_msg`'s framing from ``fd``; None at the end of the stream."""
    head = _read_exact(fd, 4)
    body = None if head is None else _read_exact(fd, struct.unpack("!I", head)[0])
    return None if body is None else marshal.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_msg(fd: int, obj) -> None:
    """One message of the caller-zygote protocol: a 4-byte length, then ``obj`` marshalled."""
    body = marshal.dumps(obj)
    write_all(fd, struct.pack("!I", len(body)) + body)


class _SandboxTimeout(BaseException):
    """Raised inside the runner by the wall-clock alarm."""


_TIMEOUT_S = 0.0


def _on_alarm(signum, frame):
    raise _SandboxTimeout(f"wall-clock limit of {_TIMEOUT_S:g} s exceeded")


# The environment every runner gets, besides HOME and TMPDIR (its working directory).
RUNNER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _scrub_environment() -> None:
    """Done once in the zygote: its environment becomes exactly RUNNER_ENV (the worker was
    already started with a scrubbed one; this removes anything else, e.g. the
    RL_SANDBOX_NO_PIDNS switch), and runners inherit it."""
    for k in [k for k in os.environ if k not in RUNNER_ENV]:
        del os.environ[k]
    for k, v in RUNNER_ENV.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


def _prepare_process_for_runners() -> None:
    """Done once in the zygote; every runner inherits it."""
    for sig in (signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXCPU):
        try:
            signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGXFSZ and SIGPIPE by default
        except (OSError, ValueError):  # pragma: no cover
            pass
    signal.signal(signal.SIGALRM, _on_alarm)  # the zygote itself never arms the timer
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _warm_up() -> None:
    """Run, once in the zygote, the interpreter paths every runner takes, so that what they
    initialise lazily is inherited instead of redone (and copied-on-write) per program.

    The big one: the first ``compile()`` of a process builds the ~120 AST node types
    (``init_types`` in Python-ast.c). Also warmed: the exception and traceback path (which
    parses the failing line with ``ast`` in 3.11), ``json`` encoding of an outcome, the
    ``struct`` format cache and ``linecache``. Only this module's own constant snippets are
    executed here."""
    import io

    src = "def _f(x):\n    return [y + 1 for y in range(x)][0] / (x - x)\n"
    tests = ("assert _f.__name__ == '_f'", "_f(1)")
    sources = [("<setup>", "import math", None), ("<program>", src, None)]
    sources += [(f"<test {i}>", t, i) for i, t in enumerate(tests)]
    for fname, s, _ in sources:
        linecache.cache[fname] = (len(s), None, s.splitlines(True), fname)
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    buf = bytearray(8)
    try:
        for code_no, (fname, s, _) in enumerate(sources, 1):
            struct.pack_into("q", buf, 0, code_no)
            exec(compile(s, fname, "exec", dont_inherit=True), ns)
    except ZeroDivisionError as e:
        _failure(e)
        traceback.print_exception(type(e), e, e.__traceback__, file=io.StringIO())
    try:
        compile("def (:\n", "<program>", "exec", dont_inherit=True)
    except SyntaxError as e:
        traceback.print_exception(type(e), e, e.__traceback__, file=io.StringIO())
    for fname, _, _ in sources:
        linecache.cache.pop(fname, None)
    outcome = {
        "kind": "final",
        "status": "passed",
        "stage": None,
        "exception_type": None,
        "line": None,
        "message": "all tests passed",
        "nonce": "0" * 32,
    }
    (json.dumps(outcome) + "\n").encode("utf-8", "backslashreplace")
    struct.unpack_from("q", buf, 0)


_CAPS = None  # prepared once in the zygote: (prctl, capset, header pointer, keep, none)
_STAGE_MAP = None  # a shared anonymous page: the runner writes the stage it is in


def _prepare_caps():
    """Build, once in the zygote, the ctypes objects :func:`_drop_root` needs (creating ctypes
    types and function pointers in every runner would cost CPU time and page faults per program)."""
    global _CAPS
    if _CAPS is None:
        import ctypes

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

        libc = _get_libc()
        hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        keep, none = (Data * 2)(), (Data * 2)()
        keep[0].effective = keep[0].permitted = 1 << CAP_DAC_READ_SEARCH
        _CAPS = (libc.prctl, libc.capset, ctypes.pointer(hdr), keep, none)
    return _CAPS


def _drop_root() -> None:
    """Become the worker's unprivileged uid (so RLIMIT_NPROC applies and root-owned files are
    read-only), keeping only CAP_DAC_READ_SEARCH so the interpreter can still read its standard
    library when it lives somewhere other users may not read (e.g. /root/.pyenv)."""
    prctl, capset, hdr, keep, none = _prepare_caps()
    prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(_RUN_UID)
    os.setuid(_RUN_UID)
    if capset(hdr, keep) != 0:
        # Could not keep the capability: stay unprivileged without it.
        capset(hdr, none)
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)


def _program_line(tb, filename: str = "<program>") -> int | None:
    """The line of the innermost traceback frame in ``filename``, if any."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _runner(job: dict, limits: dict, fds: dict, workdir: str, nonce: str, new_session: bool = True) -> None:
    """The process that runs the program. Never returns.

    ``new_session``: start a new session (fallback mode, where its process group is what
    gets killed). In the pid-namespace mode the whole namespace is cleaned instead."""
    # (builtins, linecache, resource, traceback: module globals, imported once by the
    # zygote; an import statement here would touch, and copy-on-write, their specs.)
    my_pid = os.getpid()
    res_fd = _redirect_fds(fds, new_session)
    try:
        _confine(workdir, limits)
    except BaseException as e:  # setup of the sandbox failed: report, never run the program
        _emit(
            res_fd,
            my_pid,
            nonce,
            {
                "kind": "final",
                "status": "crashed",
                "stage": "sandbox",
                "exception_type": type(e).__name__,
                "line": None,
                "message": f"sandbox setup failed: {e!r}",
            },
        )
        os._exit(70)
    outcome = _execute(job, limits, my_pid)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if os.getpid() != my_pid:  # a forked child of the program fell through
        os._exit(0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    _emit(res_fd, my_pid, nonce, outcome)
    os._exit(0)


def _redirect_fds(fds: dict, new_session: bool) -> int:
    """In the runner: stdin from /dev/null, stdout/stderr to their pipes, the result pipe as
    fd 3 (closed in any child the program forks), every other descriptor closed. Returns 3."""
    res_fd = fds["res_w"]
    if new_session:
        try:
            os.setsid()
        except OSError:
            pass
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds["out_w"], 1)
    os.dup2(fds["err_w"], 2)
    # The result pipe becomes fd 3; everything else is closed. (A low number keeps the
    # descriptor table small, which makes close_range and exit cheap.)
    if res_fd != 3:
        os.dup2(res_fd, 3)
        res_fd = 3
    os.closerange(4, 65536)
    os.set_inheritable(res_fd, False)

    def _close_res_in_child():
        try:
            os.close(res_fd)
        except OSError:
            pass

    os.register_at_fork(after_in_child=_close_res_in_child)
    return res_fd


def _emit(res_fd: int, my_pid: int, nonce: str, obj: dict) -> None:
    """Write ``obj``, tagged with the job's nonce, as one JSON line on the result pipe (only
    from the runner itself, never from a process the program forked)."""
    if os.getpid() != my_pid:
        return
    obj["nonce"] = nonce
    try:
        write_all(res_fd, (json.dumps(obj) + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _confine(workdir: str, limits: dict) -> None:
    """In the runner: move into ``workdir``, drop root, apply the rlimits."""
    os.chdir(workdir)
    # The environment is RUNNER_ENV (see _scrub_environment) plus HOME and TMPDIR, which
    # the zygote set to this working directory just before forking (written there, the
    # pages are not copied here).
    if os.geteuid() == 0:
        _drop_root()
    mb = 1024 * 1024
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_mb"]) * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_mb"]) * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2)


def _execute(job: dict, limits: dict, my_pid: int) -> dict:
    """In the runner: run setup, program and tests in one namespace under the wall-clock alarm,
    recording the stage in the shared page; return the outcome (``status``, ``stage``, ``test``...)."""
    # Signal dispositions, sys.stdout/err settings and the SIGALRM handler were set up once
    # in the zygote (see _Zygote.__init__) and are inherited: less work per fork.
    global _TIMEOUT_S
    _TIMEOUT_S = limits["timeout_s"]
    sys.argv = ["<program>"]
    sys.setrecursionlimit(1000)
    tests = job["tests"]
    sources = [("<setup>", job["setup"], None), ("<program>", job["program"], None)]
    sources += [(f"<test {i}>", t, i) for i, t in enumerate(tests)]
    for fname, src, _ in sources:
        linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
    stage_map = _STAGE_MAP
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    outcome = {
        "kind": "final",
        "status": "passed",
        "stage": None,
        "exception_type": None,
        "line": None,
        "message": "all tests passed" if tests else "program ran without error",
    }
    stage = sources[0]
    signal.setitimer(signal.ITIMER_REAL, float(limits["timeout_s"]))
    try:
        for code_no, stage in enumerate(sources, 1):
            if stage_map is not None and os.getpid() == my_pid:
                struct.pack_into("q", stage_map, 0, code_no)  # shared with the zygote: no syscall
            code = compile(stage[1], stage[0], "exec", dont_inherit=True)
            exec(code, ns)
    except BaseException as e:  # every way out of the program is an outcome
        signal.setitimer(signal.ITIMER_REAL, 0)
        if os.getpid() != my_pid:  # a forked child of the program fell through
            os._exit(0)
        outcome.update(_failure(e), stage=stage[0], test=stage[2])
        try:
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        except BaseException:
            pass
    return outcome


def _failure(e: BaseException) -> dict:
    """Status, exception type, program line and message of the exception that ended a run."""
    status = "timeout" if isinstance(e, _SandboxTimeout) else "memory" if isinstance(e, MemoryError) else "failed"
    line = _program_line(e.__traceback__)
    if isinstance(e, SyntaxError) and e.filename == "<program>" and line is None:
        line = e.lineno
    try:
        msg = str(e)
    except BaseException:
        msg = "<unprintable exception>"
    message = msg if isinstance(e, _SandboxTimeout) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return {"status": status, "exception_type": type(e).__name__, "line": line, "message": message[:2000]}


def _monitor(job, limits, fds, workdir, nonce) -> None:
    """Fallback mode only (no pid namespace): the runner's sacrificial parent.

    Forks the runner, waits for it, kills what is left of its process group and reports
    the runner's wait status on the control pipe. Never returns."""
    ctl = fds["ctl_w"]
    try:
        for k in ("out_r", "err_r", "res_r", "ctl_r"):
            os.close(fds[k])
        child = os.fork()
        if child == 0:
            os.close(ctl)
            _runner(job, limits, fds, workdir, nonce)
        for k in ("out_w", "err_w", "res_w"):
            os.close(fds[k])
        os.write(ctl, f"P {child}\n".encode())
        status = _reap_until(child)
        try:
            os.killpg(child, signal.SIGKILL)  # leftovers in the runner's group
        except OSError:
            pass
        os.write(ctl, f"R {status}\n".encode())
    except BaseException:
        os._exit(71)
    os._exit(0)


def _reap_until(pid: int) -> int:
    while True:
        try:
            got, st = os.waitpid(-1, 0)
        except ChildProcessError:
            return -1
        if got == pid:
            return st


def _mkdtemp(root: str) -> str:
    """A fresh private directory (tempfile/shutil stay out of the zygote: smaller forks)."""
    for _ in range(100):
        path = os.path.join(root, "rl-sandbox-" + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:  # pragma: no cover
            continue
    raise FileExistsError(f"cannot create a working directory in {root}")  # pragma: no cover


def _rmtree(path: str) -> None:
    """Remove a directory tree without following symlinks; errors are ignored."""
    try:
        os.rmdir(path)  # the common case: the program left nothing behind
        return
    except OSError:
        pass
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                _rmtree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Zygote:
    """State of one worker process.

    Preferred mode (``pid_ns``): the zygote is pid 1 of its own pid namespace (and sits in
    its own network namespace). Per job it forks the runner directly (one fork); the runner
    cannot signal it (init is immune to signals from inside its namespace, and the runner is
    not root), and after every job ``kill(-1, SIGKILL)`` removes every other process of the
    namespace, including daemonised or ``setsid`` fork-bomb children.

    Fallback mode (no pid namespace): a sacrificial monitor process forks the runner in a
    new session; the session's process group is killed after the job.
    """

    def __init__(self, pid_ns: bool, netns: tuple[bool, str]) -> None:
        self.pid_ns = pid_ns and os.getpid() == 1
        self.netns, self.netns_error = netns
        if not self.pid_ns:  # the runner's orphans become the zygote's children (pid 1 gets them anyway)
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        for mod in _PREIMPORT:
            try:
                __import__(mod)
            except ImportError:  # pragma: no cover
                pass
        global _STAGE_MAP
        import mmap

        _STAGE_MAP = mmap.mmap(-1, mmap.PAGESIZE)
        _get_libc()
        _prepare_caps()
        _prepare_process_for_runners()
        _scrub_environment()
        _warm_up()
        # Working directories on tmpfs when there is one (cheaper to create and remove).
        self.tmp_root = os.environ.get("TMPDIR") or "/tmp"
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
            self.tmp_root = "/dev/shm"
        # Move every object to the permanent generation: the runners' garbage collections
        # then do not touch (and copy-on-write) the zygote's pages.
        import gc

        gc.collect()
        gc.freeze()

    def reap_all(self, block: bool) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def run(self, job: dict, limits: dict) -> dict:
        nonce = os.urandom(16).hex()
        workdir = _mkdtemp(self.tmp_root)
        try:
            if os.geteuid() == 0:
                os.chown(workdir, _RUN_UID, _RUN_UID)
            return self._run(job, limits, workdir, nonce)
        finally:
            if self.pid_ns:
                try:
                    os.kill(-1, signal.SIGKILL)  # everything in our namespace except us
                except OSError:
                    pass
                self.reap_all(block=True)
            else:
                self.reap_all(block=False)
            _rmtree(workdir)

    def _run(self, job: dict, limits: dict, workdir: str, nonce: str) -> dict:
        fds = {}
        # The control pipe only exists for the fallback's monitor.
        for name in ("out", "err", "res") if self.pid_ns else ("out", "err", "res", "ctl"):
            r, w = os.pipe()
            fds[name + "_r"], fds[name + "_w"] = r, w
        if _STAGE_MAP is not None:
            struct.pack_into("q", _STAGE_MAP, 0, 0)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir  # inherited by the runner
        t0 = time.monotonic()
        child = os.fork()
        if child == 0:
            if self.pid_ns:
                for k in ("out_r", "err_r", "res_r"):
                    os.close(fds[k])
                _runner(job, limits, fds, workdir, nonce, new_session=False)
            _monitor(job, limits, fds, workdir, nonce)
        for k in ("out_w", "err_w", "res_w", "ctl_w"):
            if k in fds:
                os.close(fds[k])
        watch = _Watch(child, fds, self.pid_ns, int(limits["max_output_bytes"]), deadline=t0 + float(limits["timeout_s"]) + GRACE_S)
        watch.run()
        watch.finish()
        return self._outcome(limits, watch, nonce, watch.end_time - t0)

    def _outcome(self, limits: dict, watch: _Watch, nonce: str, duration: float) -> dict:
        """The ExecResult fields of a finished job: from the runner's report when there is a
        trustworthy one, else from how its process (or, in fallback mode, the monitor) ended."""
        final = _final_report(watch.bufs[watch.res_r], nonce)
        code_no = struct.unpack_from("q", _STAGE_MAP, 0)[0] if _STAGE_MAP is not None else 0
        running_test = code_no - 3 if code_no >= 3 else None
        out = dict(
            status="crashed",
            failing_test=None,
            exception_type=None,
            line=None,
            message="",
            stdout=watch.text(watch.out_r),
            stderr=watch.text(watch.err_r),
            duration_s=round(duration, 6),
            network_isolated=self.netns,
            pid_isolated=self.pid_ns,
        )
        mon_status, runner_status = watch.mon_status, watch.runner_status
        mon_signal = None
        if mon_status is not None and mon_status >= 0 and os.WIFSIGNALED(mon_status):
            mon_signal = os.WTERMSIG(mon_status)

        if watch.killed_by_us:
            out.update(
                status="timeout",
                failing_test=running_test,
                message=f"wall-clock limit of {float(limits['timeout_s']):g} s exceeded; process tree killed",
            )
        elif final is not None and mon_signal is None:
            status = final.get("status")
            if status not in STATUSES:
                status = "crashed"
            ft = final.get("test")
            out.update(
                status=status,
                message=str(final.get("message", ""))[:2000],
                exception_type=final.get("exception_type") if status != "timeout" else None,
                line=final.get("line") if isinstance(final.get("line"), int) else None,
                failing_test=ft if status != "passed" and isinstance(ft, int) else None,
            )
        elif mon_signal is not None:
            out.update(
                status="killed",
                failing_test=running_test,
                exception_type=_signal_name(mon_signal),
                message=f"the sandbox monitor (the program's parent) was killed by {_signal_name(mon_signal)}, presumably by the program",
            )
        elif runner_status is None or runner_status < 0:
            out.update(status="crashed", failing_test=running_test, message="the program's process ended without a status report")
        elif os.WIFSIGNALED(runner_status):
            out.update(_signalled(os.WTERMSIG(runner_status), limits), failing_test=running_test)
        else:
            code = os.WEXITSTATUS(runner_status) if os.WIFEXITED(runner_status) else runner_status
            out.update(
                status="crashed",
                failing_test=running_test,
                exception_type="SystemExit",
                message=f"the program exited (code {code}) before all tests ran, "
                f"without reporting a result (os._exit or a closed result channel)",
            )
        return out


def _final_report(data: bytes, nonce: str) -> dict | None:
    """The runner's first ``final`` report carrying this job's nonce, if any."""
    for ln in bytes(data).decode("utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("nonce") == nonce and obj.get("kind") == "final":
            return obj
    return None


def _signalled(sig: int, limits: dict) -> dict:
    """Status, exception type and message of a runner killed by signal ``sig``."""
    name = _signal_name(sig)
    if sig == signal.SIGXCPU:
        return dict(status="timeout", exception_type=name, message=f"CPU time limit of {limits['cpu_s']} s exceeded (SIGXCPU)")
    if sig == signal.SIGXFSZ:
        return dict(status="crashed", exception_type=name, message=f"file size limit of {limits['file_size_mb']} MB exceeded (SIGXFSZ)")
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS, signal.SIGTRAP):
        return dict(status="crashed", exception_type=name, message=f"the program crashed with {name}")
    return dict(status="killed", exception_type=name, message=f"the program was killed by {name}")


class _Watch:
    """The zygote's side of one running job (started by :meth:`_Zygote._run`).

    Reads the runner's stdout and stderr (each capped; the excess is counted) and, once the
    runner is gone, its result pipe; in fallback mode also the monitor's control pipe, which
    names the runner's pid (``P``) and its wait status (``R``). Enforces the wall clock by
    killing the whole process tree, then drains the pipes briefly and reaps.
    """

    def __init__(self, child: int, fds: dict, pid_ns: bool, cap: int, deadline: float) -> None:
        self.child, self.pid_ns, self.deadline = child, pid_ns, deadline
        self.out_r, self.err_r, self.res_r = fds["out_r"], fds["err_r"], fds["res_r"]
        self.ctl_r = fds.get("ctl_r", -1)
        self.bufs = {self.out_r: bytearray(), self.err_r: bytearray(), self.res_r: bytearray()}
        self.caps = {self.out_r: cap, self.err_r: cap, self.res_r: 1 << 20}
        self.dropped = {self.out_r: 0, self.err_r: 0}
        # The result pipe is read once the runner is gone (it holds at most a few KB).
        self.open_fds = {self.out_r, self.err_r}
        if self.ctl_r >= 0:
            self.bufs[self.ctl_r] = bytearray()
            self.caps[self.ctl_r] = 4096
            self.open_fds.add(self.ctl_r)
        self.poller = select.poll()
        for fd in self.open_fds:
            self.poller.register(fd, select.POLLIN)
        self.pidfd: int | None = None
        # What to SIGKILL: the runner, or (fallback) its process group once the monitor names it.
        self.kill_target: int | None = child if pid_ns else None
        if pid_ns:
            try:
                self.pidfd = os.pidfd_open(child)
                self.poller.register(self.pidfd, select.POLLIN)
            except (AttributeError, OSError):
                self.pidfd = None
        self.runner_status: int | None = None
        self.mon_status: int | None = None
        self.killed_by_us = False
        self.end_time: float | None = None
        self.drain_until: float | None = None

    def kill_all(self, monitor_too: bool = True) -> None:
        if self.kill_target is not None:
            for f in (os.killpg, os.kill):
                try:
                    f(self.kill_target, signal.SIGKILL)
                except OSError:
                    pass
        if not self.pid_ns and monitor_too:
            try:
                os.kill(self.child, signal.SIGKILL)
            except OSError:
                pass

    def child_done(self) -> None:
        """Collect the forked child's wait status if it has exited."""
        try:
            got, st = os.waitpid(self.child, os.WNOHANG)
        except ChildProcessError:
            got, st = self.child, -1
        if got == self.child:
            self.end_time = self.end_time or time.monotonic()
            if self.pid_ns:
                self.runner_status = st
            else:
                self.mon_status = st

    def run(self) -> None:
        """Poll until the runner has ended (or been killed at the deadline) and the pipes are drained."""
        while True:
            now = time.monotonic()
            finished = self.runner_status is not None or self.mon_status is not None or self.killed_by_us
            if not finished and now >= self.deadline:
                self.killed_by_us = True
                self.end_time = now
                self.kill_all()
                finished = True
            if finished and self.drain_until is None:
                # the runner is gone: collect what is still in the pipes, briefly
                if self.pid_ns:
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
                self.drain_until = now + 0.5
            if self.drain_until is not None and (now >= self.drain_until or not (self.open_fds - {self.ctl_r})):
                break
            if self.pidfd is None and self.pid_ns and self.runner_status is None:
                self.child_done()
                if self.runner_status is not None:
                    continue
                wait_ms = 5
            else:
                limit_t = self.drain_until if self.drain_until is not None else self.deadline
                wait_ms = max(0, int((limit_t - now) * 1000)) + 1
            for fd, _ev in self.poller.poll(wait_ms):
                self._readable(fd)

    def _readable(self, fd: int) -> None:
        if fd == self.pidfd:
            self.poller.unregister(fd)
            os.close(fd)
            self.pidfd = -1
            self.child_done()
            return
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.poller.unregister(fd)
            self.open_fds.discard(fd)
            if fd == self.ctl_r and not self.pid_ns:
                # the monitor exited (or was killed): wait for it
                try:
                    _, self.mon_status = os.waitpid(self.child, 0)
                except ChildProcessError:
                    self.mon_status = -1
                self.end_time = self.end_time or time.monotonic()
            return
        buf = self.bufs[fd]
        room = self.caps[fd] - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(chunk) > room and fd in self.dropped:
            self.dropped[fd] += len(chunk) - max(room, 0)
        if fd == self.ctl_r:
            for ln in bytes(buf).decode(errors="replace").splitlines():
                parts = ln.split()
                if len(parts) == 2 and parts[0] == "P" and self.kill_target is None:
                    self.kill_target = int(parts[1])
                elif len(parts) == 2 and parts[0] == "R" and self.runner_status is None:
                    self.runner_status = int(parts[1])
                    self.end_time = self.end_time or time.monotonic()

    def finish(self) -> None:
        """Read the result pipe, kill what is left, close the pipes and reap the child."""
        if self.end_time is None:
            self.end_time = time.monotonic()
        res_r = self.res_r
        os.set_blocking(res_r, False)
        while len(self.bufs[res_r]) < self.caps[res_r]:
            try:
                chunk = os.read(res_r, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            self.bufs[res_r] += chunk
        # leftovers of the runner's group; the monitor only if it has not reported
        self.kill_all(monitor_too=self.killed_by_us or self.runner_status is None)
        for fd in list(self.bufs) + ([self.pidfd] if self.pidfd not in (None, -1) else []):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.pid_ns:
            if self.runner_status is None:
                try:
                    _, self.runner_status = os.waitpid(self.child, 0)
                except ChildProcessError:
                    self.runner_status = -1
        elif self.mon_status is None:
            try:
                _, self.mon_status = os.waitpid(self.child, 0)
            except ChildProcessError:
                self.mon_status = 0

    def text(self, fd: int) -> str:
        """The captured output of ``fd``, with a note of how much was cut off."""
        s = bytes(self.bufs[fd]).decode("utf-8", errors="backslashreplace")
        if self.dropped.get(fd):
            s += f"\n[... {self.dropped[fd]} more bytes truncated by the sandbox]"
        return s


def _worker_main() -> None:
    """Entry point of a worker: requests on stdin (fd 0), replies on stdout (fd 1)."""
    global _RUN_UID
    # The protocol descriptors move away from 0/1/2 so nothing can write into them by accident.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if sys.path and sys.path[0] in ("", os.path.dirname(os.path.abspath(__file__))):
        sys.path.pop(0)  # the script's directory, or the current one (with -c)
    # Started with -S (no site module, no .pth files: a smaller zygote is cheaper to fork);
    # the site-packages directories the caller's interpreter uses are added back as plain
    # path entries, so programs can import what is installed, as before.
    for p in sys.argv[2:]:
        if p not in sys.path:
            sys.path.append(p)
    # Network namespace first (it may need a user namespace, which must come before the
    # pid namespace), then a pid namespace whose init is the zygote proper.
    _RUN_UID = SANDBOX_UID_BASE + os.getpid()
    netns = _isolate_network()
    pid_ns, _ = (False, "disabled") if os.environ.get("RL_SANDBOX_NO_PIDNS") else _unshare(CLONE_NEWPID)
    if pid_ns:
        try:
            zyg = os.fork()
        except OSError:
            zyg, pid_ns = 0, False
        if zyg != 0:
            # The outer process only waits: the zygote (pid 1 inside) talks to the caller.
            os.close(proto_in)
            os.close(proto_out)
            try:
                os.waitpid(zyg, 0)
            except ChildProcessError:
                pass
            os._exit(0)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    z_pid = os.getpid()
    z = _Zygote(pid_ns, netns)
    write_msg(
        proto_out,
        {
            "ready": True,
            "network_isolated": z.netns,
            "netns_error": z.netns_error,
            "pid_isolated": z.pid_ns,
            "run_uid": _RUN_UID if os.geteuid() == 0 else os.geteuid(),
        },
    )
    while True:
        req = _read_msg(proto_in)
        if req is None or req.get("cmd") == "exit":
            break
        try:
            reply = {"ok": True, "result": z.run(req["job"], req["limits"])}
        except BaseException as e:
            reply = {"ok": False, "error": repr(e)}
        if os.getpid() != z_pid:  # pragma: no cover - defensive: a forked child escaped
            os._exit(0)
        write_msg(proto_out, reply)
    os._exit(0)


if __name__ in ("__main__", "_rl_sandbox_worker") and sys.argv[1:2] == ["--worker"]:
    _worker_main()
