"""The Procfile's gunicorn command serves the dashboard, as a PaaS would run it."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture()
def procfile_server(tmp_path: Path):
    command = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("NETWORK_ATLAS_DIR", None)  # the shipped demo atlas, as after `pip install .`
    # Run the Procfile line through a shell, as a PaaS does, with this interpreter's gunicorn.
    gunicorn = shlex.quote(str(Path(sys.executable).parent / "gunicorn"))
    process = subprocess.Popen(
        ["bash", "-c", "exec " + command.replace("gunicorn", gunicorn, 1)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get(base + "/")[0] == 200:
                break
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.3)
    else:  # pragma: no cover - only on a hang
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("gunicorn did not answer within 60 s")
    if process.poll() is not None:
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        pytest.fail(f"gunicorn exited with {process.returncode}:\n{output[-3000:]}")
    yield base
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_procfile_serves_the_demo_atlas(procfile_server: str) -> None:
    status, body = _get(procfile_server + "/")
    assert status == 200 and b"_dash-config" in body
    assert b"handwritten digits" in body, "the demo atlas's title is the page title"
    status, layout = _get(procfile_server + "/_dash-layout")
    assert status == 200 and b"_pages_content" in layout
    # Several requests spread over both workers all succeed.
    for _ in range(6):
        assert _get(procfile_server + "/_dash-layout")[0] == 200
