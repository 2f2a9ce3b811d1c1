"""Nothing half-done: when storage or the database fails mid-upload the client gets a 503
problem, no image row exists without its objects, and gc removes what was left behind."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from chitram.app import create_app
from chitram.images.processing import ProcessedImage
from chitram.images.services import ImageService, collect_garbage
from chitram.settings import Settings
from tests.images.test_api import png_bytes, upload
from tests.images.test_services import blob_refcounts, image_count, own_sessions, stored_keys
from tests.support.faults import FaultProxy
from tests.support.services import PostgresService


def after_processing(app: Litestar, action: Callable[[], None]) -> None:
    """Run `action` (break a real dependency) once the image is processed, before any write."""
    processor = app.state.processor
    original: Callable[[Path], Awaitable[ProcessedImage]] = processor.process

    async def process_then_break(source: Path) -> ProcessedImage:
        result = await original(source)
        processor.process = original  # once: later uploads run normally
        action()
        return result

    processor.process = process_then_break


def after_first_put(app: Litestar, action: Callable[[], None]) -> None:
    """Break a real dependency once the first object of an upload is written."""
    storage = app.state.storage
    original = storage.put

    async def put_then_break(key: str, data: bytes, *, content_type: str) -> None:
        await original(key, data, content_type=content_type)
        storage.put = original  # once
        action()

    storage.put = put_then_break


async def run_gc(app: Litestar) -> Any:
    async with own_sessions(app) as session:
        service = ImageService(session, storage=app.state.storage, cache=app.state.cache, processor=app.state.processor)
        return await collect_garbage(service, grace_seconds=0, dry_run=False)


async def assert_clean(app: Litestar) -> None:
    assert await image_count(app) == 0
    assert await stored_keys(app) == []
    assert await blob_refcounts(app) == {}


async def test_s3_refusing_after_the_first_object_gives_503_and_gc_cleans_up(
    proxied_settings: Settings, s3_proxy: FaultProxy
) -> None:
    app = create_app(proxied_settings)
    async with AsyncTestClient(app) as client:
        after_first_put(app, s3_proxy.refuse)
        response = await upload(client, png_bytes())
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"]
        assert "try again" in response.json()["detail"]
        s3_proxy.heal()
        assert await image_count(app) == 0
        assert all(count == 0 for count in (await blob_refcounts(app)).values())
        report = await run_gc(app)
        assert report.missing_objects == []
        await assert_clean(app)


async def test_s3_hanging_mid_upload_gives_503_quickly(proxied_settings: Settings, s3_proxy: FaultProxy) -> None:
    app = create_app(proxied_settings)
    async with AsyncTestClient(app) as client:
        after_processing(app, s3_proxy.hang)
        started = time.monotonic()
        response = await upload(client, png_bytes())
        assert response.status_code == 503, response.text
        # one put times out twice (timeout 2 s, one retry); no clean-up waits on dead storage
        assert time.monotonic() - started < 6
        s3_proxy.heal()
        assert await image_count(app) == 0
        await run_gc(app)
        await assert_clean(app)
        # and the app works again without a restart
        assert (await upload(client, png_bytes())).status_code == 201


async def test_database_going_away_mid_upload_gives_503_and_leaves_nothing(
    postgres: PostgresService, production_settings: Settings
) -> None:
    database = production_settings.database.database_url.rsplit("/", 1)[-1].split("?")[0]
    app = create_app(production_settings)
    async with AsyncTestClient(app) as client:
        after_processing(app, lambda: postgres.block_connections(database))
        try:
            response = await upload(client, png_bytes())
        finally:
            postgres.allow_connections(database)
        assert response.status_code == 503, response.text
        assert response.json()["status"] == 503
        assert await image_count(app) == 0
        await run_gc(app)
        await assert_clean(app)
        assert (await upload(client, png_bytes())).status_code == 201
