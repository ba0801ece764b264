"""A short load test: simulated users against the Procfile's gunicorn (2 workers, demo atlas).

The CI version of ``bench/locustfile.py`` (50 users for 60 s there): a few users for a few
seconds, opening the explorer, switching classes, hovering nodes, fetching pictures and
opening neuron pages. Locust runs as a subprocess (it monkey-patches with gevent, which must
never happen inside the pytest process); every request must succeed.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.serve import gunicorn

ROOT = Path(__file__).resolve().parents[2]
USERS = 6
SECONDS = 10


@pytest.fixture()
def gunicorn_demo(tmp_path: Path) -> Iterator[str]:
    """The Procfile's command on a free loopback port, serving the shipped demo atlas."""
    env = {"HOST": "127.0.0.1", "NETWORK_ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    with gunicorn(env) as server:
        yield server.url


def test_simulated_users_get_no_errors(gunicorn_demo: str, tmp_path: Path) -> None:
    prefix = tmp_path / "load"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "bench" / "locustfile.py"),
            "--headless",
            "--users",
            str(USERS),
            "--spawn-rate",
            str(USERS),
            "--run-time",
            f"{SECONDS}s",
            "--host",
            gunicorn_demo,
            "--csv",
            str(prefix),
            "--only-summary",
            "--stop-timeout",
            "10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
    )
    log = (result.stdout + result.stderr)[-4000:]
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    with open(f"{prefix}_exceptions.csv", newline="") as handle:
        exceptions = list(csv.DictReader(handle))
    assert failures == 0, log
    assert exceptions == [], log
    assert result.returncode == 0, log
    # Every kind of user action ran (each user tries each once when it starts).
    assert requests >= 50, log
    assert "callback sidebar-rows.children +1" in rows, sorted(rows)  # class switches
    assert "callback attribution-graph.stylesheet +1" in rows  # node hovers
    assert "atlas file" in rows  # pictures
    assert "callback _pages_content.children +1" in rows  # page opens
    assert "page /neuron/<layer>/<channel>" in rows  # neuron pages
    assert "callback topo-graph.elements +7" in rows  # Mapper graphs (parameter changes)
    assert "callback trace-note.children +9" in rows  # Training view (image picks)
