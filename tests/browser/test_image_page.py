"""An image's page: what it shows, its link-preview tags, deleting it (and failing to), escaping, layout."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import PageErrors, PageFactory, api_upload, png_file
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(60)


def meta(page: Page, selector: str) -> str | None:
    return page.locator(f"head meta[{selector}]").get_attribute("content")


def upload_in_browser(page: Page, *, title: str = "", size: tuple[int, int] = (120, 80)) -> dict[str, str]:
    """Upload one PNG from the home page (so this browser keeps its delete token); returns its data."""
    page.goto("/")
    if title:
        page.fill("#title", title)
    page.set_input_files("#file", png_file("mine.png", size=size))
    article = page.locator("#upload-list article.result[data-uploaded]")
    expect(article).to_have_count(1)
    data: dict[str, str] = article.evaluate("a => ({...a.dataset})")
    return data


def test_image_page_shows_the_image_and_its_facts(page: Page, server: RunningServer) -> None:
    created = api_upload(server.url, visibility="public", title="Harbour at dawn")
    response = page.goto(f"/i/{created['id']}")
    assert response is not None
    assert response.status == 200

    view = page.locator("article#image-view")
    expect(view.locator("h1")).to_have_text("Harbour at dawn")
    preview = view.locator("img").first
    expect(preview).to_have_attribute("src", created["preview_url"])
    expect(preview).to_have_attribute("alt", "Harbour at dawn")
    assert preview.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0

    facts = {
        (dt.text_content() or "").strip(): (dd.text_content() or "").strip()
        for dt, dd in zip(
            view.locator("dl.facts dt").all(),
            view.locator("dl.facts dd").all(),
            strict=True,
        )
    }
    assert set(facts) == {"Dimensions", "Size", "Type", "Uploaded", "Visibility"}
    assert re.fullmatch(r"120\s*×\s*80\s*px", facts["Dimensions"]), facts
    assert facts["Type"] == "image/png"
    assert facts["Visibility"] == "Public"

    download = view.locator("a[download]")
    expect(download).to_have_text("Download original")
    expect(download).to_have_attribute("href", created["url"])

    for key, value in {
        "direct": created["url"],
        "page": created["page_url"],
        "markdown": f"[![Harbour at dawn]({created['url']})]({created['page_url']})",
        "bbcode": f"[url={created['page_url']}][img]{created['url']}[/img][/url]",
    }.items():
        expect(page.locator(f"#share-{key}-{created['id']}")).to_have_value(value)
    expect(page.locator(f"#share-html-{created['id']}")).to_have_value(re.compile(r"^<a href=.*<img src=.*</a>$"))

    # Nothing in this browser knows the token of an API upload.
    expect(page.locator("form.delete-form input#delete-token")).to_have_value("")
    expect(page.locator("form.delete-form input#delete-token")).to_have_attribute("type", "text")


def test_image_page_has_link_preview_tags(page: Page, server: RunningServer) -> None:
    created = api_upload(server.url, visibility="public", title="Preview me")
    page.goto(f"/i/{created['id']}")
    assert meta(page, 'property="og:title"') == "Preview me"
    assert meta(page, 'property="og:url"') == created["page_url"]
    og_image = meta(page, 'property="og:image"')
    assert og_image is not None
    assert og_image == created["url"]
    assert og_image.startswith(("http://", "https://")), "og:image must be absolute"
    assert meta(page, 'property="og:image:width"') == "120"
    assert meta(page, 'property="og:image:height"') == "80"
    assert meta(page, 'name="twitter:card"') == "summary"  # 120×80 is below the large card's 300×157
    assert meta(page, 'name="twitter:image"') == created["url"]
    # The unfurl image really is there for a chat app to fetch.
    assert httpx.get(og_image, timeout=10).status_code == 200


def test_delete_from_the_image_page(page: Page, server: RunningServer) -> None:
    mine = upload_in_browser(page, title="Short-lived")
    image_id, token, page_url = mine["id"], mine["deleteToken"], mine["pageUrl"]
    page.goto("/")
    expect(page.locator(f'#mine-list > li.card[data-id="{image_id}"]')).to_be_visible()

    page.goto(page_url)
    token_input = page.locator("form.delete-form input#delete-token")
    expect(token_input).to_have_value(token)  # filled in from this browser's list

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.locator("form.delete-form button[type=submit]").click()

    deleted = page.locator("article.deleted")
    expect(deleted.locator("h1")).to_have_text("Image deleted")
    expect(deleted.locator("h1")).to_be_focused()  # screen readers hear what happened
    expect(page).to_have_title("Image deleted · Chitram")
    expect(page.locator("#toasts .toast.success")).to_contain_text("deleted")
    expect(page.locator("form.delete-form")).to_have_count(0)
    assert len(dialogs) == 1
    assert "cannot be undone" in dialogs[0]

    assert httpx.get(page_url, timeout=10).status_code == 404
    assert httpx.get(f"{page_url}.png", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/api/v1/images/{image_id}", timeout=10).status_code == 404

    page.goto("/")
    expect(page.locator(f'#mine-list > li.card[data-id="{image_id}"]')).to_have_count(0)
    expect(page.locator("#mine-section")).to_be_hidden()


def test_delete_link_page_fills_in_the_token_and_deletes(page: Page, server: RunningServer) -> None:
    created = api_upload(server.url, visibility="unlisted")
    page.goto(f"/i/{created['id']}/delete#token={created['delete_token']}")
    expect(page.locator("h1")).to_have_text("Delete this image?")
    expect(page.locator("input#delete-token")).to_have_value(created["delete_token"])
    # Read once, then taken out of the address bar (history, bookmarks, htmx's HX-Current-URL).
    assert page.url == f"{server.url}/i/{created['id']}/delete"

    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_request(lambda request: request.method == "POST") as posted:
        page.locator("form.delete-form button[type=submit]").click()
    headers = posted.value.all_headers()
    assert created["delete_token"] not in " ".join(f"{k}: {v}" for k, v in headers.items())
    expect(page.locator("article.deleted h1")).to_have_text("Image deleted")
    expect(page.locator("#toasts .toast.success")).to_be_visible()
    assert httpx.get(created["page_url"], timeout=10).status_code == 404


def test_wrong_delete_token_shows_the_servers_message(
    page: Page, server: RunningServer, page_errors: PageErrors
) -> None:
    # Chromium logs the refused request, and htmx logs every error response it gets.
    page_errors.allow("status of 403 (Forbidden)")
    page_errors.allow("Response Status Error Code 403 from /i/")
    created = api_upload(server.url, visibility="public")
    page.goto(f"/i/{created['id']}")
    page.fill("#delete-token", "not-the-right-token")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("form.delete-form button[type=submit]").click()

    error = page.locator("#toasts .toast.error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("The delete key is missing or wrong")
    message = error.text_content() or ""
    # Nothing was swapped or deleted.
    expect(page.locator("article.deleted")).to_have_count(0)
    expect(page.locator("article#image-view h1")).to_have_text("Untitled image")
    expect(page.locator("#toasts .toast.success")).to_have_count(0)
    assert httpx.get(created["page_url"], timeout=10).status_code == 200
    # The message is for someone using this form: a browser user cannot set an HTTP header.
    assert "X-Delete-Token" not in message, f"the message tells a browser user to set an HTTP header: {message!r}"
    # Errors wait to be read, then go when dismissed.
    expect(error).to_have_attribute("role", "alert")
    error.get_by_role("button", name="Dismiss").click()
    expect(error).to_have_count(0)


def test_unknown_image_shows_a_friendly_404_page(page: Page, page_errors: PageErrors) -> None:
    page_errors.allow("status of 404")  # Chromium logs the 404 of the page itself
    response = page.goto("/i/AAAAAAAAAAAA")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    error_page = page.locator(".error-page")
    expect(error_page).to_be_visible()
    expect(error_page).to_contain_text("404")
    expect(page.get_by_role("navigation").get_by_role("link", name="Upload")).to_be_visible()


def test_title_is_shown_as_text_never_run(page: Page, server: RunningServer) -> None:
    title = "<img src=x onerror=alert(1)>"
    dialogs: list[str] = []

    def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    mine = upload_in_browser(page, title=title)
    expect(page.locator("#upload-list .result-title a")).to_have_text(title)

    page.goto(mine["pageUrl"])
    expect(page.locator("article#image-view h1")).to_have_text(title)
    expect(page.locator("article#image-view h1 img")).to_have_count(0)
    expect(page.locator("article#image-view img")).to_have_count(1)
    assert meta(page, 'property="og:title"') == title
    expect(page.locator(f"#share-html-{mine['id']}")).to_have_value(re.compile(r'alt="&lt;img src=x'))

    page.goto("/")  # this browser's list shows the title too
    card = page.locator(f'#mine-list > li.card[data-id="{mine["id"]}"]')
    expect(card.locator(".card-title")).to_have_text(title)
    expect(page.locator('img[src="x"], img[src$="/x"]')).to_have_count(0)
    assert dialogs == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_and_colour_scheme(new_page: PageFactory, server: RunningServer, scheme: str) -> None:
    page = new_page(viewport={"width": 360, "height": 740}, color_scheme=scheme, is_mobile=True, has_touch=True)
    # A long word: titles must wrap (or be cut), never widen the page.
    mine = upload_in_browser(page, title="A-rather-long-title-without-any-spaces-at-all-on-a-narrow-phone-screen")
    # The home page with an upload result (long share links) on screen, then the image page.
    assert_fits_and_matches_scheme(page, scheme, "home page with an upload result")
    page.goto(mine["pageUrl"])
    expect(page.locator("article#image-view")).to_be_visible()
    assert_fits_and_matches_scheme(page, scheme, "image page")
    page.goto("/")
    expect(page.locator("#mine-section")).to_be_visible()
    assert_fits_and_matches_scheme(page, scheme, "home page")
    page.goto("/gallery")
    expect(page.locator("main h1")).to_have_text("Gallery")
    assert_fits_and_matches_scheme(page, scheme, "gallery")


def assert_fits_and_matches_scheme(page: Page, scheme: str, where: str) -> None:
    layout: dict[str, Any] = page.evaluate(
        """() => ({
          scrollWidth: document.documentElement.scrollWidth,
          innerWidth: window.innerWidth,
          background: getComputedStyle(document.body).backgroundColor,
          rootBackground: getComputedStyle(document.documentElement).backgroundColor,
        })"""
    )
    assert layout["scrollWidth"] <= layout["innerWidth"], f"{where} scrolls sideways at 360 px: {layout}"
    if scheme == "dark":
        rgb = background_rgb(layout)
        assert sum(rgb) < 200, f"{where}: the background is not dark in dark mode: {layout}"


def background_rgb(layout: dict[str, Any]) -> tuple[int, int, int]:
    """The body's background, or the root's when the body's is transparent (what the user sees)."""
    for key in ("background", "rootBackground"):
        match = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", layout[key])
        assert match, layout[key]
        alpha = float(match.group(4)) if match.group(4) is not None else 1.0
        if alpha > 0:
            return int(match.group(1)), int(match.group(2)), int(match.group(3))
    return 255, 255, 255  # nothing painted: the canvas default (white)
