"""The request guard and the error handler against the app itself: odd input never ends in a 5xx,
bodies are limited per route, slow bodies are cut, one address cannot hold every slot."""

from __future__ import annotations

import logging
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from chitram.app import create_app
from chitram.errors import ChitramError, handle_exception
from chitram.settings import RequestSettings, Settings
from tests.conftest import base_settings

KIB = 1024


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/problem+json"), self.headers
        return msgspec.json.decode(self.body)  # type: ignore[no-any-return]


def form_headers(length: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of a page form's POST declaring `length` bytes."""
    return [(b"host", b"x"), (b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", length)]


async def call(
    app: Litestar,
    *,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    body: Callable[[], Awaitable[dict[str, Any]]] | list[bytes] | None = None,
    client: tuple[str, int] = ("192.0.2.7", 40000),
) -> Answer:
    """One request straight into the ASGI app, as a server would pass it: no HTTP client between
    that would clean the path, the Host or the headers up first."""
    chunks = list(body) if isinstance(body, list) else [b""]

    async def from_list() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await anyio.sleep_forever()  # a real server's receive waits for the disconnect
        raise AssertionError("unreachable")

    answer = Answer()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver.local"), *(headers or [])] if headers is None else headers,
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    receive = body if callable(body) else from_list
    with anyio.fail_after(30):
        await app(scope, receive, send)  # type: ignore[arg-type]
    return answer


@pytest.fixture
async def embedded_app(embedded_settings: Settings) -> AsyncIterator[Litestar]:
    app = create_app(embedded_settings)
    async with AsyncTestClient(app):  # runs the lifespan
        yield app


def limited(tmp_path: Path, sqlite_template: Path, **limits: Any) -> Settings:
    import shutil

    shutil.copy(sqlite_template, tmp_path / "chitram.db")
    return base_settings(tmp_path, requests=RequestSettings(**limits))


# -- the inputs of the report, each once a 500 -----------------------------------------


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/static/x\x00", b"testserver.local"),
        ("/", b"a:b"),
        ("/", b"127.0.0.1:99999999"),
        ("/", b"x:1/x"),
        ("/api/v1/images", b"x:1/x"),
        ("/no-such-page", b"[::1"),
    ],
)
async def test_bad_paths_and_hosts_get_a_400_problem(embedded_app: Litestar, path: str, host: bytes) -> None:
    answer = await call(embedded_app, path=path, headers=[(b"host", host), (b"accept", b"text/html")])
    assert answer.status == 400
    assert answer.problem()["status"] == 400


async def test_raw_bytes_in_the_query_get_a_400_problem(embedded_app: Litestar) -> None:
    # Found by the fuzz test below: Litestar decodes the query as UTF-8 and crashed.
    answer = await call(embedded_app, path="/api/v1/images", query=b"cursor=\x80")
    assert answer.status == 400
    assert "percent-encode" in answer.problem()["detail"]


async def test_good_hosts_pass(embedded_app: Litestar) -> None:
    for host in (b"localhost", b"img.example.com:8443", b"[::1]:8000", b"127.0.0.1", b"app_1:8000"):
        answer = await call(embedded_app, path="/health/live", headers=[(b"host", host)])
        assert answer.status == 200, (host, answer.body)


async def test_a_multipart_boundary_over_70_characters_is_a_400(embedded_app: Litestar) -> None:
    boundary = b"b" * 300
    answer = await call(
        embedded_app,
        method="POST",
        path="/api/v1/images",
        headers=[(b"host", b"x"), (b"content-type", b"multipart/form-data; boundary=" + boundary)],
        body=[b"--" + boundary + b"\r\n"],
    )
    assert answer.status == 400
    assert "boundary" in answer.problem()["detail"]


@pytest.mark.parametrize(
    "framing",
    [
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"gzip, chunked")],
        [(b"host", b"second.example")],
    ],
)
async def test_ambiguous_framing_is_a_400(embedded_app: Litestar, framing: list[tuple[bytes, bytes]]) -> None:
    answer = await call(embedded_app, method="POST", path="/logout", headers=[(b"host", b"x"), *framing])
    assert answer.status == 400
    assert answer.headers["connection"] == "close"
    assert answer.problem()["type"] == "/problems/bad-request"


