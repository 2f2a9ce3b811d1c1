"""The upload size limit is enforced while the body streams in, and is configurable."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient

from chitram.app import create_app
from chitram.settings import UploadSettings
from tests.conftest import base_settings
from tests.images.test_api import png_bytes, upload


async def test_limit_is_configurable_and_default_10mb_cap_is_not_the_limit(
    tmp_path: Path, sqlite_template: Path
) -> None:
    import shutil

    shutil.copy(sqlite_template, tmp_path / "chitram.db")
    settings = base_settings(tmp_path, upload=UploadSettings(max_upload_bytes=1024, processing_concurrency=1))
    async with AsyncTestClient(create_app(settings)) as client:
        response = await upload(client, png_bytes((200, 200), color=(5, 6, 7)) + b"\0" * 2048)
        assert response.status_code == 413
        assert "1 KiB" in response.json()["detail"]
    default_settings = base_settings(tmp_path)
    assert default_settings.upload.max_upload_bytes == 25 * 1024 * 1024
    assert default_settings.request_body_limit > 10_000_000
    # a body over Litestar's 10 MB default but under our 25 MiB limit gets past the body cap
    # and is judged as an image (a PNG padded with trailing bytes is fine once re-encoded)
    async with AsyncTestClient(create_app(default_settings)) as client:
        big = png_bytes((64, 64)) + b"\0" * (12 * 1024 * 1024)
        response = await upload(client, big)
        assert response.status_code == 201, response.text
