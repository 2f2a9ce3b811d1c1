"""Every page works without JavaScript: upload by form post, page through the gallery, delete."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageFactory, SeededGallery, png_file
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(60)

PAGE_SIZE = 24


@pytest.fixture
def page(new_page: PageFactory) -> Page:
    return new_page(java_script_enabled=False)


def test_upload_without_javascript(page: Page, server: RunningServer) -> None:
    page.goto("/")
    assert page.evaluate("document.documentElement.classList.contains('js')") is False
    button = page.locator("#upload-button")
    expect(button).to_be_visible()
    expect(page.locator("#upload-form input[name=_csrf_token]")).to_have_count(1)

    page.set_input_files("#file", png_file("plain.png", size=(90, 60)))
    page.fill("#title", "Sent by a plain form")
    page.check("input[name=visibility][value=public]")
    with page.expect_navigation() as navigation:
        button.click()
    response = navigation.value
    assert response is not None
    assert response.status == 201
    expect(page).to_have_url(f"{server.url}/upload")

    expect(page.locator("main h1")).to_have_text("Uploaded")
    article = page.locator("article.result[data-uploaded]")
    expect(article).to_have_count(1)
    image_id = article.get_attribute("data-id")
    assert image_id
    direct, page_url = f"{server.url}/i/{image_id}.png", f"{server.url}/i/{image_id}"
    expect(page.locator(f"#share-direct-{image_id}")).to_have_value(direct)
    expect(page.locator(f"#share-page-{image_id}")).to_have_value(page_url)
    expect(page.locator(f"#share-markdown-{image_id}")).to_have_value(
        f"[![Sent by a plain form]({direct})]({page_url})"
    )
    expect(page.locator(f"#share-bbcode-{image_id}")).to_have_value(f"[url={page_url}][img]{direct}[/img][/url]")
    expect(page.locator(f"#share-html-{image_id}")).to_have_value(re.compile(r"^<a href="))
    delete_link = page.locator(f"#delete-{image_id}").input_value()
    token = delete_link.removeprefix(f"{page_url}/delete#token=")
    assert token and token != delete_link
    assert httpx.get(direct, timeout=10).status_code == 200

    # The result links to the image's page, which works without the script too.
    article.locator(".result-title a").click()
    expect(page).to_have_url(page_url)
    expect(page.locator("article#image-view h1")).to_have_text("Sent by a plain form")
    expect(page.locator("dl.facts")).to_contain_text("Public")

    # Deleting: the delete link's page (the token has to be typed without the script) posts normally.
    page.goto(delete_link)
    expect(page.locator("input#delete-token")).to_have_value("")
    page.fill("#delete-token", token)
    with page.expect_navigation():
        page.locator("form.delete-form button[type=submit]").click()
    expect(page.locator("main h1")).to_have_text("Image deleted")
    assert httpx.get(page_url, timeout=10).status_code == 404


def test_gallery_load_more_link_without_javascript(new_page: PageFactory, seeded_gallery: SeededGallery) -> None:
    page = new_page(java_script_enabled=False, base_url=seeded_gallery.url)
    expected = seeded_gallery.public_ids
    page.goto("/gallery")

    shown: list[str] = []
    pages = 0
    while True:
        pages += 1
        tiles = page.locator("#gallery > li.tile > a")
        start = len(shown)
        expect(tiles).to_have_count(min(PAGE_SIZE, len(expected) - start))
        hrefs: list[str] = tiles.evaluate_all("links => links.map((a) => a.getAttribute('href'))")
        shown.extend(href.rsplit("/", 1)[-1] for href in hrefs)
        more = page.get_by_role("link", name="Load more images")
        if len(shown) == len(expected):
            expect(more).to_have_count(0)
            break
        expect(more).to_have_attribute("href", re.compile(r"^/gallery\?cursor=."))
        with page.expect_navigation():
            more.click()
        assert "/gallery?cursor=" in page.url
        expect(page.get_by_role("link", name="Back to the newest images")).to_be_visible()

    assert pages >= 3
    assert shown == expected
