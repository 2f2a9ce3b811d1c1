"""Key-value stores for cache (and later sessions and rate limits): Redis, or memory when embedded."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from litestar.stores.memory import MemoryStore
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chitram.metrics import timed_dependency
from chitram.settings import Settings

logger = logging.getLogger(__name__)

NAMESPACE = "chitram"


@dataclass
class Stores:
    """The stores of one app instance. With Redis every replica shares them."""

    redis: Redis | None  # type: ignore[type-arg]  # generic only in the stubs
    memory: MemoryStore  # used only without Redis: in-process, one worker

    async def ping(self) -> None:
        """Raise when the backing store cannot answer."""
        if self.redis is not None:
            await self.redis.ping()
        else:
            await self.memory.exists("health")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


def create_stores(settings: Settings) -> Stores:
    if not settings.cache.redis_url:
        return Stores(redis=None, memory=MemoryStore())
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
    return Stores(redis=redis, memory=MemoryStore())


TOMBSTONE = b"\x00gone"
TOMBSTONE_SECONDS = 30
CACHE_KEY_PREFIX = f"{NAMESPACE}:cache:"


class SafeCache:
    """The metadata cache. It never fails a request (a store error counts as a miss), and a
    change always wins over a reader that loaded the old row just before it:

    - readers only *add* (set if absent);
    - a change leaves a short-lived tombstone, which readers cannot overwrite, so the next
      reads go to the database until it expires.
    """

    def __init__(self, stores: Stores, *, ttl_seconds: int) -> None:
        self._memory = stores.memory
        self._redis = stores.redis
        self._ttl = ttl_seconds
        self._add_lock = anyio.Lock()  # makes get-then-set atomic for the in-process store

    async def get(self, key: str) -> bytes | None:
        try:
            with timed_dependency("cache", "get"):
                if self._redis is not None:
                    value: bytes | None = await self._redis.get(CACHE_KEY_PREFIX + key)
                else:
                    value = await self._memory.get(key)
        except Exception:
            logger.warning("cache read failed for %s", key, exc_info=True)
            return None
        return None if value == TOMBSTONE else value

    async def add(self, key: str, value: bytes) -> None:
        """Cache `value` unless anything (an entry or a tombstone) is there already."""
        try:
            with timed_dependency("cache", "add"):
                await self._add(key, value)
        except Exception:
            logger.warning("cache write failed for %s", key, exc_info=True)

    async def _add(self, key: str, value: bytes) -> None:
        if self._redis is not None:
            await self._redis.set(CACHE_KEY_PREFIX + key, value, ex=self._ttl, nx=True)
            return
        async with self._add_lock:
            if not await self._memory.exists(key):
                await self._memory.set(key, value, expires_in=self._ttl)

    async def invalidate(self, key: str) -> bool:
        """Leave a tombstone; False when the store failed (the caller decides whether that matters)."""
        try:
            with timed_dependency("cache", "invalidate"):
                await self._invalidate(key)
        except Exception:
            # A stale entry would outlive the change; it expires after the TTL at the latest.
            logger.error("cache invalidation failed for %s", key, exc_info=True)
            return False
        return True

    async def _invalidate(self, key: str) -> None:
        if self._redis is not None:
            await self._redis.set(CACHE_KEY_PREFIX + key, TOMBSTONE, ex=TOMBSTONE_SECONDS)
            return
        async with self._add_lock:
            await self._memory.set(key, TOMBSTONE, expires_in=TOMBSTONE_SECONDS)
