"""Run untrusted (model-generated) Python in separate, resource-limited processes.

Nothing here ever ``exec``s a program in the caller's process. The design:

* :class:`Sandbox` starts ``workers`` long-lived worker interpreters (``python -s -S -B``
  running :mod:`rl.execution.worker` with ``--worker``) with a scrubbed environment, in their
  own session. Each unshares a network namespace when the kernel allows it
  (``unshare(CLONE_NEWNET)`` through ctypes; Python 3.11 has no ``os.unshare``), then a pid
  namespace, and forks the *zygote*, pid 1 of that namespace, which pre-imports the common
  standard-library modules once.
* Per program the zygote forks one *runner* (no interpreter start per program). The runner
  cannot signal the zygote (init ignores signals from inside its namespace; the runner is not
  root) and sees nothing outside the namespace; after every program the zygote sends
  ``kill(-1, SIGKILL)`` inside it, which removes fork bombs, daemons and ``setsid`` children.
  Without a pid namespace (fallback) a sacrificial monitor forks the runner in a new session
  and its process group is killed afterwards.
* The runner redirects stdin to /dev/null and stdout/stderr to pipes, closes every other
  descriptor except a private result pipe, moves into a fresh temporary directory, drops
  root privileges (to a per-worker uid) when it has them, applies the rlimits (CPU, address
  space, file size, processes, no core files), and runs ``setup``, ``program`` and each test
  in one namespace. It reports the outcome as a JSON line with a per-job nonce on the result
  pipe (never on stdout: a program that prints "passed", closes stdout or calls
  ``sys.exit(0)`` cannot pass by doing so) and its current stage in a shared page.
* The zygote enforces the wall clock (SIGKILL to the whole process tree), caps the
  captured output, removes the temporary directory and maps what happened to a status.
* Tests of the shape ``assert f(...) == expected`` are judged here, not in the sandbox
  (:mod:`rl.execution.verdict`): the runner only evaluates the calls and returns their values
  as plain data; :func:`_result` compares them with the expected side, which never leaves
  this process. ``ExecResult.verdict`` says which tests were judged where.

When bubblewrap (``bwrap``) is installed and works, every worker runs inside it
(:mod:`rl.execution.bwrap`): a read-only view of only the interpreter and site-packages,
private /tmp and /dev/shm, new pid/net/IPC/UTS namespaces, a fresh /proc; the worker is pid 1
there and is the zygote, so the design above is unchanged. Otherwise the *process* mode above
runs, with a RuntimeWarning, and every result says which mode it ran under
(``ExecResult.isolation``) and reports ``network_isolated=False`` (unix sockets at host paths
are reachable). The zygote removes each job's directories through descriptors, never
following a link, at any depth; a sample the harness fails on is that sample's ``crashed``
result. On x86_64 a seccomp filter (installed once in the zygote) refuses namespaces,
mounts, ptrace, bpf, io_uring and the like. What each mode guarantees: docs/sandbox.md.
"""

from __future__ import annotations

import marshal
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from rl.execution import verdict
from rl.execution.bwrap import bwrap_argv, find_bwrap, kept_names, spawn
from rl.execution.worker import GRACE_S, RUNNER_ENV, SANDBOX_UID_BASE, STATUSES, write_all, write_msg

__all__ = ["STATUSES", "Limits", "Job", "ExecResult", "Sandbox", "SandboxError", "run_one"]

_WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits.

    timeout_s: wall clock, from fork to exit (the whole process tree is killed after it).
    cpu_s: RLIMIT_CPU (seconds of CPU time; SIGXCPU, then SIGKILL one second later).
    memory_mb: RLIMIT_AS (address space) in MiB.
    file_size_mb: RLIMIT_FSIZE in MiB (bigger writes raise SIGXFSZ -> "crashed").
    max_output_bytes: stdout and stderr are each truncated to this many bytes.
    max_processes: RLIMIT_NPROC (root is first dropped to a per-worker uid, so it applies).
    """

    timeout_s: float = 5.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_output_bytes: int = 65536
    max_processes: int = 64

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s", "memory_mb", "file_size_mb", "max_output_bytes", "max_processes"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class Job:
    """One program to run.

    program: the full Python source (line numbers in results refer to it).
    tests: snippets run in order after the program, in the same namespace; each is one test.
        Tests of the shape ``assert f(...) == expected`` (see :mod:`rl.execution.verdict`) are
        judged outside the sandbox: only the calls' values come back from it.
    setup: code run before the program (e.g. imports the tests need).
    entry_point: the program's function the tests call (HumanEval's ``candidate``); when given,
        only calls of that name are evaluated in the sandbox for converted tests, and a test that
        calls any other function of the program runs in the sandbox as code. "" (default): any
        call of a name that is not a pure built-in is the program's.
    """

    program: str
    tests: tuple[str, ...] = ()
    setup: str = ""
    entry_point: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.program, str):
            raise TypeError(f"Job.program must be str, got {type(self.program).__name__}")
        if isinstance(self.tests, str):
            raise TypeError("Job.tests must be a tuple of code strings, got a single str")
        if not isinstance(self.tests, tuple):
            object.__setattr__(self, "tests", tuple(self.tests))
        if not all(isinstance(t, str) for t in self.tests):
            raise TypeError("every entry of Job.tests must be a str")
        if not isinstance(self.setup, str):
            raise TypeError(f"Job.setup must be str, got {type(self.setup).__name__}")
        if not isinstance(self.entry_point, str):
            raise TypeError(f"Job.entry_point must be str, got {type(self.entry_point).__name__}")

    @property
    def plan(self) -> verdict.Plan:
        """Which tests are judged outside the sandbox (cached per distinct tests)."""
        if self.entry_point:  # the program cannot change the plan (a built-in it redefines is not used)
            return verdict.plan_tests(self.tests, (self.entry_point,))
        # without one, a built-in the program or setup redefines is the program's, as in Python
        return verdict.plan_tests(self.tests, (), verdict.shadowed_names(self.program, self.setup) if self.tests else ())


@dataclass(frozen=True)
class ExecResult:
    """What happened to one :class:`Job`.

    status: one of STATUSES.
    failing_test: index into Job.tests of the first failing test (for timeout/memory/crash:
        the test that was running); None if passed or if the setup/program itself failed.
    exception_type: the exception's class name (or e.g. "SIGSEGV" for a signal), else None.
    line: 1-based line in Job.program of the innermost traceback frame in the program source.
    message: a one-line human-readable explanation.
    stdout, stderr: captured output, each capped at Limits.max_output_bytes.
    duration_s: wall-clock seconds of the run.
    network_isolated: whether the program could reach nothing outside: true only inside
        bubblewrap (own network namespace and no view of the host's filesystem, so no unix
        socket at a host path either); false in the process mode (see docs/sandbox.md).
    pid_isolated: whether the program ran in its own pid namespace (addition).
    verdict: where pass/fail was decided: "io" (every test judged by the caller on the plain
        values the program returned), "in_process" (every test ran as code in the sandboxed
        process; also when there are no tests), "mixed" (some of each). See docs/sandbox.md.
    isolation: "bwrap" (inside bubblewrap) or "process" (the fallback without it: the program
        sees the host's files and processes; see docs/sandbox.md).
    """

    status: str
    failing_test: int | None
    exception_type: str | None
    line: int | None
    message: str
    stdout: str
    stderr: str
    duration_s: float
    network_isolated: bool
    pid_isolated: bool = False
    verdict: str = "in_process"
    isolation: str = "process"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


class SandboxError(RuntimeError):
    """The sandbox machinery itself failed (not the program)."""


def _site_dirs() -> list[str]:
    """The site-packages directories of this interpreter (without user site-packages, as
    ``-s`` had it), for workers started with ``-S``."""
    import site

    try:
        dirs = site.getsitepackages()
    except AttributeError:  # pragma: no cover - some embedded/virtualenv builds
        dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return [d for d in dirs if os.path.isdir(d)]


# How a worker starts: ``python -s -S -B -c _BOOT PATH --worker SITE_DIRS...`` reads the worker
# program's compiled code (marshal, from the caller, length-prefixed on stdin) and runs it.
# Compiling it in every worker would leave the compiler's freed memory resident in the zygote's
# heap, and every page of it would be copied into (page tables) and torn down with every runner;
# unmarshalling leaves far less.
_BOOT = """\
import marshal, os, sys
def _read(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            os._exit(3)
        b += c
    return bytes(b)
_code = marshal.loads(_read(int.from_bytes(_read(8), "big")))
del _read
sys.argv = sys.argv[1:]
exec(_code, {"__name__": "_rl_sandbox_worker", "__file__": sys.argv[0], "__builtins__": __builtins__})
"""
_WORKER_CODE: bytes | None = None


def _worker_code() -> bytes:
    """The worker program, compiled once per caller process and marshalled."""
    global _WORKER_CODE
    if _WORKER_CODE is None:
        path = _WORKER_PATH
        with open(path, encoding="utf-8") as f:
            # optimize=0: the same code whatever -O the caller runs with
            _WORKER_CODE = marshal.dumps(compile(f.read(), path, "exec", dont_inherit=True, optimize=0))
    return _WORKER_CODE


def _find_bwrap() -> str | None:
    return find_bwrap()


def _tmp_mb(limits: Limits) -> int:
    """Size of each of bubblewrap's private /tmp and /dev/shm: room for a few files at the file size limit."""
    return max(64, 4 * int(limits.file_size_mb))


class _Worker:
    """One worker process, as the caller sees it: started, handshaken, one request at a time.

    ``bwrap``: the bubblewrap executable to start it in, or None (the process mode)."""

    def __init__(self, pid_namespace: bool = True, bwrap: str | None = None, limits: Limits = Limits()) -> None:
        # The worker starts from the same scrubbed environment its runners get (nothing inherited).
        env = dict(RUNNER_ENV)
        if not pid_namespace:
            env["RL_SANDBOX_NO_PIDNS"] = "1"
        sites = _site_dirs()
        if bwrap:
            sites = [os.path.realpath(d) for d in sites]  # bound at their real paths
            argv = [*bwrap_argv(bwrap, sites, _tmp_mb(limits)), "--", os.path.realpath(sys.executable)]
        else:
            argv = [sys.executable]
        argv += ["-s", "-S", "-B", "-c", _BOOT, _WORKER_PATH, "--worker", *sites]
        errors = tempfile.TemporaryFile()  # what bubblewrap (or a dying worker) says on stderr
        try:
            self.proc = spawn(
                lambda: subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    env=env,
                    cwd="/",
                    close_fds=True,
                    start_new_session=True,
                )
            )
            code = _worker_code()
            try:
                write_all(self.proc.stdin.fileno(), len(code).to_bytes(8, "big") + code)
                # The worker's configuration; its runners' uid is unique while it lives.
                cfg = {"bwrap": bool(bwrap), "run_uid": SANDBOX_UID_BASE + self.proc.pid}
                if bwrap:
                    cfg["keep"] = kept_names(sites)  # bound paths below the private /tmp: not swept
                write_msg(self.proc.stdin.fileno(), cfg)
            except OSError:
                pass  # the worker died: reported just below
            hello = self._recv(timeout=60.0)
            if not hello or not hello.get("ready"):
                self.kill()
                errors.seek(0)
                said = " ".join(errors.read(2000).decode("utf-8", "replace").split())
                raise SandboxError("a sandbox worker failed to start" + (f": {said}" if said else ""))
        finally:
            errors.close()
        self.network_isolated = bool(hello["network_isolated"])
        self.netns_error = hello.get("netns_error", "")
        self.pid_isolated = bool(hello.get("pid_isolated"))
        self.run_uid = hello.get("run_uid")
        self.isolation = hello.get("isolation", "process")
        self.seccomp = bool(hello.get("seccomp"))

    def _recv(self, timeout: float):
        """The next :func:`write_msg` message from the worker; None on timeout or end of stream."""
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        buf = bytearray()
        need = 4
        header_done = False
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if len(buf) == need:
                if not header_done:
                    (n,) = struct.unpack("!I", bytes(buf))
                    need, buf, header_done = n, bytearray(), True
                    if n == 0:
                        return None
                else:
                    return marshal.loads(bytes(buf))

    def request(self, job: Job, limits: Limits) -> dict | None:
        # A converted test's source is not sent (its expected side stays here): only its calls.
        plan = job.plan
        tests = [t if conv is None else "" for t, conv in zip(job.tests, plan.tests)]
        wire = {"program": job.program, "tests": tests, "setup": job.setup, "io": plan.wire()}
        msg = {"cmd": "run", "job": wire, "limits": asdict(limits)}
        try:
            write_msg(self.proc.stdin.fileno(), msg)
        except OSError:
            return None
        # The zygote enforces the limits; this is a backstop against a wedged zygote.
        return self._recv(timeout=limits.timeout_s + GRACE_S + 30.0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        if self.alive():
            try:
                write_msg(self.proc.stdin.fileno(), {"cmd": "exit"})
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


_BWRAP_BROKEN = ""  # why bubblewrap could not start a worker in this process (then not retried)

_FALLBACK_NOTE = (
    "running with process isolation only: programs can read the host's files and processes' command lines "
    "and connect to unix sockets at filesystem paths (docs/sandbox.md; `make sandbox-deps` installs bubblewrap)"
)


class Sandbox:
    """A pool of pre-forked sandbox workers. Use as a context manager.

    ``isolation``: "auto" (bubblewrap when it is installed and works, else the process mode with
    a RuntimeWarning), "bwrap" (bubblewrap or SandboxError) or "process" (today's process
    isolation only). ``pid_namespace=False`` (the fallback without a pid namespace) implies
    "process". Every result says which mode it ran under (:attr:`ExecResult.isolation`).

    >>> with Sandbox(workers=2) as sb:
    ...     sb.run(Job("def f(x):\\n    return x + 1\\n", tests=("assert f(1) == 2",))).status
    'passed'
    """

    def __init__(self, workers: int = 2, limits: Limits = Limits(), *, pid_namespace: bool = True, isolation: str = "auto"):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, got {type(limits).__name__}")
        if isolation not in ("auto", "bwrap", "process"):
            raise ValueError(f"isolation must be 'auto', 'bwrap' or 'process', got {isolation!r}")
        if isolation == "bwrap" and not pid_namespace:
            raise ValueError("isolation='bwrap' always has a pid namespace (pid_namespace=False is the process mode)")
        self.n_workers = workers
        self.limits = limits
        self.pid_namespace = pid_namespace
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        self.isolation_warning = ""
        try:
            self._bwrap = self._start_first(isolation if pid_namespace else "process")
            for _ in range(workers - 1):
                w = _Worker(pid_namespace, self._bwrap, limits)
                self._all.append(w)
                self._idle.put(w)
        except BaseException:
            self.close()
            raise
        self.isolation = "bwrap" if all(w.isolation == "bwrap" for w in self._all) else "process"
        self.network_isolated = all(w.network_isolated for w in self._all)
        self.netns_error = next((w.netns_error for w in self._all if w.netns_error), "")
        self.pid_isolated = all(w.pid_isolated for w in self._all)
        self.seccomp = all(w.seccomp for w in self._all)

    def _start_first(self, isolation: str) -> str | None:
        """Start the first worker, in bubblewrap when asked and possible; returns the bwrap
        executable the others use (None: the process mode, with a warning when it is a fallback)."""
        global _BWRAP_BROKEN
        bwrap = _find_bwrap() if isolation != "process" else None
        why = "" if bwrap or isolation == "process" else "bubblewrap (bwrap) is not installed"
        if bwrap and _BWRAP_BROKEN and isolation == "auto":
            bwrap, why = None, _BWRAP_BROKEN
        if bwrap:
            try:
                w = _Worker(self.pid_namespace, bwrap, self.limits)
            except SandboxError as e:
                _BWRAP_BROKEN = why = f"bubblewrap could not start a worker ({e})"
                bwrap = None
            else:
                self._all.append(w)
                self._idle.put(w)
                return bwrap
        if isolation == "bwrap":
            raise SandboxError(f"isolation='bwrap' was asked for, but {why}")
        if why:
            self.isolation_warning = f"rl sandbox: {why}; {_FALLBACK_NOTE}"
            warnings.warn(self.isolation_warning, RuntimeWarning, stacklevel=3)
        w = _Worker(self.pid_namespace, None, self.limits)
        self._all.append(w)
        self._idle.put(w)
        return None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.close()

    def _replace(self, dead: _Worker) -> _Worker:
        dead.kill()
        w = _Worker(self.pid_namespace, self._bwrap, self.limits)
        with self._lock:
            if dead in self._all:
                self._all.remove(dead)
            self._all.append(w)
            self.restarts += 1
        return w

    @staticmethod
    def _crashed(w: _Worker, message: str) -> ExecResult:
        return ExecResult(
            status="crashed",
            failing_test=None,
            exception_type=None,
            line=None,
            message=message,
            stdout="",
            stderr="",
            duration_s=0.0,
            network_isolated=w.network_isolated,
            pid_isolated=w.pid_isolated,
            isolation=w.isolation,
        )

    def run(self, job: Job) -> ExecResult:
        """Run one job on an idle worker. A dead or wedged worker is replaced and the job retried
        once; a job the harness fails on (its worker reports an error) is that job's ``crashed``
        result and its worker is replaced: one sample never ends a run."""
        if self._closed:
            raise SandboxError("the Sandbox is closed")
        if not isinstance(job, Job):
            raise TypeError(f"run() takes a Job, got {type(job).__name__}")
        w = self._idle.get()
        try:
            reply = None
            for _attempt in range(2):
                if not w.alive():
                    w = self._replace(w)
                reply = w.request(job, self.limits)
                if reply is not None:
                    break
                w = self._replace(w)  # the worker died or wedged; retry once on a fresh one
            if reply is None:
                return self._crashed(w, "the sandbox worker died twice running this job")
            if reply.get("ok"):
                try:
                    return _result(job, {**reply["result"], "isolation": w.isolation})
                except Exception as e:  # a reply this side cannot use: this sample's crash, not the run's end
                    reply = {"error": f"malformed result ({type(e).__name__}: {e})"}
            error = str(reply.get("error"))[:500]
            w = self._replace(w)  # whatever state the harness was left in goes with the old worker
            return self._crashed(w, f"the sandbox harness failed on this program ({error}); its worker was replaced")
        finally:
            self._idle.put(w)

    def map(self, jobs: Iterable[Job], progress: bool = False) -> list[ExecResult]:
        """Run ``jobs`` on the pool's workers in parallel; results in input order."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        jobs = list(jobs)
        results: list[ExecResult | None] = [None] * len(jobs)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc="sandbox", unit="prog")
        try:
            with ThreadPoolExecutor(max_workers=self.n_workers) as ex:
                futs = {ex.submit(self.run, j): i for i, j in enumerate(jobs)}
                for f in as_completed(futs):
                    results[futs[f]] = f.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]


def _result(job: Job, fields: dict) -> ExecResult:
    """The ExecResult of a worker's report, with the converted tests judged here on the values
    the program returned (rl.execution.verdict.decide)."""
    fields = dict(fields)
    outputs = fields.pop("outputs", None)
    return ExecResult(**verdict.decide(job.plan, fields, outputs))


def run_one(job: Job, limits: Limits = Limits()) -> ExecResult:
    """Run one job in a throwaway single-worker Sandbox."""
    with Sandbox(workers=1, limits=limits) as sb:
        return sb.run(job)
