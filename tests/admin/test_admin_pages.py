"""Administrators in the UI: the users page, disabling an account mid-session, deleting any image."""

from __future__ import annotations

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chitram.accounts.services import AccountService
from tests.images.test_api import png_bytes
from tests.images.test_services import own_sessions
from tests.images.test_views import HTML, csrf_token

Client = AsyncTestClient[Litestar]
PASSWORD = "correct horse battery"


async def make_user(app: Litestar, email: str, *, admin: bool = False) -> int:
    async with own_sessions(app) as db:
        service: AccountService = app.state.account_service_factory(db)
        user = await service.register(email, PASSWORD, is_admin=admin)
        return user.id


async def make_token(app: Litestar, user_id: int) -> str:
    async with own_sessions(app) as db:
        service: AccountService = app.state.account_service_factory(db)
        return (await service.create_token(user_id, "test")).secret


async def log_in(client: Client, email: str) -> None:
    token = await csrf_token(client)
    response = await client.post(
        "/login", data={"email": email, "password": PASSWORD, "next": "/account", "_csrf_token": token}, headers=HTML
    )
    assert response.status_code == 200, response.text  # followed the 303 to /account
    assert "chitram_session" in client.cookies


async def test_an_admin_disables_a_user_mid_session_and_enables_them_again(app: Litestar, client: Client) -> None:
    admin_id = await make_user(app, "boss@example.org", admin=True)
    user_id = await make_user(app, "mallory@example.org")
    user_token = await make_token(app, user_id)
    # One client (the app's stores live on its loop), two browsers: swap their cookie jars.
    await log_in(client, "mallory@example.org")
    user_cookies = httpx.Cookies(client.cookies)
    client.cookies = httpx.Cookies()
    await log_in(client, "boss@example.org")
    admin_cookies = httpx.Cookies(client.cookies)

    users_page = await client.get("/admin/users", headers=HTML)
    assert users_page.status_code == 200
    assert "mallory@example.org" in users_page.text
    assert f"/admin/users/{admin_id}/disable" not in users_page.text  # no button to disable oneself
    token = await csrf_token(client)
    disabled = await client.post(f"/admin/users/{user_id}/disable", data={"_csrf_token": token}, headers=HTML)
    assert disabled.status_code == 200 and "disabled" in disabled.text

    # At once: the open session is anonymous (sent to log in) and the token is refused.
    client.cookies = user_cookies
    page = await client.get("/account", headers=HTML, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    api = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {user_token}"})
    assert api.status_code == 401 and "disabled" in api.json()["detail"]

    client.cookies = admin_cookies
    await client.post(f"/admin/users/{user_id}/enable", data={"_csrf_token": token}, headers=HTML)
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {user_token}"})).status_code == 200
    # The ended session stays ended; the user logs in again.
    client.cookies = user_cookies
    assert (await client.get("/account", headers=HTML, follow_redirects=False)).status_code == 303


async def test_only_admins_see_the_users_page_and_nobody_disables_themselves(app: Litestar, client: Client) -> None:
    admin_id = await make_user(app, "boss@example.org", admin=True)
    await make_user(app, "someone@example.org")
    anonymous = await client.get("/admin/users", headers=HTML, follow_redirects=False)
    assert anonymous.status_code == 303
    await log_in(client, "someone@example.org")
    assert (await client.get("/admin/users", headers=HTML)).status_code == 403
    await client.post("/logout", data={"_csrf_token": await csrf_token(client)}, headers=HTML)
    await log_in(client, "boss@example.org")
    token = await csrf_token(client)
    refused = await client.post(f"/admin/users/{admin_id}/disable", data={"_csrf_token": token}, headers=HTML)
    assert refused.status_code == 403


async def test_an_admin_deletes_someone_elses_image_from_its_page(app: Litestar, client: Client) -> None:
    await make_user(app, "boss@example.org", admin=True)
    owner_id = await make_user(app, "owner@example.org")
    owner_token = await make_token(app, owner_id)
    uploaded = await client.post(
        "/api/v1/images",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"visibility": "private"},
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    assert uploaded.status_code == 201
    image_id = uploaded.json()["id"]
    await log_in(client, "boss@example.org")
    page = await client.get(f"/i/{image_id}", headers=HTML)
    assert page.status_code == 200
    assert "As an administrator you can delete any image" in page.text
    token = await csrf_token(client)
    deleted = await client.post(f"/i/{image_id}/delete", data={"_csrf_token": token}, headers=HTML)
    assert deleted.status_code == 200
    gone = await client.get(f"/api/v1/images/{image_id}", headers={"Authorization": f"Bearer {owner_token}"})
    assert gone.status_code == 404
