"""CSRF in depth, on both stacks: tokens bound to the session, the request's origin checked on
every state-changing page request, and pages that refuse to be framed."""

from __future__ import annotations

import httpx
import pytest

from chitram.security import CSRF_COOKIE
from tests.accounts.conftest import (
    HOST,
    HTML,
    Client,
    create_user,
    csrf_of,
    log_in,
    logged_in,
    new_browser,
    token_rows,
)

CROSS_SITE = "this form was sent from another website"


async def create_token_form(browser: Client, token: str, **headers: str) -> httpx.Response:
    return await browser.post(
        "/account/tokens", data={"name": "from a form", "_csrf_token": token}, headers={**HTML, **headers}
    )


def plant_csrf_cookie(browser: Client, value: str) -> None:
    """What a sibling subdomain or a man in the middle on plain http can do to a cookie jar."""
    browser.cookies.delete(CSRF_COOKIE)
    browser.cookies.set(CSRF_COOKIE, value, domain=HOST, path="/")


async def test_an_attackers_own_token_pair_does_not_work_in_the_victims_session(client: Client) -> None:
    victim_id = await create_user(client, "victim@example.com")
    await create_user(client, "mallory@example.com")
    # The attacker's pairs: one as a visitor, one from their own session. Each is a valid
    # double-submit pair (cookie and token match), which is all Litestar's check compares.
    visitor = new_browser(client)
    visitor_token = await csrf_of(visitor, "/login")
    mallory = await logged_in(client, "mallory@example.com")
    mallory_token = await csrf_of(mallory, "/account")
    pairs = [
        (visitor.cookies[CSRF_COOKIE], visitor_token),
        (mallory.cookies[CSRF_COOKIE], mallory_token),
    ]

    victim = await logged_in(client, "victim@example.com")
    own_cookie = victim.cookies[CSRF_COOKIE]
    for cookie, token in pairs:
        plant_csrf_cookie(victim, cookie)
        refused = await create_token_form(victim, token)
        assert refused.status_code == 403, refused.text
        assert "made for another login on this browser" in refused.text.lower()
    assert await token_rows(client, victim_id) == []

    # The victim's own page still works: it renders the session's token (and repairs the cookie).
    page_token = await csrf_of(victim, "/account")
    assert victim.cookies[CSRF_COOKIE] == own_cookie
    created = await create_token_form(victim, page_token)
    assert created.status_code == 201, created.text
    assert len(await token_rows(client, victim_id)) == 1


async def test_logging_in_rotates_the_token(client: Client) -> None:
    await create_user(client, "user@example.com")
    browser = new_browser(client)
    before = await csrf_of(browser, "/login")
    cookie_before = browser.cookies[CSRF_COOKIE]
    response = await log_in(browser, "user@example.com")
    assert response.status_code == 303
    assert browser.cookies[CSRF_COOKIE] != cookie_before
    # a token handed out before the login (to this visitor, or planted) is dead
    assert (await create_token_form(browser, before)).status_code == 403
    assert (await create_token_form(browser, await csrf_of(browser, "/account"))).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # a sibling subdomain may be someone else's
        {"origin": "https://evil.example"},
        {"origin": "null"},  # sandboxed frames and opaque origins
        {"sec-fetch-site": "cross-site", "origin": f"http://{HOST}"},  # the fetch metadata decides
    ],
)
async def test_a_cross_site_form_is_refused_with_a_clear_message(client: Client, headers: dict[str, str]) -> None:
    user_id = await create_user(client, "user@example.com")
    browser = await logged_in(client, "user@example.com")
    token = await csrf_of(browser, "/account")
    refused = await create_token_form(browser, token, **headers)
    assert refused.status_code == 403, refused.text
    assert CROSS_SITE in refused.text.lower()
    assert await token_rows(client, user_id) == []
    # the same applies before any login: another site cannot log a browser in
    visitor = new_browser(client)
    login_token = await csrf_of(visitor, "/login")
    form = {"email": "user@example.com", "password": "correct horse battery staple", "_csrf_token": login_token}
    login = await visitor.post("/login", data=form, headers={**HTML, **headers})
    assert login.status_code == 403 and CROSS_SITE in login.text.lower()


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "same-origin", "origin": f"http://{HOST}"},  # what a browser sends
        {"origin": f"http://{HOST}"},  # a browser without fetch metadata
        {"sec-fetch-site": "none"},  # the user's own doing (typed, bookmarked)
        {},  # not a browser (curl, a script): the CSRF token decides
    ],
)
async def test_same_origin_and_non_browser_forms_are_accepted(client: Client, headers: dict[str, str]) -> None:
    await create_user(client, "user@example.com")
    browser = await logged_in(client, "user@example.com")
    created = await create_token_form(browser, await csrf_of(browser, "/account"), **headers)
    assert created.status_code == 201, created.text


async def test_the_origin_check_leaves_the_token_only_api_alone(client: Client) -> None:
    """The API believes bearer tokens only, so a cross-site request there is anonymous anyway."""
    response = await client.get("/api/v1/images", headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 200


async def test_every_response_refuses_to_be_framed(client: Client) -> None:
    for path in ("/", "/login", "/api/v1/images", "/health/live", "/no-such-page"):
        response = await client.get(path, headers=HTML)
        assert response.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
