"""The request guard: what granian does not bound for us, bounded before the app sees a request.

- A request body must keep arriving: a total time that grows with the bytes received (a minimum
  data rate, as Apache's mod_reqtimeout does), capped by an absolute limit. A slow body gets 408.
- A body may be as large as its route allows: the upload limit on routes marked `UPLOAD_ROUTE`,
  a small limit everywhere else, checked on the declared length and counted while streaming.
- One client address may have only so many requests in progress (per worker process).
- Framing and Host that the app could only misread are refused with 400.

It wraps the whole Litestar app (outside routing, so even a 404 is guarded); the client address is
the one `proxies.py` resolves, so the trusted-proxy wrapper sits outside the guard.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from litestar.enums import ScopeType

from chitram.errors import PROBLEM_BASE, PROBLEM_JSON, ChitramError, PayloadTooLargeError, Problem, format_bytes
from chitram.proxies import limit_key

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
    from litestar.types.asgi_types import HTTPResponseBodyEvent, HTTPResponseStartEvent

    from chitram.settings import Settings

# Route handlers carrying this in their `opt` accept bodies up to the upload limit.
UPLOAD_ROUTE = {"upload_body": True}
# Probes answer without reading a body; an orchestrator must reach them while one address floods.
UNCOUNTED_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
BUSY_RETRY_SECONDS = 5

_HOST_NAME = re.compile(r"[A-Za-z0-9._-]*")
_PORT = re.compile(r"[0-9]{0,5}")
_SCHEMES = frozenset({"http", "https", "ws", "wss"})


class RequestTimeoutError(ChitramError):
    status_code = 408
    problem_type = "request-timeout"
    title = "Request timeout"


@dataclass(frozen=True)
class GuardLimits:
    body_timeout_seconds: float
    body_min_bytes_per_second: int
    body_max_seconds: float
    max_body_bytes: int
    max_upload_body_bytes: int
    max_requests_per_client: int

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardLimits:
        requests = settings.requests
        return cls(
            body_timeout_seconds=requests.body_timeout_seconds,
            body_min_bytes_per_second=requests.body_min_bytes_per_second,
            body_max_seconds=requests.body_max_seconds,
            max_body_bytes=requests.max_body_bytes,
            max_upload_body_bytes=settings.request_body_limit,
            max_requests_per_client=requests.max_requests_per_client,
        )


def guard_requests(handler: ASGIApp, settings: Settings) -> ASGIApp:
    """The guard around the app's request handling (after Litestar's own hooks, before routing).
    create_app puts the trusted-proxy wrapper outside it, so it counts the client's address."""
    return RequestGuard(handler, GuardLimits.from_settings(settings))


class RequestGuard:
    """A pure ASGI middleware; one per app, so its per-address counts are per worker process."""

    def __init__(self, app: ASGIApp, limits: GuardLimits) -> None:
        self.app = app
        self.limits = limits
        self.in_progress: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        refusal = malformed(scope)
        if refusal is not None:
            await send_problem(send, 400, "bad-request", "Bad request", refusal)
            return
        if scope["path"] in UNCOUNTED_PATHS or not self.limits.max_requests_per_client:
            await self._serve(scope, receive, send)
            return
        address = limit_key(scope)
        if self.in_progress[address] >= self.limits.max_requests_per_client:
            await send_problem(
                send,
                429,
                "rate-limited",
                "Too many requests",
                f"this address has {self.limits.max_requests_per_client} requests in progress already; "
                "wait for them to finish and try again",
                {"retry-after": str(BUSY_RETRY_SECONDS)},
            )
            return
        self.in_progress[address] += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.in_progress[address] -= 1
            if self.in_progress[address] <= 0:
                del self.in_progress[address]  # a Counter of every address ever seen would only grow

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as pumps:
            clock = BodyClock(scope, receive, self.limits, pumps)
            sender = ReleasableSend(send)
            try:
                await self.app(scope, clock, sender)
            finally:
                # The response is complete: a read still waiting for a body nobody wants can go,
                # and so can the server's request (see `release`).
                pumps.cancel_scope.cancel()
                clock.release()
                sender.release()


