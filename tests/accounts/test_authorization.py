"""Who may do what to the owner's images: every actor × action × visibility, through the JSON API
(an API token) and through the pages (a session cookie), on both stacks.

Each table below is the policy. Rows are actors, columns the visibility of the owner's image:

    anonymous   a visitor without an account
    owner       the account that uploaded the image
    other       another account
    disabled    an account an operator disabled while it was logged in and held a token
    admin       an administrator
    …+key       that actor holding the image's delete token (X-Delete-Token / delete_token field)

A private image is "not found" (404, the same answer as for an id that does not exist) for
everyone but its owner and the administrators; the others get 403 where they could see it.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import httpx
import pytest

from tests.accounts.conftest import ACTORS, HTML, VISIBILITIES, World, unique_png, upload_as
from tests.images.test_views import tags

Row = tuple[int, int, int]  # the status for the owner's public, unlisted and private image
MISSING_ID = "Zz9-_missing"  # well-formed, and no image has it
IMMUTABLE = "public, max-age=31536000, immutable"
BYTES_ACCEPT = {"accept": "image/avif,image/webp,*/*"}

# fmt: off

# -- read --------------------------------------------------------------------------------------

# Pages with the browser's session cookie: /i/{id}, /i/{id}/delete, and the bytes /i/{id}.png,
# /i/{id}/thumbnail.webp, /i/{id}/preview.webp (in an <img>, and opened in a tab). A disabled
# account's session is anonymous.
READ_PAGES: dict[str, Row] = {
    #             public  unlisted  private
    "anonymous": (200,    200,      404),
    "owner":     (200,    200,      200),
    "other":     (200,    200,      404),
    "disabled":  (200,    200,      404),
    "admin":     (200,    200,      200),
}

# GET /api/v1/images/{id} with the actor's token. A disabled account's token is refused outright.
READ_API: dict[str, Row] = {
    "anonymous": (200,    200,      404),
    "owner":     (200,    200,      200),
    "other":     (200,    200,      404),
    "disabled":  (401,    401,      401),
    "admin":     (200,    200,      200),
}

# The bytes (original, thumbnail, preview) fetched by a tool that sends its token. Only a private
# image looks at who is asking: public and unlisted bytes are served without reading the token.
# A refused token on private bytes gets the same 404 as an id that does not exist (a 401 there
# would tell a bad token which ids are private images).
READ_BYTES_WITH_TOKEN: dict[str, Row] = {
    "anonymous": (200,    200,      404),
    "owner":     (200,    200,      200),
    "other":     (200,    200,      404),
    "disabled":  (200,    200,      404),
    "admin":     (200,    200,      200),
}

# -- update ------------------------------------------------------------------------------------

# PATCH /api/v1/images/{id} {"title": …}
UPDATE_API: dict[str, Row] = {
    "anonymous":     (403,    403,      404),
    "owner":         (200,    200,      200),
    "other":         (403,    403,      404),
    "disabled":      (401,    401,      401),
    "admin":         (200,    200,      200),
    "anonymous+key": (200,    200,      200),
    "other+key":     (200,    200,      200),
}

# GET /i/{id}/edit: the edit form is for accounts; visitors are sent to log in (303 → /login).
EDIT_FORM: dict[str, Row] = {
    "anonymous": (303,    303,      303),
    "owner":     (200,    200,      200),
    "other":     (403,    403,      404),
    "disabled":  (303,    303,      303),
    "admin":     (200,    200,      200),
}

# POST /i/{id}/edit (title and visibility, with the CSRF token). Without an account the answer is
# 401 "log in" before any image is looked up, so it is the same for every visibility and tells
# nothing; the form has no delete-key field (a delete key edits through the API).
UPDATE_PAGE: dict[str, Row] = {
    "anonymous": (401,    401,      401),
    "owner":     (303,    303,      303),
    "other":     (403,    403,      404),
    "disabled":  (401,    401,      401),
    "admin":     (303,    303,      303),
}

# -- delete ------------------------------------------------------------------------------------

# DELETE /api/v1/images/{id}
DELETE_API: dict[str, Row] = {
    "anonymous":     (403,    403,      404),
    "owner":         (204,    204,      204),
    "other":         (403,    403,      404),
    "disabled":      (401,    401,      401),
    "admin":         (204,    204,      204),
    "anonymous+key": (204,    204,      204),
    "other+key":     (204,    204,      204),
}

# POST /i/{id}/delete (delete_token field when the actor holds the key, with the CSRF token)
DELETE_PAGE: dict[str, Row] = {
    "anonymous":     (403,    403,      404),
    "owner":         (200,    200,      200),
    "other":         (403,    403,      404),
    "disabled":      (403,    403,      404),
    "admin":         (200,    200,      200),
    "anonymous+key": (200,    200,      200),
    "other+key":     (200,    200,      200),
}

# POST /me/images/delete ids=… (the bulk form on "My images"): accounts only (401 "log in" first).
# It always answers 303 back to the list: the account's own images are deleted, the others
# skipped and counted — the same way whether they are someone else's, private, or gone. "My
# images" means one's own for administrators too (they delete others' images on their pages).
DELETED, SKIPPED = "deleted", "skipped"
DELETE_BULK: dict[str, tuple[int | str, int | str, int | str]] = {
    "anonymous": (401,     401,     401),
    "owner":     (DELETED, DELETED, DELETED),
    "other":     (SKIPPED, SKIPPED, SKIPPED),
    "disabled":  (401,     401,     401),
    "admin":     (SKIPPED, SKIPPED, SKIPPED),
}

# -- list: (status, which of the owner's images are shown) -------------------------------------

ALL = frozenset(VISIBILITIES)
NONE: frozenset[str] = frozenset()
PUBLIC = frozenset({"public"})
Listing = dict[str, tuple[int, frozenset[str] | None]]

LIST_PAGES: dict[str, Listing] = {
    "/gallery": {            # public images only, whoever asks
        "anonymous": (200, PUBLIC),
        "owner":     (200, PUBLIC),
        "other":     (200, PUBLIC),
        "disabled":  (200, PUBLIC),
        "admin":     (200, PUBLIC),
    },
    "/me/images": {          # the caller's own, of every visibility; visitors are sent to log in
        "anonymous": (303, None),
        "owner":     (200, ALL),
        "other":     (200, NONE),
        "disabled":  (303, None),
        "admin":     (200, NONE),
    },
}

LIST_API: dict[str, Listing] = {
    "/api/v1/images": {      # public images only; the token is not looked at
        "anonymous": (200, PUBLIC),
        "owner":     (200, PUBLIC),
        "other":     (200, PUBLIC),
        "disabled":  (200, PUBLIC),
        "admin":     (200, PUBLIC),
    },
    "/api/v1/me/images": {   # the token's own images of every visibility
        "anonymous": (401, None),
        "owner":     (200, ALL),
        "other":     (200, NONE),
        "disabled":  (401, None),
        "admin":     (200, NONE),
    },
}

# fmt: on


class Verdicts:
    """Collects every mismatch, so one failing run shows the whole table's disagreements."""

    def __init__(self) -> None:
        self.wrong: list[str] = []

    def status(self, what: str, response: httpx.Response, expected: int) -> bool:
        if response.status_code != expected:
            self.wrong.append(f"{what}: expected {expected}, got {response.status_code} {response.text[:160]!r}")
            return False
        return True

    def check(self, what: str, ok: bool, detail: object = "") -> None:
        if not ok:
            self.wrong.append(f"{what}: {detail}")

    def assert_none(self) -> None:
        if self.wrong:
            pytest.fail(f"{len(self.wrong)} disagreements with the policy:\n" + "\n".join(self.wrong), pytrace=False)


