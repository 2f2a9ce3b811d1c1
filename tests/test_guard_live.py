"""The request guard through a real `chitram` (granian) process and raw sockets: what an attacker
on the network does, measured where it hurts (the worker's memory, the liveness probe's latency)."""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import RunningServer, clean_env, start_server, stop

SLOW_BODIES = 1100
BODY_TIMEOUT = 2.0  # seconds; the default is 20, shortened so the flood runs in seconds
MIN_RATE = 1024  # bytes per second; the trickle below sends far less
PER_CLIENT = 64  # the default cap on requests in progress per address
CLOSE_SLACK = 3.0  # seconds a closed connection may take beyond its limit on a shared 2-core machine
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def many_files() -> Iterator[None]:
    """1,100 client sockets and as many on the server side: above the usual 1,024 descriptors.
    The server inherits the raised limit from this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * SLOW_BODIES + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"this test needs {needed} open files; the hard limit is {hard} (raise it with ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory, many_files: None) -> Iterator[RunningServer]:
    """One server for the whole module (starting one takes seconds): every test here leaves it with
    no connection open."""
    env = clean_env(
        CHITRAM_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        CHITRAM_BODY_MIN_BYTES_PER_SECOND=str(MIN_RATE),
    )
    server = start_server(env, cwd=tmp_path_factory.mktemp("guarded"))
    yield server
    stop(server)


def address(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@dataclass
class SlowOutcome:
    status: str  # the status line, or "" when the server closed without answering
    seconds: float  # from the end of the headers to the connection's close


async def slow_body(host: str, port: int, path: str) -> SlowOutcome:
    """Headers at once, then a body of 1,000 bytes at one byte every half second, until closed."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n".encode()
    )
    await writer.drain()
    sent_headers = time.monotonic()

    async def trickle() -> None:
        for _ in range(1000):
            await asyncio.sleep(0.5)
            writer.write(b"a")
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    answer = b""
    try:
        while chunk := await reader.read(65536):
            answer += chunk
    except ConnectionError:
        pass
    finally:
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)
        writer.close()
    return SlowOutcome(answer.split(b"\r\n", 1)[0].decode("latin-1"), time.monotonic() - sent_headers)


def probe_liveness(url: str, stop_probing: threading.Event) -> list[float]:
    """/health/live every 100 ms on a new connection each time (as an orchestrator does), from a
    thread of its own, so the flood's event loop in this process does not delay the probe itself."""
    latencies: list[float] = []
    while not stop_probing.is_set():
        started = time.monotonic()
        response = httpx.get(url + "/health/live", timeout=5)
        assert response.status_code == 200, response.text
        latencies.append(time.monotonic() - started)
        stop_probing.wait(0.1)
    return latencies


