"""Rate limits and allowances: fixed-window counters in Redis (shared by every replica) or in memory.

A window starts at a counter's first event and lasts ``window_seconds``; then the counter is gone
and the next event starts a new window. Store errors are not swallowed: a limit that cannot be
checked fails the request (errors.py turns a RedisError into a 503) rather than letting it through.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio
from redis.asyncio import Redis

from chitram.errors import RateLimitedError
from chitram.stores import NAMESPACE, Stores

KEY_PREFIX = f"{NAMESPACE}:limit:"
# The in-process store prunes expired counters once it holds this many (and then at twice what
# is left), so memory stays bounded by the live counters at amortised constant cost.
MEMORY_PRUNE_AT = 10_000


@dataclass(frozen=True)
class Limit:
    """How many events (or units, e.g. bytes) one key may have per window."""

    name: str
    """Names the counter, e.g. "uploads-ip"; part of the store key."""
    limit: int
    """Allowed per window; 0 means no limit (every call passes and nothing is stored)."""
    window_seconds: int

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit {self.name!r}: the limit must be 0 (none) or more, not {self.limit}")
        if self.window_seconds <= 0:
            raise ValueError(f"limit {self.name!r}: the window must be at least 1 second")


class RateLimiter:
    """Counts events per (limit, key) and refuses those over the limit with a 429.

    With Redis every replica shares the counters. Without it they live in this instance, so the
    app must use one RateLimiter for all its requests (embedded mode runs a single process).
    """

    def __init__(self, stores: Stores) -> None:
        self._counters: _RedisCounters | _MemoryCounters = (
            _RedisCounters(stores.redis) if stores.redis is not None else _MemoryCounters()
        )

    async def hit(self, limit: Limit, key: str, *, message: str) -> None:
        """Count one event; raise RateLimitedError when this event is over the limit."""
        if not limit.limit:
            return
        total, remaining = await self._counters.add(store_key(limit, key), 1, limit.window_seconds)
        if total > limit.limit:
            raise _limited(message, remaining, limit)

    async def blocked_for(self, limit: Limit, key: str) -> int | None:
        """Seconds until the window ends if the counter is already at/over the limit, else None. Counts nothing."""
        if not limit.limit:
            return None
        counter = await self._counters.peek(store_key(limit, key))
        if counter is None or counter[0] < limit.limit:
            return None
        return retry_after(counter[1], limit)

    async def current(self, limit: Limit, key: str) -> int:
        """The counter's value in its window (0 when there is none). Counts nothing."""
        if not limit.limit:
            return 0
        counter = await self._counters.peek(store_key(limit, key))
        return 0 if counter is None else counter[0]

    async def count(self, limit: Limit, key: str) -> None:
        """Count one event and never refuse it (e.g. a failed login, checked with blocked_for)."""
        if limit.limit:
            await self._counters.add(store_key(limit, key), 1, limit.window_seconds)

    async def reset(self, limit: Limit, key: str) -> None:
        """Forget the counter, e.g. the failures of an account after a successful login."""
        if limit.limit:
            await self._counters.delete(store_key(limit, key))

    async def charge(self, limit: Limit, key: str, amount: int, *, message: str) -> None:
        """Add `amount` (e.g. bytes) unless that would exceed the limit; then raise RateLimitedError and add nothing."""
        _check_amount(amount)
        if not limit.limit or not amount:
            return
        added, remaining = await self._counters.add_within(
            store_key(limit, key), amount, limit.limit, limit.window_seconds
        )
        if not added:
            raise _limited(message, remaining, limit)

    async def refund(self, limit: Limit, key: str, amount: int) -> None:
        """Take back a charge, e.g. for an upload that failed after it was charged (never below 0)."""
        _check_amount(amount)
        if limit.limit and amount:
            await self._counters.subtract(store_key(limit, key), amount)


