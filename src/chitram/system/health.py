"""Readiness of the database, storage and cache — shared by the HTTP probes and the CLI."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chitram import __version__
from chitram.db import Database
from chitram.settings import Settings
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


Check = Callable[[], Awaitable[Any]]


async def check_components(
    checks: Mapping[str, Check], *, limit_seconds: float, full_errors: bool = False
) -> Readiness:
    """Run the checks concurrently, each cancelled after ``limit_seconds``.

    ``full_errors`` puts the whole error in the answer (for an operator's terminal); otherwise
    it is a short public reason and the details go to the log.
    """
    results = await asyncio.gather(*(_timed(check, limit_seconds, full_errors) for check in checks.values()))
    components = dict(zip(checks, results, strict=True))
    ready = all(result.status == "ok" for result in results)
    return Readiness(status="ready" if ready else "unavailable", components=components)


async def _timed(check: Check, limit_seconds: float, full_errors: bool) -> ComponentStatus:
    started = time.perf_counter()
    try:
        # wait_for cancels the check: a dependency that hangs cannot hold the probe.
        await asyncio.wait_for(check(), limit_seconds)
    except TimeoutError:
        return ComponentStatus("down", _ms(started), f"no answer within {limit_seconds:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
        if full_errors:
            return ComponentStatus("down", _ms(started), f"{type(exc).__name__}: {exc}")
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
        await select_one(self.database.engine)

    async def readiness(self) -> Readiness:
        checks = {"database": self._database, "storage": self.storage.ping, "cache": self.stores.ping}
        return await check_components(checks, limit_seconds=self.timeout)


async def select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get("/live", summary="The process is up, and which release it runs", cache=False)
    async def live(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        settings: Settings = request.app.state.settings
        return {"status": "alive", "version": __version__, "release": settings.server.release}

    @get(
        ["/", "/ready"],
        summary="Database, storage and cache answer (/health is the same)",
        cache=False,
        responses={
            503: ResponseSpec(
                data_container=Readiness,
                description="A component does not answer; the body says which.",
                generate_examples=False,
            )
        },
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        checker: HealthChecker = request.app.state.health
        readiness = await checker.readiness()
        return Response(
            readiness,
            status_code=200 if readiness.ready else 503,
            headers={"Cache-Control": "no-store"},
        )
