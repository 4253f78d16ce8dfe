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

This is process isolation + rlimits + namespaces. It is *not* a container: no seccomp
filter, no read-only filesystem, no chroot. See docs/sandbox.md.
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
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from rl.execution.worker import GRACE_S, RUNNER_ENV, STATUSES, write_all, write_msg

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
    setup: code run before the program (e.g. imports the tests need).
    """

    program: str
    tests: tuple[str, ...] = ()
    setup: str = ""

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
    network_isolated: whether the program ran in its own (empty) network namespace.
    pid_isolated: whether the program ran in its own pid namespace (addition).
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


class _Worker:
    """One worker process, as the caller sees it: started, handshaken, one request at a time."""

    def __init__(self, pid_namespace: bool = True) -> None:
        # The worker starts from the same scrubbed environment its runners get (nothing inherited).
        env = dict(RUNNER_ENV)
        if not pid_namespace:
            env["RL_SANDBOX_NO_PIDNS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-S", "-B", "-c", _BOOT, _WORKER_PATH, "--worker", *_site_dirs()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
        code = _worker_code()
        try:
            write_all(self.proc.stdin.fileno(), len(code).to_bytes(8, "big") + code)
        except OSError:
            pass  # the worker died: reported just below
        hello = self._recv(timeout=60.0)
        if not hello or not hello.get("ready"):
            self.kill()
            raise SandboxError("a sandbox worker failed to start")
        self.network_isolated = bool(hello["network_isolated"])
        self.netns_error = hello.get("netns_error", "")
        self.pid_isolated = bool(hello.get("pid_isolated"))
        self.run_uid = hello.get("run_uid")

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
        msg = {"cmd": "run", "job": {"program": job.program, "tests": list(job.tests), "setup": job.setup}, "limits": asdict(limits)}
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


class Sandbox:
    """A pool of pre-forked sandbox workers. Use as a context manager.

    >>> with Sandbox(workers=2) as sb:
    ...     sb.run(Job("def f(x):\\n    return x + 1\\n", tests=("assert f(1) == 2",))).status
    'passed'
    """

    def __init__(self, workers: int = 2, limits: Limits = Limits(), *, pid_namespace: bool = True):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, got {type(limits).__name__}")
        self.n_workers = workers
        self.limits = limits
        self.pid_namespace = pid_namespace
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        try:
            for _ in range(workers):
                w = _Worker(pid_namespace)
                self._all.append(w)
                self._idle.put(w)
        except BaseException:
            self.close()
            raise
        self.network_isolated = all(w.network_isolated for w in self._all)
        self.netns_error = next((w.netns_error for w in self._all if w.netns_error), "")
        self.pid_isolated = all(w.pid_isolated for w in self._all)

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
        w = _Worker(self.pid_namespace)
        with self._lock:
            if dead in self._all:
                self._all.remove(dead)
            self._all.append(w)
            self.restarts += 1
        return w

    def run(self, job: Job) -> ExecResult:
        """Run one job on an idle worker (a dead or wedged worker is replaced, and the job retried once)."""
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
                return ExecResult(
                    "crashed", None, None, None, "the sandbox worker died twice running this job", "", "", 0.0, w.network_isolated
                )
            if not reply.get("ok"):
                raise SandboxError(f"sandbox worker error: {reply.get('error')}")
            return ExecResult(**reply["result"])
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


def run_one(job: Job, limits: Limits = Limits()) -> ExecResult:
    """Run one job in a throwaway single-worker Sandbox."""
    with Sandbox(workers=1, limits=limits) as sb:
        return sb.run(job)
