"""The HTML pages on both stacks: page or htmx fragment, CSRF, escaping, unfurl tags, headers."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from chitram.errors import ChitramError
from chitram.images.sharing import human_size
from chitram.security import page_policy
from tests.images.test_api import png_bytes, upload

Client = AsyncTestClient[Litestar]
HTML = {"accept": "text/html"}
HTMX = {"accept": "text/html", "hx-request": "true"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str, tag_name: str, **attrs: str) -> list[dict[str, str | None]]:
    parser = _Tags()
    parser.feed(html)
    return [a for tag, a in parser.tags if tag == tag_name and all(a.get(k) == v for k, v in attrs.items())]


def meta(html: str, key: str) -> str | None:
    found = tags(html, "meta", property=key) or tags(html, "meta", **{"name": key})
    return found[0]["content"] if found else None


def image_id(page_url: str | None) -> str:
    return (page_url or "").rsplit("/", 1)[1]


async def csrf_token(client: Client) -> str:
    """What a browser gets: the cookie from any page, the token in the page's meta tag."""
    page = await client.get("/", headers=HTML)
    token = meta(page.text, "csrf-token")
    assert token and "chitram_csrf" in client.cookies
    return token


async def upload_page(client: Client, *, headers: dict[str, str], **fields: str) -> Any:
    files = {"file": ("photo.png", png_bytes(), "image/png")}
    return await client.post("/upload", files=files, data=fields, headers=headers)


async def test_home_page_has_the_upload_form_with_a_csrf_field(client: Client) -> None:
    page = await client.get("/", headers=HTML)
    assert page.status_code == 200
    form = tags(page.text, "form", id="upload-form")[0]
    assert form["action"] == "/upload" and form["enctype"] == "multipart/form-data"
    hidden = tags(page.text, "input", **{"name": "_csrf_token"})[0]
    assert hidden["value"] == meta(page.text, "csrf-token")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_form_upload_without_javascript_shows_the_result_page(client: Client) -> None:
    token = await csrf_token(client)
    response = await upload_page(client, headers=HTML, _csrf_token=token, title="Sunset", visibility="public")
    assert response.status_code == 201, response.text
    assert "<h1>Uploaded</h1>" in response.text and "<html" in response.text
    result = tags(response.text, "article", **{"class": "result"})[0]
    image_id, delete_token = result["data-id"], result["data-delete-token"]
    assert image_id and delete_token
    delete_link = tags(response.text, "input", id=f"delete-{image_id}")[0]["value"]
    # The token rides in the fragment, which browsers never send to a server or put in a Referer.
    assert delete_link == f"http://testserver.local/i/{image_id}/delete#token={delete_token}"
    assert tags(response.text, "input", id=f"delete-key-{image_id}")[0]["value"] == delete_token
    direct = tags(response.text, "input", id=f"share-direct-{image_id}")[0]["value"]
    assert direct == f"http://testserver.local/i/{image_id}.png"
    markdown = tags(response.text, "input", id=f"share-markdown-{image_id}")[0]["value"]
    assert markdown == f"[![Sunset]({direct})](http://testserver.local/i/{image_id})"
    # The page rendered by a POST still carries a token for the next form.
    assert meta(response.text, "csrf-token") == token


async def test_htmx_upload_returns_only_the_fragment(client: Client) -> None:
    token = await csrf_token(client)
    response = await upload_page(client, headers={**HTMX, "x-csrftoken": token})
    assert response.status_code == 201
    assert response.text.lstrip().startswith("{#") is False
    assert "<html" not in response.text and "data-uploaded" in response.text
    # Host too: without PUBLIC_URL (as here) the fragment's links follow the Host header.
    assert response.headers["vary"] == "HX-Request, Host"


async def test_uploads_and_deletes_without_a_csrf_token_are_refused(client: Client) -> None:
    await csrf_token(client)
    refused = await upload_page(client, headers=HTMX)
    assert refused.status_code == 403
    assert "reload the page" in refused.json()["detail"]
    forged = await upload_page(client, headers=HTMX, _csrf_token="0" * 128)
    assert forged.status_code == 403
    assert (await client.get("/api/v1/images")).json()["items"] == []

    created = (await upload(client, png_bytes(), visibility="public")).json()
    deleted = await client.post(
        f"/i/{created['id']}/delete", data={"delete_token": created["delete_token"]}, headers=HTMX
    )
    assert deleted.status_code == 403
    assert (await client.get(f"/api/v1/images/{created['id']}")).status_code == 200


async def test_a_token_from_another_visitor_does_not_pass(client: Client, app: Litestar) -> None:
    async with AsyncTestClient(app) as other:
        foreign = await csrf_token(other)
    await csrf_token(client)
    refused = await upload_page(client, headers={**HTMX, "x-csrftoken": foreign})
    assert refused.status_code == 403


