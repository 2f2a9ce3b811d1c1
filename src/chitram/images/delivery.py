"""Serving image bytes: detected type, strong ETag, long caching, 304, Range and safe headers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Stream

from chitram.images.schemas import CachedImage, StoredVariant
from chitram.images.text import clean_text
from chitram.storage import ObjectStorage

IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# Even if a browser is talked into rendering the bytes as a document, it gets no script,
# no plugin, no same-origin access.
SANDBOX_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
# 18 digits: any real offset fits, and int() never meets a number it refuses to parse.
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f"\\/;]')


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One byte range from a Range header; None means "send it all".

    Several ranges in one request are answered with the whole body, which RFC 9110 allows
    and which spares us multipart/byteranges.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable
    return ByteRange(start, min(end, size - 1))


def etag_for(image: CachedImage, variant: str) -> str:
    return f'"{image.sha256}-{variant}"'


def content_disposition(image: CachedImage, variant: str) -> str:
    """RFC 6266 inline disposition: an ASCII fallback plus the UTF-8 name (RFC 5987)."""
    extension = image.extension if variant == "original" else "webp"
    # Names stored before clean_text existed may still hold bidi controls: clean them here too.
    stem = clean_text(image.original_filename or "").rsplit(".", 1)[0] or image.public_id
    if variant != "original":
        stem = f"{stem}-{variant}"
    name = _UNSAFE_FILENAME_CHARS.sub("_", f"{stem}.{extension}")
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii") or f"image.{extension}"
    fallback = fallback.replace("%", "_")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _if_none_match(request: Request[Any, Any, Any], etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    candidates = {value.strip().removeprefix("W/") for value in header.split(",")}
    return "*" in candidates or etag in candidates


def _base_headers(image: CachedImage, variant: str, cache_control: str) -> dict[str, str]:
    return {
        "ETag": etag_for(image, variant),
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX_CSP,
        "Content-Disposition": content_disposition(image, variant),
        "Accept-Ranges": "bytes",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }


async def serve_variant(
    request: Request[Any, Any, Any],
    storage: ObjectStorage,
    image: CachedImage,
    variant: str,
    *,
    cache_control: str = IMMUTABLE_CACHE,
) -> Response[Any]:
    """Public and unlisted bytes never change under their URL (content-addressed), so caches may
    keep them for a year; the caller passes a private policy for private images."""
    stored: StoredVariant = getattr(image, variant)
    headers = _base_headers(image, variant, cache_control)
    if _if_none_match(request, headers["ETag"]):
        return Response(content=b"", status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    range_header = request.headers.get("range") if if_range in (None, headers["ETag"]) else None
    try:
        byte_range = parse_range(range_header, stored.size)
    except RangeNotSatisfiable:
        headers["Content-Range"] = f"bytes */{stored.size}"
        return Response(content=b"", status_code=416, headers=headers, media_type=stored.content_type)
    status = 200
    length = stored.size
    if byte_range is not None:
        status = 206
        length = byte_range.length
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{stored.size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(content=b"", status_code=status, headers=headers, media_type=stored.content_type)
    # Fail before the status line goes out if the object is gone or storage is down.
    if byte_range is None:
        stream = storage.read(stored.key)
    else:
        stream = storage.read(stored.key, offset=byte_range.start, length=byte_range.length)
    first = await anext(stream, b"")
    return Stream(content=_prepend(first, stream), status_code=status, headers=headers, media_type=stored.content_type)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
