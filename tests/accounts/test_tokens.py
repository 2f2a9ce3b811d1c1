"""API tokens on both stacks: made, listed and revoked through the API and the account page; shown
once; stored as a hash; described in the OpenAPI document; and packed into a ShareX uploader."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.accounts.conftest import (
    HTML,
    Client,
    bearer,
    create_token,
    create_user,
    csrf_of,
    logged_in,
    token_rows,
    unique_png,
)
from tests.images.test_views import tags

HINT_LENGTH = len("chi_") + 6


def assert_refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == 'Bearer realm="chitram"'
    assert response.json()["detail"]


async def test_create_list_and_revoke_through_the_api(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    first = await create_token(client, user_id, "first")
    created = await client.post("/api/v1/tokens", json={"name": "  my   laptop "}, headers=bearer(first))
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["token"]
    assert secret.startswith("chi_") and len(secret) >= 40
    assert body["name"] == "my laptop" and body["hint"] == secret[:HINT_LENGTH]
    assert body["last_used_at"] is None and body["created_at"]

    me = await client.get("/api/v1/me", headers=bearer(secret))
    assert me.status_code == 200 and me.json()["email"] == "me@example.com"

    listed = await client.get("/api/v1/tokens", headers=bearer(secret))
    assert listed.status_code == 200
    assert [item["name"] for item in listed.json()] == ["my laptop", "first"]  # newest first
    assert all("token" not in item for item in listed.json())
    assert secret not in listed.text and first not in listed.text  # shown once, never again

    revoked = await client.delete(f"/api/v1/tokens/{body['id']}", headers=bearer(first))
    assert revoked.status_code == 204
    assert_refused(await client.get("/api/v1/me", headers=bearer(secret)))  # at once
    again = await client.delete(f"/api/v1/tokens/{body['id']}", headers=bearer(first))
    assert again.status_code == 404
    assert [item["name"] for item in (await client.get("/api/v1/tokens", headers=bearer(first))).json()] == ["first"]


async def test_tokens_of_other_accounts_cannot_be_revoked(client: Client) -> None:
    mine = await create_token(client, await create_user(client, "me@example.com"))
    theirs = await create_token(client, await create_user(client, "other@example.com"))
    their_id = (await client.get("/api/v1/tokens", headers=bearer(theirs))).json()[0]["id"]
    response = await client.delete(f"/api/v1/tokens/{their_id}", headers=bearer(mine))
    assert response.status_code == 404
    assert (await client.get("/api/v1/me", headers=bearer(theirs))).status_code == 200
    assert [t["id"] for t in (await client.get("/api/v1/tokens", headers=bearer(mine))).json()] != [their_id]


async def test_token_names_are_checked(client: Client) -> None:
    token = await create_token(client, await create_user(client, "me@example.com"))
    for payload in ({"name": ""}, {"name": "   "}, {"name": "x" * 101}, {}, {"name": "ok", "scope": "admin"}):
        response = await client.post("/api/v1/tokens", json=payload, headers=bearer(token))
        assert response.status_code == 400, payload
        assert response.headers["content-type"].startswith("application/problem+json")
    assert len((await client.get("/api/v1/tokens", headers=bearer(token))).json()) == 1


async def test_unknown_revoked_and_malformed_tokens_are_401(client: Client) -> None:
    for header in ("Bearer chi_not-a-real-token", "Bearer ", "Basic bWU6cGFzcw==", "chi_no-scheme", "Bearer"):
        for path in ("/api/v1/me", "/api/v1/tokens"):
            assert_refused(await client.get(path, headers={"Authorization": header}))
    # Anonymous (no header at all) is not the same as a bad token: public reads still work.
    assert (await client.get("/api/v1/images")).status_code == 200
    assert_refused(await client.get("/api/v1/me"))


async def test_create_and_revoke_on_the_account_page(client: Client) -> None:
    await create_user(client, "me@example.com")
    browser = await logged_in(client, "me@example.com")
    csrf = await csrf_of(browser, "/account")
    created = await browser.post("/account/tokens", data={"name": "script", "_csrf_token": csrf}, headers=HTML)
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"  # the page shows the token itself
    secret = tags(created.text, "input", id="new-token-value")[0]["value"]
    assert secret and secret.startswith("chi_")
    assert (await client.get("/api/v1/me", headers=bearer(secret))).json()["email"] == "me@example.com"

    later = await browser.get("/account", headers=HTML)
    assert secret not in later.text and not tags(later.text, "input", id="new-token-value")
    assert "script" in later.text and f"{secret[:HINT_LENGTH]}…" in later.text

    token_id = next(t.id for t in await token_rows(client) if t.name == "script")
    revoked = await browser.post(
        f"/account/tokens/{token_id}/revoke", data={"_csrf_token": csrf}, headers=HTML, follow_redirects=False
    )
    assert revoked.status_code == 303 and revoked.headers["location"] == "/account?changed=token-revoked"
    assert_refused(await client.get("/api/v1/me", headers=bearer(secret)))
    assert "The token was revoked" in (await browser.get(revoked.headers["location"], headers=HTML)).text


async def test_the_account_page_cannot_revoke_another_accounts_token(client: Client) -> None:
    await create_user(client, "me@example.com")
    theirs = await create_token(client, await create_user(client, "other@example.com"))
    their_id = (await token_rows(client))[0].id
    browser = await logged_in(client, "me@example.com")
    csrf = await csrf_of(browser, "/account")
    response = await browser.post(f"/account/tokens/{their_id}/revoke", data={"_csrf_token": csrf}, headers=HTML)
    assert response.status_code == 404
    assert (await client.get("/api/v1/me", headers=bearer(theirs))).status_code == 200


async def test_an_empty_token_name_shows_the_form_again(client: Client) -> None:
    await create_user(client, "me@example.com")
    browser = await logged_in(client, "me@example.com")
    csrf = await csrf_of(browser, "/account")
    response = await browser.post("/account/tokens", data={"name": "  ", "_csrf_token": csrf}, headers=HTML)
    assert response.status_code == 400
    assert tags(response.text, "p", id="token-error") and not tags(response.text, "input", id="new-token-value")
    assert await token_rows(client) == []


async def test_last_used_at_is_set_when_the_token_is_used(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    token = await create_token(client, user_id)
    (row,) = await token_rows(client, user_id)
    assert row.last_used_at is None
    browser = await logged_in(client, "me@example.com")
    assert "Never" in (await browser.get("/account", headers=HTML)).text
    started = datetime.now(UTC)
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    (row,) = await token_rows(client, user_id)
    assert row.last_used_at is not None
    assert started - timedelta(seconds=5) <= row.last_used_at <= datetime.now(UTC) + timedelta(seconds=5)
    listed = (await client.get("/api/v1/tokens", headers=bearer(token))).json()[0]
    assert listed["last_used_at"] is not None
    assert "Never" not in (await browser.get("/account", headers=HTML)).text


async def test_only_a_hash_of_the_token_is_stored(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    secret = (
        await client.post("/api/v1/tokens", json={"name": "x"}, headers=bearer(await create_token(client, user_id)))
    ).json()["token"]
    row = next(t for t in await token_rows(client, user_id) if t.name == "x")
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.hint == secret[:HINT_LENGTH]
    stored = [str(value) for value in vars(row).values()]
    assert not any(secret in value for value in stored)


# -- OpenAPI ---------------------------------------------------------------------------------------


async def test_the_openapi_document_declares_bearer_tokens(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["BearerToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    needs_token = [
        ("/api/v1/me", "get"),
        ("/api/v1/me/images", "get"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{token_id}", "delete"),
        ("/api/v1/images/{image_id}/signed-url", "post"),
    ]
    optional_token = [
        ("/api/v1/images", "post"),
        ("/api/v1/images/{image_id}", "get"),
        ("/api/v1/images/{image_id}", "patch"),
        ("/api/v1/images/{image_id}", "delete"),
    ]
    paths = schema["paths"]
    for path, method in needs_token:
        assert paths[path][method]["security"] == [{"BearerToken": []}], (path, method)
    for path, method in optional_token:
        assert {"BearerToken": []} in paths[path][method]["security"], (path, method)
        assert {} in paths[path][method]["security"], (path, method)  # anonymous works too
    declared = set(schema["components"]["securitySchemes"])
    for operations in paths.values():
        for operation in operations.values():
            for requirement in operation.get("security", []) if isinstance(operation, dict) else []:
                assert set(requirement) <= declared
    assert not any(path.startswith(("/login", "/account", "/register")) for path in paths)


# -- ShareX ----------------------------------------------------------------------------------------


async def test_sharex_uploader_works_as_downloaded(client: Client) -> None:
    user_id = await create_user(client, "me@example.com")
    browser = await logged_in(client, "me@example.com")
    assert (await browser.get("/account/sharex", headers=HTML)).status_code == 405  # a link cannot mint tokens
    csrf = await csrf_of(browser, "/account")
    response = await browser.post("/account/sharex", data={"_csrf_token": csrf}, headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="chitram-testserver.local.sxcu"'
    assert response.headers["cache-control"] == "no-store"
    config = json.loads(response.content)
    assert config["RequestMethod"] == "POST" and config["Body"] == "MultipartFormData"
    assert config["RequestURL"] == "http://testserver.local/api/v1/images"
    assert config["FileFormName"] == "file"
    assert config["URL"] == "{json:url}" and config["DeletionURL"] == "{json:delete_url}"
    authorization = config["Headers"]["Authorization"]
    assert authorization.startswith("Bearer chi_")
    assert len(await token_rows(client, user_id)) == 1  # a token of its own

    # What ShareX sends: exactly these headers, the file under FileFormName, Arguments as fields.
    uploaded = await client.request(
        config["RequestMethod"],
        config["RequestURL"],
        headers=config["Headers"],
        files={config["FileFormName"]: ("screenshot.png", unique_png(), "image/png")},
        data=config.get("Arguments", {}),
    )
    assert uploaded.status_code == 201, uploaded.text
    answer = uploaded.json()
    assert (await client.get(answer["url"])).status_code == 200
    delete_url = answer["delete_url"]
    assert delete_url.startswith(f"http://testserver.local/i/{answer['id']}/delete#token=")
    delete_page = await client.get(delete_url.split("#", 1)[0], headers=HTML)
    assert delete_page.status_code == 200 and tags(delete_page.text, "form", **{"class": "delete-form"})
    mine = (await client.get("/api/v1/me/images", headers={"Authorization": authorization})).json()["items"]
    assert [item["id"] for item in mine] == [answer["id"]]
