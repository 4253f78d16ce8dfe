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

__all__ = ["STATUSES", "GRACE_S", "RUNNER_ENV", "SANDBOX_UID_BASE", "write_all", "write_msg"]

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "killed")

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
# When the sandbox runs as root, runners drop to an unprivileged uid of their own per worker
# (1000000 + the worker's pid; no passwd entry needed), so RLIMIT_NPROC counts each worker's
# programs separately and runners of different workers cannot signal each other.
SANDBOX_UID_BASE = 1_000_000
_RUN_UID = 65534  # nobody, until _worker_main sets the worker's own uid
_KEEP: dict[str, list[str]] = {}  # per private dir, the names of entries that hold bound paths (never swept)
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
    parses the failing line with ``ast`` in 3.11), encoding an outcome and returned values, the
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
    outcome["outputs"] = [[0, [_tag(v, [_OUTPUT_BUDGET]) for v in (None, 1, 1.5, "s", [1], (1,), {1: 2}, {1})]]]
    (_jenc(outcome, _jenc) + "\n").encode("utf-8", "backslashreplace")
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


# A small seccomp filter (x86_64 only; elsewhere none), installed once in the zygote and inherited by every runner: system calls a
# program under test never needs and that widen the kernel surface it can reach or let it leave
# its namespaces fail with EPERM: new namespaces (unshare, setns, clone with a CLONE_NEW* flag),
# mounts, ptrace and other processes' memory, keyrings, bpf, perf, userfaultfd, io_uring,
# file handles, modules, kexec, reboot, swap, accounting. clone3 fails with ENOSYS (its flags
# cannot be inspected; the C library then uses clone). Any other ABI (i386, x32) fails.
_SECCOMP_DENY_NAMES = """
    ptrace=101 syslog=103 uselib=134 vhangup=153 pivot_root=155 chroot=161 acct=163 mount=165 umount2=166 swapon=167
    swapoff=168 reboot=169 iopl=172 ioperm=173 init_module=175 delete_module=176 quotactl=179 lookup_dcookie=212
    kexec_load=246 add_key=248 request_key=249 keyctl=250 unshare=272 perf_event_open=298 name_to_handle_at=303
    open_by_handle_at=304 setns=308 process_vm_readv=310 process_vm_writev=311 finit_module=313 kexec_file_load=320
    bpf=321 userfaultfd=323 io_uring_setup=425 io_uring_enter=426 io_uring_register=427 open_tree=428 move_mount=429
    fsopen=430 fsconfig=431 fsmount=432 fspick=433 mount_setattr=442 quotactl_fd=443
"""
_SECCOMP_DENY_X86_64 = {name: int(nr) for name, nr in (p.split("=") for p in _SECCOMP_DENY_NAMES.split())}
_NR_CLONE, _NR_CLONE3 = 56, 435
_CLONE_NEW_MASK = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_SECCOMP = None  # the installed filter's ctypes objects (kept alive)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def _seccomp_filter() -> list[tuple[int, int, int, int]]:
    """The classic-BPF program: (code, jump if true, jump if false, k) per instruction."""
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    n_deny = len(_SECCOMP_DENY_X86_64)
    # layout: 0 ld arch, 1 jeq x86_64, 2 ld nr, 3 jge x32, 4.. deny list, clone3, clone, ret allow,
    # ld arg0, jset mask, ret allow, ret eperm (the target "deny")
    deny_at = 4 + n_deny + 2 + 1 + 3
    prog = [(ld_abs, 0, 0, 4), (jeq, 0, deny_at - 2, 0xC000003E), (ld_abs, 0, 0, 0), (jge, deny_at - 4, 0, 0x40000000)]
    for i, nr in enumerate(_SECCOMP_DENY_X86_64.values()):
        prog.append((jeq, deny_at - (4 + i) - 1, 0, nr))
    clone3_at = 4 + n_deny
    prog.append((jeq, deny_at + 1 - clone3_at - 1, 0, _NR_CLONE3))  # -> ret ENOSYS (after deny)
    prog.append((jeq, 1, 0, _NR_CLONE))
    prog.append((ret, 0, 0, allow))
    prog += [(ld_abs, 0, 0, 16), (jset, 1, 0, _CLONE_NEW_MASK), (ret, 0, 0, allow)]
    prog += [(ret, 0, 0, eperm), (ret, 0, 0, enosys)]
    assert len(prog) == deny_at + 2
    return prog


