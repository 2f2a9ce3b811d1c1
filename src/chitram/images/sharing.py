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


@dataclass(frozen=True)
class Unfurl:
    url: str
    content_type: str
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
