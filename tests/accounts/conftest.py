"""Accounts on both stacks: users, browsers logged in through the real /login page, API tokens,
and the owner's images of each visibility.

The test client runs the app on its own event loop (a portal thread). Everything that touches the
app's state (database pool, stores, password hasher) therefore runs there too, through `in_app`;
extra browsers share that portal, so the lifespan runs once and each browser has its own cookies.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import chitram.app
from chitram.accounts.models import ApiToken, User
from chitram.accounts.passwords import Passwords
from chitram.accounts.services import AccountService
from chitram.accounts.sessions import SESSION_COOKIE
from chitram.app import create_app
from chitram.images.models import Image
from chitram.settings import Settings
from tests.images.test_api import png_bytes
from tests.images.test_views import meta, tags

Client = AsyncTestClient[Litestar]
T = TypeVar("T")

HTML = {"accept": "text/html"}
HOST = "testserver.local"
PASSWORD = "correct horse battery staple"
VISIBILITIES = ("public", "unlisted", "private")
ACTORS = ("anonymous", "owner", "other", "disabled", "admin")

_colours = itertools.count(1)
# argon2id at its real cost (64 MiB, t=3) takes 50-100 ms per hash, more on a busy machine, and the
# actors of every test log in. These tests are about who may do what, not about the hash: they run
# the app with cheap parameters (same algorithm, same code paths).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def create_test_app(settings: Settings) -> Litestar:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chitram.app, "Passwords", lambda: Passwords(FAST_HASHER))
        return create_app(settings)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_test_app(settings)


def unique_png(size: tuple[int, int] = (40, 30)) -> bytes:
    """A PNG no other upload in the test shares (identical content would share its stored bytes)."""
    n = next(_colours)
    return png_bytes(size, color=(n % 251, (n // 251) % 251, 99))


# -- the app's own event loop ---------------------------------------------------------------


async def in_app(client: Client, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` on the app's event loop, where its database pool, stores and locks live."""
    portal = client.blocking_portal
    return await anyio.to_thread.run_sync(portal.call, work)


