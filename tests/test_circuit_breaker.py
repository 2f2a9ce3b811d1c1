"""The Redis circuit breaker's states, on a clock the test moves (the live behaviour against a
hanging Redis is in tests/system/test_dependency_hangs.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

import chitram.stores
from chitram.stores import CircuitBreaker, RedisUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(chitram.stores, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def fail(breaker: CircuitBreaker) -> None:
    breaker.failed(breaker.before(), RedisTimeoutError("Timeout reading"))


def test_one_slow_answer_is_not_an_outage(clock: Clock) -> None:
    breaker = CircuitBreaker(open_seconds=5)
    fail(breaker)
    breaker.succeeded(breaker.before())
    fail(breaker)
    assert not breaker.is_open  # failures must come in a row


def test_it_opens_fails_fast_half_opens_and_closes(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chitram.stores")
    breaker = CircuitBreaker(open_seconds=5)
    fail(breaker)
    fail(breaker)
    assert breaker.is_open
    for _ in range(100):  # every request meanwhile: refused without asking Redis
        with pytest.raises(RedisUnavailable):
            breaker.before()
    clock.now += 5
    trial = breaker.before()
    assert trial
    with pytest.raises(RedisUnavailable):
        breaker.before()  # one trial at a time
    breaker.failed(trial, RedisTimeoutError("still hanging"))
    with pytest.raises(RedisUnavailable):
        breaker.before()  # open again for a full period
    clock.now += 5
    breaker.succeeded(breaker.before())
    assert not breaker.is_open
    assert breaker.before() is False
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Redis is not answering" in m for m in messages) == 1, messages
    assert sum("Redis answers again after 10.0 s" in m for m in messages) == 1, messages


def test_a_cancelled_trial_lets_the_next_command_try(clock: Clock) -> None:
    breaker = CircuitBreaker(open_seconds=5)
    fail(breaker)
    fail(breaker)
    clock.now += 5
    breaker.abandoned(breaker.before())
    assert breaker.is_open
    assert breaker.before()  # the next one is the trial
