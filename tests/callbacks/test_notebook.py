"""``dashboard.show`` for real, without a notebook: an IPython shell (what a notebook's
kernel runs, so Dash's ``jupyter_mode`` is active) shows the app inline, its frame's
address serves the page, ``/healthz`` and a neuron's page over HTTP, and showing another
atlas on the same port replaces the app; outside IPython the call serves like
``python -m dashboard``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard import show
from dashboard.config import DEMO_ATLAS_DIR

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: the IPython shell must exist before Dash is imported (Dash
# decides at import whether it runs in IPython).
IN_IPYTHON = textwrap.dedent(
    """
    import json, re, sys, urllib.request
    from IPython.core.interactiveshell import InteractiveShell
    InteractiveShell.instance()
    from IPython.utils.capture import capture_output

    import dashboard
    from tests.helpers.dash_payloads import pages_callback_body

    demo, other, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def get(url):
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()

    def page(base, path):
        body = json.dumps(pages_callback_body(path, "")).encode()
        request = urllib.request.Request(
            base + "_dash-update-component", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    with capture_output() as shown:  # what the notebook's cell receives (%%capture)
        dashboard.show(demo, port=port)
    frame = shown.outputs[0].data["text/html"]
    src = re.search(r'src="([^"]+)"', frame).group(1)
    status, index = get(src)
    result = {
        "src": src,
        "height": re.search(r'height="(\\d+)"', frame).group(1),
        "index": [status, re.search("<title>(.*)</title>", index).group(1)],
        "health": json.loads(get(src + "healthz")[1]),
        "neuron": page(src, "/neuron/features.relu2/7"),
    }
    with capture_output() as printed:
        dashboard.show(other, mode="external", port=port)
    result["printed"] = printed.stdout
    result["health_after"] = json.loads(get(src + "healthz")[1])
    print(json.dumps(result))
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_show_inline_in_ipython_then_another_atlas_on_the_same_port(
    small_atlas: Path, tmp_path: Path
) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-c", IN_IPYTHON, str(DEMO_ATLAS_DIR), str(small_atlas), str(port)],
        cwd=ROOT,  # this checkout's packages, not an installed copy
        env={**os.environ, "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["src"] == f"http://127.0.0.1:{port}/"
    assert shown["height"] == "900"
    assert shown["index"] == [200, "Demo: a small CNN on handwritten digits · Network Atlas"]
    assert [a["name"] for a in shown["health"]["atlases"]] == ["digits"]
    assert "Channel 7 of features.relu2" in shown["neuron"]
    assert "digits-examples-features.relu2-channel-0007.csv" in shown["neuron"]
    # The second call stopped the first app: the port now serves the other atlas.
    assert shown["printed"].strip() == f"Dash app running on http://127.0.0.1:{port}/"
    assert [a["name"] for a in shown["health_after"]["atlases"]] == ["small"]


def test_show_outside_ipython_serves_until_stopped(small_atlas: Path, tmp_path: Path) -> None:
    port = free_port()
    code = f"import dashboard; dashboard.show({str(small_atlas)!r}, port={port})"
    env = {**os.environ, "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the app never answered"
                time.sleep(0.2)
        assert [a["name"] for a in health["atlases"]] == ["small"]
        assert server.poll() is None  # still serving: the call does not return
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_show_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode must be one of inline, external, tab"):
        show(mode="iframe")  # type: ignore[arg-type]
