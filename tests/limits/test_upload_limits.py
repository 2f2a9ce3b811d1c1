"""Upload limits through HTTP, on both stacks: per address, stricter without an account, per
account across addresses, a daily byte budget without an account, and no anonymous uploads at all."""

from __future__ import annotations

import re

from chitram.settings import AccountSettings, Settings
from tests.limits.conftest import (
    DAY,
    HOUR,
    HTML,
    NO_UPLOAD_LIMITS,
    PASSWORD,
    UPLOAD_PATH,
    assert_created,
    assert_rate_limited,
    configure,
    log_in,
    png,
    running,
    upload,
)

A, B, C, D = "203.0.113.1", "203.0.113.2", "198.51.100.3", "2001:db8::4"


async def test_the_address_limit_counts_every_upload_with_or_without_an_account(settings: Settings) -> None:
    async with running(configure(settings, {**NO_UPLOAD_LIMITS, "uploads_per_hour_per_ip": 3})) as site:
        token = await site.new_token("owner@example.com")
        a, b = await site.client(A), await site.client(B)
        assert_created(await upload(a, png(1)))
        assert_created(await upload(a, png(2), token=token))
        assert_created(await upload(a, png(3)))
        refused = await upload(a, png(4), token=token)
        assert_rate_limited(refused, window=HOUR, says="this address has uploaded too many images in the last hour")
        assert_rate_limited(await upload(a, png(5)), window=HOUR, says="too many images in the last hour")
        # the limit is per address: another one starts with its own
        assert_created(await upload(b, png(6)))
        assert_created(await upload(b, png(7), token=token))
        await site.assert_holds_exactly(5)


async def test_uploads_without_an_account_have_a_stricter_limit(settings: Settings) -> None:
    limits = {**NO_UPLOAD_LIMITS, "uploads_per_hour_per_ip": 5, "anonymous_uploads_per_hour_per_ip": 2}
    async with running(configure(settings, limits)) as site:
        token = await site.new_token("member@example.com")
        a = await site.client(A)
        assert_created(await upload(a, png(1)))
        assert_created(await upload(a, png(2)))
        refused = await upload(a, png(3))
        assert_rate_limited(refused, window=HOUR, says="without an account; log in to upload more")
        # with an account the same address may go on, up to the address limit
        assert_created(await upload(a, png(4), token=token))
        assert_created(await upload(a, png(5), token=token))
        assert_rate_limited(await upload(a, png(6), token=token), window=HOUR, says="in the last hour")
        assert_created(await upload(await site.client(B), png(7)))
        await site.assert_holds_exactly(5)


async def test_the_account_limit_follows_the_account_across_addresses(settings: Settings) -> None:
    async with running(configure(settings, {**NO_UPLOAD_LIMITS, "uploads_per_hour_per_account": 3})) as site:
        busy = await site.new_token("busy@example.com")
        other = await site.new_token("other@example.com")
        for seed, ip in enumerate((A, B, C), start=1):
            assert_created(await upload(await site.client(ip), png(seed), token=busy))
        d = await site.client(D)
        refused = await upload(d, png(4), token=busy)
        assert_rate_limited(refused, window=HOUR, says="your account has uploaded too many images in the last hour")
        assert_rate_limited(await upload(await site.client(A), png(5), token=busy), window=HOUR, says="account")
        # the address itself is not blocked: other accounts and anonymous uploads go through
        assert_created(await upload(d, png(6), token=other))
        assert_created(await upload(d, png(7)))
        await site.assert_holds_exactly(5)


async def test_anonymous_bytes_are_budgeted_per_address_and_day(settings: Settings) -> None:
    first, second, third, tiny = png(1, (40, 40)), png(2, (40, 40)), png(3, (40, 40)), png(4, (1, 1))
    budget = len(first) + len(second) + len(third) - 1
    assert len(tiny) < len(third) - 1
    limits = {**NO_UPLOAD_LIMITS, "anonymous_bytes_per_day_per_ip": budget}
    async with running(configure(settings, limits)) as site:
        a = await site.client(A)
        assert_created(await upload(a, first))
        assert_created(await upload(a, second))
        refused = await upload(a, third)
        seconds = assert_rate_limited(refused, window=DAY, says="its daily allowance of")
        assert "without an account; log in to upload more" in refused.json()["detail"]
        assert seconds > DAY - 120  # the window started with the first upload moments ago
        # refused because it would exceed the budget, not because the budget is spent: a smaller one fits
        assert_created(await upload(a, tiny))
        # an account's uploads do not come out of the anonymous budget; other addresses have their own
        token = await site.new_token("member@example.com")
        assert_created(await upload(a, third, token=token))
        assert_created(await upload(await site.client(B), png(5, (40, 40))))
        await site.assert_holds_exactly(5)


