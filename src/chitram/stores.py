"""Key-value stores for cache (and later sessions and rate limits): Redis, or memory when embedded."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chitram.settings import Settings

logger = logging.getLogger(__name__)

NAMESPACE = "chitram"


@dataclass
class Stores:
    """The stores of one app instance. With Redis every replica shares them."""

    cache: Store
    redis: Redis | None  # type: ignore[type-arg]  # generic only in the stubs

    async def ping(self) -> None:
        """Raise when the backing store cannot answer."""
        if self.redis is not None:
            await self.redis.ping()
        else:
            await self.cache.exists("health")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


def create_stores(settings: Settings) -> Stores:
    if not settings.cache.redis_url:
        return Stores(cache=MemoryStore(), redis=None)
    timeout = settings.health.health_timeout_seconds
    # Short socket timeouts: a hanging Redis must fail a request (which then falls back to the
    # database) rather than hold it forever.
    redis = Redis.from_url(
        settings.cache.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        # redis-py retries with backoff by default, which would multiply the timeout.
        retry=Retry(NoBackoff(), 1),
    )
    root = RedisStore(redis, namespace=NAMESPACE, handle_client_shutdown=False)
    return Stores(cache=root.with_namespace("cache"), redis=redis)


class SafeCache:
    """A cache that never fails a request: a store error counts as a miss and is logged."""

    def __init__(self, store: Store, *, ttl_seconds: int) -> None:
        self._store = store
        self._ttl = ttl_seconds

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._store.get(key)
        except Exception:
            logger.warning("cache read failed for %s", key, exc_info=True)
            return None

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._store.set(key, value, expires_in=self._ttl)
        except Exception:
            logger.warning("cache write failed for %s", key, exc_info=True)

    async def delete(self, key: str) -> None:
        try:
            await self._store.delete(key)
        except Exception:
            # A stale entry would outlive a delete; it expires after the TTL at the latest.
            logger.error("cache invalidation failed for %s", key, exc_info=True)
