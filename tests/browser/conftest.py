"""Browser tests: Debian's Chromium, driven by Playwright, against a real `chitram` process.

* ``browser``: one headless Chromium for this package. When it (or Playwright) cannot start, the
  browser tests are skipped, or fail when ``CHITRAM_REQUIRE_SERVICES=1``.
* ``server``: one `chitram` (embedded stack) in a temporary folder for this package.
* ``seeded_gallery``: a second server holding only a known set of images, for gallery paging.
* ``page`` / ``new_page``: a fresh browser context per page, with clipboard access, that records
  console errors, uncaught exceptions and CSP violations; the test fails at teardown if any
  happened (``page_errors.allow(...)`` accepts console errors a test expects).
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FilePayload,
    Page,
    Playwright,
    WebError,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from tests.images.test_api import png_bytes as solid_png
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.server import NO_UPLOAD_LIMITS, RunningServer, clean_env, start_server, stop
from tests.support.services import services_required

DEFAULT_VIEWPORT = {"width": 1280, "height": 800}
ACTION_TIMEOUT_MS = 10_000

# Gallery paging: more than two pages of 24, plus unlisted images that must never show.
GALLERY_PUBLIC = 62
GALLERY_UNLISTED = 2

# Runs before any page script: every CSP violation lands in window.__cspViolations and, through
# the exposed binding, in Python at once (so a violation on a page the test left is not lost).
CSP_RECORDER = """
(() => {
  window.__cspViolations = window.__cspViolations || [];
  document.addEventListener("securitypolicyviolation", (e) => {
    const violation = { directive: e.violatedDirective, blocked: e.blockedURI };
    window.__cspViolations.push(violation);
    if (typeof window.__chitramReportCsp === "function") window.__chitramReportCsp(violation);
  }, true);
})();
"""

expect.set_options(timeout=ACTION_TIMEOUT_MS)


# --------------------------------------------------------------------------------------------
# test data


_colours = itertools.count(1)
_colours_lock = threading.Lock()


def png_bytes(size: tuple[int, int] = (120, 80)) -> bytes:
    """A PNG in a colour no other call in this session produced, so no two uploads dedupe."""
    with _colours_lock:
        n = next(_colours)
    return solid_png(size, color=(n % 256, (n // 256) % 256, 255 - n % 128))


def png_file(name: str = "picture.png", size: tuple[int, int] = (120, 80)) -> FilePayload:
    """A file for ``page.set_input_files``."""
    return {"name": name, "mimeType": "image/png", "buffer": png_bytes(size)}


def text_file(name: str = "notes.txt") -> FilePayload:
    return {"name": name, "mimeType": "text/plain", "buffer": b"This is not an image.\n"}


def b64(data: bytes) -> str:
    """Bytes for a page script (``page.evaluate`` arguments are JSON)."""
    return base64.b64encode(data).decode("ascii")


def api_upload(base_url: str, *, visibility: str = "public", title: str | None = None) -> dict[str, Any]:
    """Upload through the JSON API (no CSRF there); returns the created image with its delete_token."""
    fields = {"visibility": visibility} | ({"title": title} if title is not None else {})
    response = httpx.post(
        f"{base_url}/api/v1/images",
        files={"file": ("seed.png", png_bytes(), "image/png")},
        data=fields,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def public_ids(base_url: str) -> list[str]:
    """Every public image id, newest first, as the API lists them."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{base_url}/api/v1/images", params=params, timeout=30).json()
        ids.extend(item["id"] for item in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


# --------------------------------------------------------------------------------------------
# browser and servers


def _unavailable(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"the browser is required (CHITRAM_REQUIRE_SERVICES=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"browser unavailable: {reason}")


# Package scope, not session: while sync Playwright runs, its event loop counts as running in this
# thread, and every asyncio test after it would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    try:
        driver = sync_playwright().start()
    except Exception as exc:
        _unavailable(f"Playwright did not start: {type(exc).__name__}: {exc}")
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed")
    try:
        chromium = playwright_driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
    except PlaywrightError as exc:
        _unavailable(f"{CHROMIUM} did not launch: {exc.message}")
    try:
        yield chromium
    finally:
        chromium.close()


def _start(tmp_path_factory: pytest.TempPathFactory, name: str) -> RunningServer:
    return start_server(clean_env(**NO_UPLOAD_LIMITS), cwd=tmp_path_factory.mktemp(name))


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _start(tmp_path_factory, "browser-server")
    yield running
    stop(running)


@dataclass(frozen=True)
class SeededGallery:
    """A server holding exactly these images and no others."""

    url: str
    public_ids: list[str]  # newest first
    unlisted_ids: list[str]


@pytest.fixture(scope="package")
def seeded_gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededGallery]:
    running = _start(tmp_path_factory, "gallery-server")
    try:
        visibilities = ["public"] * GALLERY_PUBLIC
        # Unlisted ones among the public, so they would show up mid-page if they leaked.
        visibilities[10:10] = ["unlisted"]
        visibilities[40:40] = ["unlisted"]
        with ThreadPoolExecutor(max_workers=4) as pool:
            created = list(pool.map(lambda v: api_upload(running.url, visibility=v), visibilities))
        seeded_public = {c["id"] for c in created if c["visibility"] == "public"}
        unlisted = [c["id"] for c in created if c["visibility"] == "unlisted"]
        listed = public_ids(running.url)
        assert set(listed) == seeded_public, "the API must list exactly the public images seeded"
        yield SeededGallery(url=running.url, public_ids=listed, unlisted_ids=unlisted)
    finally:
        stop(running)


# --------------------------------------------------------------------------------------------
# pages that watch for errors


@dataclass
class PageErrors:
    """What went wrong in the pages of one test; checked when the test ends."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, fragment: str) -> None:
        """Accept console errors containing ``fragment`` (e.g. "status of 415" for a rejected upload)."""
        self.allowed.append(fragment)

    def on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text:
            self.csp_violations.append(f"console: {text}")
        elif message.type == "error":
            self.console_errors.append(f"{text} (at {message.location.get('url', '?')})")

    def on_web_error(self, error: WebError) -> None:
        self.page_errors.append(f"{error.error.name}: {error.error.message}")

    def on_csp_violation(self, violation: dict[str, Any]) -> None:
        self.csp_violations.append(f"{violation.get('directive')} blocked {violation.get('blocked')!r}")

    def unexpected_console_errors(self) -> list[str]:
        return [text for text in self.console_errors if not any(fragment in text for fragment in self.allowed)]

    def check(self) -> None:
        problems = {
            "console errors": self.unexpected_console_errors(),
            "uncaught page errors": self.page_errors,
            "CSP violations": self.csp_violations,
        }
        report = "; ".join(f"{kind}: {items}" for kind, items in problems.items() if items)
        assert not report, report


class PageFactory(Protocol):
    def __call__(self, *, base_url: str | None = None, **context_options: Any) -> Page: ...


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def new_page(browser: Browser, server: RunningServer, page_errors: PageErrors) -> Iterator[PageFactory]:
    """Open a page in a fresh context (options as for ``browser.new_context``); base_url: the server."""
    contexts: list[BrowserContext] = []

    def factory(*, base_url: str | None = None, **context_options: Any) -> Page:
        origin = base_url or server.url
        options: dict[str, Any] = {"viewport": DEFAULT_VIEWPORT} | context_options
        context = browser.new_context(base_url=origin, **options)
        contexts.append(context)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
        context.on("console", page_errors.on_console)
        context.on("weberror", page_errors.on_web_error)
        context.expose_function("__chitramReportCsp", page_errors.on_csp_violation)
        context.add_init_script(CSP_RECORDER)
        return context.new_page()

    yield factory

    for context in contexts:
        context.close()
    page_errors.check()


@pytest.fixture
def page(new_page: PageFactory) -> Page:
    """A 1280×800 page on the session server, JavaScript on."""
    return new_page()


# --------------------------------------------------------------------------------------------
# accounts (the server is shared by the package: every test makes accounts of its own)

PASSWORD = "a long enough passphrase"


def unique_email(prefix: str = "user") -> str:
    """An address no other test uses (lower case, as the server keeps it)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass(frozen=True)
class Account:
    email: str
    password: str


def register(page: Page, *, email: str | None = None, password: str = PASSWORD) -> Account:
    """Create an account through /register; ``page``'s context is then logged in as it, on My images."""
    account = Account(email or unique_email(), password)
    page.goto("/register")
    page.fill("#email", account.email)
    page.fill("#password", password)
    page.fill("#password-confirm", password)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/me/images$"))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    return account


def create_token(page: Page, name: str) -> str:
    """Create an API token on /account (``page`` logged in); returns the token, shown only this once."""
    page.goto("/account")
    page.fill("#token-name", name)
    page.get_by_role("button", name="Create token").click()
    value = page.locator("#new-token-value")
    expect(value).to_have_value(re.compile(r"^chi_"))
    return value.input_value()


def token_upload(
    base_url: str, token: str, *, visibility: str = "unlisted", title: str | None = None
) -> dict[str, Any]:
    """Upload through the JSON API as the token's account; returns the created image."""
    fields = {"visibility": visibility} | ({"title": title} if title is not None else {})
    response = httpx.post(
        f"{base_url}/api/v1/images",
        files={"file": ("mine.png", png_bytes(), "image/png")},
        data=fields,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
def account(page: Page) -> Account:
    """A new account, registered through the form; ``page`` is logged in as it."""
    return register(page)
