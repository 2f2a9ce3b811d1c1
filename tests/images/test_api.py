"""The JSON API for images, on both stacks."""

from __future__ import annotations

import base64
import io
from typing import Any

import redis.asyncio
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from tests.images import hostile

Client = AsyncTestClient[Litestar]


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


async def upload(
    client: Client, data: bytes, *, filename: str = "picture.png", content_type: str = "image/png", **fields: str
) -> Any:
    return await client.post("/api/v1/images", files={"file": (filename, data, content_type)}, data=fields)


async def test_upload_returns_links_and_metadata(client: Client) -> None:
    response = await upload(client, png_bytes((64, 48)), title="Red square", visibility="public")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["width"] == 64 and body["height"] == 48
    assert body["content_type"] == "image/png"
    assert body["title"] == "Red square"
    assert body["visibility"] == "public"
    assert len(body["sha256"]) == 64
    assert len(body["delete_token"]) >= 40
    assert body["url"] == f"http://testserver.local/i/{body['id']}.png"
    assert body["page_url"] == f"http://testserver.local/i/{body['id']}"
    assert body["thumbnail_url"].endswith("/thumbnail.webp")
    assert body["preview_url"].endswith("/preview.webp")
    assert body["size"] > 0 and "created_at" in body
    # 72 random bits, URL-safe
    assert len(body["id"]) == 12 and all(c.isalnum() or c in "-_" for c in body["id"])


