"""Helpers for the abuse-limit tests: an app whose lifespan runs in the test's own event loop,
reached over ASGI from any client address (one httpx client per address), plus uploads, logins
and checks for what a refused request may have left behind."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from PIL import Image as PILImage
from sqlalchemy import func, select

from chitram.accounts.sessions import SESSION_COOKIE
from chitram.app import create_app
from chitram.images.models import Image
from chitram.limits import human_wait
from chitram.settings import AccountSettings, LimitSettings, ServerSettings, Settings

BASE_URL = "http://testserver.local"
HTML = {"accept": "text/html"}
UPLOAD_PATH = "/api/v1/images"
PASSWORD = "correct horse battery staple"
WRONG = "wrong password, clearly"
HOUR = 3600
DAY = 24 * HOUR
# Every upload-limit test starts from "no limits" and sets only the ones it is about, so no other
# counter can be the one that refuses.
NO_UPLOAD_LIMITS: dict[str, int] = {
    "uploads_per_hour_per_ip": 0,
    "anonymous_uploads_per_hour_per_ip": 0,
    "uploads_per_hour_per_account": 0,
    "anonymous_bytes_per_day_per_ip": 0,
}


def configure(
    settings: Settings,
    limits: Mapping[str, int] | None = None,
    *,
    accounts: AccountSettings | None = None,
    server: ServerSettings | None = None,
) -> Settings:
    """The stack's settings with these limits (the rest at their defaults) and sections."""
    values: dict[str, Any] = dict(limits or {})
    return dataclasses.replace(
        settings,
        limits=LimitSettings(**values),
        accounts=accounts or settings.accounts,
        server=server or settings.server,
    )


class Site:
    """One running app; `client(ip)` is a browser or tool at that address (cookies are its own)."""

    def __init__(self, app: Litestar, stack: AsyncExitStack) -> None:
        self.app = app
        self._stack = stack
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def client(self, ip: str) -> httpx.AsyncClient:
        if ip not in self._clients:
            # httpx types the app with plain dicts, Litestar with TypedDicts: the same ASGI interface.
            transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))  # type: ignore[arg-type]
            http = httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60)
            self._clients[ip] = await self._stack.enter_async_context(http)
        return self._clients[ip]

    async def new_user(self, email: str, password: str = PASSWORD) -> int:
        async with self.app.state.database.sessions() as db:
            user = await self.app.state.account_service_factory(db).register(email, password)
            return int(user.id)

    async def new_token(self, email: str) -> str:
        """A fresh account and an API token for it."""
        user_id = await self.new_user(email)
        async with self.app.state.database.sessions() as db:
            created = await self.app.state.account_service_factory(db).create_token(user_id, "limits test")
            return str(created.secret)

    async def image_count(self) -> int:
        async with self.app.state.database.sessions() as db:
            return int(await db.scalar(select(func.count()).select_from(Image)) or 0)

    async def stored_keys(self) -> list[str]:
        return sorted([info.key async for info in self.app.state.storage.list("")])

    def spooled_files(self) -> list[str]:
        folder = self.app.state.settings.data_dir / "tmp"
        return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []

    async def assert_holds_exactly(self, images: int) -> None:
        """`images` images (of distinct content) and nothing else: no row, object or spooled file
        from any refused upload."""
        assert await self.image_count() == images
        keys = await self.stored_keys()
        assert len(keys) == 3 * images, keys  # original, thumbnail, preview
        assert self.spooled_files() == []


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Site]:
    """The app with its lifespan (database pool, Redis, storage) in this loop."""
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.lifespan())
        yield Site(app, stack)


# -- uploads ---------------------------------------------------------------------------


def png(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    """A small PNG whose content differs for every seed (below 256**3)."""
    color = (seed % 256, (seed // 256) % 256, (seed // 65536 + 77) % 256)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


async def upload(http: httpx.AsyncClient, data: bytes, *, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await http.post(UPLOAD_PATH, files={"file": ("picture.png", data, "image/png")}, headers=headers)


def assert_created(response: httpx.Response) -> None:
    assert response.status_code == 201, response.text


def assert_rate_limited(response: httpx.Response, *, window: int, says: str) -> int:
    """A 429 problem that says why (`says`) and when to retry, in words and in Retry-After; returns the wait."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    seconds = int(retry_after)
    assert 0 < seconds <= window
    problem = response.json()
    assert problem["type"].endswith("/problems/rate-limited")
    assert problem["status"] == 429
    assert says in problem["detail"], problem["detail"]
    assert f"try again in {human_wait(seconds)}" in problem["detail"], problem["detail"]
    return seconds


# -- logins ----------------------------------------------------------------------------

_CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
_FORM_ERROR = re.compile(r'<p class="form-error"[^>]*>(.*?)</p>', re.S)


async def login_form_token(http: httpx.AsyncClient) -> str:
    """What a browser does first: load the form (and with it the CSRF cookie and field)."""
    page = await http.get("/login", headers=HTML)
    assert page.status_code == 200, page.text
    found = _CSRF_FIELD.search(page.text)
    assert found, page.text
    return found.group(1)


async def log_in(
    http: httpx.AsyncClient, email: str, password: str, *, csrf_token: str | None = None
) -> httpx.Response:
    """POST the login form as a browser does; 303 is a login, anything else re-renders the form."""
    token = csrf_token or await login_form_token(http)
    form = {"email": email, "password": password, "next": "/me/images", "_csrf_token": token}
    return await http.post("/login", data=form, headers=HTML)


def form_error(response: httpx.Response) -> str:
    found = _FORM_ERROR.search(response.text)
    assert found, response.text
    return found.group(1).strip()


def assert_logged_in(response: httpx.Response) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/me/images"


def assert_wrong_password(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert "the email address or the password is wrong" in form_error(response).lower()


def assert_login_blocked(response: httpx.Response, *, window: int) -> int:
    """429 with Retry-After (whole seconds, within the window) and a message that says how long."""
    assert response.status_code == 429, response.text
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    seconds = int(retry_after)
    assert 0 < seconds <= window
    message = form_error(response).lower()
    assert "too many failed logins" in message
    assert f"try again in {human_wait(seconds)}" in message, message
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    return seconds
