"""Readiness of the database, storage and cache — shared by the HTTP probes and the CLI."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from sqlalchemy import text

from chitram.db import Database
from chitram.storage import ObjectStorage
from chitram.stores import Stores

logger = logging.getLogger(__name__)


class ComponentStatus(msgspec.Struct, omit_defaults=True):
    status: str  # "ok" | "down"
    latency_ms: float
    error: str | None = None


class Readiness(msgspec.Struct):
    status: str  # "ready" | "unavailable"
    components: dict[str, ComponentStatus]

    @property
    def ready(self) -> bool:
        return self.status == "ready"


async def _timed(check: Callable[[], Awaitable[Any]], limit_seconds: float) -> ComponentStatus:
    started = time.perf_counter()
    try:
        # wait_for cancels the check: a dependency that hangs cannot hold the probe.
        await asyncio.wait_for(check(), limit_seconds)
    except TimeoutError:
        return ComponentStatus("down", _ms(started), f"no answer within {limit_seconds:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
        # The probe is public: say what kind of failure it is, keep addresses and details in the log.
        logger.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return ComponentStatus("down", _ms(started), _reason(exc))
    return ComponentStatus("ok", _ms(started))


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc}".lower()
    if "refused" in text:
        return "connection refused"
    if "timeout" in text or "timed out" in text:
        return "timed out"
    if isinstance(exc, OSError) or "connect" in text or "unreachable" in text:
        return "unreachable"
    return "failed (see the server log)"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@dataclass
class HealthChecker:
    database: Database
    storage: ObjectStorage
    stores: Stores
    timeout: float

    async def _database(self) -> None:
        async with self.database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def readiness(self) -> Readiness:
        names = ("database", "storage", "cache")
        checks = (self._database, self.storage.ping, self.stores.ping)
        results = await asyncio.gather(*(_timed(check, self.timeout) for check in checks))
        components = dict(zip(names, results, strict=True))
        ready = all(result.status == "ok" for result in results)
        return Readiness(status="ready" if ready else "unavailable", components=components)


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get("/live", summary="The process is up", cache=False)
    async def live(self) -> dict[str, str]:
        return {"status": "alive"}

    @get(["/", "/ready"], summary="Database, storage and cache answer (/health is the same)", cache=False)
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        checker: HealthChecker = request.app.state.health
        readiness = await checker.readiness()
        return Response(
            readiness,
            status_code=200 if readiness.ready else 503,
            headers={"Cache-Control": "no-store"},
        )