def test_the_error_handler_answers_even_when_describing_the_error_fails(embedded_settings: Settings) -> None:
    class Unprintable(ChitramError):
        status_code = 409

        @property
        def title(self) -> str:  # type: ignore[override]
            raise RuntimeError("a bug while describing the error")

    app = create_app(embedded_settings)
    request: Any = type("FakeRequest", (), {"scope": {"path": "/x"}, "headers": {}, "app": app})()
    response = handle_exception(request, Unprintable("conflict"))
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"


# -- body size per route ---------------------------------------------------------------


async def test_page_forms_are_refused_above_the_small_limit_by_declared_length(embedded_app: Litestar) -> None:
    answer = await call(
        embedded_app,
        method="POST",
        path="/login",
        headers=form_headers(str(25 * 1024 * KIB).encode()),
        body=[b"email=a"],
    )
    assert answer.status == 413
    assert "64 KiB" in answer.problem()["detail"]


async def test_upload_routes_keep_the_upload_limit(embedded_app: Litestar) -> None:
    """The page upload refuses this post for its missing CSRF cookie, after reading it whole: a
    100 KiB body is over the form limit but within the upload limit."""
    answer = await call(
        embedded_app,
        method="POST",
        path="/upload",
        headers=[
            (b"host", b"x"),
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"content-length", str(100 * KIB).encode()),
        ],
        body=[b"a" * (100 * KIB)],
    )
    assert answer.status == 403, answer.body


# -- time ------------------------------------------------------------------------------


def trickle(chunk: bytes, every: float, total: int) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        await anyio.sleep(every)
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < total}

    return receive


async def test_a_body_slower_than_the_minimum_rate_is_cut_with_408(tmp_path: Path, sqlite_template: Path) -> None:
    settings = limited(tmp_path, sqlite_template, body_timeout_seconds=0.5, body_min_bytes_per_second=1000)
    app = create_app(settings)
    async with AsyncTestClient(app):
        started = time.monotonic()
        answer = await call(
            app,
            method="POST",
            path="/login",
            headers=form_headers(b"4000"),
            body=trickle(b"a" * 10, every=0.05, total=4000),  # 200 bytes a second
        )
        elapsed = time.monotonic() - started
    assert answer.status == 408
    assert answer.headers["connection"] == "close"
    assert "did not arrive in time" in answer.problem()["detail"]
    # 0.5 s, plus 1 s for every 1,000 bytes: at 200 bytes a second the deadline comes at 0.625 s.
    assert 0.55 < elapsed < 3


