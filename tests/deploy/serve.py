"""Run the Procfile's gunicorn command on loopback, as a PaaS would, for the deploy tests."""

from __future__ import annotations

import base64
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port on loopback (asked of the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(
    url: str, *, user: str | None = None, password: str = "", timeout: float = 20
) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)`` of a GET (HTTP errors are returned, not raised)."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


@dataclass
class Server:
    """A running gunicorn: its base URL, process (the master) and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (children of the master)."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def procfile_command() -> str:
    """The Procfile's ``web:`` command, with this interpreter's gunicorn."""
    command = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    gunicorn = shlex.quote(str(Path(sys.executable).parent / "gunicorn"))
    return command.replace("gunicorn", gunicorn, 1)


def start(env: Mapping[str, str | None], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the Procfile command with ``env`` applied (``None`` removes a variable)."""
    port = free_port()
    full = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "2"}
    full.pop("NETWORK_ATLAS_DIR", None)  # the shipped demo atlas, as after `pip install .`
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    handle = log.open("wb")
    # Through a shell, as a PaaS runs the Procfile line (expands ${PORT} and friends).
    process = subprocess.Popen(
        ["bash", "-c", "exec " + procfile_command()],
        cwd=ROOT,
        env=full,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - only on a hang
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def gunicorn(
    env: Mapping[str, str | None] | None = None, *, workers: int = 2, timeout: float = 90
) -> Iterator[Server]:
    """Serve the Procfile on loopback until ``/healthz`` answers 200 and ``workers`` workers
    run; stops it (SIGTERM to its process group) on exit."""
    log = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
    process, url = start(dict(env or {}), log)
    server = Server(url, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.output()}")
            try:
                if get(url + "/healthz", timeout=5)[0] == 200 and len(server.workers()) >= workers:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{server.output()}")
            time.sleep(0.3)
        yield server
    finally:
        stop(process)
        log.unlink(missing_ok=True)


def run_to_exit(env: Mapping[str, str | None], timeout: float = 90) -> tuple[int, str]:
    """Run the Procfile command expecting it to stop by itself: ``(exit code, output)``."""
    log = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
    process, _ = start(env, log)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        code = -1
    output = log.read_text(errors="replace")
    log.unlink(missing_ok=True)
    return code, output
