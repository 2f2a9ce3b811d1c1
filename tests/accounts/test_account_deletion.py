"""Deleting an account (with or without its images) and the storage quota, on both stacks."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.images.models import Blob
from chitram.images.processing import ImageLimits, process_image
from chitram.settings import AccountSettings, Settings
from tests.accounts.conftest import (
    HTML,
    PASSWORD,
    Client,
    bearer,
    create_test_app,
    create_token,
    create_user,
    csrf_of,
    image_rows,
    in_app,
    log_in,
    logged_in,
    new_browser,
    set_cookie_headers,
    token_rows,
    unique_png,
    upload_as,
    user_row,
    who,
    with_db,
)
from tests.images.test_views import tags

VISIBILITIES = ("public", "unlisted", "private")


async def stored_keys(client: Client) -> set[str]:
    storage = client.app.state.storage

    async def listing() -> set[str]:
        return {info.key async for info in storage.list("")}

    return await in_app(client, listing)


async def image_ids(client: Client) -> list[str]:
    return [row.public_id for row in await image_rows(client)]


async def blob_shas(client: Client) -> set[str]:
    async def read(db: AsyncSession) -> set[str]:
        return set((await db.scalars(select(Blob.sha256))).all())

    return await with_db(client, read)


async def member(client: Client, email: str = "leaving@example.com") -> tuple[int, str, dict[str, dict[str, Any]]]:
    """An account with a token and one image of each visibility."""
    user_id = await create_user(client, email)
    token = await create_token(client, user_id)
    images = {}
    for visibility in VISIBILITIES:
        response = await upload_as(client, token, visibility=visibility)
        assert response.status_code == 201, response.text
        images[visibility] = response.json()
    return user_id, token, images


async def delete_account(browser: Client, **form: str) -> Any:
    csrf = await csrf_of(browser, "/account")
    return await browser.post("/account/delete", data={**form, "_csrf_token": csrf}, headers=HTML)


async def served(client: Client, image: dict[str, Any]) -> dict[str, int]:
    """What an anonymous visitor gets for the image's page, bytes, variants and description."""
    visitor = new_browser(client)
    paths = {
        "page": f"/i/{image['id']}",
        "original": f"/i/{image['id']}.png",
        "thumbnail": f"/i/{image['id']}/thumbnail.webp",
        "preview": f"/i/{image['id']}/preview.webp",
        "api": f"/api/v1/images/{image['id']}",
    }
    return {name: (await visitor.get(path, headers=HTML)).status_code for name, path in paths.items()}


# -- deleting an account -------------------------------------------------------------------------


async def test_deleting_the_account_with_its_images(client: Client) -> None:
    user_id, token, images = await member(client)
    keys_before = await stored_keys(client)
    assert len(keys_before) == 9  # three images: original, thumbnail, preview each
    browser = await logged_in(client, "leaving@example.com")
    response = await delete_account(browser, password=PASSWORD, images="delete")
    assert response.status_code == 200, response.text
    assert "Your account was deleted" in response.text and "3 images were deleted" in response.text
    assert any("Max-Age=0" in header for header in set_cookie_headers(response))

    for visibility, image in images.items():
        assert set((await served(client, image)).values()) == {404}, visibility
    assert await stored_keys(client) == set()
    assert await blob_shas(client) == set()
    assert await image_rows(client) == []
    assert await user_row(client, user_id) is None and await token_rows(client) == []
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 401
    assert await who(browser) is None
    assert (await log_in(new_browser(client), "leaving@example.com")).status_code == 401


async def test_deleting_the_account_but_keeping_its_images(client: Client) -> None:
    user_id, token, images = await member(client)
    browser = await logged_in(client, "leaving@example.com")
    response = await delete_account(browser, password=PASSWORD, images="keep")
    assert response.status_code == 200, response.text
    assert "stay online" in response.text and "1 private image were deleted" in response.text

    for visibility in ("public", "unlisted"):
        assert set((await served(client, images[visibility])).values()) == {200}, visibility
    assert set((await served(client, images["private"])).values()) == {404}
    private_sha = images["private"]["sha256"]
    assert not any(private_sha in key for key in await stored_keys(client))  # its bytes are gone too
    rows = {row.public_id: row for row in await image_rows(client)}
    assert set(rows) == {images["public"]["id"], images["unlisted"]["id"]}
    assert all(row.owner_id is None for row in rows.values())
    assert await user_row(client, user_id) is None
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 401
    # The gallery still shows the public one; its delete link still works for whoever holds it.
    gallery = (await client.get("/api/v1/images")).json()["items"]
    assert [item["id"] for item in gallery] == [images["public"]["id"]]
    kept = images["unlisted"]
    deleted = await client.delete(f"/api/v1/images/{kept['id']}", headers={"X-Delete-Token": kept["delete_token"]})
    assert deleted.status_code == 204