async def test_a_body_at_the_minimum_rate_may_take_longer_than_the_base_time(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings = limited(tmp_path, sqlite_template, body_timeout_seconds=0.3, body_min_bytes_per_second=1000)
    app = create_app(settings)
    async with AsyncTestClient(app):
        started = time.monotonic()
        answer = await call(
            app,
            method="POST",
            path="/login",
            headers=form_headers(b"2000"),
            body=trickle(b"a" * 100, every=0.05, total=2000),  # 2,000 bytes a second, for 1 s
        )
        elapsed = time.monotonic() - started
    assert elapsed > 0.9  # three times the base time: the rate allowance carried it
    assert answer.status == 403  # it arrived, and was judged: no CSRF token


async def test_one_address_holds_only_its_share_of_requests(tmp_path: Path, sqlite_template: Path) -> None:
    settings = limited(tmp_path, sqlite_template, max_requests_per_client=2, body_timeout_seconds=30)
    app = create_app(settings)
    stalled = anyio.Event()

    async def never() -> dict[str, Any]:
        await stalled.wait()
        return {"type": "http.disconnect"}

    form = form_headers(b"9")
    async with AsyncTestClient(app), anyio.create_task_group() as holders:
        for _ in range(2):
            holders.start_soon(lambda: call(app, method="POST", path="/login", headers=form, body=never))
        await anyio.sleep(0.2)
        refused = await call(app, method="POST", path="/login", headers=form, body=[b"email=a"])
        other_address = await call(app, path="/health/ready", client=("198.51.100.1", 1))
        probe = await call(app, path="/health/live")
        stalled.set()
    assert refused.status == 429
    assert refused.headers["retry-after"]
    assert "2 requests in progress" in refused.problem()["detail"]
    assert other_address.status == 200
    assert probe.status == 200  # probes are never counted


# -- fuzzing ---------------------------------------------------------------------------

PREFIXES = ["/", "/static/", "/i/", "/api/v1/images/", "/api/v1/images", "/login", "/upload", "/health/", "/u/"]
HEADER_NAMES = [
    b"host",
    b"content-type",
    b"content-length",
    b"transfer-encoding",
    b"cookie",
    b"accept",
    b"hx-request",
    b"authorization",
    b"x-csrftoken",
    b"range",
    b"if-none-match",
    b"if-modified-since",
    b"x-delete-token",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"origin",
    b"accept-encoding",
]
# What a server may pass on: any byte but CR, LF and NUL in a header value.
header_value = st.binary(max_size=80).map(lambda raw: bytes(b for b in raw if b not in b"\r\n\x00"))
hosts = st.one_of(
    header_value,
    st.from_regex(rb"\A[a-z0-9.\[\]:_/-]{0,30}\Z"),
    st.builds(lambda port: b"127.0.0.1:" + str(port).encode(), st.integers(-10, 10**10)),
)
paths = st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(PREFIXES), st.text(max_size=40))


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A multipart body built from plausible pieces, then cut or mangled somewhere."""
    boundary = draw(st.one_of(st.text(string.ascii_letters + string.digits + "'()+_,-./:=? ", max_size=300)))
    boundary_bytes = boundary.encode()
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"file", b"title", b"visibility", b"_csrf_token", b""]))
        disposition = b'form-data; name="' + name + b'"' + draw(st.sampled_from([b"", b'; filename="a.png"', b";;"]))
        extra = draw(st.sampled_from([b"", b"Content-Type: image/png\r\n", b"X: " + draw(header_value) + b"\r\n"]))
        parts.append(
            b"--"
            + boundary_bytes
            + b"\r\nContent-Disposition: "
            + disposition
            + b"\r\n"
            + extra
            + b"\r\n"
            + draw(st.binary(max_size=200))
            + b"\r\n"
        )
    body = b"".join(parts) + draw(st.sampled_from([b"--" + boundary_bytes + b"--\r\n", b"", b"--"]))
    cut = draw(st.integers(0, len(body)))
    body = body[:cut] if draw(st.booleans()) else body
    content_type = draw(
        st.sampled_from(
            [
                b"multipart/form-data; boundary=" + boundary_bytes,
                b'multipart/form-data; boundary="' + boundary_bytes + b'"',
                b"multipart/form-data",
                b"multipart/form-data; boundary=",
                b"application/x-www-form-urlencoded",
                b"application/json",
            ]
        )
    )
    return content_type, body


@dataclass
class Fuzzed:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: list[bytes]


requests = st.builds(
    lambda method, path, query, host, headers, form, split: Fuzzed(
        method=method,
        path=path,
        query=query,
        headers=[(b"host", host), *headers, (b"content-type", form[0])],
        body=[form[1][:split], form[1][split:]],
    ),
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW"]),
    paths,
    st.binary(max_size=40),
    hosts,
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=4),
    multipart(),
    st.integers(0, 400),
)


def test_fuzzed_requests_never_get_a_5xx(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Paths, hosts, headers and multipart framing from hypothesis, on both stacks: every answer is
    below 500, and nothing is logged as an error (a traceback means we crashed and covered it up)."""
    caplog.set_level(logging.ERROR)
    app = create_app(settings)
    with TestClient(app) as client:

        @given(requests)
        @fuzz_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        def never_5xx(fuzzed: Fuzzed) -> None:
            caplog.clear()
            answer = client.blocking_portal.call(
                lambda: call(
                    app,
                    method=fuzzed.method,
                    path=fuzzed.path,
                    query=fuzzed.query,
                    headers=fuzzed.headers,
                    body=list(fuzzed.body),
                )
            )
            assert 0 < answer.status < 500, (answer.status, answer.body[:300])
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

        never_5xx()
