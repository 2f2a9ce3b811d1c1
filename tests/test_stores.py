"""The metadata cache: a change always beats a reader that loaded the old row just before it."""

from __future__ import annotations

from chitram.settings import Settings
from chitram.stores import SafeCache, create_stores


async def test_a_late_reader_cannot_bring_back_an_invalidated_entry(settings: Settings) -> None:
    stores = create_stores(settings)
    cache = SafeCache(stores, ttl_seconds=60)
    try:
        await cache.add("image:x", b"old")
        assert await cache.get("image:x") == b"old"
        await cache.add("image:x", b"other")  # readers only fill gaps
        assert await cache.get("image:x") == b"old"
        await cache.invalidate("image:x")  # the delete commits
        await cache.add("image:x", b"old")  # a reader that loaded the row before the delete
        assert await cache.get("image:x") is None
    finally:
        await stores.close()