async def test_a_failed_upload_gives_its_bytes_back(settings: Settings) -> None:
    first, second, third = png(1, (40, 40)), png(2, (40, 40)), png(3, (40, 40))
    budget = len(first) + len(second) + 10
    corrupt = b"this is no image at all. " * (budget // 25)
    assert len(first) < len(corrupt) <= budget
    async with running(configure(settings, {**NO_UPLOAD_LIMITS, "anonymous_bytes_per_day_per_ip": budget})) as site:
        a = await site.client(A)
        rejected = await upload(a, corrupt)
        assert rejected.status_code in (400, 415, 422), rejected.text
        truncated = await upload(a, first[: len(first) // 2])
        assert truncated.status_code in (400, 415, 422), truncated.text
        # had the failures been charged, `first` would no longer fit
        assert_created(await upload(a, first))
        assert_created(await upload(a, second))
        assert_rate_limited(await upload(a, third), window=DAY, says="daily allowance")
        await site.assert_holds_exactly(2)


async def test_a_limit_of_zero_means_no_limit(settings: Settings) -> None:
    async with running(configure(settings, NO_UPLOAD_LIMITS)) as site:
        token = await site.new_token("member@example.com")
        a = await site.client(A)
        for seed in range(8):
            assert_created(await upload(a, png(seed, (48, 48))))
        for seed in range(8, 12):
            assert_created(await upload(a, png(seed, (48, 48)), token=token))
        await site.assert_holds_exactly(12)
    # the same uploads against a limit of 1 show that the counters were there to be skipped
    async with running(configure(settings, {**NO_UPLOAD_LIMITS, "uploads_per_hour_per_ip": 1})) as site:
        a = await site.client(A)
        assert (await upload(a, png(100))).status_code == 201
        assert (await upload(a, png(101))).status_code == 429


async def test_without_anonymous_uploads_only_accounts_may_upload(settings: Settings) -> None:
    configured = configure(settings, accounts=AccountSettings(allow_anonymous_uploads=False))
    async with running(configured) as site:
        a = await site.client(A)
        refused = await upload(a, png(1))
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        detail = refused.json()["detail"]
        assert "log in" in detail and "API token" in detail and "Authorization: Bearer" in detail
        assert refused.headers["www-authenticate"].lower().startswith("bearer")
        # the upload form's target says the same to the page's script (which sends the CSRF token)
        home = await a.get("/", headers=HTML)
        csrf = home.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        by_form = await a.post(
            "/upload",
            files={"file": ("p.png", png(2), "image/png")},
            headers={**HTML, "hx-request": "true", "x-csrftoken": csrf},
        )
        assert by_form.status_code == 401, by_form.text
        # the home page says so instead of offering a form that cannot work
        home = await a.get("/", headers=HTML)
        assert home.status_code == 200
        assert re.search(r'id="login-to-upload"', home.text)
        assert 'id="upload-form"' not in home.text and 'action="/upload"' not in home.text
        # with an account: a token works on the API, and a logged-in browser gets the form
        token = await site.new_token("member@example.com")
        created = await a.post(
            UPLOAD_PATH, files={"file": ("p.png", png(3), "image/png")}, headers={"authorization": f"Bearer {token}"}
        )
        assert_created(created)
        browser = await site.client(B)
        assert (await log_in(browser, "member@example.com", PASSWORD)).status_code == 303
        own_home = await browser.get("/", headers=HTML)
        assert 'id="upload-form"' in own_home.text and 'id="login-to-upload"' not in own_home.text
        await site.assert_holds_exactly(1)


async def test_ipv6_addresses_of_one_subscriber_share_their_limit(settings: Settings) -> None:
    """Addresses from one /64 are one client to the limits; the next /64 is someone else."""
    async with running(configure(settings, {"anonymous_uploads_per_hour_per_ip": 2})) as site:
        for index, address in enumerate(("2001:db8:5:6::1", "2001:db8:5:6::2")):
            assert_created(await upload(await site.client(address), png(index)))
        refused = await upload(await site.client("2001:db8:5:6:ffff::3"), png(3))
        assert refused.status_code == 429
        assert_created(await upload(await site.client("2001:db8:5:7::1"), png(4)))
