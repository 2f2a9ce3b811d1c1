"""axe-core (WCAG 2.1 AA rules) finds nothing on any page, in light and dark, on desktop and phone."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageErrors, PageFactory, api_upload, png_file
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(120)

WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
MISSING = "/i/AAAAAAAAAAAA"


def violations(page: Page) -> str:
    results = Axe().run(page, options=WCAG_AA)
    return results.generate_report() if results.violations_count else ""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 360, "height": 740}])
def test_every_page_passes_axe(
    new_page: PageFactory,
    server: RunningServer,
    page_errors: PageErrors,
    scheme: str,
    viewport: dict[str, int],
) -> None:
    page_errors.allow(f"status of 404 (Not Found) (at {server.url}{MISSING})")
    created = api_upload(server.url, visibility="public", title="Checked by axe")
    page = new_page(color_scheme=scheme, viewport=viewport)

    page.goto("/")
    page.set_input_files("#file", png_file("axe.png"))
    expect(page.locator("#upload-list article.result")).to_have_count(1)
    pages = {"a result on the upload page": violations(page)}
    for path in ("/gallery", f"/i/{created['id']}", f"/i/{created['id']}/delete", MISSING):
        page.goto(path)
        pages[path] = violations(page)
    failing = {where: report for where, report in pages.items() if report}
    assert not failing, "\n\n".join(f"{where}:\n{report}" for where, report in failing.items())


def test_the_uploader_works_from_the_keyboard(page: Page) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    # Title, then the visibility radios, then the file chooser: all reachable in order.
    focus_order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        focus_order.append(page.evaluate("document.activeElement.id || document.activeElement.name"))
    assert focus_order == ["title", "visibility", "file"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused control shows a focus ring"
