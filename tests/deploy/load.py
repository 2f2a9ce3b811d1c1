"""A load generator for the deployment tests: threads fetching one path through Caddy until told
to stop, recording every status code or transport error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

SITE = "https://localhost"


def site() -> httpx.Client:
    # Caddy's own CA signs "localhost": the test trusts nothing else, so it skips verification.
    return httpx.Client(base_url=SITE, verify=False, timeout=30)


@dataclass
class Load:
    results: list[int | str] = field(default_factory=list)

    @property
    def failures(self) -> list[int | str]:
        return [result for result in self.results if result != 200]

    def assert_no_failure(self, at_least: int) -> None:
        assert len(self.results) >= at_least, f"only {len(self.results)} requests were made"
        failures = self.failures
        assert failures == [], f"{len(failures)} of {len(self.results)} requests failed: {failures[:10]}"


@contextmanager
def load_on(path: str, threads: int = 4) -> Iterator[Load]:
    """GET `path` from `threads` clients in a loop while the body of the `with` runs."""
    load = Load()
    stop = threading.Event()

    def fetch() -> None:
        with site() as client:
            while not stop.is_set():
                try:
                    load.results.append(client.get(path).status_code)
                except httpx.HTTPError as exc:
                    load.results.append(type(exc).__name__)

    workers = [threading.Thread(target=fetch) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield load
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def wait_for_the_site(seconds: float = 90) -> None:
    """Ready through Caddy: its certificate made, a replica healthy behind it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with site() as client:
                if client.get("/health/ready").status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{SITE}/health/ready did not answer 200 within {seconds:g} s"
        time.sleep(1)
