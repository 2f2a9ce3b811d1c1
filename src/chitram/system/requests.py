"""Around every HTTP request: its id, its metrics and its one log line.

It wraps Litestar's whole handler (see create_app), outside routing, so requests for paths no
route matches (404, 405) are counted and logged too.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from chitram import metrics
from chitram.logs import FIELDS, REQUEST_ID
from chitram.proxies import client_ip

access_log = logging.getLogger("chitram.access")

REQUEST_ID_HEADER = b"x-request-id"
# An id from Caddy or a client is adopted only if it cannot smuggle anything into a log line
# or a header: short, and letters, digits, '.', '_' and '-' only.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

UserIdOf = Callable[[Scope], "int | None"]


def observe_requests(app: ASGIApp, *, user_id_of: UserIdOf) -> ASGIApp:
    """Wrap ``app``: ``user_id_of`` tells which account a finished request acted for, if the
    request identified one (it is not looked up just for the log)."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = _adopted_request_id(scope) or os.urandom(16).hex()
        reset_token = REQUEST_ID.set(request_id)
        response = _ResponseSeen()
        path = scope["path"]  # before routing, which shortens it for mounted apps (static files)
        started = time.perf_counter()
        try:
            await app(scope, receive, response.wrap(send, request_id.encode()))
        finally:
            seconds = time.perf_counter() - started
            try:
                _record(scope, path, response, seconds, user_id_of)
            except Exception:  # noqa: BLE001 - recording must never turn a served request into an error
                access_log.warning("could not record a request", exc_info=True)
            REQUEST_ID.reset(reset_token)

    return observed


def _adopted_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode() if _SANE_REQUEST_ID.fullmatch(value) else None
    return None


class _ResponseSeen:
    """What was sent back: the status and how many body bytes."""

    __slots__ = ("content_length", "size", "status")

    def __init__(self) -> None:
        self.status = 500  # nothing sent: the server answers 500 for an app that raised
        self.size = 0
        self.content_length = 0

    def wrap(self, send: Send, request_id: bytes) -> Send:
        async def observed_send(message: Message) -> None:
            event = cast("dict[str, Any]", message)  # Litestar's TypedDicts know no pathsend
            kind = event["type"]
            if kind == "http.response.start":
                self.status = event["status"]
                headers = [*event.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
                event["headers"] = headers
                self.content_length = _content_length(headers)
            elif kind == "http.response.body":
                self.size += len(event.get("body", b""))
            elif kind == "http.response.pathsend":
                self.size += self.content_length  # the server sends the file itself
            await send(message)

        return observed_send


def _content_length(headers: list[Any]) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _record(scope: Scope, path: str, response: _ResponseSeen, seconds: float, user_id_of: UserIdOf) -> None:
    method = cast("HTTPScope", scope)["method"]
    # The template, never the path: one series per route, however many images there are.
    route = scope.get("path_template") or metrics.UNMATCHED_ROUTE
    metrics.observe_request(method, route, response.status, seconds)
    duration_ms = round(seconds * 1000, 2)
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        # The path without the query: signed links carry their signature there.
        "path": path,
        "status": response.status,
        "duration_ms": duration_ms,
        "bytes": response.size,
        "client": client_ip(scope),
    }
    user_id = user_id_of(scope)
    if user_id is not None:
        fields["user_id"] = user_id
    access_log.info(
        "%s %s → %s in %.1f ms, %d bytes (route %s, client %s, user %s)",
        method,
        path,
        response.status,
        duration_ms,
        response.size,
        route,
        fields["client"],
        "-" if user_id is None else user_id,
        extra={FIELDS: fields},
    )
