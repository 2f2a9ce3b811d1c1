"""GET /metrics: every metric registered with prometheus_client, in Prometheus' text format.

Only for a scraper holding CHITRAM_METRICS_TOKEN (``Authorization: Bearer <token>``); with no
token configured the route does not exist. Each replica answers for its own workers; Prometheus
scrapes every replica and adds them up.

Gauges that are cheap to compute when asked (images, stored bytes, the last backup) are set by
``refresh_gauges``: async callables run before each exposition, concurrently, each given
REFRESH_TIMEOUT_SECONDS. One that fails or is slow is logged and its gauge keeps its last value,
so a scrape never fails because of it. Under several workers such a gauge is written by
whichever worker answers the scrape, so declare it with
``Gauge(..., multiprocess_mode="mostrecent")``: the newest value wins, not a sum over workers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from chitram.errors import NotAuthenticatedError
from chitram.metrics import forget_dead_workers

logger = logging.getLogger(__name__)

GaugeRefresher = Callable[[], Awaitable[None]]
REFRESH_TIMEOUT_SECONDS = 5.0
METRICS_PATH = "/metrics"
# The classic text format, which every Prometheus (2 and 3) reads; Litestar adds the charset.
TEXT_FORMAT = "text/plain; version=0.0.4"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chitram-metrics"'}


def metrics_handlers(*, token: str, refresh_gauges: Sequence[GaugeRefresher] = ()) -> list[HTTPRouteHandler]:
    """The /metrics route for ``token``, or none at all when no token is configured (404)."""
    if not token:
        return []
    expected = token.encode()
    refreshers = tuple(refresh_gauges)

    @get(METRICS_PATH, include_in_schema=False, cache=False)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        _require_token(request, expected)
        await refresh(refreshers)
        body = await anyio.to_thread.run_sync(render_metrics)
        return Response(body, media_type=TEXT_FORMAT, headers={"Cache-Control": "no-store"})

    return [metrics]


def _require_token(request: Request[Any, Any, Any], expected: bytes) -> None:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise NotAuthenticatedError(
            "/metrics needs 'Authorization: Bearer <CHITRAM_METRICS_TOKEN>'", headers=_CHALLENGE
        )


async def refresh(refreshers: Sequence[GaugeRefresher]) -> None:
    """Run every refresher at once; failures and timeouts are logged, never raised."""
    results = await asyncio.gather(
        *(asyncio.wait_for(refresher(), REFRESH_TIMEOUT_SECONDS) for refresher in refreshers),
        return_exceptions=True,
    )
    for refresher, result in zip(refreshers, results, strict=True):
        if isinstance(result, BaseException):
            name = getattr(refresher, "__qualname__", repr(refresher))
            logger.warning("metrics: could not refresh gauges with %s: %r", name, result)


def render_metrics() -> bytes:
    """The text exposition: summed over this server's workers in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
