"""Every page: the common frame, a strict CSP that nothing on the page violates, and no script errors."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageErrors, api_upload, png_file
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(60)

MISSING = "/i/AAAAAAAAAAAA"


def assert_common_frame(page: Page) -> None:
    token = page.locator('head meta[name="csrf-token"]').get_attribute("content")
    assert token, "every page carries a CSRF token"
    assert page.evaluate("typeof window.htmx") == "object", "htmx is loaded"
    expect(page.locator("#toasts")).to_have_attribute("role", "status")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Upload")).to_have_attribute("href", "/")
    expect(nav.get_by_role("link", name="Gallery")).to_have_attribute("href", "/gallery")


def test_no_console_errors_or_csp_violations_on_any_page(
    page: Page, server: RunningServer, page_errors: PageErrors
) -> None:
    # The 404 page's own status is the one console error Chromium must log here.
    page_errors.allow(f"status of 404 (Not Found) (at {server.url}{MISSING})")
    api_upload(server.url, visibility="public", title="In the gallery")

    page.goto("/")
    page.set_input_files("#file", png_file("visit.png"))
    article = page.locator("#upload-list article.result[data-uploaded]")
    expect(article).to_have_count(1)
    page_url = article.get_attribute("data-page-url")
    token = article.get_attribute("data-delete-token")
    assert page_url
    assert token

    for path in ["/", "/gallery", page_url, f"{page_url}/delete#token={token}", MISSING]:
        response = page.goto(path)
        assert response is not None
        assert response.status == (404 if path == MISSING else 200), path
        page.wait_for_load_state("networkidle")
        assert_common_frame(page)
        # Every image that should have loaded did (lazy ones below the fold may not have started).
        broken = page.evaluate(
            """() => Array.from(document.images)
                 .filter((img) => img.loading !== "lazy" && !(img.complete && img.naturalWidth > 0))
                 .map((img) => img.src)"""
        )
        assert broken == [], (path, broken)
    # The page fixture fails the test if anything above logged an error or broke the CSP.


def test_pages_send_a_strict_content_security_policy(server: RunningServer) -> None:
    created = api_upload(server.url, visibility="public")
    for path in ["/", "/gallery", f"/i/{created['id']}", f"/i/{created['id']}/delete", MISSING]:
        response = httpx.get(f"{server.url}{path}", headers={"Accept": "text/html"}, timeout=10)
        assert response.headers["content-type"].startswith("text/html"), path
        policy = response.headers["content-security-policy"]
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        assert "script-src 'self'" in policy, (path, policy)
        assert directives["script-src"] == ["'self'"], (path, policy)
        assert "unsafe-inline" not in policy, (path, policy)
        assert "unsafe-eval" not in policy, (path, policy)
        assert directives["frame-ancestors"] == ["'none'"], (path, policy)
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-content-type-options"] == "nosniff", path
