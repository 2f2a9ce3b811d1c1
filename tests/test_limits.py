"""Rate limits: every behaviour on the in-process store and on a real Redis, which replicas share."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chitram.errors import RateLimitedError
from chitram.limits import Limit, RateLimiter, human_wait
from chitram.settings import CacheSettings
from chitram.stores import Stores, create_stores
from tests.conftest import base_settings
from tests.support.services import RedisService

REDIS_DB = 5
UPLOADS = Limit("uploads-ip", 3, 60)
BYTES = Limit("bytes-ip", 100, 60)
MESSAGE = "too many uploads from your address"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_stores(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Stores]]:
    """Stores on the backend; with Redis each call is a new client on the same (flushed) database."""
    if backend == "redis":
        redis_service: RedisService = request.getfixturevalue("redis_service")
        settings = base_settings(tmp_path, cache=CacheSettings(redis_url=redis_service.url_for_db(REDIS_DB)))
    else:
        settings = base_settings(tmp_path)
    created: list[Stores] = []

    def make() -> Stores:
        created.append(create_stores(settings))
        return created[-1]

    first = make()
    if first.redis is not None:
        await first.redis.flushdb()
    yield make
    for stores in created:
        await stores.close()


@pytest.fixture
def limiter(make_stores: Callable[[], Stores]) -> RateLimiter:
    return RateLimiter(make_stores())


@pytest.fixture
def twin(backend: str, limiter: RateLimiter, make_stores: Callable[[], Stores]) -> RateLimiter:
    """Another replica's limiter. In memory there is one process and so one limiter."""
    return RateLimiter(make_stores()) if backend == "redis" else limiter


async def passes(call: Awaitable[None]) -> bool:
    try:
        await call
    except RateLimitedError:
        return False
    return True


def assert_refusal(exc: RateLimitedError, window: int) -> None:
    assert exc.status_code == 429
    assert 0 < int(exc.headers["Retry-After"]) <= window
    assert exc.detail.startswith(MESSAGE + "; try again in ")


async def test_the_event_over_the_limit_is_refused(limiter: RateLimiter) -> None:
    for _ in range(UPLOADS.limit):
        await limiter.hit(UPLOADS, "203.0.113.7", message=MESSAGE)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.hit(UPLOADS, "203.0.113.7", message=MESSAGE)
    assert_refusal(refused.value, UPLOADS.window_seconds)
    assert refused.value.detail.endswith("try again in 1 minute")


async def test_a_zero_limit_never_refuses_and_stores_nothing(limiter: RateLimiter) -> None:
    unlimited = Limit(UPLOADS.name, 0, 60)
    for _ in range(50):
        await limiter.hit(unlimited, "k", message=MESSAGE)
        await limiter.count(unlimited, "k")
    await limiter.charge(unlimited, "k", 10**12, message=MESSAGE)
    assert await limiter.blocked_for(unlimited, "k") is None
    # The same counter under a limit of 1 would block if anything had been stored.
    assert await limiter.blocked_for(Limit(UPLOADS.name, 1, 60), "k") is None


async def test_blocked_for_reports_the_wait_without_counting(limiter: RateLimiter) -> None:
    failures = Limit("login-failures", 2, 900)
    assert await limiter.blocked_for(failures, "alice@example.com") is None
    for _ in range(5):
        await limiter.blocked_for(failures, "alice@example.com")
    await limiter.count(failures, "alice@example.com")
    assert await limiter.blocked_for(failures, "alice@example.com") is None
    await limiter.count(failures, "alice@example.com")
    await limiter.count(failures, "alice@example.com")  # counting past the limit never raises
    wait = await limiter.blocked_for(failures, "alice@example.com")
    assert wait is not None
    assert 0 < wait <= 900


async def test_reset_forgets_the_counter(limiter: RateLimiter) -> None:
    for _ in range(UPLOADS.limit):
        await limiter.hit(UPLOADS, "k", message=MESSAGE)
    assert await limiter.blocked_for(UPLOADS, "k") is not None
    await limiter.reset(UPLOADS, "k")
    assert await limiter.blocked_for(UPLOADS, "k") is None
    for _ in range(UPLOADS.limit):
        await limiter.hit(UPLOADS, "k", message=MESSAGE)


async def test_a_charge_over_the_allowance_adds_nothing_and_a_refund_gives_back(limiter: RateLimiter) -> None:
    await limiter.refund(BYTES, "k", 10)  # nothing to refund: no counter appears
    assert await limiter.blocked_for(Limit(BYTES.name, 1, 60), "k") is None
    await limiter.charge(BYTES, "k", 60, message=MESSAGE)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.charge(BYTES, "k", 50, message=MESSAGE)
    assert_refusal(refused.value, BYTES.window_seconds)
    await limiter.charge(BYTES, "k", 40, message=MESSAGE)  # the refused 50 were not added
    assert not await passes(limiter.charge(BYTES, "k", 1, message=MESSAGE))
    await limiter.refund(BYTES, "k", 30)
    await limiter.charge(BYTES, "k", 30, message=MESSAGE)
    await limiter.refund(BYTES, "k", 1000)  # never below 0
    await limiter.charge(BYTES, "k", 100, message=MESSAGE)
    assert not await passes(limiter.charge(BYTES, "k", 1, message=MESSAGE))


