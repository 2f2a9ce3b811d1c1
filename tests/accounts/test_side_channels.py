"""Side channels, checked by structure rather than by the clock (a stopwatch test flakes; the
work done does not): for anyone who may not see it, a private image is answered by exactly the
same SQL statements, cache operations and response as an id that never existed; and uploading
content another account already stored does the same work, and gets the same kind of answer, as
uploading new content."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from chitram.images.services import CACHE_PREFIX, new_public_id
from tests.accounts.conftest import World, bearer, unique_png, upload_as

# Headers that describe the answer (not the moment or the connection).
COMPARED_HEADERS = ("content-type", "cache-control", "vary", "www-authenticate", "set-cookie", "content-length")


@dataclass
class Observed:
    status: int
    body: str
    headers: dict[str, str]
    statements: list[str] = field(default_factory=list)
    cache: list[tuple[str, str]] = field(default_factory=list)
    storage: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def recording(world: World, observed: Observed, *, hide: dict[str, str]) -> Iterator[None]:
    """Record every SQL statement, cache call and storage write the app makes; `hide` maps
    values (ids, hashes) to placeholders so two cases can be compared."""

    def masked(text: str) -> str:
        for value, placeholder in hide.items():
            text = text.replace(value, placeholder)
        return text

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # A token's "last used" is written at most once a minute, whatever it asks for: it
        # belongs to the asker, not to the image asked about.
        if not statement.startswith("UPDATE api_tokens SET last_used_at"):
            observed.statements.append(statement)

    engine = world.app.state.database.engine.sync_engine
    cache = world.app.state.cache
    storage = world.app.state.storage
    originals = {name: getattr(cache, name) for name in ("get", "add", "invalidate")}
    original_put = storage.put

    def spy(name: str) -> Any:
        async def call(key: str, *args: Any, **kwargs: Any) -> Any:
            observed.cache.append((name, masked(key)))
            return await originals[name](key, *args, **kwargs)

        return call

    async def put(key: str, data: bytes, **kwargs: Any) -> None:
        observed.storage.append(("put", masked(key)))
        await original_put(key, data, **kwargs)

    event.listen(engine, "before_cursor_execute", on_execute)
    for name in originals:
        setattr(cache, name, spy(name))
    storage.put = put
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        for name in originals:
            delattr(cache, name)
        del storage.put


async def observe(world: World, request: Any, *, hide: dict[str, str]) -> Observed:
    observed = Observed(0, "", {})
    with recording(world, observed, hide=hide):
        response: httpx.Response = await request()
    observed.status = response.status_code
    body = response.text
    for value, placeholder in hide.items():
        body = body.replace(value, placeholder)
    observed.body = body
    observed.headers = {name: response.headers.get(name, "") for name in COMPARED_HEADERS}
    observed.headers["content-length"] = str(len(body))  # the id is masked in the body above
    return observed


# (name, how the actor asks) for every way an id is looked up.
def ways_to_ask(world: World, actor: str, image_id: str) -> dict[str, Any]:
    who = world[actor]
    token = {"X-Delete-Token": "a-delete-token-that-is-wrong-for-every-image-0000"}
    return {
        "api get": lambda: world.api(actor, "GET", f"/api/v1/images/{image_id}"),
        "api patch": lambda: world.api(actor, "PATCH", f"/api/v1/images/{image_id}", json={"title": "x"}),
        "api patch with token": lambda: world.api(
            actor, "PATCH", f"/api/v1/images/{image_id}", json={"title": "x"}, headers=token
        ),
        "api delete with token": lambda: world.api(actor, "DELETE", f"/api/v1/images/{image_id}", headers=token),
        "api signed-url": lambda: world.api(actor, "POST", f"/api/v1/images/{image_id}/signed-url", json={}),
        "page": lambda: who.page("GET", f"/i/{image_id}"),
        "delete page": lambda: who.page("GET", f"/i/{image_id}/delete"),
        "original": lambda: who.page("GET", f"/i/{image_id}.png"),
        "original with a forged link": lambda: who.page(
            "GET", f"/i/{image_id}.png?expires=4102444800&signature=AAAAAAAAAAAAAAAAAAAAAA"
        ),
        "thumbnail": lambda: who.page("GET", f"/i/{image_id}/thumbnail.webp"),
        "head preview": lambda: who.page("HEAD", f"/i/{image_id}/preview.webp"),
    }


# Nobody; another account (logged in on pages, a token on the API); a disabled account.
@pytest.mark.parametrize("actor", ["anonymous", "other", "disabled"])
async def test_a_private_image_costs_what_an_unknown_id_costs(world: World, actor: str) -> None:
    private = world.images["private"]["id"]
    for name in ways_to_ask(world, actor, private):
        unknown = new_public_id()
        # Settle the asker's own state first (a disabled account's session is ended by its first
        # request, a token's "last used" is written): that work is about who asks, not what.
        await ways_to_ask(world, actor, new_public_id())[name]()
        # Twice each: a first request must not leave anything (a cache entry) that makes the
        # second one cheaper for the private image than for the unknown id.
        for attempt in (1, 2):
            seen_private = await observe(world, ways_to_ask(world, actor, private)[name], hide={private: "<ID>"})
            seen_unknown = await observe(world, ways_to_ask(world, actor, unknown)[name], hide={unknown: "<ID>"})
            where = f"{name} by {actor}, attempt {attempt}"
            assert seen_private.status in (401, 404), (where, seen_private.status, seen_private.body)
            assert seen_private.status == seen_unknown.status, where
            assert seen_private.body == seen_unknown.body, where
            assert seen_private.headers == seen_unknown.headers, where
            assert seen_private.statements == seen_unknown.statements, where
            assert seen_private.cache == seen_unknown.cache, where
    # Nothing about the private image is in the cache, not even after the owner looked at it.
    assert (await world.owner_sees(private)).status_code == 200
    assert await world.app.state.cache.get(CACHE_PREFIX + private) is None


async def test_the_owner_and_signed_links_still_see_a_private_image(world: World) -> None:
    """The filter in SQL lets through exactly who `can_view` lets through."""
    private = world.images["private"]
    assert (await world.owner_sees(private["id"])).status_code == 200
    assert (await world.api("admin", "GET", f"/api/v1/images/{private['id']}")).status_code == 200
    assert (await world["owner"].page("GET", f"/i/{private['id']}.png")).status_code == 200
    links = await world.api("owner", "POST", f"/api/v1/images/{private['id']}/signed-url", json={})
    assert links.status_code == 201, links.text
    signed = re.sub(r"^https?://[^/]+", "", links.json()["url"])
    assert (await world["anonymous"].page("GET", signed)).status_code == 200
    # A delete token still changes it, from anyone: the token is part of the same query.
    token = {"X-Delete-Token": private["delete_token"]}
    changed = await world.api(
        "anonymous", "PATCH", f"/api/v1/images/{private['id']}", json={"title": "t"}, headers=token
    )
    assert changed.status_code == 200, changed.text


async def test_uploading_content_another_account_stored_privately_does_the_same_work(world: World) -> None:
    held = unique_png((40, 30))
    stored = await upload_as(world.tool, world["owner"].token, visibility="private", data=held)
    assert stored.status_code == 201
    fresh = unique_png((40, 30))
    assert fresh != held
    answers: dict[str, Observed] = {}
    for name, data in (("already stored", held), ("never seen", fresh)):
        answers[name] = observe_upload = await observe(
            world,
            lambda data=data: world.tool.post(
                "/api/v1/images",
                files={"file": ("picture.png", data, "image/png")},
                data={"visibility": "private"},
                headers=bearer(world["other"].token or ""),
            ),
            hide={},
        )
        assert observe_upload.status == 201, observe_upload.body
    duplicate, new = answers["already stored"], answers["never seen"]
    assert duplicate.statements == new.statements
    # Every upload writes its objects (the keys derive from the content, so the same three).
    assert [(op, key.split("/", 1)[0]) for op, key in duplicate.storage] == [
        ("put", "originals"),
        ("put", "thumbnails"),
        ("put", "previews"),
    ]
    assert [(op, key.split("/", 1)[0]) for op, key in new.storage] == [
        (op, key.split("/", 1)[0]) for op, key in duplicate.storage
    ]
    assert duplicate.cache == new.cache
    # The answers have the same shape and say nothing about anyone else's image.
    first, second = json.loads(duplicate.body), json.loads(new.body)
    assert set(first) == set(second)
    assert first["sha256"] == stored.json()["sha256"]  # content the uploader holds anyway
    assert first["id"] != stored.json()["id"] and first["visibility"] == "private"
    assert duplicate.headers["cache-control"] == new.headers["cache-control"] == "no-store"


async def test_an_accounts_cursor_works_for_that_listing_only(world: World) -> None:
    """A cursor cannot be replayed on another listing: not the gallery, not another account's."""
    for _ in range(2):
        await world.upload("private")
    mine = await world.api("owner", "GET", "/api/v1/me/images", params={"limit": 1})
    cursor = mine.json()["next_cursor"]
    assert cursor and len(cursor) == 32
    following = await world.api("owner", "GET", "/api/v1/me/images", params={"limit": 1, "cursor": cursor})
    assert following.status_code == 200 and following.json()["items"]
    for actor, path in (("other", "/api/v1/me/images"), ("anonymous", "/api/v1/images")):
        replayed = await world.api(actor, "GET", path, params={"cursor": cursor})
        assert replayed.status_code == 400, (actor, replayed.text)
        assert replayed.json()["type"] == "/problems/invalid-cursor"
    page = await world["other"].page("GET", f"/me/images?cursor={cursor}")
    assert page.status_code == 400 and "cursor is not valid" in page.text
    assert (await world["owner"].page("GET", f"/me/images?cursor={cursor}")).status_code == 200
