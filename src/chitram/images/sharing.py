"""What a page offers for sharing an image: copyable snippets and the tags chat apps unfurl."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from chitram.images.schemas import CachedImage

# Chat apps and social sites fetch og:image themselves; most take JPEG, PNG and GIF up to about
# 5 MB, and fewer take WebP or AVIF. Anything else unfurls with the WebP preview (≤ 1280 px).
UNFURL_TYPES = frozenset({"image/jpeg", "image/png", "image/gif"})
UNFURL_MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Snippet:
    key: str
    label: str
    text: str


# Twitter's large card needs at least 300×157 and crops extreme shapes; smaller or odder images
# unfurl as the small "summary" card instead.
LARGE_CARD_MIN = (300, 157)
LARGE_CARD_MAX_RATIO = 3.0


@dataclass(frozen=True)
class Unfurl:
    url: str
    content_type: str
    width: int
    height: int

    @property
    def twitter_card(self) -> str:
        too_small = self.width < LARGE_CARD_MIN[0] or self.height < LARGE_CARD_MIN[1]
        ratio = max(self.width, self.height) / max(1, min(self.width, self.height))
        return "summary" if too_small or ratio > LARGE_CARD_MAX_RATIO else "summary_large_image"


@dataclass(frozen=True)
class Shown:
    """What the image page displays: the preview, or the original when only it moves."""

    url: str
    width: int
    height: int


def alt_text(image: CachedImage) -> str:
    return image.title or "Untitled image"


def share_snippets(image: CachedImage, links: dict[str, str]) -> list[Snippet]:
    """Direct link, page link, Markdown, BBCode and HTML — the forms forums and chats accept."""
    alt = alt_text(image)
    url, page = links["url"], links["page_url"]
    width, height = image.original.width, image.original.height
    html_embed = (
        f'<a href="{html.escape(page)}"><img src="{html.escape(url)}" alt="{html.escape(alt)}" '
        f'width="{width}" height="{height}"></a>'
    )
    return [
        Snippet("direct", "Direct link", url),
        Snippet("page", "Page link", page),
        Snippet("markdown", "Markdown", f"[![{_markdown_text(alt)}]({url})]({page})"),
        Snippet("bbcode", "BBCode", f"[url={page}][img]{url}[/img][/url]"),
        Snippet("html", "HTML", html_embed),
    ]


def unfurl_image(image: CachedImage, links: dict[str, str]) -> Unfurl:
    original = image.original
    if original.content_type in UNFURL_TYPES and original.size <= UNFURL_MAX_BYTES:
        return Unfurl(links["url"], original.content_type, original.width, original.height)
    preview = image.preview
    return Unfurl(links["preview_url"], preview.content_type, preview.width, preview.height)


def shown_on_page(image: CachedImage, links: dict[str, str]) -> Shown:
    """GIFs are shown as themselves: the WebP preview holds their first frame only."""
    original = image.original
    if original.content_type == "image/gif":
        return Shown(links["url"], original.width, original.height)
    return Shown(links["preview_url"], image.preview.width, image.preview.height)


def describe(image: CachedImage) -> str:
    """One line for humans and for og:description: 1920×1080 PNG · 2.4 MB."""
    original = image.original
    kind = original.content_type.removeprefix("image/").upper()
    return f"{original.width}×{original.height} {kind} · {human_size(original.size)}"


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


_MARKDOWN_SPECIAL = re.compile(r"([\\\[\]()*_`])")


def _markdown_text(text: str) -> str:
    """Escape what would end or restyle Markdown's [alt text]."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
