"""The gallery: public images only, newest first, pages of 24 that load as you scroll."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageFactory, SeededGallery

pytestmark = pytest.mark.timeout(90)

PAGE_SIZE = 24
TILE_LINK = re.compile(r"/i/([A-Za-z0-9_-]{12})$")


def shown_ids(page: Page) -> list[str]:
    hrefs: list[str] = page.locator("#gallery > li.tile > a").evaluate_all("links => links.map((a) => a.href)")
    ids = []
    for href in hrefs:
        match = TILE_LINK.search(href)
        assert match, href
        ids.append(match.group(1))
    return ids


def test_infinite_scroll_shows_every_public_image_once_newest_first(
    new_page: PageFactory, seeded_gallery: SeededGallery
) -> None:
    expected = seeded_gallery.public_ids
    assert len(expected) > 2 * PAGE_SIZE
    page = new_page(base_url=seeded_gallery.url)
    page.goto("/gallery")
    tiles = page.locator("#gallery > li.tile")
    expect(tiles).to_have_count(PAGE_SIZE)
    expect(page.locator("#gallery > li.more")).to_have_count(1)
    expect(page.locator("#gallery > li:last-child")).to_have_class(re.compile(r"\bmore\b"))
    expect(page.locator("#gallery > li.more")).to_have_attribute("hx-trigger", "revealed")

    pages_loaded = 1
    while tiles.count() < len(expected):
        shown = tiles.count()
        page.mouse.wheel(0, 10_000)
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        # At least one more page arrives (another may follow at once if its sentinel is already in view).
        expect(tiles.nth(min(shown + PAGE_SIZE, len(expected)) - 1)).to_be_attached()
        pages_loaded += 1
        assert pages_loaded <= len(expected) // PAGE_SIZE + 1, "more pages than images"

    expect(tiles).to_have_count(len(expected))
    expect(page.locator("#gallery > li.more")).to_have_count(0)
    assert pages_loaded >= 3
    ids = shown_ids(page)
    assert len(ids) == len(set(ids)), "no image is shown twice"
    assert ids == expected, "newest first, in the API's order"
    assert not set(ids) & set(seeded_gallery.unlisted_ids), "unlisted images never appear"

    images = page.locator("#gallery > li.tile > a > img")
    expect(images).to_have_count(len(expected))
    attributes = images.evaluate_all(
        """imgs => imgs.map((img) => ({
          width: img.getAttribute("width"),
          height: img.getAttribute("height"),
          loading: img.getAttribute("loading"),
          src: img.getAttribute("src"),
        }))"""
    )
    for image_id, attrs in zip(ids, attributes, strict=True):
        assert attrs["loading"] == "lazy", attrs
        assert attrs["width"] and int(attrs["width"]) > 0, attrs
        assert attrs["height"] and int(attrs["height"]) > 0, attrs
        assert attrs["src"].endswith(f"/i/{image_id}/thumbnail.webp"), attrs
    # The page's address did not change: more images came in place.
    assert page.url == f"{seeded_gallery.url}/gallery"


def test_gallery_tiles_open_the_image_page(new_page: PageFactory, seeded_gallery: SeededGallery) -> None:
    page = new_page(base_url=seeded_gallery.url)
    page.goto("/")
    page.get_by_role("navigation").get_by_role("link", name="Gallery").click()
    expect(page).to_have_url(f"{seeded_gallery.url}/gallery")
    first = seeded_gallery.public_ids[0]
    page.locator("#gallery > li.tile > a").first.click()
    expect(page).to_have_url(f"{seeded_gallery.url}/i/{first}")
    expect(page.locator("#image-view")).to_be_visible()
