"""Edge cases of an account's life: deleted accounts stay dead, other auth schemes pass through."""

from __future__ import annotations

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from chitram.settings import ServerSettings
from tests.admin.test_admin_pages import PASSWORD, log_in, make_token, make_user
from tests.images.test_api import png_bytes
from tests.images.test_views import HTML, csrf_token

Client = AsyncTestClient[Litestar]


async def test_a_deleted_accounts_session_never_fits_a_newer_account(app: Litestar, client: Client) -> None:
    """SQLite would reuse the deleted user's id; the old session must not log into the new account."""
    await make_user(app, "bob@example.org")
    await log_in(client, "bob@example.org")
    other_browser = httpx.Cookies(client.cookies)
    token = await csrf_token(client)
    deleted = await client.post(
        "/account/delete", data={"images": "delete", "password": PASSWORD, "_csrf_token": token}, headers=HTML
    )
    assert deleted.status_code == 200
    await make_user(app, "carol@example.org")
    client.cookies = other_browser
    page = await client.get("/account", headers=HTML, follow_redirects=False)
    assert page.status_code == 303, "a session of a deleted account logged into another one"


async def test_other_authorization_schemes_are_left_to_whoever_sent_them(app: Litestar, client: Client) -> None:
    """A proxy's HTTP basic login in front of the site must not turn every page into a 401 loop."""
    basic = {"Authorization": "Basic dXNlcjpwYXNz", **HTML}
    assert (await client.get("/", headers=basic)).status_code == 200
    assert (await client.get("/login", headers=basic)).status_code == 200
    assert (await client.get("/api/v1/images", headers={"Authorization": "Basic dXNlcjpwYXNz"})).status_code == 200
    empty_bearer = await client.get("/api/v1/me", headers={"Authorization": "Bearer "})
    assert empty_bearer.status_code == 401
    assert empty_bearer.headers["www-authenticate"].startswith("Bearer")


async def test_bulk_delete_skips_what_is_gone_and_deletes_the_rest(app: Litestar, client: Client) -> None:
    owner_id = await make_user(app, "owner@example.org")
    bearer = {"Authorization": f"Bearer {await make_token(app, owner_id)}"}
    ids = []
    for _ in range(3):
        response = await client.post(
            "/api/v1/images", files={"file": ("a.png", png_bytes(), "image/png")}, headers=bearer
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])
    assert (await client.delete(f"/api/v1/images/{ids[0]}", headers=bearer)).status_code == 204
    await log_in(client, "owner@example.org")
    token = await csrf_token(client)
    response = await client.post(
        "/me/images/delete", data={"ids": ids, "_csrf_token": token}, headers=HTML, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/me/images?deleted=2&skipped=1"
    for image_id in ids:
        assert (await client.get(f"/api/v1/images/{image_id}", headers=bearer)).status_code == 404


@pytest.mark.parametrize("value", ["caddy", "10.0.0.0/33", "*"])
def test_a_wrong_trusted_proxy_setting_stops_the_start(value: str) -> None:
    with pytest.raises(ValidationError, match="CHITRAM_TRUSTED_PROXIES"):
        ServerSettings(trusted_proxies=value)


async def test_a_stolen_session_cannot_guess_the_password_on_the_account_page(app: Litestar, client: Client) -> None:
    """Re-typing the password (to change it or delete the account) is throttled like logging in."""
    await make_user(app, "victim@example.org")
    await log_in(client, "victim@example.org")
    token = await csrf_token(client)
    guesses = {"current_password": "guess", "new_password": "x" * 12, "new_password_confirm": "x" * 12}
    for _ in range(5):  # CHITRAM_LOGIN_FAILURES_PER_ACCOUNT_AND_IP
        wrong = await client.post("/account/password", data={**guesses, "_csrf_token": token}, headers=HTML)
        assert wrong.status_code == 403
    blocked = await client.post(
        "/account/delete", data={"images": "keep", "password": PASSWORD, "_csrf_token": token}, headers=HTML
    )
    assert blocked.status_code == 429, "the right password was checked while guessing was blocked"
    assert int(blocked.headers["retry-after"]) > 0
    assert (await client.get("/account", headers=HTML)).status_code == 200  # nothing was deleted
