"""What the per-request observer (request id, metrics, log line) costs, measured against the same
app without it, in the same run.

    uv run python scripts/bench_observer.py            # in-process: direct ASGI calls
    uv run python scripts/bench_observer.py --http     # also through granian, with wrk (if installed)

Both run /health/live (the cheapest route, so the observer's share is at its largest) in
prometheus_client's multiprocess mode, as `chitram` serves, with logs going to /dev/null.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # before anything imports prometheus_client
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")

import httpx
from litestar import Litestar

from chitram.app import create_app
from chitram.logs import configure_logging
from chitram.settings import ServerSettings, Settings

DATA = Path(tempfile.mkdtemp(prefix="bench-data-"))
SECRET = "bench-secret-key-that-is-long-enough-0123456789"


def build(*, observed: bool) -> Litestar:
    app = create_app(Settings(server=ServerSettings(data_dir=DATA, secret_key=SECRET)))
    if not observed:
        app.asgi_handler = app._create_asgi_handler()  # Litestar's own, without our wrapper
    return app


def with_observer() -> Litestar:
    """granian factory."""
    configure_logging(json_lines=True, stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    return build(observed=True)


def without_observer() -> Litestar:
    """granian factory."""
    configure_logging(json_lines=True, stream=open(os.devnull, "w"))  # noqa: SIM115
    return build(observed=False)


async def _call(app: Litestar) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health/live",
        "raw_path": b"/health/live",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    await app(scope, receive, send)  # type: ignore[arg-type]


async def in_process(requests: int, rounds: int) -> None:
    apps = {"without": build(observed=False), "with": build(observed=True)}
    for app in apps.values():
        for _ in range(500):  # warm up caches and the metric files
            await _call(app)
    timings: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):  # interleaved, so both see the same machine load
        for name, app in apps.items():
            started = time.perf_counter()
            for _ in range(requests):
                await _call(app)
            timings[name].append((time.perf_counter() - started) / requests * 1e6)
    # The fastest round of each: on a shared machine the others mostly measure the neighbours.
    without, with_ = min(timings["without"]), min(timings["with"])
    print(flush=True)
    print(f"in-process, best of {rounds} interleaved rounds of {requests} GET /health/live, µs per request:")
    print(f"  without observer {without:8.1f}")
    print(f"  with observer    {with_:8.1f}   (+{with_ - without:.1f} µs, {with_ / without:.2f}x)")


def over_http(seconds: int) -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed: skipping the HTTP measurement")
        return
    results: dict[str, list[tuple[float, str]]] = {"without_observer": [], "with_observer": []}
    for _ in range(2):
        for factory in results:
            results[factory].append(_wrk(factory, seconds))
    print(f"granian, 1 worker, wrk -t1 -c16 -d{seconds}s GET /health/live (two interleaved runs each):")
    for factory, runs in results.items():
        print(f"  {factory:17} " + "; ".join(f"{rps:8.0f} req/s, mean latency {latency}" for rps, latency in runs))


def _wrk(factory: str, seconds: int) -> tuple[float, str]:
    port = "18734"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--port",
            port,
            "--no-access-log",
            "--log-level",
            "warning",
            f"bench_observer:{factory}",
        ],
        env=env,
        start_new_session=True,  # its own process group: the workers stop with it
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health/live")
        out = subprocess.run(
            ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/health/live"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:  # granian waits for wrk's keep-alive connections
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    latency = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("Latency"))
    return rps, latency


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer {url}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    configure_logging(json_lines=True, stream=open(os.devnull, "w"))  # noqa: SIM115
    asyncio.run(in_process(args.requests, args.rounds))
    if args.http:
        over_http(args.seconds)


if __name__ == "__main__":
    main()