async def test_an_amount_larger_than_the_allowance_waits_a_window(limiter: RateLimiter) -> None:
    with pytest.raises(RateLimitedError) as refused:
        await limiter.charge(BYTES, "k", 101, message=MESSAGE)
    assert refused.value.headers["Retry-After"] == "60"


async def test_negative_amounts_are_refused(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="negative"):
        await limiter.charge(BYTES, "k", -1, message=MESSAGE)
    with pytest.raises(ValueError, match="negative"):
        await limiter.refund(BYTES, "k", -1)


async def test_the_window_starts_at_the_first_event_and_then_ends(limiter: RateLimiter) -> None:
    per_second = Limit("burst", 1, 1)
    bytes_per_second = Limit("burst-bytes", 10, 1)
    await limiter.hit(per_second, "k", message=MESSAGE)
    await limiter.charge(bytes_per_second, "k", 10, message=MESSAGE)
    await asyncio.sleep(0.5)
    with pytest.raises(RateLimitedError) as refused:  # refused events do not extend the window
        await limiter.hit(per_second, "k", message=MESSAGE)
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.detail.endswith("try again in 1 second")
    assert not await passes(limiter.charge(bytes_per_second, "k", 1, message=MESSAGE))
    await asyncio.sleep(0.6)
    assert await limiter.blocked_for(per_second, "k") is None
    await limiter.hit(per_second, "k", message=MESSAGE)
    await limiter.charge(bytes_per_second, "k", 10, message=MESSAGE)


async def test_counters_of_other_limits_and_keys_are_independent(limiter: RateLimiter) -> None:
    other_name = Limit("uploads-account", UPLOADS.limit, 60)
    for _ in range(UPLOADS.limit):
        await limiter.hit(UPLOADS, "a", message=MESSAGE)
    assert not await passes(limiter.hit(UPLOADS, "a", message=MESSAGE))
    await limiter.hit(UPLOADS, "b", message=MESSAGE)
    await limiter.hit(other_name, "a", message=MESSAGE)
    assert await limiter.blocked_for(other_name, "a") is None


async def test_replicas_let_exactly_the_limit_through_at_once(limiter: RateLimiter, twin: RateLimiter) -> None:
    hits = Limit("concurrent", 20, 60)
    results = await asyncio.gather(*(passes((limiter, twin)[i % 2].hit(hits, "k", message=MESSAGE)) for i in range(50)))
    assert sum(results) == 20
    charges = await asyncio.gather(
        *(passes((limiter, twin)[i % 2].charge(BYTES, "k", 10, message=MESSAGE)) for i in range(50))
    )
    assert sum(charges) == 10


@pytest.mark.parametrize("backend", ["redis"])
async def test_replicas_with_their_own_clients_share_one_count(limiter: RateLimiter, twin: RateLimiter) -> None:
    await limiter.hit(UPLOADS, "k", message=MESSAGE)
    await twin.hit(UPLOADS, "k", message=MESSAGE)
    await limiter.hit(UPLOADS, "k", message=MESSAGE)
    assert not await passes(twin.hit(UPLOADS, "k", message=MESSAGE))
    assert await limiter.blocked_for(UPLOADS, "k") is not None
    await twin.reset(UPLOADS, "k")
    assert await limiter.blocked_for(UPLOADS, "k") is None


@pytest.mark.parametrize("backend", ["redis"])
async def test_redis_keys_hold_no_personal_data(limiter: RateLimiter, make_stores: Callable[[], Stores]) -> None:
    await limiter.hit(UPLOADS, "alice@example.com", message=MESSAGE)
    redis = make_stores().redis
    assert redis is not None
    keys = [key.decode() for key in await redis.keys("*")]
    assert len(keys) == 1
    assert re.fullmatch(r"chitram:limit:uploads-ip:[0-9a-f]{64}", keys[0])


async def test_store_errors_are_not_swallowed(tmp_path: Path) -> None:
    # Nothing listens on port 1: a limit that cannot be checked must fail the request (a 503).
    stores = create_stores(base_settings(tmp_path, cache=CacheSettings(redis_url="redis://127.0.0.1:1/0")))
    try:
        with pytest.raises(RedisConnectionError):
            await RateLimiter(stores).hit(UPLOADS, "k", message=MESSAGE)
    finally:
        await stores.close()


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="0 \\(none\\) or more"):
        Limit("x", -1, 60)
    with pytest.raises(ValueError, match="at least 1 second"):
        Limit("x", 1, 0)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "1 second"),
        (1, "1 second"),
        (40, "40 seconds"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (720, "12 minutes"),
        (3600, "1 hour"),
        (5400, "1 hour 30 minutes"),
        (10800, "3 hours"),
        (86400, "24 hours"),
    ],
)
def test_waits_are_said_in_words_rounded_up(seconds: int, words: str) -> None:
    assert human_wait(seconds) == words
