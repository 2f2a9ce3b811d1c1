"""Limits through real `chitram` processes: which address X-Forwarded-For may claim, and
counters shared by every replica (two servers, two workers each, on one PostgreSQL/Redis/S3)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chitram.settings import Settings
from tests.conftest import settings_env
from tests.limits.conftest import (
    HOUR,
    PASSWORD,
    WRONG,
    assert_created,
    assert_login_blocked,
    assert_rate_limited,
    assert_wrong_password,
    log_in,
    png,
    running,
)
from tests.support.server import RunningServer, start_server, stop

UPLOAD_LIMIT = "this address has uploaded too many images in the last hour"


def live_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Only the upload limit under test is on (the stricter anonymous one would refuse first)."""
    env = settings_env(settings)
    env.update(
        CHITRAM_ANONYMOUS_UPLOADS_PER_HOUR_PER_IP="0",
        CHITRAM_UPLOADS_PER_HOUR_PER_ACCOUNT="0",
        CHITRAM_ANONYMOUS_BYTES_PER_DAY_PER_IP="0",
    )
    env.update(extra)
    return env


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """Servers a test starts; all stopped afterwards."""
    started: list[RunningServer] = []
    yield started
    for server in started:
        stop(server)


def xff(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


async def post(http: httpx.AsyncClient, seed: int, headers: dict[str, str] | None = None) -> httpx.Response:
    """One upload, sent once: a refusal must arrive as an answer, never as a reset connection."""
    return await http.post("/api/v1/images", files=upload_file(png(seed)), headers=headers or {})


def upload_file(data: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("picture.png", data, "image/png")}


# -- trusted proxies -------------------------------------------------------------------


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    settings: Settings, tmp_path: Path, servers: list[RunningServer]
) -> None:
    servers.append(start_server(live_env(settings, CHITRAM_UPLOADS_PER_HOUR_PER_IP="2"), cwd=tmp_path))
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as http:
        # a client that makes up a new address for each request still counts as itself
        assert_created(await post(http, 1, xff("198.51.100.1")))
        assert_created(await post(http, 2, xff("198.51.100.2")))
        refused = await post(http, 3, xff("198.51.100.3"))
        assert_rate_limited(refused, window=HOUR, says=UPLOAD_LIMIT)
        assert_rate_limited(
            await post(http, 4, {"x-forwarded-for": "10.9.8.7, 198.51.100.4"}), window=HOUR, says=UPLOAD_LIMIT
        )
        assert_rate_limited(await post(http, 5), window=HOUR, says=UPLOAD_LIMIT)


async def test_forwarded_for_from_a_trusted_proxy_decides_the_address(
    settings: Settings, tmp_path: Path, servers: list[RunningServer]
) -> None:
    env = live_env(settings, CHITRAM_UPLOADS_PER_HOUR_PER_IP="2", CHITRAM_TRUSTED_PROXIES="127.0.0.1")
    servers.append(start_server(env, cwd=tmp_path))
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as http:
        first, second = "198.51.100.1", "2001:db8::2"
        assert_created(await post(http, 1, xff(first)))
        assert_created(await post(http, 2, xff(first)))
        assert_rate_limited(await post(http, 3, xff(first)), window=HOUR, says=UPLOAD_LIMIT)
        # a second client behind the same proxy has a limit of its own
        assert_created(await post(http, 4, xff(second)))
        assert_created(await post(http, 5, xff(second)))
        assert_rate_limited(await post(http, 6, xff(second)), window=HOUR, says=UPLOAD_LIMIT)
        # a client cannot escape by putting a made-up address in front of the one the proxy adds
        disguised = xff(f"203.0.113.99, {first}")
        assert_rate_limited(await post(http, 7, disguised), window=HOUR, says=UPLOAD_LIMIT)
        # the proxy itself (no header) is just another address
        assert_created(await post(http, 8))


async def test_a_refused_upload_is_answered_not_cut_off(
    embedded_settings: Settings, tmp_path: Path, servers: list[RunningServer]
) -> None:
    """A client must see the 429 and its Retry-After, or it cannot know to wait: the answer may
    not be lost to a reset connection because the upload's body was never read. (The HTTP layer
    is the same on both stacks, so the embedded one is enough.)"""
    servers.append(start_server(live_env(embedded_settings, CHITRAM_UPLOADS_PER_HOUR_PER_IP="1"), cwd=tmp_path))
    url = servers[0].url
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert_created(await post(http, 1))
    # a phone photo's size: far more than the socket buffers hold while the answer is sent
    body = png(2) + bytes(8 * 1024 * 1024)
    outcomes: list[str] = []
    for _ in range(6):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            try:
                response = await http.post("/api/v1/images", files=upload_file(body))
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
                continue
        assert_rate_limited(response, window=HOUR, says=UPLOAD_LIMIT)
        outcomes.append("429")
    cut = [outcome for outcome in outcomes if outcome != "429"]
    assert not cut, f"{len(cut)} of {len(outcomes)} refused uploads got no answer: {outcomes}"


# -- replicas --------------------------------------------------------------------------


def two_replicas(settings: Settings, tmp_path: Path, servers: list[RunningServer], **extra: str) -> list[str]:
    env = live_env(settings, **extra)
    for name in ("one", "two"):
        cwd = tmp_path / name
        cwd.mkdir()
        servers.append(start_server(env, cwd=cwd, workers=2))
    return [server.url for server in servers]


async def test_upload_limits_hold_across_replicas(
    production_settings: Settings, tmp_path: Path, servers: list[RunningServer]
) -> None:
    urls = two_replicas(production_settings, tmp_path, servers, CHITRAM_UPLOADS_PER_HOUR_PER_IP="6")
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=60) as one,
        httpx.AsyncClient(base_url=urls[1], timeout=60) as two,
    ):
        clients = [one, two]
        answers = await asyncio.gather(*(post(clients[n % 2], 100 + n) for n in range(12)))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [201] * 6 + [429] * 6, statuses
    for refused in (r for r in answers if r.status_code == 429):
        assert_rate_limited(refused, window=HOUR, says=UPLOAD_LIMIT)
    # six images, each with its three objects, and nothing from the refused six
    async with running(production_settings) as site:
        await site.assert_holds_exactly(6)


async def test_login_throttling_holds_across_replicas(
    production_settings: Settings, tmp_path: Path, servers: list[RunningServer]
) -> None:
    urls = two_replicas(production_settings, tmp_path, servers)  # default: 5 per account and address
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=60) as one,
        httpx.AsyncClient(base_url=urls[1], timeout=60) as two,
    ):
        await register(one, "victim@example.com")
        statuses = []
        for attempt in range(12):
            response = await log_in([one, two][attempt % 2], "victim@example.com", WRONG)
            statuses.append(response.status_code)
            if response.status_code == 401:
                assert_wrong_password(response)
            else:
                assert_login_blocked(response, window=900)
        assert statuses == [401] * 5 + [429] * 7, statuses
        for replica in (one, two):
            assert_login_blocked(await log_in(replica, "victim@example.com", PASSWORD), window=900)


async def register(http: httpx.AsyncClient, email: str) -> None:
    page = await http.get("/register", headers={"accept": "text/html"})
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    form = {"email": email, "password": PASSWORD, "password_confirm": PASSWORD, "_csrf_token": found.group(1)}
    created = await http.post("/register", data=form, headers={"accept": "text/html"})
    assert created.status_code == 303, created.text
