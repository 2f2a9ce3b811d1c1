"""The client's address behind a reverse proxy (e.g. Caddy), which rate limits are keyed on.

X-Forwarded-For is believed only from the proxies in CHITRAM_TRUSTED_PROXIES: any client can send
the header, so believing it from everyone would let each request pick its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from granian.utils.proxies import wrap_asgi_with_proxy_headers
from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Scope

SETTING = "CHITRAM_TRUSTED_PROXIES"
UNKNOWN_CLIENT = "unknown"


def trusted_proxy_middleware(trusted_proxies: str) -> Callable[[ASGIApp], ASGIApp]:
    """A Litestar middleware that sets the client address (and scheme) from X-Forwarded-For (and
    X-Forwarded-Proto) when the peer is one of `trusted_proxies`; with none, the headers are ignored.

    Raises ValueError naming CHITRAM_TRUSTED_PROXIES for an entry that is not an address or network.
    """
    trusted = parse_trusted_proxies(trusted_proxies)

    def middleware(app: ASGIApp) -> ASGIApp:
        if not trusted:
            return app
        # granian's implementation: it takes the rightmost address not in `trusted`, so a client
        # cannot hide behind addresses it puts in front of the ones our proxies add.
        wrapped: ASGIApp = wrap_asgi_with_proxy_headers(app, trusted_hosts=trusted)
        return wrapped

    return middleware


def parse_trusted_proxies(value: str) -> list[str]:
    """The comma-separated addresses and networks, normalised. granian would treat an entry that
    is neither as a literal host name and silently never match it, so a typo is refused here."""
    entries = [entry.strip() for entry in value.split(",")]
    return [_parse_entry(entry) for entry in entries if entry]


def _parse_entry(entry: str) -> str:
    if entry == "*":
        raise ValueError(
            f"{SETTING} must not be '*': trusting every peer lets any client fake its address "
            "(and so dodge rate limits); list the addresses or networks of your reverse proxies"
        )
    try:
        if "/" in entry:
            return str(ipaddress.ip_network(entry))
        return str(ipaddress.ip_address(entry))
    except ValueError as exc:
        raise ValueError(
            f"{SETTING} contains {entry!r}, which is not a valid IP address or network ({exc}); "
            "use e.g. 10.0.0.2 or 172.16.0.0/12, separated by commas"
        ) from exc


def client_ip(source: Scope | ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address (after the proxy middleware), or "unknown" when the server gave none."""
    scope = source.scope if isinstance(source, ASGIConnection) else source
    client = scope.get("client")
    return client[0] if client else UNKNOWN_CLIENT


IPV6_SUBSCRIBER_PREFIX = 64


def limit_key(source: Scope | ASGIConnection[Any, Any, Any, Any]) -> str:
    """The address that per-address limits count against.

    An IPv6 subscriber usually holds a whole /64 and can pick a fresh address from it for every
    request, so IPv6 addresses count per /64; IPv4 addresses (also IPv4-mapped ones) as they are.
    """
    address = client_ip(source)
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_SUBSCRIBER_PREFIX}", strict=False))
    return str(parsed)