async def test_delete_with_the_token_from_the_image_page(client: Client) -> None:
    created = (await upload(client, png_bytes(), visibility="public")).json()
    token = await csrf_token(client)
    wrong = await client.post(
        f"/i/{created['id']}/delete", data={"delete_token": "nope", "_csrf_token": token}, headers=HTMX
    )
    assert wrong.status_code == 403 and "delete link" in wrong.json()["detail"]

    deleted = await client.post(
        f"/i/{created['id']}/delete",
        data={"delete_token": created["delete_token"]},
        headers={**HTMX, "x-csrftoken": token},
    )
    assert deleted.status_code == 200
    assert f'data-deleted-id="{created["id"]}"' in deleted.text and "<html" not in deleted.text
    assert "chitram:toast" in deleted.headers["hx-trigger"]  # shown by the page's script
    assert (await client.get(f"/i/{created['id']}", headers=HTML)).status_code == 404


async def test_delete_without_javascript_shows_a_page(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    token = await csrf_token(client)
    confirm = await client.get(f"/i/{created['id']}/delete", headers=HTML)
    assert confirm.status_code == 200 and tags(confirm.text, "input", id="delete-token")
    done = await client.post(
        f"/i/{created['id']}/delete",
        data={"delete_token": created["delete_token"], "_csrf_token": token},
        headers=HTML,
    )
    assert done.status_code == 200 and ">Image deleted</h1>" in done.text and "<html" in done.text


async def test_image_page_unfurls_in_chat_apps(client: Client) -> None:
    created = (await upload(client, png_bytes((640, 480)), title="Harbour at dawn", visibility="public")).json()
    page = await client.get(f"/i/{created['id']}", headers=HTML)
    assert page.status_code == 200
    assert meta(page.text, "og:title") == "Harbour at dawn"
    assert meta(page.text, "og:url") == created["page_url"]
    assert meta(page.text, "og:image") == created["url"]  # a small PNG unfurls as itself
    assert meta(page.text, "og:image:width") == "640" and meta(page.text, "og:image:height") == "480"
    assert meta(page.text, "og:description") == f"640×480 PNG · {human_size(created['size'])}"
    assert meta(page.text, "twitter:card") == "summary_large_image"
    assert meta(page.text, "twitter:image") == created["url"]
    assert meta(page.text, "robots") is None
    unlisted = (await upload(client, png_bytes(color=(1, 2, 3)))).json()
    assert meta((await client.get(f"/i/{unlisted['id']}", headers=HTML)).text, "robots") == "noindex"


async def test_titles_are_escaped_everywhere(client: Client) -> None:
    hostile_title = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    created = (await upload(client, png_bytes(), title=hostile_title, visibility="public")).json()
    for path in (f"/i/{created['id']}", "/gallery", f"/i/{created['id']}/delete"):
        page = (await client.get(path, headers=HTML)).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;" in page or "&#34;&gt;&lt;script&gt;" in page, path
    page = (await client.get(f"/i/{created['id']}", headers=HTML)).text
    html_snippet = tags(page, "input", id=f"share-html-{created['id']}")[0]["value"]
    # The copied HTML embed escapes the title as an attribute value too.
    assert html_snippet is not None and 'alt="&#x27;' not in html_snippet and "<script>" not in html_snippet


async def test_gallery_pages_and_fragments_follow_the_keyset_cursor(client: Client) -> None:
    ids = [(await upload(client, png_bytes(color=(i, 0, 0)), visibility="public")).json()["id"] for i in range(26)]
    await upload(client, png_bytes(color=(0, 0, 255)), visibility="unlisted")
    first = await client.get("/gallery", headers=HTML)
    shown = [image_id(a["href"]) for a in tags(first.text, "a") if "/i/" in (a["href"] or "")]
    assert shown == list(reversed(ids))[:24]
    for img in tags(first.text, "img", loading="lazy"):
        assert img["width"] and img["height"]
    more = tags(first.text, "li", **{"class": "more"})[0]
    assert more["hx-trigger"] == "revealed"
    load_more = [a["href"] for a in tags(first.text, "a") if (a["href"] or "").startswith("/gallery?cursor=")]
    assert load_more == [more["hx-get"]]

    fragment = await client.get(more["hx-get"] or "", headers=HTMX)
    assert "<html" not in fragment.text and 'class="more"' not in fragment.text
    rest = [image_id(a["href"]) for a in tags(fragment.text, "a") if "/i/" in (a["href"] or "")]
    assert rest == list(reversed(ids))[24:]
    full = await client.get(more["hx-get"] or "", headers=HTML)
    assert "<html" in full.text and "Back to the newest images" in full.text


async def test_empty_gallery_invites_an_upload(client: Client) -> None:
    page = await client.get("/gallery", headers=HTML)
    assert "No public images yet" in page.text


async def test_pages_carry_a_strict_content_security_policy(client: Client) -> None:
    created = (await upload(client, png_bytes(), visibility="public")).json()
    for path in ("/", "/gallery", f"/i/{created['id']}", "/no-such-page"):
        response = await client.get(path, headers=HTML)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert "frame-ancestors 'none'" in policy and "style-src 'self'" in policy
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"
        # Pages carry the visitor's CSRF token; errors must not stand in for a later success.
        assert response.headers["cache-control"] in {"no-cache, private", "no-store"}, path
    # Image bytes keep their own sandbox and their public cache, and set no cookie.
    original = await client.get(f"/i/{created['id']}.png")
    assert original.headers["content-security-policy"].startswith("default-src 'none'")
    assert "immutable" in original.headers["cache-control"] and "set-cookie" not in original.headers
    api = await client.get("/api/v1/images")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_no_inline_scripts_or_styles_in_any_page(client: Client) -> None:
    created = (await upload(client, png_bytes(), visibility="public")).json()
    for path in ("/", "/gallery", f"/i/{created['id']}", f"/i/{created['id']}/delete", "/nope"):
        page = (await client.get(path, headers=HTML)).text
        assert all(script.get("src") for script in tags(page, "script")), path
        assert "<style" not in page and not re.search(r"\sstyle=", page), path
        assert not re.search(r"\son[a-z]+=", page), path


async def test_static_files_are_versioned_and_cached(client: Client) -> None:
    page = (await client.get("/", headers=HTML)).text
    stylesheet = tags(page, "link", rel="stylesheet")[0]["href"] or ""
    assert re.fullmatch(r"/static/css/chitram\.css\?v=[0-9a-f]{10}", stylesheet)
    response = await client.get(stylesheet)
    assert response.status_code == 200 and "max-age=31536000" in response.headers["cache-control"]
    htmx = [s["src"] for s in tags(page, "script") if "htmx" in (s["src"] or "")]
    assert htmx and (await client.get(htmx[0] or "")).status_code == 200


async def test_friendly_error_pages(client: Client) -> None:
    missing = await client.get("/i/AAAAAAAAAAAA", headers=HTML)
    assert missing.status_code == 404 and 'class="error-page"' in missing.text
    assert "deleted by its uploader" in missing.text
    unknown = await client.get("/no/such/page", headers=HTML)
    assert "There is no page at this address" in unknown.text and "/api/v1" not in unknown.text
    assert ".." not in unknown.text.replace("...", "")
    too_large = await client.post(
        "/upload",
        content=b"x" * 10,
        headers={**HTML, "content-length": str(10**9), "content-type": "multipart/form-data; boundary=x"},
    )
    assert too_large.status_code == 413 and "Choose a smaller file" in too_large.text
    htmx_missing = await client.get("/i/AAAAAAAAAAAA", headers=HTMX)
    assert htmx_missing.headers["content-type"].startswith("application/problem+json")


async def test_an_unexpected_error_shows_a_friendly_500_page(client: Client, app: Litestar) -> None:
    @get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.register(boom)
    page = await client.get("/boom", headers=HTML)
    assert page.status_code == 500 and 'class="error-page"' in page.text
    assert "This is our fault" in page.text and "a bug" not in page.text
    problem = await client.get("/boom", headers=HTMX)
    assert problem.json()["status"] == 500 and "a bug" not in problem.text


async def test_result_and_error_responses_stay_out_of_caches(client: Client) -> None:
    token = await csrf_token(client)
    result = await upload_page(client, headers={**HTMX, "x-csrftoken": token})
    assert result.headers["cache-control"] == "no-store"  # it shows the delete key
    for headers in (HTML, HTMX, {"accept": "application/json"}):
        missing = await client.get("/i/AAAAAAAAAAAA", headers=headers)
        assert missing.headers["cache-control"] == "no-store"
        assert missing.headers["vary"] == "Accept, HX-Request"


async def test_csrf_exemptions_cover_only_byte_routes(client: Client) -> None:
    """A crafted path near an exempt one (bytes, probes) is still checked."""
    created = (await upload(client, png_bytes())).json()
    await csrf_token(client)
    for path in (f"/i/{created['id']}/delete", f"/i/{created['id']}/delete.webp", f"/i/{created['id']}.png/delete"):
        response = await client.post(path, data={"delete_token": created["delete_token"]}, headers=HTMX)
        assert response.status_code in {403, 404, 405}, path
    assert (await client.get(f"/api/v1/images/{created['id']}")).status_code == 200


async def test_too_many_requests_says_how_long_to_wait(client: Client, app: Litestar) -> None:
    class SlowDown(ChitramError):
        status_code = 429
        problem_type = "too-many-requests"
        title = "Too many requests"

    @get("/hurry", include_in_schema=False)
    async def hurry() -> None:
        raise SlowDown("you have uploaded 30 images in the last minute", headers={"Retry-After": "42"})

    app.register(hurry)
    page = await client.get("/hurry", headers=HTML)
    assert page.status_code == 429 and page.headers["retry-after"] == "42"
    assert "Wait 42 seconds and try again" in page.text
    assert "You have uploaded 30 images in the last minute." in page.text


async def test_pages_answer_head_requests(client: Client) -> None:
    created = (await upload(client, png_bytes())).json()
    for path in ("/", "/gallery", f"/i/{created['id']}", f"/i/{created['id']}/delete"):
        response = await client.head(path, headers=HTML)
        assert response.status_code == 200 and response.content == b"", path
        assert response.headers["content-type"].startswith("text/html")


def test_images_may_come_from_public_url_and_nowhere_else() -> None:
    assert "img-src 'self';" in page_policy("")
    assert "img-src 'self' https://img.example.com;" in page_policy("https://img.example.com/base")
