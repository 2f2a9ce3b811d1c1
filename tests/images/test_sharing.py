"""Share snippets and the unfurl image, from the metadata alone."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from chitram.images.models import Visibility
from chitram.images.schemas import CachedImage, StoredVariant
from chitram.images.sharing import UNFURL_MAX_BYTES, describe, share_snippets, shown_on_page, unfurl_image

LINKS = {
    "url": "https://img.example/i/abcdefghijkl.png",
    "page_url": "https://img.example/i/abcdefghijkl",
    "thumbnail_url": "https://img.example/i/abcdefghijkl/thumbnail.webp",
    "preview_url": "https://img.example/i/abcdefghijkl/preview.webp",
}


def image(*, title: str | None = None, content_type: str = "image/png", size: int = 2048) -> CachedImage:
    def variant(kind: str, width: int, height: int, ctype: str, nbytes: int) -> StoredVariant:
        return StoredVariant(key=kind, size=nbytes, width=width, height=height, content_type=ctype)

    return CachedImage(
        public_id="abcdefghijkl",
        title=title,
        visibility=Visibility.PUBLIC,
        original_filename="a.png",
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
        sha256="0" * 64,
        extension="png",
        original=variant("o", 4000, 3000, content_type, size),
        thumbnail=variant("t", 320, 240, "image/webp", 100),
        preview=variant("p", 1280, 960, "image/webp", 1000),
    )


def test_snippets_link_the_page_and_embed_the_original() -> None:
    snippets = {s.key: s.text for s in share_snippets(image(title="Harbour"), LINKS)}
    assert snippets["direct"] == LINKS["url"]
    assert snippets["page"] == LINKS["page_url"]
    assert snippets["markdown"] == f"[![Harbour]({LINKS['url']})]({LINKS['page_url']})"
    assert snippets["bbcode"] == f"[url={LINKS['page_url']}][img]{LINKS['url']}[/img][/url]"
    assert snippets["html"] == (
        f'<a href="{LINKS["page_url"]}"><img src="{LINKS["url"]}" alt="Harbour" width="4000" height="3000"></a>'
    )


def test_titles_cannot_break_out_of_markdown_or_html() -> None:
    snippets = {s.key: s.text for s in share_snippets(image(title='a](x) "<b>'), LINKS)}
    assert snippets["markdown"].startswith(r"[![a\]\(x\) ")
    assert 'alt="a](x) &quot;&lt;b&gt;"' in snippets["html"]


def test_untitled_images_get_generic_alt_text() -> None:
    snippets = {s.key: s.text for s in share_snippets(image(), LINKS)}
    assert "[![Untitled image]" in snippets["markdown"]


def test_unfurl_uses_the_original_only_when_every_chat_app_takes_it() -> None:
    assert unfurl_image(image(), LINKS).url == LINKS["url"]
    too_big = unfurl_image(image(size=UNFURL_MAX_BYTES + 1), LINKS)
    assert (too_big.url, too_big.width, too_big.content_type) == (LINKS["preview_url"], 1280, "image/webp")
    assert unfurl_image(image(content_type="image/avif"), LINKS).url == LINKS["preview_url"]


def test_description_is_short_and_human() -> None:
    assert describe(image(size=2_400_000)) == "4000×3000 PNG · 2.4 MB"


def test_small_or_extreme_images_unfurl_as_the_small_card() -> None:
    def card(width: int, height: int) -> str:
        base = image()
        original = StoredVariant(key="o", size=100, width=width, height=height, content_type="image/png")
        return unfurl_image(msgspec.structs.replace(base, original=original), LINKS).twitter_card

    assert card(1200, 630) == "summary_large_image"
    assert card(1, 1) == "summary"
    assert card(200, 8000) == "summary"
    assert card(4000, 2000) == "summary_large_image"


def test_gifs_are_shown_as_themselves_others_as_the_preview() -> None:
    gif = shown_on_page(image(content_type="image/gif"), LINKS)
    assert (gif.url, gif.width) == (LINKS["url"], 4000)
    png = shown_on_page(image(), LINKS)
    assert (png.url, png.width) == (LINKS["preview_url"], 1280)
