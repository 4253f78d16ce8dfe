"""A Label Studio server as a subprocess, and the calls to its driver (standard library only).

Label Studio and its SDK live in their own venv (``make labelstudio-venv`` builds
``.venv-labelstudio``; their numpy/pyarrow pins conflict with the project's). This module starts
``label-studio start`` from that venv as a subprocess, waits for ``/health``, writes ``server.json``
(URL, admin token and login) where ``rl labelstudio`` and ``rl loop`` find it, and always stops it again
(and removes a data directory it created). Every request to the server goes through
:mod:`rl.crowd.ls_driver`, run by that venv's python with plain JSON files in and out
(:func:`call_driver`).

The admin account and its API token come from the environment Label Studio reads at its first start
(``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD``, ``LABEL_STUDIO_USER_TOKEN``, with
``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``: 1.23 disables legacy tokens for new organisations); they
are kept in ``rl-server.json`` inside the data directory, so a later start on the same (or a copied)
data directory uses them again. Sign-up needs the organisation's invite link, the version check and
the analytics are off.

Webhooks to a listener on this host (``rl labelstudio listen``): Label Studio 1.23 refuses a webhook
URL on a loopback or private address, when it is created (``webhooks/serializers.py``) and at every
post (``core/utils/io.py`` ``ssrf_safe_request``), unless ``SSRF_PROTECTION_ENABLED`` is false.
``Server(allow_local_webhooks=True)`` (``rl labelstudio serve --allow-local-webhooks``) starts it so;
the default starts it with the protection on, whatever the environment says. The setting also lets
the server's cloud storages and ML backends reach local addresses: use it on a machine whose local
network you trust. ``server.json`` records it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from crowdstat.io.atomic import atomic_write_json

__all__ = [
    "LabelStudioError",
    "DRIVER",
    "default_venv",
    "check_venv",
    "free_port",
    "Server",
    "read_server_json",
    "call_driver",
    "chromium_path",
]

DRIVER = Path(__file__).with_name("ls_driver.py")
_CREDENTIALS = "rl-server.json"


class LabelStudioError(ValueError):
    """A Label Studio step failed; the message is one line naming the server, file or field."""


def default_venv() -> Path:
    """``$RL_LABELSTUDIO_VENV``, else ``.venv-labelstudio`` at the repository root."""
    env = os.environ.get("RL_LABELSTUDIO_VENV")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".venv-labelstudio"


def check_venv(venv: Path | None = None) -> Path:
    """The Label Studio venv, or a :class:`LabelStudioError` telling how to build it."""
    venv = Path(venv) if venv else default_venv()
    if not (venv / "bin" / "label-studio").exists() or not (venv / "bin" / "python").exists():
        raise LabelStudioError(f"{venv}: no Label Studio venv (build it with `make labelstudio-venv`, or set RL_LABELSTUDIO_VENV)")
    return venv


def chromium_path() -> str | None:
    """The system Chromium (Debian package ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return r.status == 200 and b"UP" in r.read()
    except (OSError, ValueError):
        return False


class Server:
    """``label-studio start`` in a subprocess; a context manager that always stops it.

    ``data_dir``: the server's data directory (kept); None: a temporary one, removed at :meth:`stop`.
    ``prepared``: a data directory to copy first (migrations done: a start takes seconds, not minutes).
    ``allow_local_webhooks``: start it with ``SSRF_PROTECTION_ENABLED=false``, so that it posts webhooks to
    a listener on 127.0.0.1 or a private address (module docstring); off by default.
    """

    def __init__(
        self,
        venv: Path | None = None,
        data_dir: str | Path | None = None,
        *,
        prepared: str | Path | None = None,
        port: int | None = None,
        timeout: float = 600.0,
        progress=None,
        allow_local_webhooks: bool = False,
    ):
        self.venv = check_venv(venv)
        self.allow_local_webhooks = bool(allow_local_webhooks)
        self.own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="ls-data-")) if data_dir is None else Path(data_dir)
        self.prepared = Path(prepared) if prepared else None
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.progress = progress if progress is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.startup_seconds = float("nan")

    def _credentials(self) -> dict:
        f = self.data_dir / _CREDENTIALS
        if f.exists():
            return json.loads(f.read_text())
        cred = {"username": "admin@crowd.local", "password": secrets.token_urlsafe(12), "token": secrets.token_hex(20)}
        atomic_write_json(f, cred)
        return cred

    def start(self) -> dict:
        if self.prepared is not None:
            if not (self.prepared / _CREDENTIALS).exists():
                raise LabelStudioError(f"{self.prepared}: not a prepared Label Studio data directory (no {_CREDENTIALS})")
            shutil.copytree(self.prepared, self.data_dir, dirs_exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cred = self._credentials()
        env = dict(
            os.environ,
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_USERNAME=cred["username"],
            LABEL_STUDIO_PASSWORD=cred["password"],
            LABEL_STUDIO_USER_TOKEN=cred["token"],
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LATEST_VERSION_CHECK="false",
            COLLECT_ANALYTICS="false",
            SSRF_PROTECTION_ENABLED="false" if self.allow_local_webhooks else "true",
        )
        cmd = [str(self.venv / "bin" / "label-studio"), "start", "--no-browser", "--port", str(self.port), "--internal-host", "127.0.0.1"]
        log = open(self.data_dir / "server.log", "ab")
        t0 = time.time()
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self._wait(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.time() - t0
        self.info = {
            "url": self.url,
            **cred,
            "pid": self.proc.pid,
            "data_dir": str(self.data_dir),
            "temporary": self.own_dir,
            "allow_local_webhooks": self.allow_local_webhooks,
        }
        return self.info

    def _wait(self, t0: float) -> None:
        next_note = 15.0
        while not _healthy(self.url):
            elapsed = time.time() - t0
            if self.proc.poll() is not None:
                raise LabelStudioError(
                    f"{self.data_dir / 'server.log'}: label-studio exited with {self.proc.returncode}: {self._log_tail()}"
                )
            if elapsed > self.timeout:
                raise LabelStudioError(
                    f"{self.url}: Label Studio not up after {self.timeout:.0f} s ({self.data_dir / 'server.log'}: {self._log_tail()})"
                )
            if elapsed >= next_note:
                self.progress(f"waiting for Label Studio at {self.url}: {elapsed:.0f} s (a fresh data directory runs migrations first)")
                next_note += 15.0
            time.sleep(1.0)

    def _log_tail(self) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-500:]

    def stop(self) -> None:
        """Stop the server (its whole process group) and remove a temporary data directory."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc is not None:
            try:  # children left in the group (gunicorn-style workers)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def read_server_json(path: str | Path) -> dict:
    """``server.json`` of ``rl labelstudio serve`` (url, token, username, password, ...)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelStudioError(f"{path}: no server file (start one with `rl labelstudio serve --server-file {path}`)") from None
    except (ValueError, OSError) as e:
        raise LabelStudioError(f"{path}: not a server file: {e}") from None
    for k in ("url", "token"):
        if not isinstance(info, dict) or not isinstance(info.get(k), str) or not info[k]:
            raise LabelStudioError(f"{path}: field {k!r} missing (expected url and token of a Label Studio server)")
    return info


def call_driver(action: str, request: dict, *, venv: Path | None = None, timeout: float = 900.0) -> dict:
    """Run ``ls_driver.py ACTION`` in the Label Studio venv with ``request``; its reply."""
    venv = check_venv(venv)
    with tempfile.TemporaryDirectory(prefix="ls-call-") as tmp:
        req, rep = Path(tmp) / "request.json", Path(tmp) / "reply.json"
        req.write_text(json.dumps(request), encoding="utf-8")
        cmd = [str(venv / "bin" / "python"), str(DRIVER), action, "--in", str(req), "--out", str(rep)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LabelStudioError(f"{request.get('url')}: Label Studio {action} took over {timeout:.0f} s") from None
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
            raise LabelStudioError(f"{request.get('url')}: {last}")
        return json.loads(rep.read_text(encoding="utf-8"))
