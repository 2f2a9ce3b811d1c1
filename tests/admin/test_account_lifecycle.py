"""Edge cases of an account's life: deleted accounts stay dead, other auth schemes pass through."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from chitram.accounts.services import AccountService
from chitram.app import create_app
from chitram.errors import ForbiddenError
from chitram.images.models import Visibility
from chitram.images.services import ImageService
from chitram.settings import LimitSettings, ServerSettings, Settings
from tests.admin.test_admin_pages import PASSWORD, log_in, make_token, make_user
from tests.images.test_api import png_bytes
from tests.images.test_services import own_sessions
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


async def private_upload(app: Litestar, client: Client, email: str) -> tuple[str, dict[str, str]]:
    owner_id = await make_user(app, email)
    bearer = {"Authorization": f"Bearer {await make_token(app, owner_id)}"}
    response = await client.post(
        "/api/v1/images",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"visibility": "private"},
        headers=bearer,
    )
    assert response.status_code == 201
    return response.json()["id"], bearer


async def test_an_edit_without_a_visibility_field_keeps_the_image_private(app: Litestar, client: Client) -> None:
    image_id, bearer = await private_upload(app, client, "owner@example.org")
    await log_in(client, "owner@example.org")
    token = await csrf_token(client)
    edited = await client.post(f"/i/{image_id}/edit", data={"title": "Renamed", "_csrf_token": token}, headers=HTML)
    assert edited.status_code == 200
    described = (await client.get(f"/api/v1/images/{image_id}", headers=bearer)).json()
    assert described["visibility"] == "private" and described["title"] == "Renamed"
    client.cookies = httpx.Cookies()
    assert (await client.get(f"/i/{image_id}.png")).status_code == 404


async def test_a_bad_token_cannot_tell_a_private_image_from_a_missing_one(app: Litestar, client: Client) -> None:
    image_id, _ = await private_upload(app, client, "owner@example.org")
    bad = {"Authorization": "Bearer chi_not-a-token"}
    for path in (f"/i/{image_id}.png", f"/i/{image_id}/thumbnail.webp", f"/i/{image_id}/preview.webp"):
        private = await client.get(path, headers=bad)
        missing = await client.get(path.replace(image_id, "AAAAAAAAAAAA"), headers=bad)
        assert private.status_code == missing.status_code == 404
        assert private.json()["detail"].replace(image_id, "") == missing.json()["detail"].replace("AAAAAAAAAAAA", "")


@pytest.mark.parametrize("expires", ["²", "¹²³", "0999999999", "-1", "9" * 13])
async def test_odd_expiry_values_are_a_missing_image_not_a_crash(app: Litestar, client: Client, expires: str) -> None:
    image_id, _ = await private_upload(app, client, "owner@example.org")
    response = await client.get(f"/i/{image_id}/preview.webp", params={"expires": expires, "signature": "x"})
    assert response.status_code == 404


async def test_ids_beyond_the_database_range_are_not_found(app: Litestar, client: Client) -> None:
    owner_id = await make_user(app, "owner@example.org")
    bearer = {"Authorization": f"Bearer {await make_token(app, owner_id)}"}
    response = await client.delete(f"/api/v1/tokens/{2**63}", headers=bearer)
    assert response.status_code == 404, response.text
    await log_in(client, "owner@example.org")
    token = await csrf_token(client)
    revoke = await client.post(f"/account/tokens/{10**30}/revoke", data={"_csrf_token": token}, headers=HTML)
    assert revoke.status_code == 404


@pytest.mark.parametrize(
    "email",
    ["ß" * 200 + "123@ex.com", "nul\x00byte@example.org", "tab\tin@example.org"],
    ids=["casefolds-too-long", "nul", "control"],
)
async def test_emails_no_account_could_use_are_refused_at_registration(
    app: Litestar, client: Client, email: str
) -> None:
    token = await csrf_token(client)
    fields = {"email": email, "password": PASSWORD, "password_confirm": PASSWORD, "_csrf_token": token}
    response = await client.post("/register", data=fields, headers=HTML, follow_redirects=False)
    assert response.status_code == 400, response.text
    login = await client.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token}, headers=HTML)
    assert login.status_code == 401


async def test_a_disabled_account_takes_no_more_uploads(app: Litestar, client: Client) -> None:
    """An upload let in just before its account was disabled (or is being deleted) is refused
    when it is about to be counted, and leaves nothing behind."""
    owner_id = await make_user(app, "owner@example.org")
    async with own_sessions(app) as db:
        images = ImageService(db, storage=app.state.storage, cache=app.state.cache, processor=app.state.processor)
        accounts: AccountService = app.state.account_service_factory(db)
        await accounts.set_disabled(owner_id, True)
        source = app.state.settings.data_dir / "late.png"
        source.write_bytes(png_bytes())
        with pytest.raises(ForbiddenError):
            await images.upload_image(
                source=source, filename="late.png", title=None, visibility=Visibility.PRIVATE, owner_id=owner_id
            )
        assert await images.owned_ids(owner_id) == []


async def test_making_an_image_private_needs_the_cache_cleared(
    app: Litestar, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the cached (public) entry cannot be tombstoned, the change is refused: otherwise the
    old entry would go on serving the bytes publicly until it expires."""
    owner_id = await make_user(app, "owner@example.org")
    bearer = {"Authorization": f"Bearer {await make_token(app, owner_id)}"}
    uploaded = await client.post("/api/v1/images", files={"file": ("a.png", png_bytes(), "image/png")}, headers=bearer)
    image_id = uploaded.json()["id"]
    assert (await client.get(f"/i/{image_id}.png")).status_code == 200  # now cached as unlisted

    async def store_down(_key: str) -> bool:
        return False

    monkeypatch.setattr(app.state.cache, "invalidate", store_down)
    refused = await client.patch(f"/api/v1/images/{image_id}", json={"visibility": "private"}, headers=bearer)
    assert refused.status_code == 503
    monkeypatch.undo()
    assert (await client.get(f"/api/v1/images/{image_id}", headers=bearer)).json()["visibility"] == "unlisted"
    # a change that keeps the image visible goes through: a stale entry would only show the old title
    monkeypatch.setattr(app.state.cache, "invalidate", store_down)
    renamed = await client.patch(f"/api/v1/images/{image_id}", json={"title": "New"}, headers=bearer)
    assert renamed.status_code == 200


