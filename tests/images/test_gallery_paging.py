"""Keyset pagination over a few hundred rows, seeded with polyfactory (no pixels decoded)."""

from __future__ import annotations

import random

from litestar import Litestar

from chitram.images.models import Visibility
from tests.factories import BlobFactory, ImageFactory
from tests.images.test_api import Client
from tests.images.test_services import own_sessions


async def test_every_public_image_appears_once_newest_first(app: Litestar, client: Client) -> None:
    rng = random.Random(7)
    visibilities = [rng.choice([Visibility.PUBLIC, Visibility.PUBLIC, Visibility.UNLISTED]) for _ in range(250)]
    async with own_sessions(app) as session:
        blob = BlobFactory.build(refcount=len(visibilities))
        session.add(blob)
        await session.flush()
        images = [ImageFactory.build(blob_sha256=blob.sha256, visibility=v.value) for v in visibilities]
        for image in images:  # one by one, so ids grow in creation order
            session.add(image)
            await session.flush()
        expected = [i.public_id for i in reversed(images) if i.visibility == Visibility.PUBLIC.value]
        await session.commit()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/images", params=params)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == -(-len(expected) // 100)