async def with_db(client: Client, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    app = client.app

    async def run() -> T:
        async with app.state.database.sessions() as db:
            return await work(db)

    return await in_app(client, run)


async def with_accounts(client: Client, work: Callable[[AccountService], Awaitable[T]]) -> T:
    app = client.app
    return await with_db(client, lambda db: work(app.state.account_service_factory(db)))


async def create_user(client: Client, email: str, password: str = PASSWORD, *, admin: bool = False) -> int:
    async def register(accounts: AccountService) -> int:
        return (await accounts.register(email, password, is_admin=admin)).id

    return await with_accounts(client, register)


async def create_token(client: Client, user_id: int, name: str = "tests") -> str:
    async def make(accounts: AccountService) -> str:
        return (await accounts.create_token(user_id, name)).secret

    return await with_accounts(client, make)


async def set_disabled(client: Client, user_id: int, disabled: bool = True) -> None:
    async def change(accounts: AccountService) -> None:
        await accounts.set_disabled(user_id, disabled)

    await with_accounts(client, change)


async def user_row(client: Client, user_id: int) -> User | None:
    async def read(db: AsyncSession) -> User | None:
        return await db.get(User, user_id)

    return await with_db(client, read)


async def user_by_email(client: Client, email: str) -> User | None:
    async def read(db: AsyncSession) -> User | None:
        return (await db.scalars(select(User).where(User.email == email))).one_or_none()

    return await with_db(client, read)


async def token_rows(client: Client, user_id: int | None = None) -> list[ApiToken]:
    async def read(db: AsyncSession) -> list[ApiToken]:
        statement = select(ApiToken).order_by(ApiToken.id)
        if user_id is not None:
            statement = statement.where(ApiToken.user_id == user_id)
        return list((await db.scalars(statement)).all())

    return await with_db(client, read)


async def image_rows(client: Client) -> list[Image]:
    async def read(db: AsyncSession) -> list[Image]:
        return list((await db.scalars(select(Image).order_by(Image.id))).all())

    return await with_db(client, read)


# -- browsers -------------------------------------------------------------------------------


def new_browser(client: Client) -> Client:
    """Another browser on the same running app: its own cookie jar, the test client's portal."""
    browser: Client = AsyncTestClient(app=client.app, base_url=str(client.base_url))
    browser.blocking_portal = client.blocking_portal
    return browser


def form_csrf(html: str) -> str:
    """The token a form on this page posts back (the hidden field, as a browser would send it)."""
    fields = tags(html, "input", name="_csrf_token")
    token = fields[0]["value"] if fields else meta(html, "csrf-token")
    assert token, "the page carries no CSRF token"
    return token


async def csrf_of(browser: Client, path: str = "/") -> str:
    page = await browser.get(path, headers=HTML)
    assert page.status_code == 200, (path, page.status_code)
    return form_csrf(page.text)


async def log_in(browser: Client, email: str, password: str = PASSWORD, *, next_path: str = "") -> httpx.Response:
    """Log in as a person would: open /login, post its form (with its CSRF token). Not followed."""
    token = await csrf_of(browser, "/login")
    return await browser.post(
        "/login",
        data={"email": email, "password": password, "next": next_path, "_csrf_token": token},
        headers=HTML,
        follow_redirects=False,
    )


async def register(
    browser: Client, email: str, password: str = PASSWORD, *, confirm: str | None = None
) -> httpx.Response:
    token = await csrf_of(browser, "/register")
    return await browser.post(
        "/register",
        data={
            "email": email,
            "password": password,
            "password_confirm": password if confirm is None else confirm,
            "_csrf_token": token,
        },
        headers=HTML,
        follow_redirects=False,
    )


def session_of(browser: Client) -> str | None:
    return browser.cookies.get(SESSION_COOKIE)


def set_session(browser: Client, value: str) -> None:
    """Send this session cookie from now on (as an attacker replaying a copied cookie would)."""
    browser.cookies.delete(SESSION_COOKIE)
    browser.cookies.set(SESSION_COOKIE, value, domain=HOST, path="/")


async def who(browser: Client) -> str | None:
    """The email of the account this browser's cookie logs in, or None for anonymous."""
    page = await browser.get("/account", headers=HTML, follow_redirects=False)
    if page.status_code == 303:
        assert page.headers["location"].startswith("/login?next="), page.headers["location"]
        return None
    assert page.status_code == 200, page.status_code
    found = re.search(r'<dd id="account-email">([^<]*)</dd>', page.text)
    assert found, "the account page names no account"
    return html.unescape(found.group(1))


def set_cookie_headers(response: httpx.Response, name: str = SESSION_COOKIE) -> list[str]:
    return [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload_as(
    client: Client,
    token: str | None,
    *,
    visibility: str | None = None,
    data: bytes | None = None,
    fields: dict[str, str] | None = None,
) -> httpx.Response:
    """An API upload (multipart `file`), with the token if one is given."""
    form = (fields or {}) | ({"visibility": visibility} if visibility else {})
    return await client.post(
        "/api/v1/images",
        files={"file": ("picture.png", data if data is not None else unique_png(), "image/png")},
        data=form,
        headers=bearer(token) if token else {},
    )


# -- actors ---------------------------------------------------------------------------------


@dataclass
class Actor:
    """Someone using the site: a browser (session cookie, CSRF cookie) and, for accounts, a token."""

    name: str
    browser: Client
    csrf: str
    user_id: int | None = None
    email: str | None = None
    token: str | None = None
    session: str | None = None  # the cookie value the login gave this browser

    def auth(self) -> dict[str, str]:
        return bearer(self.token) if self.token else {}

    async def page(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A browser request with the session cookie (re-sent even after the server said to drop it,
        as a copied cookie would be). Redirects are not followed."""
        if self.session is not None:
            set_session(self.browser, self.session)
        headers = {**HTML, **kwargs.pop("headers", {})}
        return await self.browser.request(method, path, headers=headers, follow_redirects=False, **kwargs)

    async def form(self, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
        """Post a page form, with this browser's CSRF token."""
        return await self.page("POST", path, data={**(data or {}), "_csrf_token": self.csrf})


@dataclass
class World:
    """An app with five actors and the owner's images, one of each visibility."""

    app: Litestar
    client: Client
    tool: Client  # a cookie-less client for API calls: the API channel is the token alone
    actors: dict[str, Actor]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Actor:
        return self.actors[name]

    async def api(self, actor: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An API call with the actor's token (none for anonymous) and no cookies at all."""
        self.tool.cookies.clear()
        headers = {**self.actors[actor].auth(), **kwargs.pop("headers", {})}
        return await self.tool.request(method, path, headers=headers, follow_redirects=False, **kwargs)

    async def upload(self, visibility: str, *, title: str | None = None) -> dict[str, Any]:
        """A new image of the owner's, uploaded with the owner's token."""
        fields = {"title": title} if title else {}
        response = await upload_as(self.tool, self["owner"].token, visibility=visibility, fields=fields)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def owner_sees(self, image_id: str) -> httpx.Response:
        return await self.api("owner", "GET", f"/api/v1/images/{image_id}")


async def logged_in(client: Client, email: str, password: str = PASSWORD) -> Client:
    """A new browser, logged in through the login page."""
    browser = new_browser(client)
    response = await log_in(browser, email, password)
    assert response.status_code == 303, response.text
    return browser


async def make_actor(client: Client, name: str, user_id: int | None, email: str | None) -> Actor:
    browser = new_browser(client)
    if user_id is None or email is None:
        return Actor(name, browser, await csrf_of(browser))
    response = await log_in(browser, email)
    assert response.status_code == 303, response.text
    session = session_of(browser)
    assert session
    token = await create_token(client, user_id, f"{name}'s token")
    return Actor(name, browser, await csrf_of(browser), user_id, email, token, session)


@pytest.fixture
async def world(client: Client) -> World:
    emails = {name: f"{name}@example.com" for name in ACTORS if name != "anonymous"}
    ids = await asyncio.gather(*(create_user(client, email, admin=name == "admin") for name, email in emails.items()))
    user_ids: dict[str, int | None] = {"anonymous": None, **dict(zip(emails, ids, strict=True))}
    actors = {name: await make_actor(client, name, user_ids[name], emails.get(name)) for name in ACTORS}
    # Logged in, holding a token, and then disabled by an operator.
    disabled_id = user_ids["disabled"]
    assert disabled_id is not None
    await set_disabled(client, disabled_id)
    world = World(app=client.app, client=client, tool=new_browser(client), actors=actors)
    for visibility in VISIBILITIES:
        world.images[visibility] = await world.upload(visibility, title=f"owner's {visibility}")
    return world