class BodyClock:
    """`receive` with a deadline for the body and a size limit for the route.

    The body may take `body_timeout_seconds`, plus one second for every `body_min_bytes_per_second`
    bytes received so far, and never more than `body_max_seconds`: a client must keep sending at the
    minimum rate, while a large upload on a slow (but not stalled) line has all the time it needs.
    Once the body is complete, `receive` is passed through untouched (it then only reports a
    disconnect, which a streaming response waits for as long as it likes).

    The server's `receive` is read by a task of its own and the deadline waits on that task's
    hand-over, never on the server's read itself: granian, its read cancelled, sometimes never sent
    the 408 that followed (7 of 20 connections stayed open in a flood).
    """

    def __init__(self, scope: Scope, receive: Receive, limits: GuardLimits, pumps: TaskGroup) -> None:
        self.scope = scope
        self.receive = receive
        self.limits = limits
        self.pumps = pumps
        self.chunks: MemoryObjectReceiveStream[ReceiveMessage] | None = None
        self.started = time.monotonic()
        self.received = 0
        self.complete = False
        self.refusal: ChitramError | None = None
        self.max_bytes: int | None = None

    async def __call__(self) -> ReceiveMessage:
        if self.complete:
            return await self.receive()
        if self.refusal is not None:
            # Code that swallowed the first error (draining a refused body) must not wait again.
            raise self.refusal
        if self.max_bytes is None:
            self.max_bytes = self._route_limit()
            self._check_declared_length()
        if self.chunks is None:
            self.chunks = self._start_pump()
        with anyio.move_on_after(max(self._deadline() - time.monotonic(), 0)) as timer:
            message = await self.chunks.receive()
        if timer.cancelled_caught:
            raise self._refuse(
                RequestTimeoutError(
                    f"the request body did not arrive in time (at least "
                    f"{format_bytes(self.limits.body_min_bytes_per_second)} per second after the first "
                    f"{self.limits.body_timeout_seconds:g} s); send it again on a faster connection",
                    headers={"connection": "close"},
                )
            )
        if message["type"] != "http.request":
            self.complete = True  # the client is gone
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.max_bytes:
            raise self._refuse(self._too_large())
        if not message.get("more_body", False):
            self.complete = True
        return message

    def release(self) -> None:
        """Let go of the server's `receive`.

        granian keeps a connection open, its answer sent or not, for as long as the request object
        behind `receive` and `send` lives, and reads the body into it. The app leaves reference
        cycles behind (a refused request's traceback holds its Request, which holds `receive`),
        alive until Python's cycle collector runs: without letting go here, a third of the slow
        clients in a flood kept their connection, and their trickle, after the 408."""
        self.receive = _disconnected
        self.refusal = None

    def _start_pump(self) -> MemoryObjectReceiveStream[ReceiveMessage]:
        # No buffer: the pump holds at most one message the app has not taken, so a client still
        # cannot send faster than the app reads.
        sender: MemoryObjectSendStream[ReceiveMessage]
        chunks: MemoryObjectReceiveStream[ReceiveMessage]
        sender, chunks = anyio.create_memory_object_stream(0)

        async def pump() -> None:
            async with sender:
                while True:
                    message = await self.receive()
                    await sender.send(message)
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return

        self.pumps.start_soon(pump)
        return chunks

    def _deadline(self) -> float:
        allowance = self.limits.body_timeout_seconds + self.received / self.limits.body_min_bytes_per_second
        return self.started + min(allowance, self.limits.body_max_seconds)

    def _route_limit(self) -> int:
        # Litestar's router has put the matched handler into this same scope by the time the
        # handler (or a middleware such as CSRF) reads the body.
        handler = self.scope.get("route_handler")
        opt: dict[str, Any] = getattr(handler, "opt", None) or {}
        if opt.get("upload_body"):
            return self.limits.max_upload_body_bytes
        return self.limits.max_body_bytes

    def _check_declared_length(self) -> None:
        declared = header(self.scope, b"content-length") or ""
        if declared.isdigit() and int(declared) > (self.max_bytes or 0):
            raise self._refuse(self._too_large())

    def _too_large(self) -> ChitramError:
        limit = self.max_bytes or 0
        what = "upload" if limit == self.limits.max_upload_body_bytes else "form or JSON body"
        return PayloadTooLargeError(
            f"the request body is larger than the limit of {format_bytes(limit)} for this {what}; send less",
            headers={"connection": "close"},
        )

    def _refuse(self, error: ChitramError) -> ChitramError:
        self.refusal = error
        return error


class ReleasableSend:
    """`send`, until the response is over (see `BodyClock.release`)."""

    def __init__(self, send: Send) -> None:
        self.send: Send | None = send

    async def __call__(self, message: Message) -> None:
        if self.send is not None:
            await self.send(message)

    def release(self) -> None:
        self.send = None


async def _disconnected() -> ReceiveMessage:
    return {"type": "http.disconnect"}


def header(scope: Scope, name: bytes) -> str | None:
    """The one value of a header, or None when absent; several values are joined with a comma."""
    values = [value for key, value in scope["headers"] if key == name]
    return b",".join(values).decode("latin-1").strip() if values else None


def malformed(scope: Scope) -> str | None:
    """Why this request cannot be read unambiguously, or None. Each of these once ended in a 500."""
    path = scope["path"]
    if not path.startswith("/") or any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        return "the address contains control characters; check the link"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the address is not valid UTF-8 once decoded; check the link"
    if not scope.get("query_string", b"").isascii():
        # A request target is ASCII (RFC 9112 §3.2); Litestar decodes the query as UTF-8 and
        # crashed on raw bytes from a server that passes them through.
        return "the query string contains raw non-ASCII bytes; percent-encode them"
    if scope.get("scheme") not in _SCHEMES:
        return "the forwarded scheme must be http or https"
    hosts = [value for key, value in scope["headers"] if key == b"host"]
    if len(hosts) > 1:
        return "the request has more than one Host header"
    if hosts and not valid_host(hosts[0].decode("latin-1")):
        return "the Host header is not a host name or address with an optional port (1-65535)"
    names = {key for key, _ in scope["headers"]}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 §6.3: both at once is how requests are smuggled past a proxy; never guess.
        return "the request has both Content-Length and Transfer-Encoding; send one"
    encoding = header(scope, b"transfer-encoding")
    if encoding is not None and encoding.lower() != "chunked":
        return "the only transfer coding accepted is chunked"
    return None


def valid_host(value: str) -> bool:
    host, port = value, ""
    if value.startswith("["):
        literal, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
        if rest and not rest.startswith(":"):
            return False
        port = rest[1:]
        host = ""
    elif ":" in value:
        host, _, port = value.rpartition(":")
    if not _HOST_NAME.fullmatch(host) or not _PORT.fullmatch(port):
        return False
    return not port or 0 < int(port) <= 65535


async def send_problem(
    send: Send, status: int, problem_type: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Answer outside the app (no route, no template): a problem, and the connection closed, since
    the request's body (if any) is left unread and the next request on it could not be found."""
    body = msgspec.json.encode(Problem(type=PROBLEM_BASE + problem_type, title=title, status=status, detail=detail))
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": raw_headers}
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)
