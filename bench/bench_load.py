"""Load figures of the Procfile's gunicorn: simulated users, then slow clients; prints figures.

1. ``users``: ``bench/locustfile.py`` (what the Dash renderer sends: page opens, class
   switches, node hovers, pictures, Mapper parameter changes, Training-view picks, neuron
   pages) with ``--users`` users for ``--seconds`` s against the Procfile's command with 2
   and then 4 workers (``--workers``), on the synthetic 1,000-class atlas with every part:
   requests, failures, p50/p95/p99 per request kind, RSS per worker after the run.
2. ``slow``: while ``--slow-clients`` connections trickle a request one byte every second
   or hold an idle keep-alive connection, ordinary requests (``/healthz``, a page, a
   picture) are timed: what the worker and thread settings survive.

Loopback only; every loop is bounded in count and time.

Examples:
    python bench/bench_load.py                       # 50 users, 60 s, 2 and 4 workers, slow
    python bench/bench_load.py --users 0 --workers 2 --slow-clients 4 8 12  # slow only
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import start_gunicorn, stop_gunicorn, worker_memory

ROOT = Path(__file__).resolve().parents[1]


def run_users(base: str, users: int, seconds: int, out: Path) -> list[dict[str, str]]:
    """Locust, headless, bounded; returns the rows of its statistics CSV."""
    subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
            "--headless", "--users", str(users), "--spawn-rate", str(max(1, users // 5)),
            "--run-time", f"{seconds}s", "--host", base, "--csv", str(out),
            "--only-summary", "--stop-timeout", "10",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=False,
    )  # fmt: skip
    with open(f"{out}_stats.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def print_users(rows: list[dict[str, str]], workers: int, rss: list[tuple[float, float]]) -> None:
    print(f"\n{workers} workers: request kind, count, failures, p50 / p95 / p99 ms")
    for row in rows:
        print(
            f"  {row['Name'][:48]:<48} {row['Request Count']:>6} {row['Failure Count']:>4}  "
            f"{row['50%']:>6} / {row['95%']:>6} / {row['99%']:>6}"
        )
    memory = ", ".join(f"{r:.0f} / {u:.0f}" for r, u in rss)
    print(f"  RSS / USS per worker after the run (MiB): {memory}")


def _trickle(host: str, port: int, stop: threading.Event) -> None:
    """A slow client: a request sent one byte a second (slowloris), bounded by ``stop``."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            for byte in request:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                stop.wait(1.0)
    except OSError:
        return


def _idle(host: str, port: int, stop: threading.Event) -> None:
    """A client that opens a kept-alive connection, makes one request and then holds it."""
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(4096)
            stop.wait(60)
    except OSError:
        return


def run_slow(base: str, clients: int, seconds: int) -> None:
    """Time ordinary requests while ``clients`` slow and idle connections are open."""
    host, port = base.removeprefix("http://").split(":")
    page = requests.get(base + "/", timeout=30).text
    picture = next((p for p in page.split('"') if p.startswith("/atlas-file/")), "/healthz")
    for kind, target in (("trickling", _trickle), ("idle keep-alive", _idle)):
        stop = threading.Event()
        threads = [
            threading.Thread(target=target, args=(host, int(port), stop), daemon=True)
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        times: dict[str, list[float]] = {"/healthz": [], "/": [], "picture": []}
        errors = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, path in (("/healthz", "/healthz"), ("/", "/"), ("picture", picture)):
                started = time.perf_counter()
                try:
                    ok = requests.get(base + path, timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                errors += not ok
                times[name].append((time.perf_counter() - started) * 1000)
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        figures = ", ".join(
            f"{name} p50 {statistics.median(v):.0f} ms max {max(v):.0f} ms"
            for name, v in times.items()
            if v
        )
        print(f"\n{clients} {kind} connections: {figures}; {errors} errors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--atlas", type=Path, default=None, help="default: the synthetic one")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--slow-clients", type=int, nargs="+", default=[6, 16])
    parser.add_argument("--slow-seconds", type=int, default=20)
    args = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        atlas = args.atlas
        if atlas is None:
            from compute.synthetic import write_synthetic_atlas

            atlas = write_synthetic_atlas(Path(tmp) / "synthetic", num_classes=1000, seed=0)
        for workers in args.workers:
            cache = Path(tmp) / f"cache-{workers}"
            process, base = start_gunicorn(atlas, workers, cache)
            try:
                if args.users:
                    path = Path(tmp) / f"load-{workers}"
                    rows = run_users(base, args.users, args.seconds, path)
                    print_users(rows, workers, worker_memory(process))
                if workers == args.workers[0]:
                    for clients in args.slow_clients:
                        run_slow(base, clients, args.slow_seconds)
            finally:
                stop_gunicorn(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
