"""Links to private images that expire, on both stacks; and private or unlisted images never
showing up in the public lists."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from litestar import Litestar

from chitram.images.access import LinkSigner
from tests.accounts.conftest import (
    HTML,
    Client,
    bearer,
    create_token,
    create_user,
    csrf_of,
    logged_in,
    new_browser,
    upload_as,
)
from tests.conftest import TEST_SECRET
from tests.images.test_views import tags

SIGNED_MAX_AGE = 3600
BASE = "http://testserver.local"


async def account(client: Client, email: str, *, admin: bool = False) -> str:
    return await create_token(client, await create_user(client, email, admin=admin))


async def private_image(client: Client, token: str) -> dict[str, Any]:
    response = await upload_as(client, token, visibility="private")
    assert response.status_code == 201, response.text
    return dict(response.json())


async def signed(client: Client, token: str | None, image_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/images/{image_id}/signed-url", json=body, headers=bearer(token) if token else {})


def local(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(local(url))
    query = {key: values[0] for key, values in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


def max_age(response: httpx.Response) -> int:
    found = re.fullmatch(r"private, max-age=(\d+)", response.headers["cache-control"])
    assert found, response.headers["cache-control"]
    return int(found.group(1))


def same_as_missing(response: httpx.Response, missing: httpx.Response, image_id: str, missing_id: str) -> None:
    assert response.status_code == missing.status_code == 404
    assert response.headers["cache-control"] == missing.headers["cache-control"]
    ours = {k: str(v).replace(image_id, "ID") for k, v in response.json().items()}
    theirs = {k: str(v).replace(missing_id, "ID") for k, v in missing.json().items()}
    assert ours == theirs


async def test_owner_makes_links_that_open_a_private_image_for_anyone(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    image = await private_image(client, owner)
    response = await signed(client, owner, image["id"], expires_in=3600)
    assert response.status_code == 201, response.text
    links = response.json()
    assert set(links) >= {"url", "thumbnail_url", "preview_url", "expires_at"}
    stranger = new_browser(client)  # no cookie, no token
    for key, plain in (
        ("url", image["url"]),
        ("thumbnail_url", image["thumbnail_url"]),
        ("preview_url", image["preview_url"]),
    ):
        assert links[key].startswith(plain + "?expires=") and "&signature=" in links[key]
        opened = await stranger.get(local(links[key]))
        assert opened.status_code == 200, (key, opened.text)
        assert 0 < max_age(opened) <= SIGNED_MAX_AGE
        assert "public" not in opened.headers["cache-control"] and "immutable" not in opened.headers["cache-control"]
        assert "set-cookie" not in opened.headers
        assert (await stranger.get(local(plain))).status_code == 404  # the link, not the image, is shared
    original = await stranger.get(local(links["url"]))
    assert original.headers["content-type"] == "image/png" and len(original.content) == image["size"]


async def test_a_week_long_link_is_still_cached_for_an_hour_at_most(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    image = await private_image(client, owner)
    links = (await signed(client, owner, image["id"], expires_in=604800)).json()
    assert max_age(await client.get(local(links["url"]))) == SIGNED_MAX_AGE
    default = await signed(client, owner, image["id"])
    assert default.status_code == 201  # expires_in defaults to an hour


async def test_lifetimes_outside_a_minute_to_a_week_are_refused(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    image = await private_image(client, owner)
    for expires_in in (0, 59, 604801, -5):
        response = await signed(client, owner, image["id"], expires_in=expires_in)
        assert response.status_code == 400, expires_in
        assert "expires_in" in response.json()["detail"]
    assert (await signed(client, owner, image["id"], expires_in=60)).status_code == 201


async def test_tampered_links_look_like_a_missing_image(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    image = await private_image(client, owner)
    twin = await private_image(client, owner)
    links = (await signed(client, owner, image["id"], expires_in=3600)).json()
    twin_links = (await signed(client, owner, twin["id"], expires_in=3600)).json()
    query = parse_qs(urlsplit(links["url"]).query)
    expires, signature = query["expires"][0], query["signature"][0]
    twin_query = parse_qs(urlsplit(twin_links["url"]).query)
    twin_expires, twin_signature = twin_query["expires"][0], twin_query["signature"][0]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    stranger = new_browser(client)
    missing_id = "Zz9-_missing"
    for label, path in [
        ("tampered signature", with_query(links["url"], signature=flipped)),
        ("truncated signature", with_query(links["url"], signature=signature[:-2])),
        ("another image's link", with_query(links["url"], signature=twin_signature, expires=twin_expires)),
        ("later expiry", with_query(links["url"], expires=str(int(expires) + 900))),
        ("earlier expiry", with_query(links["url"], expires=str(int(expires) - 900))),
        ("expiry not a number", with_query(links["url"], expires="soon")),
        ("signature alone", f"/i/{image['id']}.png?signature={signature}"),
        ("thumbnail with a tampered signature", with_query(links["thumbnail_url"], signature=flipped)),
    ]:
        response = await stranger.get(path)
        missing = await stranger.get(path.replace(image["id"], missing_id))
        assert response.status_code == 404, (label, response.status_code)
        same_as_missing(response, missing, image["id"], missing_id)


async def test_an_expired_link_is_gone_for_strangers_but_not_for_the_owner(app: Litestar, client: Client) -> None:
    owner = await account(client, "owner@example.com")
    image = await private_image(client, owner)
    signer: LinkSigner = app.state.signer
    assert signer.sign(image["id"], 60).signature == LinkSigner(TEST_SECRET).sign(image["id"], 60).signature
    expired = signer.sign(image["id"], 60, now=time.time() - 7200)
    assert expired.expires < time.time()
    stranger = new_browser(client)
    for suffix in (".png", "/thumbnail.webp", "/preview.webp"):
        response = await stranger.get(f"/i/{image['id']}{suffix}?{expired.query}")
        assert response.status_code == 410, (suffix, response.text)
        assert "expired" in response.json()["detail"]
        assert response.headers["cache-control"] == "no-store"
    # The owner may see the image anyway; the stale link is simply not needed.
    mine = await client.get(f"/i/{image['id']}.png?{expired.query}", headers=bearer(owner))
    assert mine.status_code == 200 and mine.headers["cache-control"] == "private, no-cache"


async def test_who_may_make_links(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    admin = await account(client, "admin@example.com", admin=True)
    other = await account(client, "other@example.com")
    image = await private_image(client, owner)
    public = (await upload_as(client, owner, visibility="public")).json()
    assert (await signed(client, admin, image["id"], expires_in=3600)).status_code == 201
    hidden = await signed(client, other, image["id"], expires_in=3600)
    assert hidden.status_code == 404  # the private image does not exist for them
    refused = await signed(client, other, public["id"], expires_in=3600)
    assert refused.status_code == 403 and "owner" in refused.json()["detail"]
    anonymous = await signed(client, None, image["id"], expires_in=3600)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")


async def test_the_owners_page_of_a_private_image_offers_links_and_is_never_cached(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    await create_user(client, "other@example.com")
    image = await private_image(client, owner)
    browser = await logged_in(client, "owner@example.com")
    page = await browser.get(f"/i/{image['id']}", headers=HTML)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert tags(page.text, "form", action=f"/i/{image['id']}/link")
    csrf = await csrf_of(browser)
    made = await browser.post(f"/i/{image['id']}/link", data={"expires_in": "3600", "_csrf_token": csrf}, headers=HTML)
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    link = re.search(rf"{re.escape(image['url'])}\?expires=\d+&amp;signature=[\w-]+", made.text)
    assert link, made.text
    opened = await new_browser(client).get(local(link.group(0).replace("&amp;", "&")))
    assert opened.status_code == 200 and 0 < max_age(opened) <= SIGNED_MAX_AGE

    other = await logged_in(client, "other@example.com")
    csrf = await csrf_of(other)
    refused = await other.post(f"/i/{image['id']}/link", data={"expires_in": "3600", "_csrf_token": csrf}, headers=HTML)
    assert refused.status_code == 404


async def test_public_lists_never_show_private_or_unlisted_images(client: Client) -> None:
    owner = await account(client, "owner@example.com")
    ids = {v: (await upload_as(client, owner, visibility=v)).json()["id"] for v in ("public", "unlisted", "private")}

    async def listed() -> dict[str, set[str]]:
        api = (await client.get("/api/v1/images")).json()["items"]
        with_token = (await client.get("/api/v1/images", headers=bearer(owner))).json()["items"]
        gallery = (await client.get("/gallery", headers=HTML)).text
        return {
            "api": {item["id"] for item in api},
            "api with the owner's token": {item["id"] for item in with_token},
            "gallery": {image_id for image_id in ids.values() if image_id in gallery},
        }

    assert all(shown == {ids["public"]} for shown in (await listed()).values())
    # Changing visibility moves images in and out of the lists at once.
    for image_id, visibility in ((ids["public"], "private"), (ids["private"], "public"), (ids["unlisted"], "unlisted")):
        response = await client.patch(
            f"/api/v1/images/{image_id}", json={"visibility": visibility}, headers=bearer(owner)
        )
        assert response.status_code == 200
    assert all(shown == {ids["private"]} for shown in (await listed()).values())
