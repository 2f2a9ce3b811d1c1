"""Links and the Host header: with PUBLIC_URL they never follow it; without it (development)
every response whose links do says so to caches (`Vary: Host`) and is kept by none."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar.testing import AsyncTestClient

from chitram.settings import Settings
from tests.accounts.conftest import (
    HTML,
    Client,
    create_test_app,
    create_user,
    csrf_of,
    log_in,
    new_browser,
    upload_as,
)
from tests.images.test_views import meta

EVIL = {"Host": "evil.example"}
PUBLIC_URL = "https://img.example.com"


@pytest.fixture
async def public_client(settings: Settings) -> AsyncIterator[Client]:
    server = settings.server.model_copy(update={"public_url": PUBLIC_URL + "/"})
    app = create_test_app(dataclasses.replace(settings, server=server))
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        yield client


async def host_derived_responses(client: Client) -> dict[str, httpx.Response]:
    """Every kind of response that carries links, each asked for under another host."""
    created = await upload_as(client, None, visibility="public")
    assert created.status_code == 201, created.text
    image_id = created.json()["id"]
    await create_user(client, "me@example.com")
    browser = new_browser(client)
    assert (await log_in(browser, "me@example.com")).status_code == 303
    csrf = await csrf_of(browser, "/account")
    return {
        "upload": await upload_as(client, None, visibility="public", fields={"title": "x"}),
        "api image": await client.get(f"/api/v1/images/{image_id}", headers=EVIL),
        "api list": await client.get("/api/v1/images", headers=EVIL),
        "image page": await client.get(f"/i/{image_id}", headers={**HTML, **EVIL}),
        "gallery": await client.get("/gallery", headers={**HTML, **EVIL}),
        "my images": await browser.get("/me/images", headers={**HTML, **EVIL}),
        "sharex": await browser.post("/account/sharex", data={"_csrf_token": csrf}, headers={**HTML, **EVIL}),
    }


def vary(response: httpx.Response) -> set[str]:
    return {part.strip().lower() for part in response.headers.get("vary", "").split(",") if part.strip()}


async def test_without_public_url_links_follow_host_and_no_cache_keeps_them(client: Client) -> None:
    responses = await host_derived_responses(client)
    for name, response in responses.items():
        assert response.status_code in (200, 201), (name, response.text)
        assert "host" in vary(response), name
        assert response.headers["cache-control"] == "no-store", name
    assert responses["api image"].json()["url"].startswith("http://evil.example/i/")
    assert (
        meta(responses["image page"].text, "og:url") == "http://evil.example/i/" + responses["api image"].json()["id"]
    )
    # The gallery's fragment and page differ by HX-Request too: both reasons are kept.
    assert {"hx-request", "host"} <= vary(responses["gallery"])
    # ShareX in development: the address the browser reached, as sent (never cached).
    assert json.loads(responses["sharex"].content)["RequestURL"] == "http://evil.example/api/v1/images"


async def test_with_public_url_host_changes_nothing(public_client: Client) -> None:
    responses = await host_derived_responses(public_client)
    for name, response in responses.items():
        assert response.status_code in (200, 201), (name, response.text)
        assert "host" not in vary(response), name
        assert "evil.example" not in response.text, name
    assert responses["api image"].json()["url"].startswith(PUBLIC_URL + "/i/")
    assert responses["api list"].json()["items"][0]["page_url"].startswith(PUBLIC_URL + "/i/")
    assert json.loads(responses["sharex"].content)["RequestURL"] == PUBLIC_URL + "/api/v1/images"
    # Pages keep their usual policy: personal, revalidated (not no-store).
    assert responses["gallery"].headers["cache-control"] == "no-cache, private"
    assert responses["image page"].headers["cache-control"] == "no-cache, private"


async def test_api_json_is_never_cached(public_client: Client) -> None:
    created = await upload_as(public_client, None, visibility="public")
    assert created.headers["cache-control"] == "no-store"  # it carries the delete token
    for path in ("/api/v1/images", f"/api/v1/images/{created.json()['id']}"):
        response = await public_client.get(path)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store", path
