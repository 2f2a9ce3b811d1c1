"""A real `chitram` process (granian) on a free port, for tests that need true HTTP."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHITRAM_")}
    env.update(extra)
    return env


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str
    first_line: str
    # Everything the server printed after its first line. It must be read as it comes: the
    # server logs a line per request, and a full pipe would block it mid-request.
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self) -> list[str]:
        """The lines printed so far; complete once the server has stopped."""
        if self.reader is not None and self.process.poll() is not None:
            self.reader.join(timeout=10)
        return list(self.lines)


def _drain(server: RunningServer) -> None:
    assert server.process.stdout is not None
    for line in server.process.stdout:
        server.lines.append(line.rstrip("\n"))


# Browser tests and screenshots upload dozens of images from one address within seconds.
NO_UPLOAD_LIMITS = {
    "CHITRAM_UPLOADS_PER_HOUR_PER_IP": "0",
    "CHITRAM_ANONYMOUS_UPLOADS_PER_HOUR_PER_IP": "0",
    "CHITRAM_UPLOADS_PER_HOUR_PER_ACCOUNT": "0",
    "CHITRAM_ANONYMOUS_BYTES_PER_DAY_PER_IP": "0",
    "CHITRAM_REGISTRATIONS_PER_HOUR_PER_IP": "0",
}


def start_server(env: dict[str, str], cwd: Path, workers: int = 1) -> RunningServer:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "chitram"), "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Never outlive the test run, whatever happens to the fixture that started it.
    atexit.register(_kill_if_running, process)
    assert process.stdout is not None
    first_line = process.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/live", timeout=1).status_code == 200:
                server = RunningServer(process, url, first_line)
                server.reader = threading.Thread(target=_drain, args=(server,), daemon=True)
                server.reader.start()
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"chitram did not start: {first_line} {process.stdout.read()}")


def _kill_if_running(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()


def stop(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
