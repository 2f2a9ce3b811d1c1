"""One log line per request, request ids, and no secret in any log line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from chitram.images.services import ImageService
from chitram.logs import log_handler
from chitram.settings import Settings
from tests.accounts.conftest import (
    HTML,
    PASSWORD,
    bearer,
    create_test_app,
    csrf_of,
    log_in,
    new_browser,
    register,
    session_of,
    upload_as,
)
from tests.conftest import settings_env
from tests.images.test_api import Client
from tests.support.server import start_server, stop

NEW_TOKEN = re.compile(r'id="new-token-value"[^>]*value="([^"]+)"')


@dataclass
class Captured:
    json_stream: io.StringIO
    text_stream: io.StringIO

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.json_stream.getvalue().splitlines() if line]

    def access(self) -> list[dict[str, Any]]:
        return [line for line in self.json_lines() if line["logger"] == "chitram.access"]

    def everything(self) -> str:
        return self.json_stream.getvalue() + self.text_stream.getvalue()


@pytest.fixture
def logs() -> Iterator[Captured]:
    """Every record at INFO and above, in both of chitram's formats, as production would write them."""
    captured = Captured(io.StringIO(), io.StringIO())
    handlers = [log_handler(captured.json_stream, json_lines=True), log_handler(captured.text_stream, json_lines=False)]
    for handler in handlers:
        # The test client's own lines ("HTTP Request: GET <url>"); the app quiets httpx (chitram.logs).
        handler.addFilter(lambda record: record.name != "httpx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    yield captured
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_test_app(settings), base_url="http://testserver.local") as test_client:
        yield test_client


# -- request ids ---------------------------------------------------------------------------


async def test_a_request_id_is_made_returned_and_logged(client: Client, logs: Captured) -> None:
    response = await client.get("/health/live")
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert (await client.get("/health/live")).headers["x-request-id"] != request_id
    (line,) = [line for line in logs.access() if line["request_id"] == request_id]
    assert line["method"] == "GET" and line["route"] == "/health/live" and line["status"] == 200
    assert line["bytes"] == len(response.content)
    assert line["duration_ms"] >= 0 and line["client"] == "testclient"
    assert "user_id" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