async def test_a_wrong_password_deletes_nothing(client: Client) -> None:
    user_id, token, images = await member(client)
    keys_before = await stored_keys(client)
    browser = await logged_in(client, "leaving@example.com")
    response = await delete_account(browser, password="not my password", images="delete")
    assert response.status_code == 403
    assert tags(response.text, "p", id="delete-error") and "password is wrong" in response.text
    assert not set_cookie_headers(response)
    assert await user_row(client, user_id) is not None
    assert len(await image_rows(client)) == 3 and await stored_keys(client) == keys_before
    assert await who(browser) == "leaving@example.com"
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    for visibility in ("public", "unlisted"):
        assert set((await served(client, images[visibility])).values()) == {200}, visibility


async def test_the_choice_about_images_must_be_made(client: Client) -> None:
    user_id, _token, _images = await member(client)
    browser = await logged_in(client, "leaving@example.com")
    for choice in ({}, {"images": ""}, {"images": "maybe"}):
        response = await delete_account(browser, password=PASSWORD, **choice)
        assert response.status_code == 400, choice
        assert "choose whether your images" in response.text.lower()
    assert await user_row(client, user_id) is not None and len(await image_rows(client)) == 3
    assert await who(browser) == "leaving@example.com"


# -- quota ---------------------------------------------------------------------------------------


def _png(image: PILImage.Image, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _stored_size(data: bytes, tmp_path: Path) -> int:
    """The size the app stores for this upload (it re-encodes every original without metadata)."""
    source = tmp_path / f"probe-{len(data)}.png"
    source.write_bytes(data)
    limits = ImageLimits(max_pixels=10**8, max_frames=10, max_total_pixels=10**9)
    return len(process_image(source, limits=limits).original)


def _patterned() -> PILImage.Image:
    image = PILImage.new("RGB", (300, 200))
    image.putdata([((x * 7 + y * 3) % 256, (x * y) % 256, (x ^ y) % 256) for y in range(200) for x in range(300)])
    return image


async def test_uploads_past_the_quota_are_refused_and_leave_nothing_behind(settings: Settings, tmp_path: Path) -> None:
    first = unique_png()
    # Saved with maximum compression, this one is smaller as sent than as stored (re-encoded), so it
    # passes the early size check and is refused only when its stored size is charged.
    squeezed = _png(_patterned(), optimize=True)
    first_size, squeezed_size = _stored_size(first, tmp_path), _stored_size(squeezed, tmp_path)
    assert squeezed_size > len(squeezed)
    # Room for both as sent, and for either as stored, but not for both as stored.
    quota = first_size + squeezed_size - 1
    assert first_size + len(squeezed) <= quota and squeezed_size <= quota
    too_big = _png(PILImage.effect_noise((200, 200), 64).convert("RGB"))
    assert len(too_big) > quota

    limited = dataclasses.replace(settings, accounts=AccountSettings(account_quota_bytes=quota))
    async with AsyncTestClient(app=create_test_app(limited), base_url="http://testserver.local") as client:
        token = await create_token(client, await create_user(client, "me@example.com"))
        kept = await upload_as(client, token, data=first)
        assert kept.status_code == 201, kept.text
        me = (await client.get("/api/v1/me", headers=bearer(token))).json()
        assert (me["used_bytes"], me["quota_bytes"]) == (first_size, quota)
        keys, blobs, rows = await stored_keys(client), await blob_shas(client), await image_ids(client)

        for label, data in (("too big to fit at all", too_big), ("over once stored", squeezed)):
            refused = await upload_as(client, token, data=data)
            assert refused.status_code == 413, (label, refused.text)
            problem = refused.json()
            assert problem["type"] == "/problems/quota-exceeded", label
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert "quota" in problem["detail"] and "/me/images" in problem["detail"], problem["detail"]
            # Nothing left behind: no image, no blob, no stored object, no bytes counted.
            assert await image_ids(client) == rows, label
            assert await blob_shas(client) == blobs, label
            assert await stored_keys(client) == keys, label
            assert (await client.get("/api/v1/me", headers=bearer(token))).json()["used_bytes"] == first_size

        # The upload page says the same, and where to make room.
        browser = await logged_in(client, "me@example.com")
        page = await browser.post(
            "/upload",
            files={"file": ("big.png", too_big, "image/png")},
            data={"_csrf_token": await csrf_of(browser)},
            headers=HTML,
        )
        assert page.status_code == 413 and 'href="/me/images"' in page.text
        assert await image_ids(client) == rows and await stored_keys(client) == keys

        # Deleting an image gives its bytes back; then the second one fits.
        assert (await client.delete(f"/api/v1/images/{kept.json()['id']}", headers=bearer(token))).status_code == 204
        assert (await client.get("/api/v1/me", headers=bearer(token))).json()["used_bytes"] == 0
        fits = await upload_as(client, token, data=squeezed)
        assert fits.status_code == 201, fits.text
        assert (await client.get("/api/v1/me", headers=bearer(token))).json()["used_bytes"] == squeezed_size


async def test_the_quota_is_shown_on_the_account_page(settings: Settings) -> None:
    limited = dataclasses.replace(settings, accounts=AccountSettings(account_quota_bytes=5 * 1024 * 1024))
    async with AsyncTestClient(app=create_test_app(limited), base_url="http://testserver.local") as client:
        await create_user(client, "me@example.com")
        browser = await logged_in(client, "me@example.com")
        page = await browser.get("/account", headers=HTML)
        assert "of 5.0 MiB" in page.text or "of 5 MiB" in page.text, page.text