def _normalised(response: httpx.Response, image_id: str) -> list[str]:
    """What a client can tell from a response, line by line, with the image id blanked out."""
    content_type = response.headers.get("content-type", "")
    head = [f"status: {response.status_code}", f"content-type: {content_type}"]
    head.append(f"cache-control: {response.headers.get('cache-control', '')}")
    if content_type.startswith("application/problem+json"):
        body = json.dumps(response.json(), indent=1, sort_keys=True)
    else:
        body = response.text
    return head + body.replace(image_id, "ID").splitlines()


def same_as_missing(
    verdicts: Verdicts, what: str, response: httpx.Response, image_id: str, missing: httpx.Response
) -> None:
    """A 404 for a private image must be indistinguishable from one for an id nobody has (`missing`,
    the same request with MISSING_ID)."""
    seen, expected = _normalised(response, image_id), _normalised(missing, MISSING_ID)
    if seen != expected:
        diff = difflib.unified_diff(expected, seen, "missing id", "this image", lineterm="", n=1)
        verdicts.check(f"{what} differs from a missing id's 404", False, "\n    ".join(["", *diff]))


def _check_401(verdicts: Verdicts, what: str, response: httpx.Response) -> None:
    challenge = response.headers.get("www-authenticate", "")
    verdicts.check(f"{what} 401 without a Bearer challenge", challenge.startswith("Bearer"), challenge)
    verdicts.check(
        f"{what} 401 is not a problem", response.headers.get("content-type", "").startswith("application/problem+json")
    )


