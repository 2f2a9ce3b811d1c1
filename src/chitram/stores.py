"""Key-value stores for cache (and later sessions and rate limits): Redis, or memory when embedded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from litestar.stores.memory import MemoryStore
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


REDIS_CONNECT_TIMEOUT_SECONDS = 1.0


def create_stores(settings: Settings) -> Stores:
    if not settings.cache.redis_url:
        return Stores(redis=None, memory=MemoryStore())
    timeout = settings.cache.redis_timeout_seconds
    # Short socket timeouts: a hanging Redis must fail a request (which then falls back to the
    # database) within a fraction of a second rather than hold it; the breaker then fails the
    # following ones at once.
    redis = GuardedRedis.from_url(
        settings.cache.redis_url,
        socket_timeout=timeout,
        # Opening a TCP connection may take longer on a busy host (a burst opens many at once);
        # an address that does not answer at all still fails within this. A Redis that accepts
        # but does not answer fails in the handshake, which waits only `timeout`.
        socket_connect_timeout=max(timeout, REDIS_CONNECT_TIMEOUT_SECONDS),
        health_check_interval=30,
        # redis-py retries by default, which would multiply the timeout.
        retry=Retry(NoBackoff(), 0),
    )
    assert isinstance(redis, GuardedRedis)  # from_url builds the class it is called on
    redis.breaker = CircuitBreaker(open_seconds=settings.cache.redis_breaker_seconds)
    return Stores(redis=redis, memory=MemoryStore())


class RedisUnavailable(RedisConnectionError):
    """Refused without asking Redis: it stopped answering, and the breaker is open."""


# Failures in a row that open the breaker: one slow answer on a busy machine is not an outage.
FAILURES_TO_OPEN = 2


class CircuitBreaker:
    """Closed: every command goes to Redis. After FAILURES_TO_OPEN connection failures or timeouts
    in a row it opens: commands fail at once (RedisUnavailable) for `open_seconds`. Then it half-
    opens: one command may try; success closes it, failure opens it again. The outage is logged
    when it opens and when it closes, never per request. In-process: each worker judges alone."""

    def __init__(self, *, open_seconds: float, failures_to_open: int = FAILURES_TO_OPEN) -> None:
        self.open_seconds = open_seconds
        self.failures_to_open = failures_to_open
        self._failures = 0
        self._open_until: float | None = None
        self._outage_since: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @property
    def doubtful(self) -> bool:
        """The last command failed (or the breaker is open): optional work should not ask now."""
        return self._failures > 0

    def before(self) -> bool:
        """Raise RedisUnavailable while open; True when this command is the half-open trial."""
        if self._open_until is None:
            return False
        if time.monotonic() < self._open_until or self._trial_running:
            raise RedisUnavailable("Redis is not answering; not asking again for a few seconds")
        self._trial_running = True
        return True

    def succeeded(self, trial: bool) -> None:
        if trial:
            self._trial_running = False
        self._failures = 0
        if self._open_until is not None:
            since = self._outage_since or time.monotonic()
            logger.warning(
                "Redis answers again after %.1f s; cache, sessions and limits use it again", time.monotonic() - since
            )
            self._open_until = self._outage_since = None

    def abandoned(self, trial: bool) -> None:
        if trial:
            self._trial_running = False

    def failed(self, trial: bool, error: BaseException) -> None:
        if trial:
            self._trial_running = False
        self._failures += 1
        if self._open_until is None and self._failures < self.failures_to_open:
            return
        if self._open_until is None:
            self._outage_since = time.monotonic()
            logger.error(
                "Redis is not answering (%s); failing fast and retrying every %.0f s: cache reads go to "
                "the database, sessions and limits answer 503 until it is back",
                type(error).__name__,
                self.open_seconds,
            )
        self._open_until = time.monotonic() + self.open_seconds


class GuardedRedis(Redis):  # type: ignore[type-arg]  # generic only in the stubs
    """redis.asyncio.Redis behind a CircuitBreaker. Every command (scripts included) goes
    through execute_command, so this is the one place that sees them all."""

    breaker: CircuitBreaker

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        trial = self.breaker.before()
        try:
            result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            self.breaker.failed(trial, error)
            raise
        except RedisError:
            # Redis answered, with an error about the command: it is there.
            self.breaker.succeeded(trial)
            raise
        except BaseException:
            # Cancelled (the request ended): says nothing either way; another command may try.
            self.breaker.abandoned(trial)
            raise
        self.breaker.succeeded(trial)
        return result


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
        except (RedisConnectionError, RedisTimeoutError):
            return None  # the breaker logs an outage once, when it opens
        except Exception:
            logger.warning("cache read failed for %s", key, exc_info=True)
            return None
        return None if value == TOMBSTONE else value

    async def add(self, key: str, value: bytes) -> None:
        """Cache `value` unless anything (an entry or a tombstone) is there already."""
        if isinstance(self._redis, GuardedRedis) and self._redis.breaker.doubtful:
            return  # filling the cache is optional: not worth another timeout while Redis may hang
        try:
            with timed_dependency("cache", "add"):
                await self._add(key, value)
        except (RedisConnectionError, RedisTimeoutError):
            pass  # the breaker logs an outage once, when it opens
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
