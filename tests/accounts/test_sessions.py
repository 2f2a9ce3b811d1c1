"""Web sessions on both stacks: the cookie, fixation, logout, password changes, "log out everywhere",
disabled accounts, CSRF on every form, and the JSON API's deafness to cookies."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from chitram.accounts.sessions import SESSION_COOKIE
from chitram.security import CSRF_COOKIE
from chitram.settings import Environment, Settings
from tests.accounts.conftest import (
    HTML,
    PASSWORD,
    Client,
    bearer,
    create_test_app,
    create_token,
    create_user,
    csrf_of,
    form_csrf,
    image_rows,
    log_in,
    logged_in,
    new_browser,
    register,
    session_of,
    set_cookie_headers,
    set_disabled,
    set_session,
    token_rows,
    unique_png,
    upload_as,
    user_by_email,
    who,
)
from tests.images.test_views import tags

SESSION_SECONDS = 30 * 24 * 3600  # AccountSettings.session_days defaults to 30


def cookie_attributes(header: str) -> dict[str, str]:
    """`name=value; Attr=x; Flag` → {"name": value, "attr": "x", "flag": ""} (attribute names lowercased)."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes = {name: value}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return attributes


def the_session_cookie(response: httpx.Response) -> dict[str, str]:
    headers = set_cookie_headers(response)
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return cookie_attributes(headers[0])


def tells_browser_to_forget(response: httpx.Response) -> bool:
    return any(cookie_attributes(h).get("max-age") == "0" for h in set_cookie_headers(response))