def _check_bytes_cache(verdicts: Verdicts, what: str, response: httpx.Response, visibility: str) -> None:
    cache_control = response.headers.get("cache-control", "")
    if visibility == "private":
        verdicts.check(f"{what} cache", cache_control == "private, no-cache", cache_control)
        verdicts.check(f"{what} shared-cacheable", "public" not in cache_control and "immutable" not in cache_control)
    else:
        verdicts.check(f"{what} cache", cache_control == IMMUTABLE, cache_control)


def _byte_paths(image: dict[str, Any]) -> list[str]:
    return [f"/i/{image['id']}.png", f"/i/{image['id']}/thumbnail.webp", f"/i/{image['id']}/preview.webp"]


def _actor_and_key(row: str) -> tuple[str, bool]:
    actor, _, key = row.partition("+")
    return actor, key == "key"


# -- read ----------------------------------------------------------------------------------------


async def test_read_through_pages(world: World) -> None:
    verdicts = Verdicts()
    for name in ACTORS:
        actor = world[name]
        for visibility, expected in zip(VISIBILITIES, READ_PAGES[name], strict=True):
            image = world.images[visibility]
            image_id = image["id"]
            for path, headers in [
                (f"/i/{image_id}", HTML),
                (f"/i/{image_id}/delete", HTML),
                *((path, BYTES_ACCEPT) for path in _byte_paths(image)),  # in an <img>
                *((path, HTML) for path in _byte_paths(image)),  # opened in a tab
            ]:
                what = f"{name} GET {path.replace(image_id, visibility)} ({headers['accept'].split(',')[0]})"
                response = await actor.page("GET", path, headers=headers)
                if not verdicts.status(what, response, expected):
                    continue
                if expected == 404:
                    missing = await actor.page("GET", path.replace(image_id, MISSING_ID), headers=headers)
                    same_as_missing(verdicts, what, response, image_id, missing)
                elif path.endswith((".png", ".webp")):
                    _check_bytes_cache(verdicts, what, response, visibility)
                elif visibility == "private":
                    # The page of a private image: nothing between the viewer and us may keep it.
                    verdicts.check(f"{what} cache", response.headers.get("cache-control") == "no-store")
    verdicts.assert_none()


async def test_read_through_the_api(world: World) -> None:
    verdicts = Verdicts()
    for name in ACTORS:
        for visibility, expected, expected_bytes in zip(
            VISIBILITIES, READ_API[name], READ_BYTES_WITH_TOKEN[name], strict=True
        ):
            image = world.images[visibility]
            image_id = image["id"]
            checks = [(f"/api/v1/images/{image_id}", expected), *((p, expected_bytes) for p in _byte_paths(image))]
            for path, status in checks:
                what = f"{name} GET {path.replace(image_id, visibility)} with token"
                response = await world.api(name, "GET", path)
                if not verdicts.status(what, response, status):
                    continue
                if status == 404:
                    missing = await world.api(name, "GET", path.replace(image_id, MISSING_ID))
                    same_as_missing(verdicts, what, response, image_id, missing)
                elif status == 401:
                    _check_401(verdicts, what, response)
                elif path.startswith("/api/"):
                    verdicts.check(f"{what} id", response.json()["id"] == image_id)
                    verdicts.check(f"{what} no delete token", "delete_token" not in response.json())
                else:
                    _check_bytes_cache(verdicts, what, response, visibility)
    verdicts.assert_none()


# -- update --------------------------------------------------------------------------------------


async def test_update_through_the_api(world: World) -> None:
    verdicts = Verdicts()
    for row, statuses in UPDATE_API.items():
        name, with_key = _actor_and_key(row)
        for visibility, expected in zip(VISIBILITIES, statuses, strict=True):
            image = world.images[visibility]
            before = (await world.owner_sees(image["id"])).json()["title"]
            title = f"set by {row} on {visibility}"
            headers = {"X-Delete-Token": image["delete_token"]} if with_key else {}
            what = f"{row} PATCH {visibility}"
            response = await world.api(
                name, "PATCH", f"/api/v1/images/{image['id']}", json={"title": title}, headers=headers
            )
            verdicts.status(what, response, expected)
            if expected == 404:
                path = f"/api/v1/images/{MISSING_ID}"
                missing = await world.api(name, "PATCH", path, json={"title": "x"}, headers=headers)
                same_as_missing(verdicts, what, response, image["id"], missing)
            if expected == 401:
                _check_401(verdicts, what, response)
            after = (await world.owner_sees(image["id"])).json()
            wanted = title if expected == 200 else before
            verdicts.check(f"{what} title", after["title"] == wanted, f"{after['title']!r} != {wanted!r}")
            verdicts.check(f"{what} visibility", after["visibility"] == visibility, after["visibility"])
    verdicts.assert_none()