async def test_a_flood_of_slow_bodies_from_one_address_is_cut_and_liveness_keeps_answering(
    guarded_server: RunningServer,
) -> None:
    host, port = address(guarded_server)
    stop_probing = threading.Event()
    prober = asyncio.create_task(asyncio.to_thread(probe_liveness, guarded_server.url, stop_probing))
    started = time.monotonic()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(slow_body(host, port, ("/login", "/logout")[n % 2]) for n in range(SLOW_BODIES))),
        timeout=45,
    )
    flood_seconds = time.monotonic() - started
    stop_probing.set()
    latencies = await prober

    statuses = sorted({outcome.status for outcome in outcomes})
    timed_out = [outcome for outcome in outcomes if " 408 " in outcome.status]
    refused = [outcome for outcome in outcomes if " 429 " in outcome.status]
    print(
        f"\n{SLOW_BODIES} slow bodies over {flood_seconds:.1f} s: {len(timed_out)} cut with 408, "
        f"{len(refused)} refused with 429; slowest close {max(o.seconds for o in outcomes):.2f} s; "
        f"/health/live {len(latencies)} probes, slowest {max(latencies) * 1000:.0f} ms"
    )
    assert statuses == ["HTTP/1.1 408 Request Timeout", "HTTP/1.1 429 Too Many Requests"], statuses
    # The address may hold its quota of requests; they are cut at the body limit (the trickle adds
    # nothing at 2 bytes a second against a minimum of 1 KiB a second).
    assert PER_CLIENT <= len(timed_out) <= 2 * PER_CLIENT
    assert all(outcome.seconds < BODY_TIMEOUT + CLOSE_SLACK for outcome in timed_out)
    assert all(outcome.seconds >= BODY_TIMEOUT - 0.1 for outcome in timed_out)
    # Everything above the quota is turned away at once, so the server's connection slots stay free.
    assert all(outcome.seconds < CLOSE_SLACK for outcome in refused)
    assert len(latencies) >= 5
    assert max(latencies) < 1.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def worker_pids(server: RunningServer) -> list[int]:
    """granian's worker processes: the children of the `chitram` process."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "granian started no worker process"
    return [int(child) for child in children]


def sample_rss(pids: list[int], stop_sampling: threading.Event) -> dict[int, int]:
    """The highest RSS of each process, read every 10 ms until told to stop. (VmHWM would include
    the start-up peak, migrations and all, which is not what the attack costs.)"""
    peaks = dict.fromkeys(pids, 0)
    while True:
        for pid in pids:
            peaks[pid] = max(peaks[pid], rss_kib(pid))
        if stop_sampling.wait(0.01):
            return peaks


def withhold_page_body(host: str, port: int, path: str, *, chunked: bool) -> bytes:
    """Send a 25 MiB form body to a page, all but its last byte, and return what the server said."""
    size = 25 * MIB
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock = socket.create_connection((host, port))
    sock.settimeout(30)
    answer = b""
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"{framing}\r\n\r\n".encode()
        )
        block = b"a" * MIB
        for _ in range(25):
            payload = block if not chunked else f"{len(block):x}\r\n".encode() + block + b"\r\n"
            sock.sendall(payload[:-1] if _ == 24 else payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed: the rest of the body is not wanted
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return answer


async def test_withheld_25_mib_page_bodies_do_not_grow_the_worker(guarded_server: RunningServer) -> None:
    host, port = address(guarded_server)
    async with httpx.AsyncClient(timeout=10) as http:  # templates loaded, caches warm
        (await http.get(guarded_server.url + "/login")).raise_for_status()
    workers = worker_pids(guarded_server)
    before = {pid: rss_kib(pid) for pid in workers}
    jobs = [
        asyncio.to_thread(withhold_page_body, host, port, ("/logout", "/login")[n % 2], chunked=n % 3 == 0)
        for n in range(24)
    ]
    stop_sampling = threading.Event()
    sampler = asyncio.create_task(asyncio.to_thread(sample_rss, workers, stop_sampling))
    answers = await asyncio.gather(*jobs)
    stop_sampling.set()
    peaks = await sampler
    peak_growth = max(peaks[pid] - before[pid] for pid in workers) / 1024
    print(f"\n24 withheld 25 MiB page bodies: worker RSS {before} KiB before, peak +{peak_growth:.1f} MiB")
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"64 KiB" in answer
    assert peak_growth < 50


def exchange(server: RunningServer, request: bytes, wait: float = 5) -> bytes:
    """Send raw bytes, read until the server closes (or stays quiet for `wait` seconds)."""
    sock = socket.create_connection(address(server))
    sock.settimeout(wait)
    answer = b""
    try:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
    except TimeoutError:
        answer += b"<still open>"
    finally:
        sock.close()
    return answer


def test_content_length_with_transfer_encoding_is_never_trusted(guarded_server: RunningServer) -> None:
    """granian (hyper) drops Content-Length when Transfer-Encoding is present, frames the body as
    chunked and closes the connection after answering: a request hidden behind the declared length
    is never read as a second request."""
    smuggled = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    answer = exchange(
        guarded_server,
        b"POST /logout HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + body,
    )
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert b"<still open>" not in answer
    assert b'"status":' in answer and b"live" not in answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    ("request_line", "headers"),
    [
        ("GET /static/x%00 HTTP/1.1", "Host: x"),
        ("GET / HTTP/1.1", "Host: a:b"),
        ("GET / HTTP/1.1", "Host: 127.0.0.1:99999999"),
        ("GET / HTTP/1.1", "Host: x:1/x"),
        ("GET /nothing-here HTTP/1.1", "Host: x:1/x"),
        ("POST /logout HTTP/1.1", "Host: x\r\nTransfer-Encoding: gzip, chunked"),
    ],
)
def test_inputs_that_once_ended_in_500_get_a_400_problem(
    guarded_server: RunningServer, request_line: str, headers: str
) -> None:
    body = b"0\r\n\r\n" if "chunked" in headers else b""
    answer = exchange(guarded_server, f"{request_line}\r\n{headers}\r\nConnection: close\r\n\r\n".encode() + body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"application/problem+json" in answer
