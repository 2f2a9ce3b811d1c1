"""Health probes: live, ready (per component), and recovery when a dependency returns."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from litestar.testing import AsyncTestClient

from chitram import __version__
from chitram.app import create_app
from chitram.settings import Settings
from tests.images.test_api import Client
from tests.support.faults import FaultProxy
from tests.support.services import PostgresService, S3Service


async def test_live_and_ready(client: Client, stack: str) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["components"]) == {"database", "storage", "cache"}
    for component in body["components"].values():
        assert component["status"] == "ok"
        assert component["latency_ms"] >= 0
    assert (await client.get("/health")).json()["status"] == "ready"


async def wait_for_status(client: Client, status: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        response = await client.get("/health/ready")
        if response.status_code == status:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"/health/ready did not answer {status} within {within} s")


async def test_hanging_s3_turns_ready_to_503_within_seconds_and_recovers(
    proxied_settings: Settings, s3_proxy: FaultProxy
) -> None:
    async with AsyncTestClient(create_app(proxied_settings)) as client:
        assert (await client.get("/health/ready")).status_code == 200
        s3_proxy.hang()
        started = time.monotonic()
        response = await client.get("/health/ready")
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        components = response.json()["components"]
        assert components["storage"]["status"] == "down"
        assert components["database"]["status"] == "ok"
        s3_proxy.heal()
        await wait_for_status(client, 200, within=10)


async def test_refused_s3_turns_ready_to_503(proxied_settings: Settings, s3_proxy: FaultProxy) -> None:
    async with AsyncTestClient(create_app(proxied_settings)) as client:
        s3_proxy.refuse()
        response = await client.get("/health/ready")
        assert response.status_code == 503
        storage = response.json()["components"]["storage"]
        assert storage["status"] == "down"
        # the probe is public: a kind of failure, no addresses or library messages
        assert storage["error"] == "connection refused"
        assert str(s3_proxy.port) not in response.text
        s3_proxy.heal()
        await wait_for_status(client, 200, within=10)


async def test_database_that_refuses_connections_is_reported_and_recovers(
    postgres: PostgresService, production_settings: Settings
) -> None:
    database = production_settings.database.database_url.rsplit("/", 1)[-1].split("?")[0]
    async with AsyncTestClient(create_app(production_settings)) as client:
        assert (await client.get("/health/ready")).status_code == 200
        postgres.block_connections(database)
        try:
            response = await client.get("/health/ready")
            assert response.status_code == 503
            assert response.json()["components"]["database"]["status"] == "down"
        finally:
            postgres.allow_connections(database)
        await wait_for_status(client, 200, within=10)


async def test_live_names_the_version_and_the_release(embedded_settings: Settings) -> None:
    server = embedded_settings.server.model_copy(update={"release": "chitram:0123abcd"})
    async with AsyncTestClient(create_app(dataclasses.replace(embedded_settings, server=server))) as client:
        live = (await client.get("/health/live")).json()
    assert live == {"status": "alive", "version": __version__, "release": "chitram:0123abcd"}


async def test_memory_cache_is_ready_on_the_embedded_stack(embedded_settings: Settings) -> None:
    async with AsyncTestClient(create_app(embedded_settings)) as client:
        body = (await client.get("/health/ready")).json()
        assert body["components"]["cache"]["status"] == "ok"


async def test_bucket_is_created_once_s3_comes_back_after_a_start_without_it(
    proxied_settings: Settings, s3_proxy: FaultProxy, s3: S3Service
) -> None:
    s3_proxy.refuse()
    async with AsyncTestClient(create_app(proxied_settings)) as client:
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 503
        s3_proxy.heal()
        await wait_for_status(client, 200, within=15)
        assert s3.list_keys(proxied_settings.storage.s3_bucket) == []  # the bucket exists
