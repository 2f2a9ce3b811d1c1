"""The issue's acceptance walk, in one go: drop three files (one not an image), copy Markdown,
scroll the gallery past several pages without layout shift, open an image page, read its
unfurl tags, delete it."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageErrors, api_upload, b64, png_bytes
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(120)

PAGE_SIZE = 24

# Sums layout-shift entries not caused by input, from page load on (Cumulative Layout Shift).
CLS_RECORDER = """
(() => {
  window.__layoutShift = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (!entry.hadRecentInput) window.__layoutShift += entry.value;
    }
  }).observe({ type: "layout-shift", buffered: true });
})();
"""


def drop(page: Page, files: list[tuple[str, str, bytes]]) -> None:
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const [name, type, data] of files) {
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, { type }));
            }
            return dt;
        }""",
        [[name, kind, b64(data)] for name, kind, data in files],
    )
    page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


def decode_visible_thumbnails(page: Page) -> None:
    """Wait until every thumbnail the browser has started to load (lazy ones in view) is decoded."""
    page.evaluate(
        """Promise.all(Array.from(document.querySelectorAll("#gallery img"))
            .filter(img => img.getBoundingClientRect().top < window.innerHeight)
            .filter(img => img.getBoundingClientRect().bottom > 0)
            .map(img => img.decode().catch(() => null)))"""
    )


def test_a_new_user_uploads_shares_browses_and_deletes(
    page: Page, server: RunningServer, page_errors: PageErrors
) -> None:
    page_errors.allow("status of 415")  # Chromium logs the refused text file's response
    for _ in range(2 * PAGE_SIZE + 5):
        api_upload(server.url, visibility="public")
    page.context.add_init_script(CLS_RECORDER)

    page.goto("/")
    page.check("input[name=visibility][value=public]")
    page.fill("#title", "Harbour")
    drop(
        page,
        [
            ("harbour-1.png", "image/png", png_bytes((400, 300))),
            ("notes.txt", "text/plain", b"not an image at all\n"),
            ("harbour-2.png", "image/png", png_bytes((300, 400))),
        ],
    )
    rows = page.locator("#upload-list > li.upload-row")
    expect(rows).to_have_count(3)
    expect(page.locator("li.upload-row.done")).to_have_count(2)
    failed = page.locator("li.upload-row.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".file-name")).to_have_text("notes.txt")
    expect(failed.locator(".status")).to_contain_text("JPEG, PNG, GIF, WebP or AVIF")
    expect(page.locator("#announcer")).to_have_text("2 of 3 uploaded, 1 failed.")

    first = page.locator("li.upload-row.done article.result").first
    image_id = first.get_attribute("data-id")
    page_url = f"{server.url}/i/{image_id}"
    first.get_by_role("button", name="Copy Markdown").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(rf"\[!\[Harbour\]\({re.escape(page_url)}\.png\)\]\({re.escape(page_url)}\)", copied)

    page.goto("/gallery")
    tiles = page.locator("#gallery > li.tile")
    expect(tiles).to_have_count(PAGE_SIZE)
    decode_visible_thumbnails(page)
    assert page.evaluate("window.__layoutShift") == 0, "thumbnails loading moved the page"
    while page.locator("#gallery > li.more").count():
        shown = tiles.count()
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        expect(tiles.nth(shown)).to_be_attached()
    assert tiles.count() > 2 * PAGE_SIZE
    # Appending a page moves the footer down, as it must; thumbnails arriving must move nothing.
    page.evaluate("window.__layoutShift = 0; window.scrollTo(0, 0)")
    while True:
        decode_visible_thumbnails(page)
        at_bottom = page.evaluate("window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 1")
        if at_bottom:
            break
        page.evaluate("window.scrollBy(0, window.innerHeight)")
    assert page.evaluate("window.__layoutShift") == 0, "thumbnails loading moved the page"

    page.locator(f'#gallery a[href="{page_url}"]').click()
    expect(page).to_have_url(page_url)
    og = {
        key: page.locator(f'meta[property="{key}"]').get_attribute("content")
        for key in ("og:title", "og:url", "og:image")
    }
    assert og == {"og:title": "Harbour", "og:url": page_url, "og:image": f"{page_url}.png"}
    assert httpx.get(og["og:image"] or "", timeout=10).headers["content-type"] == "image/png"

    page.on("dialog", lambda dialog: dialog.accept())
    expect(page.locator("#delete-token")).not_to_have_value("")  # from this browser's list
    page.get_by_role("button", name="Delete this image").click()
    expect(page.locator("article.deleted h1")).to_have_text("Image deleted")
    assert httpx.get(page_url, timeout=10).status_code == 404