def _seccomp_zygote() -> bool:
    """Set no_new_privs and install the filter in the zygote itself, once: every runner inherits
    both through fork at no cost per program (installing a filter per runner cost ~0.15 ms of
    CPU: the kernel compiles it and frees it again at exit), and the zygote needs none of the
    refused calls once its namespaces exist. True when the filter is in place."""
    global _SECCOMP
    prctl = _prepare_caps()[0]
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid or file-capability binary gains anything
    if os.uname().machine != "x86_64":
        return False
    import ctypes

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    insns = _seccomp_filter()
    arr = (SockFilter * len(insns))(*[SockFilter(*i) for i in insns])
    fprog = SockFprog(len(insns), ctypes.cast(arr, ctypes.POINTER(SockFilter)))
    if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.pointer(fprog), 0, 0) != 0:
        return False
    _SECCOMP = (arr, fprog)
    return _get_libc().unshare(0) != 0  # refused now: the filter is active


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
    # Everything used after the program has run is bound here, before it runs: the program
    # can patch modules, builtins and this module's globals, not this frame's locals.
    emit, execute, setitimer, getpid, exit_, streams = _emit, _execute, signal.setitimer, os.getpid, os._exit, (sys.stdout, sys.stderr)
    outcome = execute(job, limits, my_pid)
    setitimer(signal.ITIMER_REAL, 0)
    if getpid() != my_pid:  # a forked child of the program fell through
        exit_(0)
    for stream in streams:
        try:
            stream.flush()
        except BaseException:
            pass
    emit(res_fd, my_pid, nonce, outcome)
    exit_(0)


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


# JSON escapes of the characters a JSON string cannot hold as they are (other non-ASCII text is
# written as UTF-8; lone surrogates become ``\\udXXX`` escapes through "backslashreplace").
_JSON_ESC = {i: f"\\u{i:04x}" for i in range(0x20)} | {ord('"'): '\\"', ord("\\"): "\\\\"}


def _jenc(obj, rec, _type=type, _str=str, _int_repr=int.__repr__, _translate=str.translate, _join=str.join, _esc=_JSON_ESC) -> str:
    """``obj`` (dicts with str keys, lists, str, int, bool, None) as JSON text, built from
    primitives bound at load time; ``rec`` is this function (recursion without a global lookup)."""
    t = _type(obj)
    if t is _str:
        return '"' + _translate(obj, _esc) + '"'
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if t is int:
        return _int_repr(obj)
    if t is list or t is tuple:
        return "[" + _join(",", [rec(x, rec) for x in obj]) + "]"
    if t is dict:
        return "{" + _join(",", ['"' + _translate(_str(k), _esc) + '":' + rec(v, rec) for k, v in dict.items(obj)]) + "}"
    raise TypeError(f"cannot encode {t.__name__}")


def _emit(
    res_fd: int, my_pid: int, nonce: str, obj: dict, _getpid=os.getpid, _write=os.write, _encode=str.encode, _mv=memoryview, _jenc=_jenc
) -> None:
    """Write ``obj``, tagged with the job's nonce, as one JSON line on the result pipe (only
    from the runner itself, never from a process the program forked). Uses only what was bound
    when this module was loaded (not ``json`` or ``os.write`` as the program may have left them)."""
    if _getpid() != my_pid:
        return
    obj["nonce"] = nonce
    try:
        view = _mv(_encode(_jenc(obj, _jenc) + "\n", "utf-8", "backslashreplace"))
        while view:
            view = view[_write(res_fd, view) :]
    except (OSError, ValueError, TypeError, RecursionError):
        pass


