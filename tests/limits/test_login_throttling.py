"""Login throttling through the login form, on both stacks: wrong passwords are counted per
account and address, per address and per account; while a counter is full no password is checked."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chitram.settings import Settings
from tests.limits.conftest import (
    PASSWORD,
    WRONG,
    Site,
    assert_logged_in,
    assert_login_blocked,
    assert_wrong_password,
    configure,
    form_error,
    log_in,
    login_form_token,
    running,
)

ATTACKER, VICTIM_HOME, OFFICE, CAFE = "203.0.113.66", "198.51.100.10", "198.51.100.20", "2001:db8::30"
DEFAULT_WINDOW = 900


def count_verifications(site: Site, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count argon2 verifications, to tell a refused login from one whose password was checked."""
    passwords = site.app.state.passwords
    original: Callable[..., Awaitable[bool]] = passwords.verify
    calls = 0

    async def counting(stored_hash: str | None, password: str, **options: Any) -> bool:
        nonlocal calls
        calls += 1
        return await original(stored_hash, password, **options)

    monkeypatch.setattr(passwords, "verify", counting)
    return lambda: calls


async def wait_out(since: float, seconds: int) -> None:
    """Sleep until `seconds` after `since` (and a little more)."""
    await asyncio.sleep(max(0.0, since + seconds - time.monotonic()) + 0.2)


async def test_after_five_wrong_passwords_the_pair_waits_even_with_the_right_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(configure(settings)) as site:  # the defaults: 5 per account and address
        await site.new_user("victim@example.com")
        verifications = count_verifications(site, monkeypatch)
        attacker = await site.client(ATTACKER)
        token = await login_form_token(attacker)
        for _ in range(5):
            assert_wrong_password(await log_in(attacker, "victim@example.com", WRONG, csrf_token=token))
        assert verifications() == 5
        blocked = await log_in(attacker, "victim@example.com", PASSWORD, csrf_token=token)
        assert_login_blocked(blocked, window=DEFAULT_WINDOW)
        assert_login_blocked(
            await log_in(attacker, "VICTIM@example.com ", WRONG, csrf_token=token), window=DEFAULT_WINDOW
        )
        assert verifications() == 5, "a password was checked while the pair was blocked"
        # the victim, elsewhere, is not locked out by the attacker's failures
        assert_logged_in(await log_in(await site.client(VICTIM_HOME), "victim@example.com", PASSWORD))


async def test_the_wait_ends_with_the_window(settings: Settings) -> None:
    window = 2
    async with running(
        configure(settings, {"login_failures_per_account_and_ip": 2, "login_window_seconds": window})
    ) as site:
        await site.new_user("user@example.com")
        http = await site.client(OFFICE)
        for _ in range(2):
            assert_wrong_password(await log_in(http, "user@example.com", WRONG))
        seconds = assert_login_blocked(await log_in(http, "user@example.com", PASSWORD), window=window)
        # a client that waits Retry-After (counted from the answer) gets through
        await wait_out(time.monotonic(), seconds)
        assert_logged_in(await log_in(http, "user@example.com", PASSWORD))


async def test_a_successful_login_resets_the_pair_counter(settings: Settings) -> None:
    async with running(configure(settings, {"login_failures_per_account_and_ip": 3})) as site:
        await site.new_user("forgetful@example.com")
        http = await site.client(OFFICE)
        for _round in range(3):
            for _ in range(2):
                assert_wrong_password(await log_in(http, "forgetful@example.com", WRONG))
            assert_logged_in(await log_in(http, "forgetful@example.com", PASSWORD))
        # the reset counts from zero again, it does not switch the limit off
        for _ in range(3):
            assert_wrong_password(await log_in(http, "forgetful@example.com", WRONG))
        assert_login_blocked(await log_in(http, "forgetful@example.com", PASSWORD), window=DEFAULT_WINDOW)


async def test_one_address_guessing_across_many_accounts_is_stopped(settings: Settings) -> None:
    limits = {"login_failures_per_ip": 4, "login_failures_per_account_and_ip": 5}
    async with running(configure(settings, limits)) as site:
        await site.new_user("alice@example.com")
        await site.new_user("bob@example.com")
        sprayer = await site.client(ATTACKER)
        for email in ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"):
            assert_wrong_password(await log_in(sprayer, email, WRONG))
        # a fifth account, never tried from here, is refused too: the address is out of guesses
        assert_login_blocked(await log_in(sprayer, "erin@example.com", WRONG), window=DEFAULT_WINDOW)
        assert_login_blocked(await log_in(sprayer, "alice@example.com", PASSWORD), window=DEFAULT_WINDOW)
        # the owners, from their own addresses, are not affected
        assert_logged_in(await log_in(await site.client(VICTIM_HOME), "alice@example.com", PASSWORD))
        assert_logged_in(await log_in(await site.client(OFFICE), "bob@example.com", PASSWORD))