async def test_default_visibility_is_unlisted_and_delete_token_is_not_shown_again(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    assert created["visibility"] == "unlisted"
    fetched = await client.get(f"/api/v1/images/{created['id']}")
    assert fetched.status_code == 200
    assert "delete_token" not in fetched.json()
    assert fetched.json()["sha256"] == created["sha256"]


async def test_listing_shows_public_images_only_newest_first_with_keyset_cursor(client: Client) -> None:
    public_ids = []
    for index in range(5):
        body = (await upload(client, png_bytes(color=(index, 10, 10)), visibility="public")).json()
        public_ids.append(body["id"])
    await upload(client, png_bytes(color=(99, 99, 99)), visibility="unlisted")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/images", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(public_ids))


async def test_listing_limit_and_cursor_are_validated(client: Client) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor!"}):
        response = await client.get("/api/v1/images", params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"]


async def test_patch_needs_the_delete_token(client: Client) -> None:
    created = (await upload(client, png_bytes(), title="before")).json()
    path = f"/api/v1/images/{created['id']}"
    wrong = await client.patch(path, json={"title": "x"}, headers={"X-Delete-Token": "wrong"})
    assert wrong.status_code == 403
    missing = await client.patch(path, json={"title": "x"})
    assert missing.status_code == 403
    changed = await client.patch(
        path, json={"title": "after", "visibility": "public"}, headers={"X-Delete-Token": created["delete_token"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "after" and changed.json()["visibility"] == "public"
    # the cached copy was invalidated
    assert (await client.get(path)).json()["title"] == "after"
    listed = (await client.get("/api/v1/images")).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]


async def test_patch_rejects_unknown_visibility_and_fields(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    headers = {"X-Delete-Token": created["delete_token"]}
    path = f"/api/v1/images/{created['id']}"
    bad = await client.patch(path, json={"visibility": "secret"}, headers=headers)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    unknown = await client.patch(path, json={"owner": "me"}, headers=headers)
    assert unknown.status_code == 400


async def test_delete_flow(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    path = f"/api/v1/images/{created['id']}"
    assert (await client.delete(path, headers={"X-Delete-Token": "nope"})).status_code == 403
    assert (await client.get(created["url"])).status_code == 200
    response = await client.delete(path, headers={"X-Delete-Token": created["delete_token"]})
    assert response.status_code == 204
    assert (await client.get(path)).status_code == 404
    assert (await client.get(created["url"])).status_code == 404
    assert (await client.delete(path, headers={"X-Delete-Token": created["delete_token"]})).status_code == 404


async def test_delete_token_in_query_string_is_not_accepted(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    response = await client.delete(f"/api/v1/images/{created['id']}?delete_token={created['delete_token']}")
    assert response.status_code == 403


async def test_unknown_api_routes_and_methods_are_problems(client: Client) -> None:
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    problem = missing.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == 404
    wrong_method = await client.put("/api/v1/images")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("application/problem+json")


async def test_upload_without_file_or_not_multipart_is_a_clear_400(client: Client) -> None:
    no_file = await client.post("/api/v1/images", data={"title": "x"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert no_file.status_code == 400
    assert "field 'file'" in no_file.json()["detail"]
    as_json = await client.post("/api/v1/images", json={"file": "x"})
    assert as_json.status_code == 400
    assert "multipart/form-data" in as_json.json()["detail"]


async def test_upload_rejects_bad_visibility_and_long_titles(client: Client) -> None:
    bad = await upload(client, png_bytes(), visibility="private-ish")
    assert bad.status_code == 400 and "visibility" in bad.json()["detail"]
    long = await upload(client, png_bytes(), title="x" * 201)
    assert long.status_code == 400 and "200" in long.json()["detail"]


async def test_openapi_document_describes_the_api(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    assert "/api/v1/images" in paths and "/api/v1/images/{image_id}" in paths
    upload_body = paths["/api/v1/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in upload_body["schema"]["properties"]


async def test_gps_and_camera_data_are_gone_and_image_is_upright(client: Client) -> None:
    source = hostile.jpeg_with_gps_and_orientation()
    with Image.open(io.BytesIO(source)) as original:
        stored_width, stored_height = original.size
    created = (await upload(client, source, filename="holiday.jpg", content_type="image/jpeg")).json()
    assert (created["width"], created["height"]) == (stored_height, stored_width)
    served = (await client.get(created["url"])).content
    with Image.open(io.BytesIO(served)) as image:
        assert image.size == (stored_height, stored_width)
        assert not image.getexif()
        assert "exif" not in image.info
    assert b"GPS" not in served and b"SECRET" not in served


async def test_junk_ids_and_cursors_are_clean_4xx(client: Client) -> None:
    # A control character in the path is refused before routing (chitram.guard); a long id is
    # simply not found.
    for path, status in (
        ("/api/v1/images/%00", 400),
        ("/api/v1/images/" + "a" * 300, 404),
        ("/i/%00.png", 400),
        ("/i/%00/thumbnail.webp", 400),
    ):
        response = await client.get(path)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for method in ("PATCH", "DELETE"):
        response = await client.request(method, "/api/v1/images/%00", json={}, headers={"X-Delete-Token": "x"})
        assert response.status_code == 400
        response = await client.request(method, "/api/v1/images/" + "b" * 300, json={}, headers={"X-Delete-Token": "x"})
        assert response.status_code == 404
    huge = base64.urlsafe_b64encode(b"9" * 40).decode()
    assert (await client.get("/api/v1/images", params={"cursor": huge})).status_code == 400


async def test_an_unreadable_cache_entry_is_a_miss(app: Litestar, client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    await client.get(f"/api/v1/images/{created['id']}")
    # Written straight into the store, as another version would. The app's own Redis client
    # belongs to the test client's event loop, so the test uses a client of its own.
    stores = app.state.stores
    if stores.redis is not None:
        own = redis.asyncio.Redis.from_url(app.state.settings.cache.redis_url)
        try:
            await own.set("chitram:cache:image:" + created["id"], b'{"shape": "old"}')
        finally:
            await own.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    else:
        await stores.memory.set("image:" + created["id"], b'{"shape": "old"}')
    response = await client.get(f"/api/v1/images/{created['id']}")
    assert response.status_code == 200, response.text
    assert (await client.get(created["url"])).status_code == 200
