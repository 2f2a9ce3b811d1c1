"""The client address: taken from X-Forwarded-For only when a trusted proxy sent the request."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient
from litestar.types import Scope

from chitram.proxies import client_ip, limit_key, trusted_proxy_middleware

PROXY = "10.0.0.5"


@get("/whoami")
async def whoami(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {"ip": client_ip(request), "scheme": request.url.scheme}


def make_app(trusted_proxies: str) -> Litestar:
    return Litestar(route_handlers=[whoami], middleware=[trusted_proxy_middleware(trusted_proxies)])


async def whoami_from(peer: str, trusted_proxies: str, headers: dict[str, str]) -> dict[str, str]:
    """Ask as a client connected from `peer` (Litestar's test client always says "testclient")."""
    # httpx types ASGI scopes as plain mappings, Litestar as TypedDicts; they are the same at runtime.
    transport = httpx.ASGITransport(app=make_app(trusted_proxies), client=(peer, 1234))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
        response = await client.get("/whoami", headers=headers)
    assert response.status_code == 200
    result: dict[str, str] = response.json()
    return result


FORWARDED = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}


async def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert await whoami_from("192.0.2.1", PROXY, FORWARDED) == {"ip": "192.0.2.1", "scheme": "http"}


@pytest.mark.parametrize("trusted", [PROXY, "10.0.0.0/8", " 192.0.2.9 ,10.0.0.0/24, "])
async def test_a_trusted_proxy_names_the_client(trusted: str) -> None:
    assert await whoami_from(PROXY, trusted, FORWARDED) == {"ip": "198.51.100.7", "scheme": "https"}


async def test_the_rightmost_untrusted_address_wins_over_what_the_client_sent() -> None:
    # The client sent "1.2.3.4" itself; our proxy appended the address it really came from.
    headers = {"X-Forwarded-For": "1.2.3.4, 198.51.100.7"}
    assert (await whoami_from(PROXY, PROXY, headers))["ip"] == "198.51.100.7"


async def test_a_chain_of_trusted_proxies_is_skipped() -> None:
    headers = {"X-Forwarded-For": "198.51.100.7, 10.0.0.6"}
    assert (await whoami_from(PROXY, "10.0.0.5, 10.0.0.6", headers))["ip"] == "198.51.100.7"


async def test_ipv6_proxies_and_clients() -> None:
    headers = {"X-Forwarded-For": "2001:db8::7"}
    assert (await whoami_from("fd00::5", "fd00::/64", headers))["ip"] == "2001:db8::7"


async def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert await whoami_from(PROXY, "", FORWARDED) == {"ip": PROXY, "scheme": "http"}
    assert await whoami_from(PROXY, " , ", FORWARDED) == {"ip": PROXY, "scheme": "http"}


async def test_a_peer_that_is_not_an_address_is_not_trusted() -> None:
    async with AsyncTestClient(app=make_app("10.0.0.0/8")) as client:
        response = await client.get("/whoami", headers=FORWARDED)
    assert response.json() == {"ip": "testclient", "scheme": "http"}


@pytest.mark.parametrize("entry", ["caddy", "10.0.0.300", "10.0.0.1/8", "10.0.0.0/33"])
def test_an_entry_that_is_not_an_address_or_network_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="CHITRAM_TRUSTED_PROXIES") as refused:
        trusted_proxy_middleware(f"127.0.0.1, {entry}")
    assert repr(entry) in str(refused.value)


def test_trusting_everyone_is_refused() -> None:
    with pytest.raises(ValueError, match="CHITRAM_TRUSTED_PROXIES must not be '\\*'"):
        trusted_proxy_middleware("*")


def test_client_ip_reads_the_scope() -> None:
    assert client_ip(cast("Scope", {"client": ("203.0.113.1", 5000)})) == "203.0.113.1"
    assert client_ip(cast("Scope", {"client": None})) == "unknown"  # the server may not know the peer


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
    ],
)
def test_limits_count_ipv6_clients_per_64(peer: str, key: str) -> None:
    """One IPv6 subscriber holds a /64: a fresh address per request must not mean fresh limits."""
    assert limit_key({"client": (peer, 1234)}) == key  # type: ignore[arg-type]
