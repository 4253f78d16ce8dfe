"""The ``crowdstat stream`` subprocess of ``rl labelstudio listen`` (:mod:`rl.crowd.ls_stream`).

The listener fits through ``python -m crowdstat stream --method M OPTIONS --out WORK``
(``--warm-start OUT`` when its vote log is not empty): an :class:`crowdstat.online.OnlineFit` in its
own process, since rl reaches crowdstat only through its host-only I/O and its command line.

- :class:`StreamProcess`: JSON lines on the process's stdin and stdout, one request and one reply at a
  time; JAX on the CPU (:data:`STREAM_ENV`: ``JAX_PLATFORMS=cpu`` and single-threaded XLA unless the
  environment says otherwise), in its own session (Ctrl-C reaches the listener only, which drains and
  then closes its stdin). A refused request (``{"ok": false}``) leaves its fit as it was
  (:class:`StreamError` with ``refused=True``); a process that is gone is a :class:`StreamError` with
  its exit status and last error line.
- :func:`stream_flags`: the ``crowdstat fit`` options (``crowdstat stream`` takes the same) of a
  method's parameters; only the option names come from :mod:`crowdstat.estimators.registry`.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

__all__ = ["STREAM_COMMAND", "STREAM_ENV", "StreamError", "StreamProcess", "stream_flags"]

#: the fit process: ``crowdstat stream`` run by this interpreter (method, options and --out are added)
STREAM_COMMAND = (sys.executable, "-m", "crowdstat", "stream")
#: as rl.crowd.pipeline runs crowdstat: JAX on the CPU, one XLA thread (set where the environment does not)
STREAM_ENV = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


class StreamError(ValueError):
    """The ``crowdstat stream`` process refused a request (``refused=True``: its fit is unchanged) or is gone."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


def _value_text(value) -> str:
    if isinstance(value, float):
        return repr(value)  # round-trips: 1e-15, inf
    return str(value)


def stream_flags(method: str, params: dict) -> list[str]:
    """The ``crowdstat fit`` options (``crowdstat stream`` takes the same) that give ``params`` for ``method``.

    Only the option *names* come from :mod:`crowdstat.estimators.registry` (standard library): the
    values are checked by ``crowdstat stream`` itself. A parameter without an option, or a switch
    given a value it cannot set, is a one-line ValueError.
    """
    from crowdstat.estimators.registry import param_fields

    fields = param_fields(method)
    unknown = sorted(set(params) - set(fields))
    if unknown:
        allowed = sorted(n for n, f in fields.items() if "flag" in f.metadata)
        raise ValueError(f"--method {method}: unknown parameter(s) {unknown}; allowed: {allowed}")
    out: list[str] = []
    for name, value in params.items():
        fld = fields[name]
        flag, switch = fld.metadata.get("flag"), fld.metadata.get("switch")
        if value == fld.default and type(value) is type(fld.default):
            continue
        if flag is None:
            raise ValueError(f"{name} = {value!r}: not an option of crowdstat stream (only its default {fld.default!r} is)")
        if switch is not None:
            if switch.get(name) != value:
                raise ValueError(f"{name} = {value!r}: the option {flag} sets {switch}, and its absence {name} = {fld.default!r}")
            out.append(flag)
        elif value is None:
            raise ValueError(f"{name} = None: {flag} takes a value (its default is {fld.default!r})")
        else:
            out += [flag, _value_text(value)]
    return out


class StreamProcess:
    """One ``crowdstat stream`` subprocess: a request is a JSON line on its stdin, the reply a line on its stdout.

    ``argv``: the whole command; its stderr is drained by a thread (the last lines are kept for the
    error of a crash). Used by one thread at a time (the listener's lock).
    """

    def __init__(self, argv: Sequence[str], env: dict | None = None):
        self.argv = [os.fspath(a) for a in argv]
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to the listener, which drains before it closes stdin
        )
        self._drain = threading.Thread(target=self._read_stderr, name="crowdstat-stream-stderr", daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def exit_error(self) -> StreamError:
        """The error of a process that is gone: its exit status and last error line."""
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        self._drain.join(timeout=5)
        errors = [x for x in self.stderr_tail if "error" in x.lower()] or list(self.stderr_tail)[-1:]
        why = errors[-1] if errors else "no message"
        return StreamError(f"crowdstat stream exited (status {rc}): {why}")

    def request(self, req: dict) -> dict:
        """Send one request, wait for its reply; a StreamError when refused (``refused``) or the process is gone."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError, ValueError):
            line = ""
        if not line:
            raise self.exit_error()
        try:
            reply = json.loads(line)
        except ValueError:
            raise StreamError(f"crowdstat stream: not a reply: {line.strip()[:200]!r}") from None
        if not reply.get("ok"):
            raise StreamError(f"crowdstat stream: {reply.get('error', 'refused')}", refused=True)
        return reply

    def close(self, timeout: float = 30.0) -> int | None:
        """End of input (the process exits 0), then SIGTERM, then SIGKILL; the exit status."""
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
        for sig, wait in ((None, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if sig is not None and self.alive():
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._drain.join(timeout=5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.close(timeout=10)