async def test_update_through_pages(world: World) -> None:
    verdicts = Verdicts()
    for name in ACTORS:
        actor = world[name]
        for visibility, form_status, expected in zip(VISIBILITIES, EDIT_FORM[name], UPDATE_PAGE[name], strict=True):
            image = world.images[visibility]
            form = await actor.page("GET", f"/i/{image['id']}/edit")
            if verdicts.status(f"{name} GET edit form of {visibility}", form, form_status) and form_status == 303:
                verdicts.check(
                    f"{name} edit form redirect",
                    form.headers["location"].startswith("/login?next=%2Fi%2F"),
                    form.headers["location"],
                )
            before = (await world.owner_sees(image["id"])).json()["title"]
            title = f"set by {name} on {visibility}"
            what = f"{name} POST edit of {visibility}"
            response = await actor.form(f"/i/{image['id']}/edit", {"title": title, "visibility": visibility})
            if verdicts.status(what, response, expected) and expected == 303:
                verdicts.check(f"{what} redirect", response.headers["location"] == f"/i/{image['id']}")
            if expected == 404:
                missing = await actor.form(f"/i/{MISSING_ID}/edit", {"title": "x", "visibility": visibility})
                same_as_missing(verdicts, what, response, image["id"], missing)
            after = (await world.owner_sees(image["id"])).json()
            wanted = title if expected == 303 else before
            verdicts.check(f"{what} title", after["title"] == wanted, f"{after['title']!r} != {wanted!r}")
            verdicts.check(f"{what} visibility", after["visibility"] == visibility, after["visibility"])
    verdicts.assert_none()


# -- delete --------------------------------------------------------------------------------------


async def _still_there(world: World, image: dict[str, Any]) -> tuple[bool, bool]:
    """(the owner's token still finds it, its bytes are still served to the owner)."""
    found = await world.owner_sees(image["id"])
    served = await world.api("owner", "GET", f"/i/{image['id']}.png")
    return found.status_code == 200, served.status_code == 200


async def _check_deleted(verdicts: Verdicts, world: World, what: str, image: dict[str, Any], deleted: bool) -> None:
    found, served = await _still_there(world, image)
    verdicts.check(f"{what}: metadata", found != deleted, "still there" if found else "gone")
    verdicts.check(f"{what}: bytes", served != deleted, "still served" if served else "gone")


async def test_delete_through_the_api(world: World) -> None:
    verdicts = Verdicts()
    for row, statuses in DELETE_API.items():
        name, with_key = _actor_and_key(row)
        for visibility, expected in zip(VISIBILITIES, statuses, strict=True):
            image = await world.upload(visibility)
            headers = {"X-Delete-Token": image["delete_token"]} if with_key else {}
            what = f"{row} DELETE {visibility}"
            response = await world.api(name, "DELETE", f"/api/v1/images/{image['id']}", headers=headers)
            verdicts.status(what, response, expected)
            if expected == 404:
                missing = await world.api(name, "DELETE", f"/api/v1/images/{MISSING_ID}", headers=headers)
                same_as_missing(verdicts, what, response, image["id"], missing)
            if expected == 401:
                _check_401(verdicts, what, response)
            await _check_deleted(verdicts, world, what, image, deleted=expected == 204)
    verdicts.assert_none()


async def test_delete_through_the_image_page(world: World) -> None:
    verdicts = Verdicts()
    for row, statuses in DELETE_PAGE.items():
        name, with_key = _actor_and_key(row)
        actor = world[name]
        for visibility, expected in zip(VISIBILITIES, statuses, strict=True):
            image = await world.upload(visibility)
            form = {"delete_token": image["delete_token"]} if with_key else {}
            what = f"{row} POST delete of {visibility}"
            response = await actor.form(f"/i/{image['id']}/delete", form)
            if verdicts.status(what, response, expected) and expected == 200:
                verdicts.check(f"{what} page", ">Image deleted</h1>" in response.text)
            if expected == 404:
                missing = await actor.form(f"/i/{MISSING_ID}/delete", form)
                same_as_missing(verdicts, what, response, image["id"], missing)
            await _check_deleted(verdicts, world, what, image, deleted=expected == 200)
    verdicts.assert_none()


BULK_LOCATIONS = {DELETED: "/me/images?deleted=1", SKIPPED: "/me/images?deleted=0&skipped=1"}