async def test_cross_site_upload_posts_are_refused_before_they_count(settings: Settings) -> None:
    """A forged form post (no CSRF cookie: it is SameSite=Lax) must not use up the visitor's
    upload allowance; the real page then still uploads."""
    limited = dataclasses.replace(settings, limits=LimitSettings(anonymous_uploads_per_hour_per_ip=1))
    async with AsyncTestClient(app=create_app(limited), base_url="http://testserver.local") as client:
        files = {"file": ("a.png", png_bytes(), "image/png")}
        for _ in range(3):
            forged = await client.post("/upload", files=files, data={"_csrf_token": "x"}, headers=HTML)
            assert forged.status_code == 403
        token = await csrf_token(client)
        real = await client.post("/upload", files=files, data={"_csrf_token": token}, headers=HTML)
        assert real.status_code == 201, real.text


async def test_a_revoked_tokens_id_is_never_given_to_a_newer_token(app: Litestar, client: Client) -> None:
    """A revoke form left open in another tab names a token id; on SQLite that id would go to
    the next token made, and the stale form would revoke the wrong one."""
    owner_id = await make_user(app, "owner@example.org")
    first = await make_token(app, owner_id)
    bearer = {"Authorization": f"Bearer {first}"}
    listed = (await client.get("/api/v1/tokens", headers=bearer)).json()
    (old_id,) = [token["id"] for token in listed]
    assert (await client.delete(f"/api/v1/tokens/{old_id}", headers=bearer)).status_code == 204
    second = await make_token(app, owner_id)
    bearer = {"Authorization": f"Bearer {second}"}
    (new_id,) = [token["id"] for token in (await client.get("/api/v1/tokens", headers=bearer)).json()]
    assert new_id != old_id
    assert (await client.delete(f"/api/v1/tokens/{old_id}", headers=bearer)).status_code == 404
