"""/admin, the operator's page: the status facts and the newest uploads for administrators only,
deleting any image from it, and reading counters instead of counting the images table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text

from chitram.db import Database
from tests.admin.test_admin_pages import log_in, make_token, make_user
from tests.images.test_api import png_bytes
from tests.images.test_services import own_sessions, stored_keys
from tests.images.test_views import HTML, csrf_token

Client = AsyncTestClient[Litestar]


async def upload_as(client: Client, token: str, data: bytes, *, visibility: str = "private") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/images",
        files={"file": ("a.png", data, "image/png")},
        data={"visibility": visibility, "title": "spam from " + visibility},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_only_administrators_see_the_operator_page(app: Litestar, client: Client) -> None:
    await make_user(app, "boss@example.org", admin=True)
    await make_user(app, "someone@example.org")
    anonymous = await client.get("/admin", headers=HTML, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    await log_in(client, "someone@example.org")
    assert (await client.get("/admin", headers=HTML)).status_code == 403
    token = await csrf_token(client)
    assert (await client.post("/admin/images/AAAAAAAAAAAA/delete", data={"_csrf_token": token})).status_code == 403
    await client.post("/logout", data={"_csrf_token": token}, headers=HTML)

    await log_in(client, "boss@example.org")
    page = await client.get("/admin", headers=HTML)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert '<a href="/admin/users">Users</a>' in page.text
    assert "Nothing has been uploaded yet." in page.text
    # The facts `status` reports: components, counters, backups, uploads.
    for fact in ("Database", "Storage", "Cache", "Images", "Backup", "Uploads, last 24 h", "Refused, last 24 h"):
        assert f"<dt>{fact}</dt>" in page.text
    assert "no verified backup is recorded" in page.text  # needs attention: there is no backup yet
    assert "<style" not in page.text and "<script>" not in page.text and " style=" not in page.text


async def test_an_administrator_sees_the_newest_uploads_and_deletes_one(app: Litestar, client: Client) -> None:
    await make_user(app, "boss@example.org", admin=True)
    owner = await make_token(app, await make_user(app, "owner@example.org"))
    kept = await upload_as(client, owner, png_bytes(color=(1, 1, 1)), visibility="public")
    spam = await upload_as(client, owner, png_bytes(color=(2, 2, 2)))
    await client.post("/api/v1/images", files={"file": ("x.txt", b"not an image", "text/plain")})
    await log_in(client, "boss@example.org")

    page = await client.get("/admin", headers=HTML)
    assert page.status_code == 200
    ids = re.findall(r'<li class="card" data-id="([^"]+)">', page.text)
    assert ids == [spam["id"], kept["id"]]  # newest first, private ones too
    assert f'src="{spam["thumbnail_url"]}"' in page.text
    assert '<dd id="image-count">2</dd>' in page.text
    assert "2 stored" in page.text and "not an image 1" in page.text
    thumbnail = await client.get(spam["thumbnail_url"])  # the admin's session may see a private one
    assert thumbnail.status_code == 200

    token = await csrf_token(client)
    refused = await client.post(f"/admin/images/{spam['id']}/delete", headers=HTML)
    assert refused.status_code == 403  # no CSRF token, nothing deleted
    deleted = await client.post(
        f"/admin/images/{spam['id']}/delete", data={"_csrf_token": token}, headers=HTML, follow_redirects=False
    )
    assert deleted.status_code == 303 and deleted.headers["location"] == f"/admin?deleted={spam['id']}"
    after = await client.get(deleted.headers["location"], headers=HTML)
    assert f"Image {spam['id']} was deleted." in after.text
    assert re.findall(r'<li class="card" data-id="([^"]+)">', after.text) == [kept["id"]]
    assert '<dd id="image-count">1</dd>' in after.text

    # Row and objects are gone; the other image's objects stay.
    async with own_sessions(app) as session:
        rows = (await session.execute(text("SELECT public_id FROM images"))).scalars().all()
    assert rows == [kept["id"]]
    assert not [key for key in await stored_keys(app) if spam["sha256"] in key]
    assert len([key for key in await stored_keys(app) if kept["sha256"] in key]) == 3
    assert (
        await client.get(f"/api/v1/images/{spam['id']}", headers={"Authorization": f"Bearer {owner}"})
    ).status_code == 404
    missing = await client.post("/admin/images/AAAAAAAAAAAA/delete", data={"_csrf_token": token}, headers=HTML)
    assert missing.status_code == 404


@contextmanager
def statements_of(database: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(database.engine.sync_engine, "before_cursor_execute", remember)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", remember)


@pytest.mark.parametrize("rows", [3000])
async def test_the_page_reads_counters_and_one_keyset_page_never_the_whole_table(
    app: Litestar, client: Client, rows: int
) -> None:
    """Rows seeded straight into the tables (as a million would be): the page shows the counter,
    not a count of the table, and every statement on images is bounded by LIMIT."""
    await make_user(app, "boss@example.org", admin=True)
    async with own_sessions(app) as session:
        await session.execute(
            text(
                "INSERT INTO blobs (sha256, content_type, size, width, height, frames, original_key, thumbnail_key,"
                " thumbnail_size, thumbnail_width, thumbnail_height, preview_key, preview_size, preview_width,"
                " preview_height, refcount, created_at, updated_at) VALUES ('ab', 'image/png', 10, 1, 1, 1,"
                " 'o', 't', 1, 1, 1, 'p', 1, 1, 1, :rows, '2026-01-01', '2026-01-01')"
            ),
            {"rows": rows},
        )
        await session.execute(
            text(
                "INSERT INTO images (public_id, visibility, blob_sha256, created_at, updated_at)"
                " VALUES (:public_id, 'public', 'ab', '2026-01-01', '2026-01-01')"
            ),
            [{"public_id": f"{n:012d}"} for n in range(rows)],
        )
        await session.execute(text("INSERT INTO counters (name, value) VALUES ('images', 1000000)"))
        await session.commit()
    await log_in(client, "boss@example.org")

    with statements_of(app.state.database) as seen:
        page = await client.get("/admin", headers=HTML)
    assert page.status_code == 200
    assert '<dd id="image-count">1000000</dd>' in page.text  # the counter, not the 3000 rows
    assert len(re.findall(r'<li class="card"', page.text)) == 48
    assert "Older uploads" in page.text
    touching_images = [statement for statement in seen if re.search(r"\bfrom images\b", statement)]
    assert touching_images, seen
    for statement in [*touching_images, *[s for s in seen if "blobs" in s or "upload_outcomes" in s]]:
        assert "count(" not in statement, statement
    for statement in touching_images:
        assert " limit " in statement, statement

    older = re.search(r'href="(/admin\?cursor=[^"]+)"', page.text)
    assert older is not None
    second = await client.get(older.group(1), headers=HTML)
    assert len(re.findall(r'<li class="card"', second.text)) == 48
    assert "Back to the newest uploads" in second.text
