"""Prometheus instruments, counted across granian's worker processes.

Each worker is its own process, so a counter in one worker's memory would show only the
requests that worker happened to serve. prometheus_client's multiprocess mode keeps every
value in a small file per process under ``PROMETHEUS_MULTIPROC_DIR`` and sums them when
``/metrics`` is read. The ``chitram`` command creates a fresh directory for each server start
before anything imports prometheus_client, which picks its mode at import (see cli/server.py).
Without that variable (tests, an embedding app) the values live in the process and the
default registry serves them.

Instruments are module-level: prometheus_client registers each name once per process.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Counter, Histogram

# Most dependency calls take a millisecond or less; a slow disk or S3 stretches to seconds.
_DEPENDENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Decoding and re-encoding one image: tens of milliseconds to most of a minute for huge animations.
_PROCESSING_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "chitram_http_requests_total",
    "HTTP requests answered, by method, route template (or 'unmatched') and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "chitram_http_request_duration_seconds",
    "Time from receiving a request to sending the end of its response, by method and route template.",
    ["method", "route"],
)
IMAGE_PROCESSING = Histogram(
    "chitram_image_processing_seconds",
    "Time to decode, check and re-encode one upload, by detected format ('rejected' when refused).",
    ["format"],
    buckets=_PROCESSING_BUCKETS,
)
DEPENDENCY_DURATION = Histogram(
    "chitram_dependency_seconds",
    "Latency of calls to the database, object storage and the metadata cache, by operation.",
    ["dependency", "operation"],
    buckets=_DEPENDENCY_BUCKETS,
)
DEPENDENCY_ERRORS = Counter(
    "chitram_dependency_errors_total",
    "Calls to the database, object storage or the metadata cache that failed, by operation.",
    ["dependency", "operation"],
)
IMAGE_CACHE = Counter(
    "chitram_image_cache_total",
    "Image metadata lookups answered from the cache (hit) or the database (miss).",
    ["result"],
)

UNMATCHED_ROUTE = "unmatched"


# The labelled children of each (method, route, status), so a request skips the label lookup
# (a lock and a dict) that prometheus_client does on every labels() call. Bounded like the series.
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    series = _REQUEST_SERIES.get(key)
    if series is None:
        series = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route))
        _REQUEST_SERIES[key] = series
    series[0].inc()
    series[1].observe(seconds)


def observe_dependency(dependency: str, operation: str, seconds: float, *, failed: bool) -> None:
    DEPENDENCY_DURATION.labels(dependency, operation).observe(seconds)
    if failed:
        DEPENDENCY_ERRORS.labels(dependency, operation).inc()


def count_dependency_error(dependency: str, operation: str) -> None:
    DEPENDENCY_ERRORS.labels(dependency, operation).inc()


@contextlib.contextmanager
def timed_dependency(
    dependency: str, operation: str, *, expected: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Time the block as one call; an exception counts as an error unless it is an ``expected``
    answer (e.g. "no such object"), which is the dependency working as it should."""
    started = time.perf_counter()
    failed = False
    try:
        yield
    except expected:
        raise
    except Exception:  # not cancellation: a client that went away is no dependency failure
        failed = True
        raise
    finally:
        observe_dependency(dependency, operation, time.perf_counter() - started, failed=failed)


def observe_image_processing(image_format: str, seconds: float) -> None:
    IMAGE_PROCESSING.labels(image_format).observe(seconds)


def count_image_cache(*, hit: bool) -> None:
    IMAGE_CACHE.labels("hit" if hit else "miss").inc()


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead_workers(path: Path) -> None:
    """Drop the 'live' gauge files of workers that have exited (granian replaces a crashed one),
    so a gauge with a live* multiprocess mode shows only processes that still run. Counters and
    histograms of dead workers stay: what they counted did happen."""
    from prometheus_client import multiprocess

    pids = {int(match[1]) for name in os.listdir(path) if (match := _LIVE_GAUGE_FILE.fullmatch(name))}
    for pid in pids:
        if not _is_running(pid):
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