async def post_form(browser: Client, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
    """Post a form as the page would (its CSRF token), without following the redirect."""
    token = await csrf_of(browser)
    return await browser.post(path, data={**(data or {}), "_csrf_token": token}, headers=HTML, follow_redirects=False)


# -- the cookie ----------------------------------------------------------------------------------


async def test_register_logs_in_with_a_safe_session_cookie(client: Client) -> None:
    browser = new_browser(client)
    response = await register(browser, "new@example.com")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/me/images"
    cookie = the_session_cookie(response)
    assert len(cookie[SESSION_COOKIE]) >= 40  # 32 random bytes
    assert "httponly" in cookie and cookie["samesite"].lower() == "lax" and cookie["path"] == "/"
    assert cookie["max-age"] == str(SESSION_SECONDS)
    assert "secure" not in cookie  # development: plain http works on a laptop
    assert await who(browser) == "new@example.com"


async def test_anonymous_visitors_get_no_session(client: Client) -> None:
    for path in ("/", "/gallery", "/login", "/register"):
        response = await client.get(path, headers=HTML)
        assert response.status_code == 200
        assert not set_cookie_headers(response), path
    assert SESSION_COOKIE not in client.cookies


def host_cookie(response: httpx.Response, name: str) -> dict[str, str]:
    """The one `__Host-` cookie of this name the response sets: Secure, Path=/, no Domain."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"__Host-{name}=")]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    cookie = cookie_attributes(headers[0])
    assert "secure" in cookie and cookie["path"] == "/" and "domain" not in cookie, cookie
    return cookie


async def test_cookies_are_secure_in_production(settings: Settings) -> None:
    server = settings.server.model_copy(
        update={"env": Environment.PRODUCTION, "public_url": "https://testserver.local"}
    )
    production = create_test_app(dataclasses.replace(settings, server=server))
    async with AsyncTestClient(app=production, base_url="https://testserver.local") as browser:
        page = await browser.get("/register", headers=HTML)
        assert "httponly" in host_cookie(page, CSRF_COOKIE)
        response = await browser.post(
            "/register",
            data={
                "email": "secure@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
                "_csrf_token": form_csrf(page.text),
            },
            headers=HTML,
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        cookie = host_cookie(response, SESSION_COOKIE)
        assert "httponly" in cookie and cookie["samesite"].lower() == "lax"
        assert "httponly" in host_cookie(response, CSRF_COOKIE), "a new session comes with a new CSRF token"
        # the token from before the login no longer works: the form must come from a page of this session
        stale = await browser.post(
            "/logout", data={"_csrf_token": form_csrf(page.text)}, headers=HTML, follow_redirects=False
        )
        assert stale.status_code == 403
        logout = await browser.post(
            "/logout", data={"_csrf_token": await csrf_of(browser, "/account")}, headers=HTML, follow_redirects=False
        )
        assert logout.status_code == 303
        dropped = host_cookie(logout, SESSION_COOKIE)
        assert dropped["max-age"] == "0"


# -- fixation and replay -------------------------------------------------------------------------


async def test_a_cookie_set_before_login_is_never_the_session(client: Client) -> None:
    await create_user(client, "victim@example.com")
    browser = new_browser(client)
    planted = "attacker-chose-this-value-0123456789abcdefghijk"
    set_session(browser, planted)
    # A made-up cookie logs in nobody, and the browser is told to drop it.
    probe = await browser.get("/account", headers=HTML, follow_redirects=False)
    assert probe.status_code == 303 and tells_browser_to_forget(probe)

    set_session(browser, planted)
    response = await log_in(browser, "victim@example.com")
    assert response.status_code == 303
    issued = the_session_cookie(response)[SESSION_COOKIE]
    assert issued != planted and session_of(browser) == issued
    assert await who(browser) == "victim@example.com"
    attacker = new_browser(client)
    set_session(attacker, planted)
    assert await who(attacker) is None


async def test_logging_in_again_replaces_the_old_session(client: Client) -> None:
    await create_user(client, "attacker@example.com")
    await create_user(client, "victim@example.com")
    attacker = await logged_in(client, "attacker@example.com")
    attackers_session = session_of(attacker)
    assert attackers_session
    # The attacker plants their own live session in the victim's browser; the victim logs in.
    victim = new_browser(client)
    set_session(victim, attackers_session)
    assert await who(victim) == "attacker@example.com"
    response = await log_in(victim, "victim@example.com")
    assert response.status_code == 303
    assert session_of(victim) not in (None, attackers_session)
    assert await who(victim) == "victim@example.com"
    # The old session ended with the new login: the attacker's copy is dead too.
    set_session(attacker, attackers_session)
    assert await who(attacker) is None


async def test_logout_ends_the_session_for_good(client: Client) -> None:
    await create_user(client, "someone@example.com")
    browser = await logged_in(client, "someone@example.com")
    old = session_of(browser)
    assert old
    response = await post_form(browser, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert the_session_cookie(response)["max-age"] == "0"
    assert session_of(browser) is None and await who(browser) is None
    # Replaying the copied cookie: anonymous, and told again to drop it.
    thief = new_browser(client)
    set_session(thief, old)
    replay = await thief.get("/me/images", headers=HTML, follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"] == "/login?next=%2Fme%2Fimages"
    assert tells_browser_to_forget(replay)


async def test_a_link_cannot_log_anyone_out(client: Client) -> None:
    await create_user(client, "someone@example.com")
    browser = await logged_in(client, "someone@example.com")
    for path in ("/logout", "/account/sessions/end"):
        response = await browser.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code in {404, 405}, path
    assert await who(browser) == "someone@example.com"


# -- password change, log out everywhere, disabling ------------------------------------------


async def test_changing_the_password_ends_the_other_sessions_only(client: Client) -> None:
    await create_user(client, "me@example.com")
    here = await logged_in(client, "me@example.com")
    elsewhere = await logged_in(client, "me@example.com")
    before = session_of(here)
    new_password = "a brand new passphrase"

    wrong = await post_form(
        here,
        "/account/password",
        {"current_password": "not it at all", "new_password": new_password, "new_password_confirm": new_password},
    )
    assert wrong.status_code == 403 and "current password is wrong" in wrong.text
    assert await who(elsewhere) == "me@example.com"

    response = await post_form(
        here,
        "/account/password",
        {"current_password": PASSWORD, "new_password": new_password, "new_password_confirm": new_password},
    )
    assert response.status_code == 303 and response.headers["location"] == "/account?changed=password"
    after = the_session_cookie(response)[SESSION_COOKIE]
    assert after and after != before
    assert await who(here) == "me@example.com"
    assert await who(elsewhere) is None
    replay = new_browser(client)
    set_session(replay, before or "")
    assert await who(replay) is None
    assert (await log_in(new_browser(client), "me@example.com", PASSWORD)).status_code == 401
    assert (await log_in(new_browser(client), "me@example.com", new_password)).status_code == 303


async def test_log_out_everywhere(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    token = await create_token(client, user_id)
    here = await logged_in(client, "me@example.com")
    elsewhere = await logged_in(client, "me@example.com")
    response = await post_form(here, "/account/sessions/end")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert the_session_cookie(response)["max-age"] == "0"
    assert await who(here) is None and await who(elsewhere) is None
    # API tokens are not sessions: they keep working (the page says so).
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200


async def test_a_disabled_account_is_logged_out_at_once(client: Client) -> None:
    user_id = await create_user(client, "soon-gone@example.com")
    token = await create_token(client, user_id)
    browser = await logged_in(client, "soon-gone@example.com")
    session = session_of(browser)
    assert session and await who(browser) == "soon-gone@example.com"
    await set_disabled(client, user_id)
    response = await browser.get("/account", headers=HTML, follow_redirects=False)
    assert response.status_code == 303 and tells_browser_to_forget(response)
    refused = await client.get("/api/v1/me", headers=bearer(token))
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    login = await log_in(new_browser(client), "soon-gone@example.com")
    assert login.status_code == 403 and "disabled" in login.text and not set_cookie_headers(login)
    # Enabling the account again does not revive the old session.
    await set_disabled(client, user_id, False)
    set_session(browser, session)
    assert await who(browser) is None
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200


# -- CSRF: every state-changing form -------------------------------------------------------------


@dataclasses.dataclass
class Form:
    path: str
    data: dict[str, Any]
    multipart: bool = False


async def test_every_form_refuses_a_post_without_its_csrf_token(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    token = await create_token(client, user_id)
    tokens_before = len(await token_rows(client, user_id))
    token_id = (await token_rows(client, user_id))[0].id
    image = (await upload_as(client, token, visibility="private", fields={"title": "before"})).json()
    me = await logged_in(client, "me@example.com")
    stranger = new_browser(client)
    foreign_token = await csrf_of(stranger)  # a real token, but another browser's
    await csrf_of(me)
    images_before = [row.public_id for row in await image_rows(client)]
    forms = [
        Form("/login", {"email": "me@example.com", "password": PASSWORD, "next": ""}),
        Form("/register", {"email": "new@example.com", "password": PASSWORD, "password_confirm": PASSWORD}),
        Form("/logout", {}),
        Form(
            "/account/password",
            {"current_password": PASSWORD, "new_password": "x" * 12, "new_password_confirm": "x" * 12},
        ),
        Form("/account/sessions/end", {}),
        Form("/account/tokens", {"name": "sneaky"}),
        Form(f"/account/tokens/{token_id}/revoke", {}),
        Form("/account/sharex", {}),
        Form("/account/delete", {"password": PASSWORD, "images": "delete"}),
        Form(f"/i/{image['id']}/delete", {"delete_token": image["delete_token"]}),
        Form(f"/i/{image['id']}/edit", {"title": "changed", "visibility": "public"}),
        Form(f"/i/{image['id']}/link", {"expires_in": "3600"}),
        Form("/me/images/delete", {"ids": [image["id"]]}),
        Form("/upload", {"visibility": "public"}, multipart=True),
    ]
    wrong: list[str] = []
    for form in forms:
        for label, extra in (("no token", {}), ("another browser's token", {"_csrf_token": foreign_token})):
            files = {"file": ("x.png", unique_png(), "image/png")} if form.multipart else None
            response = await me.post(
                form.path, data={**form.data, **extra}, files=files, headers=HTML, follow_redirects=False
            )
            if response.status_code != 403 or "reload the page" not in response.text:
                wrong.append(f"{form.path} ({label}): {response.status_code} {response.text[:120]!r}")
            if set_cookie_headers(response):
                wrong.append(f"{form.path} ({label}) set a session cookie: {set_cookie_headers(response)}")
    assert not wrong, "\n".join(wrong)

    # Nothing changed.
    assert await who(me) == "me@example.com"  # not logged out, not ended, not deleted
    assert await user_by_email(client, "new@example.com") is None
    assert len(await token_rows(client, user_id)) == tokens_before
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200  # not revoked
    assert [row.public_id for row in await image_rows(client)] == images_before
    described = (await client.get(f"/api/v1/images/{image['id']}", headers=bearer(token))).json()
    assert described["title"] == "before" and described["visibility"] == "private"
    assert (await log_in(new_browser(client), "me@example.com", PASSWORD)).status_code == 303  # same password


# -- the JSON API believes tokens only -----------------------------------------------------------


async def test_the_api_ignores_session_cookies(client: Client) -> None:
    """A site that makes a logged-in browser call the API gets an anonymous request: no CSRF needed."""
    user_id = await create_user(client, "me@example.com")
    token = await create_token(client, user_id)
    mine = {v: (await upload_as(client, token, visibility=v)).json() for v in ("public", "unlisted", "private")}
    browser = await logged_in(client, "me@example.com")  # holds a valid session cookie, sends no token

    for visibility, image in mine.items():
        path = f"/api/v1/images/{image['id']}"
        expected = 404 if visibility == "private" else 403
        patched = await browser.patch(path, json={"title": "hijacked"})
        deleted = await browser.delete(path)
        assert (patched.status_code, deleted.status_code) == (expected, expected), visibility
        assert (await client.get(path, headers=bearer(token))).json()["title"] is None
    for method, path, body in [
        ("GET", "/api/v1/me", None),
        ("GET", "/api/v1/me/images", None),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "made by a cookie"}),
        ("POST", f"/api/v1/images/{mine['private']['id']}/signed-url", {"expires_in": 3600}),
    ]:
        response = await browser.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert len(await token_rows(client, user_id)) == 1
    # An upload with only the cookie is anonymous: it cannot be private and is not the account's.
    private = await upload_as(browser, None, visibility="private")
    assert private.status_code == 400 and "signed-in" in private.json()["detail"]
    anonymous = await upload_as(browser, None, visibility="unlisted")
    assert anonymous.status_code == 201
    listed = (await client.get("/api/v1/me/images", headers=bearer(token))).json()["items"]
    assert anonymous.json()["id"] not in {item["id"] for item in listed}
    # And the API did not touch the session.
    assert await who(browser) == "me@example.com"


# -- registering and logging in ------------------------------------------------------------------


async def test_an_email_registered_already_in_another_case_is_a_409(client: Client) -> None:
    await create_user(client, "Taken@Example.com")
    browser = new_browser(client)
    response = await register(browser, "taken@EXAMPLE.com")
    assert response.status_code == 409
    assert "exists already" in response.text
    assert tags(response.text, "form", action="/register")  # the form again, to fix it
    assert tags(response.text, "input", id="email")[0]["value"] == "taken@EXAMPLE.com"
    assert not set_cookie_headers(response) and await who(browser) is None
    # The same address in full-width letters (NFKC) is the same account too.
    full_width = await register(browser, "\uff54\uff41\uff4b\uff45\uff4e@example.com")
    assert full_width.status_code == 409


async def test_registration_checks_the_passwords(client: Client) -> None:
    browser = new_browser(client)
    differ = await register(browser, "new@example.com", confirm="something else entirely")
    assert differ.status_code == 400 and "differ" in differ.text
    short = await register(browser, "new@example.com", "short")
    assert short.status_code == 400 and "at least 8" in short.text
    assert await user_by_email(client, "new@example.com") is None


async def test_emails_are_case_insensitive_at_login(client: Client) -> None:
    await create_user(client, "Mixed.Case@Example.com")
    for typed in ("mixed.case@example.com", "MIXED.CASE@EXAMPLE.COM", "  Mixed.Case@example.COM "):
        browser = new_browser(client)
        response = await log_in(browser, typed)
        assert response.status_code == 303, typed
        assert await who(browser) == "Mixed.Case@Example.com"


async def test_a_wrong_password_says_nothing_about_which_part_was_wrong(client: Client) -> None:
    await create_user(client, "me@example.com")
    browser = new_browser(client)
    wrong_password = await log_in(browser, "me@example.com", "not my password")
    unknown_email = await log_in(browser, "nobody@example.com", "not my password")
    for response in (wrong_password, unknown_email):
        assert response.status_code == 401
        assert "the email address or the password is wrong" in response.text.lower()
        assert not set_cookie_headers(response)


@pytest.mark.parametrize(
    ("next_path", "destination"),
    [
        ("", "/me/images"),
        ("/account", "/account"),
        ("/i/abcdefghijkl?size=big", "/i/abcdefghijkl?size=big"),
        ("//evil.com", "/me/images"),
        ("//evil.com/path", "/me/images"),
        ("https://evil.com", "/me/images"),
        ("https://evil.com/me/images", "/me/images"),
        ("/\\evil.com", "/me/images"),
        ("/\t/evil.com", "/me/images"),
        ("javascript:alert(1)", "/me/images"),
        ("evil.com", "/me/images"),
    ],
)
async def test_login_goes_back_to_local_pages_only(client: Client, next_path: str, destination: str) -> None:
    await create_user(client, "me@example.com")
    response = await log_in(new_browser(client), "me@example.com", next_path=next_path)
    assert response.status_code == 303
    assert response.headers["location"] == destination


async def test_the_login_page_carries_only_a_local_next(client: Client) -> None:
    for asked, carried in (("/account", "/account"), ("//evil.com", "/me/images"), ("https://evil.com", "/me/images")):
        page = await client.get("/login", params={"next": asked}, headers=HTML)
        assert tags(page.text, "input", name="next")[0]["value"] == carried


async def test_pages_that_need_an_account_send_visitors_to_log_in_and_back(client: Client) -> None:
    await create_user(client, "me@example.com")
    browser = new_browser(client)
    for path in ("/account", "/me/images"):
        response = await browser.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path.replace('/', '%2F')}"
    login = await log_in(browser, "me@example.com", next_path="/account")
    assert login.headers["location"] == "/account"
