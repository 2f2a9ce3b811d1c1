"""Page cursors are opaque: they carry no row id anyone can read, and only ours are accepted."""

from __future__ import annotations

import base64
import string

import pytest

from chitram.errors import InvalidRequestError
from chitram.images.cursors import PageCursors
from tests.images.test_api import Client, png_bytes, upload
from tests.images.test_views import HTML, HTMX

SECRET = "cursor-test-secret-that-is-long-enough-0123456789"


def test_a_cursor_round_trips_and_is_stable() -> None:
    cursors = PageCursors(SECRET)
    for position in (1, 2, 41, 2**31, 2**63 - 1):
        cursor = cursors.encode("public", position)
        assert cursors.decode("public", cursor) == position
        assert cursors.encode("public", position) == cursor  # same page, same URL
        assert len(cursor) == 32 and set(cursor) <= set(string.ascii_letters + string.digits + "-_")


def test_a_cursor_tells_nothing_about_the_row_id() -> None:
    cursors = PageCursors(SECRET)
    first, second = cursors.encode("public", 1000), cursors.encode("public", 1001)
    # Neighbouring rows share nothing visible, and the old format (base64 of the id) is not in it.
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 8
    for cursor in (first, second):
        raw = base64.urlsafe_b64decode(cursor + "==")
        assert b"1000" not in raw and (1000).to_bytes(8, "big") not in raw
    # Another installation (another secret) mints other cursors and refuses these.
    other = PageCursors(SECRET + "x")
    assert other.encode("public", 1000) != first
    with pytest.raises(InvalidRequestError):
        other.decode("public", first)


def test_tampered_forged_and_foreign_cursors_are_refused() -> None:
    cursors = PageCursors(SECRET)
    good = cursors.encode("owner:7", 500)
    alphabet = string.ascii_letters + string.digits + "-_"
    tampered = [good[:i] + alphabet[(alphabet.index(c) + 1) % 64] + good[i + 1 :] for i, c in enumerate(good)]
    forged = [
        "",
        "MTA",  # the old format: base64 of "10"
        "A" * 32,
        good + "A",
        good[:-1],
        good.upper(),
        "!" * 32,
        "é" * 32,
    ]
    for cursor in [*tampered, *forged]:
        with pytest.raises(InvalidRequestError, match="cursor is not valid"):
            cursors.decode("owner:7", cursor)
    # Bound to its listing: another account's, or the public gallery's, cannot be replayed here.
    for listing in ("owner:8", "public"):
        with pytest.raises(InvalidRequestError):
            cursors.decode(listing, good)


BAD_CURSORS = ["MTA", "A" * 32, "not-a-cursor!", "%00", "x" * 500]


async def test_bad_cursors_are_a_400_problem_on_the_api(client: Client) -> None:
    for index in range(3):
        await upload(client, png_bytes(color=(index, 1, 2)), visibility="public")
    page = (await client.get("/api/v1/images", params={"limit": 1})).json()
    good = page["next_cursor"]
    assert good and len(good) == 32
    for cursor in [*BAD_CURSORS, good[:-1] + ("A" if good[-1] != "A" else "B")]:
        response = await client.get("/api/v1/images", params={"cursor": cursor})
        assert response.status_code == 400, (cursor, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"] == "/problems/invalid-cursor"
        assert "next_cursor" in problem["detail"]
    following = await client.get("/api/v1/images", params={"limit": 1, "cursor": good})
    assert following.status_code == 200 and following.json()["items"]


async def test_bad_cursors_are_a_400_on_the_gallery_page_and_fragment(client: Client) -> None:
    for cursor in BAD_CURSORS:
        page = await client.get("/gallery", params={"cursor": cursor}, headers=HTML)
        assert page.status_code == 400, cursor
        assert "text/html" in page.headers["content-type"]
        assert "cursor is not valid" in page.text
        fragment = await client.get("/gallery", params={"cursor": cursor}, headers=HTMX)
        assert fragment.status_code == 400, cursor
