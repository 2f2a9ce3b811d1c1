"""Serving image bytes: headers, 304, ranges, filenames, and the metadata cache."""

from __future__ import annotations

import hashlib
import io
from typing import Any
from urllib.parse import unquote

import pytest
from litestar import Litestar
from PIL import Image
from sqlalchemy import event

from tests.images.test_api import Client, png_bytes, upload


async def created_image(client: Client, **kwargs: Any) -> dict[str, Any]:
    response = await upload(client, png_bytes((300, 200)), **kwargs)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_original_is_served_with_safe_headers(client: Client) -> None:
    image = await created_image(client, filename="holiday.png", visibility="public")
    response = await client.get(image["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{image["sha256"]}-original"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["content-disposition"].startswith('inline; filename="holiday.png"')
    assert hashlib.sha256(response.content).hexdigest() == image["sha256"]
    assert int(response.headers["content-length"]) == image["size"] == len(response.content)


async def test_unlisted_images_are_cached_long_too(client: Client) -> None:
    image = await created_image(client, visibility="unlisted")
    response = await client.get(image["url"])
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("source_size", "thumbnail_size", "preview_size"),
    [
        ((2000, 1000), (320, 160), (1280, 640)),
        ((300, 200), (300, 200), (300, 200)),
        ((500, 1500), (107, 320), (427, 1280)),
    ],
)
async def test_variants_are_webp_fit_their_box_and_are_never_upscaled(
    client: Client,
    source_size: tuple[int, int],
    thumbnail_size: tuple[int, int],
    preview_size: tuple[int, int],
) -> None:
    image = (await upload(client, png_bytes(source_size))).json()
    for url, expected in ((image["thumbnail_url"], thumbnail_size), (image["preview_url"], preview_size)):
        response = await client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(response.content)) as served:
            assert served.format == "WEBP"
            assert served.size == expected


async def test_if_none_match_gives_304(client: Client) -> None:
    image = await created_image(client)
    first = await client.get(image["url"])
    etag = first.headers["etag"]
    again = await client.get(image["url"], headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = await client.get(image["url"], headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


async def test_range_requests(client: Client) -> None:
    image = await created_image(client)
    whole = (await client.get(image["url"])).content
    size = len(whole)
    part = await client.get(image["url"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == whole[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    assert part.headers["content-length"] == "10"
    tail = await client.get(image["url"], headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole[-5:]
    open_ended = await client.get(image["url"], headers={"Range": f"bytes={size - 3}-"})
    assert open_ended.content == whole[-3:]
    beyond = await client.get(image["url"], headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    stale = await client.get(image["url"], headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == whole


async def test_head_has_headers_and_no_body(client: Client) -> None:
    image = await created_image(client)
    response = await client.head(image["url"])
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"]
    assert response.headers["content-type"] == "image/png"


async def test_wrong_extension_and_unknown_ids_are_404(client: Client) -> None:
    image = await created_image(client)
    assert (await client.get(image["url"].replace(".png", ".jpg"))).status_code == 404
    assert (await client.get("/i/doesnotexist.png")).status_code == 404
    assert (await client.get(f"/i/{image['id']}/original.exe")).status_code == 404


def raw_multipart(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so the filename reaches the server exactly as given
    (httpx would percent-escape quotes and line breaks)."""
    boundary = b"chitram-test-boundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


@pytest.mark.parametrize(
    ("raw_filename", "expected_name"),
    [
        (b'evil\\"; filename=x.html', "evil__ filename=x.png"),
        ("фото.png".encode(), "фото.png"),
        (b"../../etc/passwd", "passwd.png"),
        (b"tab\there.png", "tab here.png"),
        # A right-to-left override would show "\u202egnp.exe" as "exe.png": it is dropped.
        ("\u202egnp.exe".encode(), "gnp.png"),
        ("\u2066a\u2069\u200f\u061c\ufeffb.png".encode(), "ab.png"),
        ("line\u2028para\u2029c1\u0085x.png".encode(), "line para c1 x.png"),
        ("\U0001f469\u200d\U0001f4bb caf\u0065\u0301.png".encode(), "\U0001f469\u200d\U0001f4bb caf\u00e9.png"),
        (b"100%.png", "100%.png"),
        (b"", None),
    ],
)
async def test_filenames_cannot_inject_anything(client: Client, raw_filename: bytes, expected_name: str | None) -> None:
    body, headers = raw_multipart(raw_filename, png_bytes())
    created = await client.post("/api/v1/images", content=body, headers=headers)
    assert created.status_code == 201, created.text
    image = created.json()
    disposition = (await client.get(image["url"])).headers["content-disposition"]
    assert not any(ord(c) < 32 or ord(c) == 127 for c in disposition)
    assert disposition.startswith("inline; filename=")
    assert disposition.count('"') == 2
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert all(c.isalnum() or c in "%-._~" for c in encoded)
    name = unquote(encoded)
    assert name == (expected_name or f"{image['id']}.png")


async def test_warm_cache_serves_without_touching_the_database(app: Litestar, client: Client) -> None:
    image = await created_image(client, visibility="public")
    await client.get(image["url"])  # warms the cache
    statements: list[str] = []
    engine = app.state.database.engine.sync_engine

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = await client.get(image["url"])
        thumbnail = await client.get(image["thumbnail_url"])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200 and thumbnail.status_code == 200
    assert statements == []


async def test_image_page_shows_the_preview(client: Client) -> None:
    image = await created_image(client, title="<script>alert(1)</script>")
    page = await client.get(image["page_url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert image["preview_url"] in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_missing_image_page_is_html_404(app: Litestar, client: Client) -> None:
    response = await client.get("/i/nothinghere1", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_bytes_lost_from_storage_give_a_404_problem_not_a_crash(app: Litestar, client: Client) -> None:
    image = await created_image(client)
    await client.get(image["url"])  # cache the metadata
    async for info in app.state.storage.list("originals/"):
        await app.state.storage.delete(info.key)
    response = await client.get(image["url"])
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_non_browser_clients_get_problems_for_byte_urls(client: Client) -> None:
    response = await client.get("/i/missing00000.png", headers={"Accept": "*/*"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_absurd_range_numbers_are_ignored(client: Client) -> None:
    image = await created_image(client)
    response = await client.get(image["url"], headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert response.status_code == 200
    assert len(response.content) == image["size"]