async def test_delete_through_my_images(world: World) -> None:
    verdicts = Verdicts()
    for name in ACTORS:
        actor = world[name]
        for visibility, outcome in zip(VISIBILITIES, DELETE_BULK[name], strict=True):
            image = await world.upload(visibility)
            what = f"{name} POST /me/images/delete of {visibility}"
            response = await actor.form("/me/images/delete", {"ids": [image["id"]]})
            if isinstance(outcome, int):
                verdicts.status(what, response, outcome)
            elif verdicts.status(what, response, 303):
                location = response.headers["location"]
                verdicts.check(f"{what} redirect", location == BULK_LOCATIONS[outcome], location)
            if outcome == SKIPPED:
                missing = await actor.form("/me/images/delete", {"ids": [MISSING_ID]})
                verdicts.check(
                    f"{what} differs from a missing id",
                    missing.headers.get("location") == response.headers.get("location"),
                    f"{missing.headers.get('location')} != {response.headers.get('location')}",
                )
            await _check_deleted(verdicts, world, what, image, deleted=outcome == DELETED)
    verdicts.assert_none()


# -- list ----------------------------------------------------------------------------------------


def _shown(world: World, text: str) -> frozenset[str]:
    return frozenset(v for v, image in world.images.items() if image["id"] in text)


@pytest.mark.parametrize("channel", ["pages", "api"])
async def test_lists(world: World, channel: str) -> None:
    verdicts = Verdicts()
    tables = LIST_PAGES if channel == "pages" else LIST_API
    for path, table in tables.items():
        for name, (expected, shown) in table.items():
            if channel == "pages":
                response = await world[name].page("GET", path)
            else:
                response = await world.api(name, "GET", path)
            what = f"{name} GET {path}"
            if not verdicts.status(what, response, expected) or shown is None:
                if expected == 303:
                    verdicts.check(f"{what} redirect", response.headers["location"] == "/login?next=%2Fme%2Fimages")
                continue
            if channel == "api":
                listed = {item["id"] for item in response.json()["items"]}
                visible = frozenset(v for v, image in world.images.items() if image["id"] in listed)
            else:
                visible = _shown(world, response.text)
            verdicts.check(f"{what} shows", visible == shown, f"{sorted(visible)} != {sorted(shown)}")
    verdicts.assert_none()


# -- private needs an account; bulk deletes ---------------------------------------------------------


async def test_only_signed_in_uploaders_can_choose_private(world: World) -> None:
    def private_offered(html: str) -> bool:
        return bool(tags(html, "input", name="visibility", value="private"))

    for name, offered in (("anonymous", False), ("disabled", False), ("owner", True)):
        home = await world[name].page("GET", "/")
        assert private_offered(home.text) is offered, name

    files = {"file": ("photo.png", unique_png(), "image/png")}
    for name, api_status, page_status in (("anonymous", 400, 400), ("disabled", 401, 400), ("other", 201, 201)):
        actor = world[name]
        through_api = await world.api(name, "POST", "/api/v1/images", files=files, data={"visibility": "private"})
        assert through_api.status_code == api_status, (name, through_api.text)
        through_page = await actor.page(
            "POST", "/upload", files=files, data={"visibility": "private", "_csrf_token": actor.csrf}
        )
        assert through_page.status_code == page_status, (name, through_page.text)
        if page_status == 400:
            assert "signed-in" in through_page.text
    # The page upload belongs to the session's account: it is on their list, private.
    mine = (await world.api("other", "GET", "/api/v1/me/images")).json()["items"]
    assert [item["visibility"] for item in mine] == ["private", "private"]


async def test_a_bulk_delete_deletes_what_is_yours_and_skips_the_rest(world: World) -> None:
    others_token = world["other"].token
    assert others_token
    own = await upload_as(world.tool, others_token, visibility="unlisted")
    assert own.status_code == 201
    own_id = own.json()["id"]
    ticked = [own_id, world.images["public"]["id"], world.images["private"]["id"], MISSING_ID]
    response = await world["other"].form("/me/images/delete", {"ids": ticked})
    assert response.status_code == 303
    assert response.headers["location"] == "/me/images?deleted=1&skipped=3"
    assert (await world.api("other", "GET", f"/api/v1/images/{own_id}")).status_code == 404
    for visibility in ("public", "private"):
        assert (await world.owner_sees(world.images[visibility]["id"])).status_code == 200, visibility
    notice = await world["other"].page("GET", response.headers["location"])
    assert "1 image(s) deleted. 3 could not be deleted" in notice.text