def store_key(limit: Limit, key: str) -> str:
    """The store key of a counter. `key` is hashed: it may be an email address or an IP, and the
    store should hold no personal data and no keys of a length a client chooses."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{KEY_PREFIX}{limit.name}:{digest}"


def retry_after(remaining: float | None, limit: Limit) -> int:
    """Whole seconds until the window ends, rounded up so a client that waits them gets through.
    A counter that does not exist (an amount larger than the whole allowance) waits a full window."""
    seconds = limit.window_seconds if remaining is None else remaining
    return max(1, math.ceil(seconds))


def human_wait(seconds: int) -> str:
    """A wait in words, rounded up: "40 seconds", "12 minutes", "1 hour 30 minutes", "3 hours"."""
    if seconds < 60:
        return _plural(max(seconds, 1), "second")
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return _plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if not minutes:
        return _plural(hours, "hour")
    return f"{_plural(hours, 'hour')} {_plural(minutes, 'minute')}"


def _plural(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def _limited(message: str, remaining: float | None, limit: Limit) -> RateLimitedError:
    seconds = retry_after(remaining, limit)
    return RateLimitedError(f"{message}; try again in {human_wait(seconds)}", headers={"Retry-After": str(seconds)})


def _check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"an amount to charge or refund cannot be negative, got {amount}")


# Each script runs atomically in Redis, so replicas never interleave between reading and writing a
# counter. The expiry is set only when the counter has none (a new one): EXPIRE NX would say
# that directly, but needs Redis 7. Times are in milliseconds.

_ADD = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {total, ttl}
"""

_ADD_WITHIN = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current + tonumber(ARGV[1]) > tonumber(ARGV[3]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, ttl}
"""

_PEEK = """
local count = redis.call('GET', KEYS[1])
if not count then
  return false
end
return {tonumber(count), redis.call('PTTL', KEYS[1])}
"""

# KEEPTTL (Redis 6.0): a refund must not move the end of the window.
_SUBTRACT = """
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
local left = math.max(0, tonumber(current) - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
"""


def _seconds(ttl_ms: int) -> float | None:
    """A PTTL reply in seconds; None when the key does not exist (-2) or has no expiry (-1)."""
    return None if ttl_ms < 0 else ttl_ms / 1000


class _RedisCounters:
    def __init__(self, redis: Redis[Any]) -> None:
        self._redis = redis
        self._add = redis.register_script(_ADD)
        self._add_within = redis.register_script(_ADD_WITHIN)
        self._peek = redis.register_script(_PEEK)
        self._subtract = redis.register_script(_SUBTRACT)

    async def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float | None]:
        total, ttl = await self._add(keys=[key], args=[amount, window_seconds * 1000])
        return int(total), _seconds(int(ttl))

    async def add_within(self, key: str, amount: int, limit: int, window_seconds: int) -> tuple[bool, float | None]:
        added, ttl = await self._add_within(keys=[key], args=[amount, window_seconds * 1000, limit])
        return bool(added), _seconds(int(ttl))

    async def peek(self, key: str) -> tuple[int, float | None] | None:
        reply = await self._peek(keys=[key])
        if reply is None:
            return None
        count, ttl = reply
        return int(count), _seconds(int(ttl))

    async def subtract(self, key: str, amount: int) -> None:
        await self._subtract(keys=[key], args=[amount])

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)


class _MemoryCounters:
    """Counters of one process: key → (count, monotonic time the window ends)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, float]] = {}
        self._lock = anyio.Lock()
        self._prune_at = MEMORY_PRUNE_AT

    async def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float | None]:
        async with self._lock:
            now = time.monotonic()
            total, ends = self._live(key, now) or (0, now + window_seconds)
            self._store(key, total + amount, ends, now)
            return total + amount, ends - now

    async def add_within(self, key: str, amount: int, limit: int, window_seconds: int) -> tuple[bool, float | None]:
        async with self._lock:
            now = time.monotonic()
            entry = self._live(key, now)
            total, ends = entry or (0, now + window_seconds)
            if total + amount > limit:
                return False, None if entry is None else ends - now
            self._store(key, total + amount, ends, now)
            return True, ends - now

    async def peek(self, key: str) -> tuple[int, float | None] | None:
        async with self._lock:
            now = time.monotonic()
            entry = self._live(key, now)
            return None if entry is None else (entry[0], entry[1] - now)

    async def subtract(self, key: str, amount: int) -> None:
        async with self._lock:
            entry = self._live(key, time.monotonic())
            if entry is not None:
                self._entries[key] = (max(0, entry[0] - amount), entry[1])

    async def delete(self, key: str) -> None:
        async with self._lock:
            self._entries.pop(key, None)

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        """The counter unless its window has ended (then it is dropped)."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, total: int, ends: float, now: float) -> None:
        self._entries[key] = (total, ends)
        if len(self._entries) >= self._prune_at:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            self._prune_at = max(MEMORY_PRUNE_AT, 2 * len(self._entries))
