"""Deduplication and reference counting: identical uploads share bytes, and deleting one
never removes bytes another still uses — also under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.db import Database
from chitram.images.models import Blob, Image
from tests.images.test_api import Client, png_bytes, upload


@asynccontextmanager
async def own_sessions(app: Litestar) -> AsyncIterator[AsyncSession]:
    """A session on the test's own engine: the app's pool lives on the test client's loop."""
    database = Database.from_settings(app.state.settings)
    try:
        async with database.sessions() as session:
            yield session
    finally:
        await database.dispose()


async def stored_keys(app: Litestar) -> list[str]:
    return [info.key async for info in app.state.storage.list("")]


async def blob_refcounts(app: Litestar) -> dict[str, int]:
    async with own_sessions(app) as session:
        rows = (await session.execute(select(Blob.sha256, Blob.refcount))).all()
    return {sha: count for sha, count in rows}  # noqa: C416 - rows are Row objects


async def image_count(app: Litestar) -> int:
    async with own_sessions(app) as session:
        return int((await session.scalar(select(func.count()).select_from(Image))) or 0)


async def test_identical_uploads_share_one_stored_object(app: Litestar, client: Client) -> None:
    data = png_bytes((50, 50))
    first = (await upload(client, data)).json()
    second = (await upload(client, data)).json()
    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"]
    assert first["delete_token"] != second["delete_token"]
    keys = await stored_keys(app)
    assert len(keys) == 3  # one original, one thumbnail, one preview
    assert all(first["sha256"] in key for key in keys)
    assert await blob_refcounts(app) == {first["sha256"]: 2}


async def test_deleting_a_twin_keeps_the_bytes_of_the_other(app: Litestar, client: Client) -> None:
    data = png_bytes((40, 30))
    first = (await upload(client, data)).json()
    second = (await upload(client, data)).json()
    deleted = await client.delete(f"/api/v1/images/{first['id']}", headers={"X-Delete-Token": first["delete_token"]})
    assert deleted.status_code == 204
    survivor = await client.get(second["url"])
    assert survivor.status_code == 200
    assert hashlib.sha256(survivor.content).hexdigest() == second["sha256"]
    assert (await client.get(second["thumbnail_url"])).status_code == 200
    assert len(await stored_keys(app)) == 3
    await client.delete(f"/api/v1/images/{second['id']}", headers={"X-Delete-Token": second["delete_token"]})
    assert await stored_keys(app) == []
    assert await blob_refcounts(app) == {}


async def test_uploads_and_deletes_of_the_same_content_keep_counts_right(app: Litestar, client: Client) -> None:
    """Rounds of uploads and deletes of one content (the in-process client runs them one after
    another; test_live_concurrency.py races them through a real server)."""
    data = png_bytes((64, 64), color=(1, 2, 3))
    seed = [(await upload(client, data)).json() for _ in range(4)]

    async def delete(image: dict[str, Any]) -> int:
        response = await client.delete(
            f"/api/v1/images/{image['id']}", headers={"X-Delete-Token": image["delete_token"]}
        )
        return response.status_code

    for _round in range(3):
        uploads = [upload(client, data) for _ in range(4)]
        deletes = [delete(image) for image in seed]
        results = await asyncio.gather(*uploads, *deletes)
        upload_responses, delete_statuses = results[:4], results[4:]
        assert all(status == 204 for status in delete_statuses)
        seed = []
        for response in upload_responses:
            assert response.status_code == 201, response.text
            seed.append(response.json())
        for image in seed:
            served = await client.get(image["url"])
            assert served.status_code == 200, "bytes of a live image were deleted"
            assert hashlib.sha256(served.content).hexdigest() == image["sha256"]
        assert await blob_refcounts(app) == {seed[0]["sha256"]: 4}
        assert await image_count(app) == 4
    assert len(await stored_keys(app)) == 3


async def test_different_images_get_different_objects(app: Litestar, client: Client) -> None:
    one = (await upload(client, png_bytes(color=(1, 1, 1)))).json()
    two = (await upload(client, png_bytes(color=(2, 2, 2)))).json()
    assert one["sha256"] != two["sha256"]
    assert len(await stored_keys(app)) == 6