@pytest.mark.parametrize("incoming", ["caddy-3f2a.b_c", "x" * 64])
async def test_a_sane_incoming_request_id_is_adopted(client: Client, logs: Captured, incoming: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    assert [line["request_id"] for line in logs.access()] == [incoming]


@pytest.mark.parametrize("incoming", ["x" * 65, "has space", 'quote"d', "semi;colon", "é"])
async def test_an_odd_incoming_request_id_is_replaced(client: Client, incoming: str) -> None:
    response = await client.get("/health/live", headers={b"X-Request-ID": incoming.encode()})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_a_500_names_its_request_id_in_the_body_and_every_log_line(
    client: Client, logs: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ImageService, "get_image_for", broken)
    response = await client.get("/api/v1/images/abcdefghijkl", headers={"X-Request-ID": "report-me-1"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "report-me-1" == response.headers["x-request-id"]
    lines = [line for line in logs.json_lines() if line.get("request_id") == "report-me-1"]
    assert {line["logger"] for line in lines} >= {"chitram.errors", "chitram.access"}
    (error,) = [line for line in lines if line["logger"] == "chitram.errors"]
    assert "RuntimeError: a bug" in error["exception"]
    page = await client.get("/i/abcdefghijkl", headers={"X-Request-ID": "report-me-2", **HTML})
    assert page.status_code == 500
    assert '<code class="request-id">report-me-2</code>' in page.text
    # A client error says nothing about ids: they are for tracing our failures.
    assert "request_id" not in (await client.get("/api/v1/nothing-here")).json()


async def test_a_dependency_outage_503_names_its_request_id(embedded_settings: Settings) -> None:
    async with AsyncTestClient(app=create_test_app(embedded_settings)) as client:
        (embedded_settings.data_dir / "chitram.db").unlink()
        (embedded_settings.data_dir / "chitram.db").mkdir()  # the database cannot be opened any more
        await client.app.state.database.engine.dispose()
        response = await client.get("/api/v1/images/abcdefghijkl")
    assert response.status_code == 503, response.text
    assert response.json()["request_id"] == response.headers["x-request-id"]


# -- no secrets ----------------------------------------------------------------------------


async def test_a_full_user_flow_leaves_no_secret_in_the_logs(client: Client, logs: Captured) -> None:
    secrets: dict[str, str] = {"password": PASSWORD}
    email = "logs@example.com"
    assert (await register(client, email)).status_code == 303
    assert (
        await client.post("/logout", data={"_csrf_token": await csrf_of(client, "/account")}, headers=HTML)
    ).status_code in (200, 303)
    assert (await log_in(client, email, "a wrong password, also secret")).status_code != 303
    secrets["wrong password"] = "a wrong password, also secret"
    assert (await log_in(client, email)).status_code == 303
    session = session_of(client)
    assert session
    secrets["session cookie"] = session
    secrets["csrf cookie"] = client.cookies["chitram_csrf"]

    csrf = await csrf_of(client, "/account")
    created = await client.post("/account/tokens", data={"name": "ci", "_csrf_token": csrf}, headers=HTML)
    assert created.status_code == 201
    found = NEW_TOKEN.search(created.text)
    assert found
    token = secrets["api token"] = found.group(1)

    api = new_browser(client)  # no cookies: the API believes tokens only
    private = (await upload_as(api, token, visibility="private")).json()
    assert (await api.get("/api/v1/me", headers=bearer(token))).status_code == 200
    link = await api.post(f"/api/v1/images/{private['id']}/signed-url", json={}, headers=bearer(token))
    assert link.status_code == 201, link.text
    url = httpx.URL(link.json()["url"])
    secrets["signature"] = url.params["signature"]
    assert (await api.get(url.raw_path.decode())).status_code == 200

    anonymous = (await upload_as(api, None)).json()
    secrets["delete token"] = anonymous["delete_token"]
    deleted = await api.delete(
        f"/api/v1/images/{anonymous['id']}", headers={"X-Delete-Token": anonymous["delete_token"]}
    )
    assert deleted.status_code == 204
    assert (await api.get("/api/v1/me", headers=bearer("not-a-real-token-but-still-secret"))).status_code == 401
    secrets["rejected token"] = "not-a-real-token-but-still-secret"

    written = logs.everything()
    assert len(logs.access()) >= 12
    for name, secret in secrets.items():
        assert secret not in written, f"the {name} is in the logs"
    for header in ("Bearer", "X-Delete-Token", "signature=", "Cookie"):
        assert header.lower() not in written.lower(), header
    # Who did it is there, as a number: the token's requests and the logged-in pages.
    user_ids = {line.get("user_id") for line in logs.access()}
    assert len(user_ids - {None}) == 1
    signed = [line for line in logs.access() if line["path"] == url.path]
    assert signed and signed[0]["route"] == "/i/{name}"


# -- a real server -------------------------------------------------------------------------


def test_a_production_server_writes_json_lines(embedded_settings: Settings, tmp_path: Path) -> None:
    env = settings_env(embedded_settings) | {
        "CHITRAM_ENV": "production",
        "CHITRAM_TRUSTED_PROXIES": "127.0.0.1",
        "CHITRAM_PUBLIC_URL": "https://img.example.com",
    }
    server = start_server(env, tmp_path)
    try:
        response = httpx.get(
            server.url + "/api/v1/images/abcdefghijkl?signature=sekrit",
            headers={"X-Request-ID": "from-caddy-42", "X-Forwarded-For": "203.0.113.9"},
            timeout=10,
        )
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "from-caddy-42"
    finally:
        stop(server)
    output = server.output()
    lines = [json.loads(line) for line in output if line.startswith("{")]
    assert len(lines) >= len(output) - 1, "\n".join(output)  # everything after the first line is JSON
    (line,) = [line for line in lines if line.get("request_id") == "from-caddy-42"]
    assert line["logger"] == "chitram.access"
    assert line["route"] == "/api/v1/images/{image_id}"
    assert line["path"] == "/api/v1/images/abcdefghijkl"
    assert line["client"] == "203.0.113.9"  # as the app sees it behind the trusted proxy
    assert "sekrit" not in "\n".join(output)
