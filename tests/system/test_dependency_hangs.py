"""Dependencies that hang instead of refusing, on the production stack: a Redis that stops
answering costs anonymous reads a fraction of a second (and is logged once, not per request),
and the app uses Redis again once it answers; an upload whose client gave up while the
database stalled is never stored."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient

from chitram.app import create_app
from chitram.settings import CacheSettings, DatabaseSettings, Settings, UploadSettings
from chitram.stores import CACHE_KEY_PREFIX
from tests.conftest import production_stack
from tests.images.test_api import png_bytes, upload
from tests.images.test_failures import after_processing
from tests.images.test_services import blob_refcounts, image_count, stored_keys
from tests.support.faults import FaultProxy
from tests.support.services import PostgresService, RedisService, S3Service

FAST = 0.5  # seconds: what an anonymous read may take while Redis hangs
BREAKER_SECONDS = 1.0


def proxy_in_front(service: RedisService | PostgresService) -> Iterator[FaultProxy]:
    address = service.tcp_address
    assert address is not None, "the test services listen on TCP (tests/support/services.py)"
    with FaultProxy(*address) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(redis_service: RedisService) -> Iterator[FaultProxy]:
    yield from proxy_in_front(redis_service)


@pytest.fixture
def hanging_redis_settings(
    tmp_path: Path,
    postgres: PostgresService,
    pg_template: str,
    s3: S3Service,
    redis_proxy: FaultProxy,
) -> Iterator[Settings]:
    for settings in production_stack(tmp_path, postgres, pg_template, f"redis://{redis_proxy.address}/3", s3):
        cache = CacheSettings(redis_url=settings.cache.redis_url, redis_breaker_seconds=BREAKER_SECONDS)
        yield Settings(**{**settings.__dict__, "cache": cache})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def count(self, words: str) -> int:
        return sum(words in record.getMessage() for record in self.records)


@pytest.fixture
def store_logs() -> Iterator[Records]:
    """What chitram.stores logs (the app's logging setup may keep it from propagating to caplog)."""
    records = Records()
    logger = logging.getLogger("chitram.stores")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


async def test_reads_stay_fast_while_redis_hangs_and_use_it_again_after(
    hanging_redis_settings: Settings,
    redis_proxy: FaultProxy,
    redis_service: RedisService,
    store_logs: Records,
) -> None:
    app = create_app(hanging_redis_settings)
    direct = redis.Redis.from_url(redis_service.url_for_db(3))
    async with AsyncTestClient(app=app) as client:
        created = (await upload(client, png_bytes((40, 30)), visibility="public")).json()
        image_id = created["id"]
        page, image = urlsplit(created["page_url"]).path, urlsplit(created["url"]).path
        paths = ["/", "/gallery", page, image, f"/api/v1/images/{image_id}"]
        for path in paths:
            assert (await client.get(path)).status_code == 200, path

        redis_proxy.hang()
        slowest = 0.0
        for _round in range(5):
            for path in paths:
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, (path, response.text)
                slowest = max(slowest, elapsed)
        assert slowest < FAST, f"a read took {slowest:.2f} s while Redis hung"
        assert store_logs.count("Redis is not answering") == 1, "the outage is logged once, not per request"
        assert store_logs.count("cache read failed") == store_logs.count("cache write failed") == 0

        redis_proxy.heal()
        direct.delete(CACHE_KEY_PREFIX + f"image:{image_id}")  # whatever the key, read again below
        with anyio.fail_after(10 * BREAKER_SECONDS):
            while not store_logs.count("Redis answers again"):
                assert (await client.get(page)).status_code == 200
                await anyio.sleep(BREAKER_SECONDS / 4)
        # Redis is used again: reading an image caches it there.
        direct.flushdb()
        assert (await client.get(page)).status_code == 200
        assert any(key.startswith(CACHE_KEY_PREFIX.encode()) for key in direct.keys("*")), direct.keys("*")
        assert store_logs.count("Redis is not answering") == 1


DEADLINE = 2.0  # CHITRAM_UPLOAD_DEADLINE_SECONDS for the test (default 30)
CLIENT_GIVES_UP = 1.0  # seconds after sending its last byte


@pytest.fixture
def pg_proxy(postgres: PostgresService) -> Iterator[FaultProxy]:
    yield from proxy_in_front(postgres)


@pytest.fixture
def stalling_db_settings(
    tmp_path: Path,
    postgres: PostgresService,
    pg_template: str,
    redis_service: RedisService,
    s3: S3Service,
    pg_proxy: FaultProxy,
) -> Iterator[Settings]:
    for settings in production_stack(tmp_path, postgres, pg_template, redis_service.url_for_db(4), s3):
        name = settings.database.database_url.rsplit("/", 1)[-1].split("?")[0]
        through_proxy = postgres.via(pg_proxy.host, pg_proxy.port).asyncpg_url(name)
        yield dataclasses.replace(
            settings,
            database=DatabaseSettings(database_url=through_proxy, database_pool_size=2),
            upload=UploadSettings(upload_deadline_seconds=DEADLINE),
        )


async def test_an_upload_whose_client_gave_up_during_a_database_stall_is_never_stored(
    stalling_db_settings: Settings, pg_proxy: FaultProxy
) -> None:
    """The database stalls (what is sent arrives late, as from a paused server) once the image
    is processed; the client gives up; the stall ends after the deadline. Before, the upload
    then went through and was committed for nobody."""
    app = create_app(stalling_db_settings)
    upload_request = httpx.Request(
        "POST", "http://testserver.local/api/v1/images", files={"file": ("picture.png", png_bytes(), "image/png")}
    )
    body = upload_request.read()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/images",
        "raw_path": b"/api/v1/images",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in upload_request.headers.items()],
        "client": ("192.0.2.7", 50000),
        "server": ("testserver.local", 80),
    }
    client_gone = anyio.Event()
    body_sent = False
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    async with app.lifespan():
        after_processing(app, pg_proxy.stall)
        async with anyio.create_task_group() as group:
            group.start_soon(app, scope, receive, send)  # type: ignore[arg-type]  # plain dicts, the same ASGI messages
            await anyio.sleep(CLIENT_GIVES_UP)  # the client's patience
            client_gone.set()
            await anyio.sleep(DEADLINE)  # the stall outlasts the server's deadline too
            pg_proxy.heal()
        started = [m for m in answers if m["type"] == "http.response.start"]
        assert started and started[0]["status"] == 503, answers
        assert await image_count(app) == 0
        assert await stored_keys(app) == []
        assert await blob_refcounts(app) == {}
