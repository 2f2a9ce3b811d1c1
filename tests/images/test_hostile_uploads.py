"""Hostile files through the API: each gets a quick 4xx problem, nothing is stored, the app lives."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from litestar import Litestar

from tests.images import hostile
from tests.images.test_api import Client, png_bytes, upload
from tests.images.test_services import blob_refcounts, stored_keys

CASES: list[tuple[str, Callable[[], bytes], str, str, int]] = [
    ("bomb.png", lambda: hostile.png_bomb(100_000, 100_000), "image/png", "megapixels", 422),
    ("frames.gif", lambda: hostile.gif_many_frames(1500), "image/gif", "frames", 422),
    ("script.svg", hostile.svg_with_script, "image/svg+xml", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("page.html", hostile.html_file, "text/html", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("doc.pdf", hostile.pdf_file, "application/pdf", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("scan.tiff", hostile.tiff_file, "image/tiff", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("notes.txt", lambda: b"just some text\n" * 10, "text/plain", "JPEG, PNG, GIF, WebP or AVIF", 415),
    # lying names and types: an SVG called .png and declared image/png is still an SVG
    ("innocent.png", hostile.svg_with_script, "image/png", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("photo.jpg", hostile.html_file, "image/jpeg", "JPEG, PNG, GIF, WebP or AVIF", 415),
    ("cut.jpg", hostile.truncated_jpeg, "image/jpeg", "corrupt", 422),
    ("cut.png", hostile.truncated_png, "image/png", "corrupt", 422),
]


@pytest.mark.parametrize(("filename", "make", "declared", "message", "status"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_file_is_refused_quickly_and_leaves_nothing(
    app: Litestar, client: Client, filename: str, make: Callable[[], bytes], declared: str, message: str, status: int
) -> None:
    data = make()
    started = time.perf_counter()
    response = await upload(client, data, filename=filename, content_type=declared)
    elapsed = time.perf_counter() - started
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert message.lower() in problem["detail"].lower()
    assert elapsed < 1.0, f"refusal took {elapsed:.2f} s"
    assert await stored_keys(app) == []
    assert await blob_refcounts(app) == {}
    # the worker is healthy: a good upload right after works
    assert (await upload(client, png_bytes())).status_code == 201


async def test_oversized_upload_is_refused_with_the_limit_in_the_message(client: Client, app: Litestar) -> None:
    limit = app.state.settings.upload.max_upload_bytes
    response = await upload(client, b"\x89PNG" + b"\0" * (limit + 10))
    assert response.status_code == 413
    assert "25 MiB" in response.json()["detail"]
    assert await stored_keys(app) == []


async def test_polyglot_tail_is_not_served(client: Client) -> None:
    data = hostile.polyglot_png_with_html()
    created = await upload(client, data, filename="poly.png")
    assert created.status_code == 201, created.text
    served = (await client.get(created.json()["url"])).content
    assert b"<script" not in served and b"<html" not in served.lower()