async def test_the_account_limit_blocks_every_address_but_only_for_the_window(settings: Settings) -> None:
    window = 2
    limits = {
        "login_failures_per_account": 3,
        "login_failures_per_account_and_ip": 5,
        "login_failures_per_ip": 10,
        "login_window_seconds": window,
    }
    async with running(configure(settings, limits)) as site:
        await site.new_user("target@example.com")
        for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            assert_wrong_password(await log_in(await site.client(ip), "target@example.com", WRONG))
        owner = await site.client(VICTIM_HOME)
        seconds = assert_login_blocked(await log_in(owner, "target@example.com", PASSWORD), window=window)
        blocked_at = time.monotonic()
        assert_login_blocked(await log_in(await site.client(CAFE), "target@example.com", PASSWORD), window=window)
        # other accounts are not affected
        await site.new_user("bystander@example.com")
        assert_logged_in(await log_in(owner, "bystander@example.com", PASSWORD))
        await wait_out(blocked_at, seconds)
        assert_logged_in(await log_in(owner, "target@example.com", PASSWORD))


async def test_the_owner_waiting_out_an_attack_does_not_lock_themselves_out(settings: Settings) -> None:
    """Attempts refused by the full per-account counter are taken back from the owner's own
    counters, so the owner can log in as soon as the attacker's window ends (and not only
    when the owner's own, later window would)."""
    window = 4
    limits = {
        "login_failures_per_account": 3,
        "login_failures_per_account_and_ip": 2,
        "login_failures_per_ip": 10,
        "login_window_seconds": window,
    }
    async with running(configure(settings, limits)) as site:
        await site.new_user("target@example.com")
        for ip in ("203.0.113.1", "203.0.113.1", "203.0.113.2"):
            assert_wrong_password(await log_in(await site.client(ip), "target@example.com", WRONG))
        # The owner comes well into the attacker's window: a window of the owner's own would
        # end long after the attacker's.
        await asyncio.sleep(window * 0.6)
        owner = await site.client(VICTIM_HOME)
        seconds = assert_login_blocked(await log_in(owner, "target@example.com", PASSWORD), window=window)
        blocked_at = time.monotonic()
        for _ in range(2):  # more than the owner's own pair limit, all refused by the account counter
            assert_login_blocked(await log_in(owner, "target@example.com", PASSWORD), window=window)
        await wait_out(blocked_at, seconds)  # the attacker's window, as Retry-After told
        assert_logged_in(await log_in(owner, "target@example.com", PASSWORD))


async def test_unknown_emails_count_and_answer_like_a_wrong_password(settings: Settings) -> None:
    async with running(configure(settings, {"login_failures_per_account_and_ip": 2})) as site:
        await site.new_user("known@example.com")
        http = await site.client(ATTACKER)
        known = [await log_in(http, "known@example.com", WRONG) for _ in range(3)]
        unknown = [await log_in(http, "nobody@example.com", WRONG) for _ in range(3)]
        for answers in (known, unknown):
            assert [r.status_code for r in answers] == [401, 401, 429]
        assert form_error(known[0]) == form_error(unknown[0])
        assert form_error(known[1]) == form_error(unknown[1])
        assert_login_blocked(unknown[2], window=DEFAULT_WINDOW)
        assert form_error(known[2]) == form_error(unknown[2])
        assert set(known[0].headers) - {"set-cookie"} == set(unknown[0].headers) - {"set-cookie"}


async def test_unknown_and_known_emails_take_about_as_long(settings: Settings) -> None:
    limits = {"login_failures_per_account_and_ip": 50, "login_failures_per_ip": 50, "login_failures_per_account": 50}
    async with running(configure(settings, limits)) as site:
        await site.new_user("known@example.com")
        http = await site.client(ATTACKER)
        token = await login_form_token(http)

        async def timed(email: str) -> float:
            started = time.perf_counter()
            assert_wrong_password(await log_in(http, email, WRONG, csrf_token=token))
            return time.perf_counter() - started

        await timed("known@example.com")  # warm-up: the first unknown email builds its dummy hash
        await timed("nobody@example.com")
        known, unknown = [], []
        for attempt in range(7):
            known.append(await timed("known@example.com"))
            unknown.append(await timed(f"nobody{attempt}@example.com"))
        ratio = statistics.median(unknown) / statistics.median(known)
        assert 0.5 <= ratio <= 2.0, (known, unknown)


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_limit(settings: Settings) -> None:
    """Sent at once, the guesses must not all pass the "blocked?" check before any is counted."""
    async with running(configure(settings)) as site:  # 5 per account and address
        await site.new_user("victim@example.com")
        attacker = await site.client(ATTACKER)
        token = await login_form_token(attacker)
        answers = await asyncio.gather(
            *(log_in(attacker, "victim@example.com", f"guess {n}", csrf_token=token) for n in range(12))
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [401] * 5 + [429] * 7, f"{statuses.count(401)} passwords were checked, the limit is 5"