class _NotPlain(Exception):
    """A returned value that is not plain data (``kind``: "NotPlainData" or "OutputTooLarge")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_OUTPUT_BUDGET = 1 << 17  # characters of returned values per job (the result pipe holds 1 MiB)
_MAX_DEPTH = 100  # as rl.execution.verdict.MAX_DEPTH


def _tag(v, budget: list, depth: int = 0, _type=type, _isinstance=isinstance, _len=len):
    """A returned value as tagged plain data for the caller (rl.execution.verdict.decode_value):
    ``None``/``True``/``False`` as themselves, else ``[tag, payload...]``. Subclasses of the plain
    types are encoded by their base type's data (their own methods never reach the caller); any
    other type, nesting deeper than _MAX_DEPTH or more than the budget raises _NotPlain."""
    if depth > _MAX_DEPTH:
        raise _NotPlain("NotPlainData", f"nested deeper than {_MAX_DEPTH} levels (or cyclic)")
    budget[0] -= 1
    if budget[0] < 0:
        raise _NotPlain("OutputTooLarge", f"returned values larger than {_OUTPUT_BUDGET} items/characters")
    if v is None or v is True or v is False:
        return v
    t = _type(v)
    if _isinstance(v, int):
        out = ["i", int.__format__(v, "x")]
    elif _isinstance(v, float):
        out = ["f", float.hex(v)]
    elif _isinstance(v, complex):
        out = ["c", float.hex(complex.real.__get__(v)), float.hex(complex.imag.__get__(v))]
    elif _isinstance(v, str):
        out = ["s", str.__str__(v)]
    elif _isinstance(v, bytes):
        out = ["b", bytes.hex(v)]
    elif _isinstance(v, dict):
        out = ["d", [[_tag(k, budget, depth + 1), _tag(x, budget, depth + 1)] for k, x in dict.items(v)]]
    else:
        for base, tag in ((list, "l"), (tuple, "t"), (set, "S"), (frozenset, "F")):
            if _isinstance(v, base):
                return [tag, [_tag(x, budget, depth + 1) for x in base.__iter__(v)]]
        raise _NotPlain("NotPlainData", f"returned a {t.__module__}.{t.__qualname__}, which is not plain data")
    budget[0] -= _len(out[1])
    if budget[0] < 0:
        raise _NotPlain("OutputTooLarge", f"returned values larger than {_OUTPUT_BUDGET} items/characters")
    return out


def _confine(workdir: str, limits: dict) -> None:
    """In the runner: move into ``workdir``, drop root, apply the rlimits."""
    os.chdir(workdir)
    # The environment is RUNNER_ENV (see _scrub_environment) plus HOME and TMPDIR, which
    # the zygote set to this working directory just before forking (written there, the
    # pages are not copied here).
    if os.geteuid() == 0:
        _drop_root()
    # (no_new_privs and the seccomp filter are inherited from the zygote: _seccomp_zygote)
    mb = 1024 * 1024
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_mb"]) * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_mb"]) * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2)


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


def _stages(job: dict, _compile=compile) -> tuple:
    """Every piece of code of a job, compiled before any of it runs: a tuple of
    ``(filename, code or the SyntaxError compiling it raised, test index, call codes or None)``
    for setup, program and each test. A test the caller converted (``job["io"][i]`` is
    ``[prefix, [call, ...]]``) is its prefix statements plus the calls whose values go back."""
    io = job.get("io") or [None] * len(job["tests"])
    pieces = [("<setup>", job["setup"], None, None), ("<program>", job["program"], None, None)]
    for i, (src, conv) in enumerate(zip(job["tests"], io)):
        if conv is None:
            pieces.append((f"<test {i}>", src, i, None))
        else:
            prefix, calls = conv
            pieces.append((f"<test {i}>", "\n".join([prefix, *calls]) if prefix else "\n".join(calls), i, (prefix, tuple(calls))))
    out = []
    for fname, src, i, conv in pieces:
        linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
        try:
            if conv is None:
                out.append((fname, _compile(src, fname, "exec", dont_inherit=True), i, None))
            else:
                calls = tuple(_compile(c, fname, "eval", dont_inherit=True) for c in conv[1])
                out.append((fname, _compile(conv[0], fname, "exec", dont_inherit=True), i, calls))
        except SyntaxError as e:  # raised when its stage is reached, as if compiled there
            out.append((fname, e, i, None))
    return tuple(out)


def _execute(
    job: dict,
    limits: dict,
    my_pid: int,
    _exec=exec,
    _eval=eval,
    _isinstance=isinstance,
    _getpid=os.getpid,
    _pack=struct.pack_into,
    _setitimer=signal.setitimer,
    _tag=_tag,
    _failure=_failure,
    _NotPlain=_NotPlain,
    _SyntaxError=SyntaxError,
) -> dict:
    """In the runner: run setup, program and tests in one namespace under the wall-clock alarm,
    recording the stage in the shared page; return the outcome (``status``, ``stage``, ``test``,
    ``outputs``: the tagged values of the converted tests' calls, ``[[test index, [value...]]...]``).

    Everything the harness uses once the program has started is bound before it starts (the
    defaults above, bound when this module loaded, and the compiled stages, in a tuple): the
    program can replace ``builtins.exec``, ``compile`` or ``json``, or clear lists it finds
    through ``sys._getframe``, without changing which tests run or what is reported."""
    # Signal dispositions, sys.stdout/err settings and the SIGALRM handler were set up once
    # in the zygote (see _Zygote.__init__) and are inherited: less work per fork.
    global _TIMEOUT_S
    _TIMEOUT_S = limits["timeout_s"]
    sys.argv = ["<program>"]
    sys.setrecursionlimit(1000)
    stages = _stages(job)
    stage_map = _STAGE_MAP
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    outputs: list = []
    outcome = {
        "kind": "final",
        "status": "passed",
        "stage": None,
        "exception_type": None,
        "line": None,
        "message": "all tests passed" if job["tests"] else "program ran without error",
        "outputs": outputs,
    }
    stage = stages[0]
    budget = [_OUTPUT_BUDGET]
    _setitimer(signal.ITIMER_REAL, float(limits["timeout_s"]))
    try:
        for code_no, stage in enumerate(stages, 1):
            if stage_map is not None and _getpid() == my_pid:
                _pack("q", stage_map, 0, code_no)  # shared with the zygote: no syscall
            code = stage[1]
            if _isinstance(code, _SyntaxError):
                raise code
            _exec(code, ns)
            if stage[3] is not None:
                outputs.append([stage[2], [_tag(_eval(call, ns), budget) for call in stage[3]]])
    except BaseException as e:  # every way out of the program is an outcome
        _setitimer(signal.ITIMER_REAL, 0)
        if _getpid() != my_pid:  # a forked child of the program fell through
            os._exit(0)
        if _isinstance(e, _NotPlain):
            outcome.update(status="failed", exception_type=e.kind, line=None, message=f"{e.kind}: test {stage[2]}: {e}"[:2000])
            outcome.update(stage=stage[0], test=stage[2])
            return outcome
        outcome.update(_failure(e), stage=stage[0], test=stage[2])
        try:
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        except BaseException:
            pass
    return outcome


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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, dir_fd: int) -> int | None:
    """``name`` in ``dir_fd`` opened as a directory without following a symlink; None if it is not
    a directory (any more). A directory its owner made unreadable (non-root mode) is first given
    back its owner's permissions, through an O_PATH descriptor (never by path)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        pass
    except OSError:
        return None
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        os.chmod(f"/proc/self/fd/{pfd}", 0o700)  # the magic link names this inode, not a path
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(pfd)


def _unlink(name: str, dir_fd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _empty_dir(root_fd: int) -> None:
    """Remove everything inside the directory open as ``root_fd``. Never follows a symlink (every
    step is relative to a descriptor opened with O_NOFOLLOW; unlink and rename act on the entry
    itself) and never recurses: the subdirectories of each subdirectory are moved up into
    ``root_fd``, so a tree of any depth needs two descriptors and no stack. Errors are ignored."""
    moved = 0
    for _pass in range(100_000):  # one pass per level of depth; bounded against a writer that never stops
        try:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(root_fd)]
        except OSError:
            return
        progress = False
        for name, is_dir in entries:
            fd = _open_dir(name, root_fd) if is_dir else None
            if fd is None:  # a file, a symlink, or no longer a directory
                progress |= _unlink(name, root_fd)
                continue
            try:
                for e in os.scandir(fd):
                    if not e.is_dir(follow_symlinks=False):
                        _unlink(e.name, fd)
                        continue
                    for _ in range(5):  # a fresh name in root_fd (a collision is retried)
                        moved += 1
                        try:
                            os.rename(e.name, f".rl-rm-{moved}-{os.urandom(4).hex()}", src_dir_fd=fd, dst_dir_fd=root_fd)
                            break
                        except OSError:
                            continue
            except OSError:
                pass
            finally:
                os.close(fd)
            try:
                os.rmdir(name, dir_fd=root_fd)
                progress = True
            except OSError:
                pass
        if not progress:
            return  # empty, or nothing more can be removed


def _remove_entry(name: str, dir_fd: int) -> None:
    """Remove ``name`` (a file, a symlink, or a whole directory tree) from ``dir_fd``, never
    following a link; errors are ignored."""
    try:
        os.rmdir(name, dir_fd=dir_fd)  # the common case: an empty directory
        return
    except OSError:
        pass
    fd = _open_dir(name, dir_fd)
    if fd is None:
        _unlink(name, dir_fd)
        return
    try:
        _empty_dir(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _rmtree(path: str) -> None:
    """Remove the tree at ``path`` (its parent directories are trusted; the last component and
    everything below it are not), never following a symlink; errors are ignored."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _remove_entry(name, pfd)
    finally:
        os.close(pfd)


def _sweep(root_fd: int, owner: int | None, keep: frozenset = frozenset()) -> None:
    """Remove the entries of ``root_fd`` (a private /tmp or /dev/shm: all of them but ``keep``, the
    root-owned directories that hold read-only bound paths; a shared one: only those owned by
    ``owner``, the runners' uid)."""
    try:
        entries = list(os.scandir(root_fd))
    except OSError:
        return
    for e in entries:
        if e.name in keep:
            continue
        try:
            if owner is None or e.stat(follow_symlinks=False).st_uid == owner:
                _remove_entry(e.name, root_fd)
        except OSError:
            pass


# SysV IPC (sys/ipc.h, sys/shm.h, sys/sem.h, sys/msg.h on Linux): the *_INFO commands return the
# highest index in use and fill a struct whose given field counts the objects; *_STAT_ANY (Linux
# >= 4.17, else *_STAT) turns an index into an id; IPC_RMID removes it.
_IPC_RMID = 0
_SYSV = (  # (function, INFO, STAT_ANY, STAT, int index of the count field in the INFO struct)
    ("shmctl", 14, 15, 13, 0),  # shm_info.used_ids
    ("semctl", 19, 20, 18, 7),  # seminfo.semusz
    ("msgctl", 12, 13, 11, 0),  # msginfo.msgpool
)


def _sysv_call(fn, ident: int, cmd: int, buf) -> int:
    return fn(ident, 0, cmd, buf) if fn.__name__ == "semctl" else fn(ident, cmd, buf)


def _sysv_objects() -> list[tuple[str, int]]:
    """(kind, highest index) of the SysV IPC kinds that have objects in this IPC namespace."""
    import ctypes

    libc = _get_libc()
    buf = (ctypes.c_int * 64)()
    found = []
    for name, info, _any, _stat, field in _SYSV:
        top = _sysv_call(getattr(libc, name), 0, info, buf)
        if top >= 0 and buf[field] > 0:
            found.append((name, top))
    return found


def _sysv_remove(found: list[tuple[str, int]]) -> None:
    import ctypes

    libc = _get_libc()
    buf = (ctypes.c_char * 512)()
    for name, top in found:
        fn = getattr(libc, name)
        stat_any, stat = next((a, s) for n, _i, a, s, _f in _SYSV if n == name)
        for idx in range(top + 1):
            ident = _sysv_call(fn, idx, stat_any, buf)
            if ident < 0:
                ident = _sysv_call(fn, idx, stat, buf)
            if ident >= 0:
                _sysv_call(fn, ident, _IPC_RMID, None)


def _sysv_sweep(as_uid: int | None) -> None:
    """Remove every SysV shared memory segment, semaphore set and message queue of this (private)
    IPC namespace. Removing needs CAP_SYS_ADMIN or ownership: without the capability (the zygote
    inside bubblewrap) a child that becomes the runners' uid does it. Costs one call per kind when
    there is nothing to remove."""
    try:
        found = _sysv_objects()
        if not found:
            return
        if as_uid is None:
            _sysv_remove(found)
            return
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(as_uid)
                os.setuid(as_uid)
                _sysv_remove(found)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    except Exception:  # pragma: no cover - best effort
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

    def __init__(self, pid_ns: bool, netns: tuple[bool, str], bwrap: bool = False, ipc_private: bool = False) -> None:
        self.pid_ns = pid_ns and os.getpid() == 1
        self.netns, self.netns_error = netns
        self.bwrap, self.ipc_private = bwrap, ipc_private
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
        self.seccomp = _seccomp_zygote()
        # Working directories on tmpfs when there is one (cheaper to create and remove).
        self.tmp_root = os.environ.get("TMPDIR") or "/tmp"
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
            self.tmp_root = "/dev/shm"
        self.tmp_fd = os.open(self.tmp_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Swept after every job: inside bubblewrap /tmp and /dev/shm are this worker's own
        # (everything in them is a runner's); otherwise, as root, what the runners' uid left in
        # the shared /dev/shm. (Without root the runners' uid is the user's: nothing is swept.)
        self.root = os.geteuid() == 0
        self.sweep_fds = []
        for d in ("/tmp", "/dev/shm") if bwrap else ("/dev/shm",) if self.root else ():
            try:
                self.sweep_fds.append((os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), frozenset(_KEEP.get(d, ()))))
            except OSError:
                pass
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
        outer, outer_fd, workdir = self._new_jobdir()
        try:
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
            self._cleanup(outer, outer_fd)

    def _new_jobdir(self) -> tuple[str, int, str]:
        """A job's directories: ``TMP/rl-job-X`` (the zygote's, mode 0711: the runner can neither
        rename nor replace what is in it when it is not the zygote's uid) holding the working
        directory ``rl-sandbox-Y`` (the runner's). Returns the outer name, a descriptor of it
        (the cleanup works through it, never through a path) and the working directory's path."""
        for _ in range(100):
            outer = "rl-job-" + os.urandom(8).hex()
            try:
                os.mkdir(outer, 0o711, dir_fd=self.tmp_fd)
                break
            except FileExistsError:  # pragma: no cover
                continue
        else:  # pragma: no cover
            raise FileExistsError(f"cannot create a working directory in {self.tmp_root}")
        outer_fd = os.open(outer, _DIR_FLAGS, dir_fd=self.tmp_fd)
        inner = "rl-sandbox-" + os.urandom(8).hex()
        os.mkdir(inner, 0o700, dir_fd=outer_fd)
        if self.root:
            os.chown(inner, _RUN_UID, _RUN_UID, dir_fd=outer_fd, follow_symlinks=False)
        return outer, outer_fd, os.path.join(self.tmp_root, outer, inner)

    def _cleanup(self, outer: str, outer_fd: int) -> None:
        """After a job (every process of it is gone in pid-namespace mode): remove its directories
        through their descriptors (never following a link; any depth), what it left in the swept
        directories and its SysV IPC objects."""
        try:
            _empty_dir(outer_fd)
        finally:
            os.close(outer_fd)
        _remove_entry(outer, self.tmp_fd)
        for fd, keep in self.sweep_fds:
            _sweep(fd, None if self.bwrap else _RUN_UID, keep)
        if self.ipc_private:
            _sysv_sweep(_RUN_UID if self.bwrap and self.root else None)

    def at_exit(self) -> None:
        """Before the worker exits: without bubblewrap, as root, also what the runners' uid left in
        the shared temporary directories (checked once here rather than after every job)."""
        if self.bwrap or not self.root:
            return
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            try:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                _sweep(fd, _RUN_UID)
            finally:
                os.close(fd)

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
            # the converted tests' returned values: judged by the caller (rl.execution.verdict)
            out["outputs"] = final.get("outputs")
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
        except (ValueError, RecursionError):  # not JSON, or nested too deeply: not a report
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


# In the process mode the network namespace stops IP and abstract unix sockets but not a unix
# socket at a filesystem path: the result says so instead of claiming isolation.
_FS_SOCKETS_NOTE = "own network namespace, but the host's filesystem is visible: unix sockets at filesystem paths can connect out"


def _isolate(bwrap: bool) -> tuple[tuple[bool, str], bool, bool]:
    """The namespaces of a worker: ``(network_isolated, why not), pid namespace, private IPC``.

    Inside bubblewrap (started with ``--as-pid-1``) everything is done: this process is pid 1 of
    its own pid, network, IPC and UTS namespaces, and sees only a read-only interpreter. Otherwise
    a network namespace first (it may need a user namespace, which must come before the pid
    namespace), then a private IPC namespace, then a pid namespace whose init, forked by
    :func:`_worker_main`, is the zygote proper."""
    if bwrap:
        return (True, ""), os.getpid() == 1, True
    ok, err = _isolate_network()
    netns = (False, _FS_SOCKETS_NOTE if ok else err)
    ipc_private = _unshare(CLONE_NEWIPC)[0]
    pid_ns = False if os.environ.get("RL_SANDBOX_NO_PIDNS") else _unshare(CLONE_NEWPID)[0]
    return netns, pid_ns, ipc_private


def _worker_main() -> None:
    """Entry point of a worker: requests on stdin (fd 0), replies on stdout (fd 1). The first
    message is the worker's configuration (``bwrap``: started inside bubblewrap; ``run_uid``:
    the uid its runners drop to when it is root, unique per worker)."""
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
    cfg = _read_msg(proto_in) or {}
    bwrap = bool(cfg.get("bwrap"))
    _RUN_UID = int(cfg.get("run_uid") or SANDBOX_UID_BASE + os.getpid())
    _KEEP.update({k: [str(x) for x in v] for k, v in (cfg.get("keep") or {}).items()})
    netns, pid_ns, ipc_private = _isolate(bwrap)
    if pid_ns and not bwrap:
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
    z = _Zygote(pid_ns, netns, bwrap=bwrap, ipc_private=ipc_private)
    write_msg(
        proto_out,
        {
            "ready": True,
            "network_isolated": z.netns,
            "netns_error": z.netns_error,
            "pid_isolated": z.pid_ns,
            "run_uid": _RUN_UID if os.geteuid() == 0 else os.geteuid(),
            "isolation": "bwrap" if bwrap else "process",
            "seccomp": z.seccomp,
        },
    )
    while True:
        req = _read_msg(proto_in)
        if req is None or req.get("cmd") == "exit":
            break
        try:
            reply = {"ok": True, "result": z.run(req["job"], req["limits"])}
        except BaseException as e:  # the harness failed on this job: the caller replaces this worker
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        if os.getpid() != z_pid:  # pragma: no cover - defensive: a forked child escaped
            os._exit(0)
        write_msg(proto_out, reply)
    z.at_exit()
    os._exit(0)


if __name__ in ("__main__", "_rl_sandbox_worker") and sys.argv[1:2] == ["--worker"]:
    _worker_main()
