"""A gunicorn worker killed (SIGKILL) in the middle of a request: the other worker keeps
serving and gunicorn's master replaces the dead one."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from tests.deploy.serve import Server, get, gunicorn


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"HOST": "127.0.0.1", "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    with gunicorn(env, workers=2) as running:
        yield running


def holder(server: Server, client_port: int) -> psutil.Process | None:
    """The worker whose socket is connected to our client port (it has the request)."""
    for worker in server.workers():
        try:
            for conn in worker.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == client_port:
                    return worker
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_worker_killed_mid_request_is_replaced(server: Server) -> None:
    before = {w.pid for w in server.workers()}
    assert len(before) == 2
    port = urlparse(server.url).port
    assert port is not None
    # A request in flight: the request line and part of the headers are sent, the rest
    # is not, so a worker has accepted the connection and is in the middle of it.
    client = socket.create_connection(("127.0.0.1", port), timeout=20)
    client.sendall(b"GET /_dash-layout HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    client_port = client.getsockname()[1]
    deadline = time.monotonic() + 20
    victim = holder(server, client_port)
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.1)
        victim = holder(server, client_port)
    assert victim is not None, "no worker holds the request"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=20)
    # The half-served request dies with its worker: the connection closes without answer.
    try:
        client.sendall(b"1\r\n\r\n")
        answer = client.recv(1024)
    except OSError:
        answer = b""
    finally:
        client.close()
    assert answer == b""
    # Meanwhile, and after, every request is served (by the survivor, then by both).
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: get(server.url + "/_dash-layout")[0], range(24)))
    assert statuses == [200] * 24
    # The master replaces the killed worker.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = {w.pid for w in server.workers()}
        if len(now) == 2 and victim.pid not in now:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"the killed worker was not replaced: {before} -> {now}")
    assert len(now & before) == 1, "the survivor kept running"
    for _ in range(6):
        assert get(server.url + "/healthz")[0] == 200
        assert get(server.url + "/?v=1&class=3")[0] == 200
