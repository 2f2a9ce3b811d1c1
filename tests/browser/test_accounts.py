"""Accounts in the browser: register, log in and out, private images and their links, My images,
API tokens, the ShareX uploader, and the account pages' accessibility and CSP hygiene."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Dialog, Locator, Page, Response, ViewportSize, expect

from tests.browser.conftest import (
    Account,
    PageErrors,
    PageFactory,
    create_token,
    png_bytes,
    png_file,
    register,
    token_upload,
    unique_email,
)
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(90)

WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PASSES: list[tuple[Literal["light", "dark"], ViewportSize]] = [("light", DESKTOP), ("dark", PHONE)]


def nav_button(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("button", name=name)


def nav_link(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def card(page: Page, image_id: str) -> Locator:
    return page.locator(f'#my-images > li.card[data-id="{image_id}"]')


def api_status(server: RunningServer, image_id: str) -> int:
    return httpx.get(f"{server.url}/api/v1/images/{image_id}", timeout=10).status_code


# --------------------------------------------------------------------------------------------
# 1. register, log out, log in


def test_register_log_out_and_log_in_again(page: Page, server: RunningServer, page_errors: PageErrors) -> None:
    page_errors.allow("status of 401")  # Chromium logs the refused login's page status
    email = unique_email("journey")
    page.goto("/")
    expect(nav_link(page, "Log in")).to_be_visible()
    expect(nav_button(page, "Log out")).to_have_count(0)

    account = register(page, email=email)
    expect(page.locator("main h1")).to_have_text("My images")
    expect(page.locator("main p.empty")).to_contain_text("You have not uploaded any images yet")
    expect(nav_link(page, "My images")).to_have_attribute("aria-current", "page")
    expect(nav_link(page, "Account")).to_be_visible()
    expect(nav_link(page, "Log in")).to_have_count(0)

    nav_button(page, "Log out").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(nav_link(page, "Log in")).to_be_visible()
    expect(nav_button(page, "Log out")).to_have_count(0)
    # Logged out for real: My images now sends to the login page, and back after logging in.
    page.goto("/me/images")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fme%2Fimages$"))
    expect(page.locator('input[name="next"]')).to_have_value("/me/images")

    shouted = email.upper()
    page.fill("#email", shouted)
    page.fill("#password", "not the password at all")
    page.get_by_role("button", name="Log in", exact=True).click()
    error = page.get_by_role("alert")
    expect(error).to_have_text("The email address or the password is wrong; check both and try again.")
    expect(page.locator("#email")).to_have_value(shouted)  # kept: only the password is typed again
    expect(page.locator("#email")).to_have_attribute("aria-describedby", "form-error")
    expect(page.locator("#password")).to_have_value("")
    expect(page.locator('input[name="next"]')).to_have_value("/me/images")
    expect(nav_button(page, "Log out")).to_have_count(0)

    page.fill("#password", account.password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(f"{server.url}/me/images")
    expect(nav_button(page, "Log out")).to_be_visible()
    page.goto("/account")
    expect(page.locator("#account-email")).to_have_text(email)  # one account, whatever the case typed


# --------------------------------------------------------------------------------------------
# 2. private uploads and their signed links


def test_private_upload_and_a_link_to_it(
    page: Page, new_page: PageFactory, server: RunningServer, account: Account, page_errors: PageErrors
) -> None:
    page_errors.allow("status of 404")  # the private image's plain address, asked without a login

    page.goto("/")
    private = page.locator("input[name=visibility][value=private]")
    expect(private).to_be_visible()
    private.check()
    page.fill("#title", "Only mine")
    page.set_input_files("#file", png_file("secret.png", size=(90, 60)))
    article = page.locator("#upload-list article.result[data-uploaded]")
    expect(article).to_have_count(1)
    image_id = article.get_attribute("data-id")
    assert image_id
    described = httpx.get(f"{server.url}/api/v1/images/{image_id}", timeout=10)
    assert described.status_code == 404, "a private image is not described to strangers"

    page.goto("/me/images")
    mine = card(page, image_id)
    expect(mine.locator(".card-title")).to_have_text("Only mine")
    expect(mine.locator(".badge.private")).to_have_text("Private")
    mine.locator("a.thumb").click()

    expect(page).to_have_url(f"{server.url}/i/{image_id}")
    view = page.locator("article#image-view")
    expect(view.locator("h1")).to_have_text("Only mine")
    assert view.locator("img").first.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    expect(page.locator(f"#share-direct-{image_id}")).to_have_count(0)  # no share links that fail for others
    view.get_by_role("button", name="Make a link").click()
    direct = page.locator("#private-link #private-url")
    expect(direct).to_have_value(re.compile(r"[?&]signature="))
    expect(page).to_have_url(f"{server.url}/i/{image_id}")  # htmx swapped a fragment in, no navigation
    signed_url = direct.input_value()
    assert signed_url.startswith(f"{server.url}/i/{image_id}."), signed_url
    expect(page.locator("#private-link #private-preview-url")).to_have_value(re.compile(r"[?&]signature="))

    stranger = new_page()  # no cookies
    response = stranger.goto(signed_url)
    assert response is not None
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/"), response.headers["content-type"]
    assert response.body()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = stranger.goto(f"/i/{image_id}.png")
    assert plain is not None
    assert plain.status == 404
    tampered = stranger.goto(re.sub(r"signature=[^&]+", "signature=AAAA", signed_url))
    assert tampered is not None
    assert tampered.status == 404


# --------------------------------------------------------------------------------------------
# 3. My images: bulk delete, edit


def test_my_images_bulk_delete_and_edit(
    page: Page, server: RunningServer, account: Account, page_errors: PageErrors
) -> None:
    token = create_token(page, "Seeder")
    first, second, third = (token_upload(server.url, token, title=title) for title in ("First", "Second", "Third"))

    page.goto("/me/images")
    expect(page.locator("#my-images > li.card")).to_have_count(3)
    ids = page.locator("#my-images > li.card").evaluate_all("cards => cards.map(c => c.dataset.id)")
    assert ids == [third["id"], second["id"], first["id"]], "newest first"
    expect(card(page, first["id"]).locator(".badge")).to_have_text("Unlisted")

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    # Nothing ticked: the script says so and sends nothing.
    page.locator("#bulk-delete").click()
    expect(page.locator("#toasts .toast.error")).to_contain_text("Tick the images to delete first")
    assert dialogs == []
    expect(page).to_have_url(f"{server.url}/me/images")

    card(page, first["id"]).get_by_role("checkbox").check()
    card(page, third["id"]).get_by_label(re.compile(r"Select\s+Third")).check()
    page.locator("#bulk-delete").click()
    expect(page).to_have_url(f"{server.url}/me/images?deleted=2")
    expect(page.locator("main .notice[role=status]")).to_have_text("2 image(s) deleted.")
    assert dialogs == ["Delete the selected images for everyone? This cannot be undone."]
    expect(page.locator("#my-images > li.card")).to_have_count(1)
    remaining = card(page, second["id"])
    expect(remaining).to_be_visible()
    assert (api_status(server, first["id"]), api_status(server, third["id"])) == (404, 404)
    assert api_status(server, second["id"]) == 200

    remaining.get_by_role("link", name=re.compile(r"^Edit\s+Second$")).click()
    expect(page).to_have_url(f"{server.url}/i/{second['id']}/edit")
    expect(page.locator("#title")).to_have_value("Second")
    expect(page.locator("input[name=visibility][value=unlisted]")).to_be_checked()
    page.fill("#title", "Second, renamed")
    page.locator("input[name=visibility][value=public]").check()
    page.get_by_role("button", name="Save").click()

    expect(page).to_have_url(f"{server.url}/i/{second['id']}")
    view = page.locator("article#image-view")
    expect(view.locator("h1")).to_have_text("Second, renamed")
    expect(view.locator("dl.facts div", has_text="Visibility").locator("dd")).to_have_text("Public")
    described = httpx.get(f"{server.url}/api/v1/images/{second['id']}", timeout=10).json()
    assert (described["title"], described["visibility"]) == ("Second, renamed", "public")
    page.goto("/me/images")
    expect(card(page, second["id"]).locator(".badge")).to_have_text("Public")
    expect(card(page, second["id"]).locator(".card-title")).to_have_text("Second, renamed")


# --------------------------------------------------------------------------------------------
# 4. API tokens


def test_api_token_is_shown_once_works_and_can_be_revoked(page: Page, server: RunningServer, account: Account) -> None:
    secret = create_token(page, "Laptop script")
    expect(page.locator("#new-token")).to_contain_text("Laptop script")
    auth = {"Authorization": f"Bearer {secret}"}

    me = httpx.get(f"{server.url}/api/v1/me", headers=auth, timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == account.email
    created = token_upload(server.url, secret, title="From a script")
    mine = httpx.get(f"{server.url}/api/v1/me/images", headers=auth, timeout=10).json()
    assert [item["id"] for item in mine["items"]] == [created["id"]]

    page.goto("/account")
    expect(page.locator("#new-token-value")).to_have_count(0)
    assert secret not in page.content(), "the token is shown only once"
    row = page.locator("#tokens tbody tr", has_text="Laptop script")
    expect(row).to_have_count(1)
    cells = row.locator("td")
    hint = (cells.nth(1).text_content() or "").strip().rstrip("…")
    assert len(hint) >= 6
    assert secret.startswith(hint), (hint, secret[:12])
    expect(cells.nth(3).locator("time")).to_have_count(1)  # Last used: filled in, not "Never"
    expect(cells.nth(3)).not_to_have_text("Never")

    row.get_by_role("button", name="Revoke Laptop script").click()
    expect(page).to_have_url(f"{server.url}/account?changed=token-revoked")
    expect(page.locator("main .notice[role=status]")).to_contain_text("The token was revoked")
    expect(page.locator("#tokens tbody tr", has_text="Laptop script")).to_have_count(0)
    after = httpx.get(f"{server.url}/api/v1/me", headers=auth, timeout=10)
    assert after.status_code == 401
    refused = httpx.post(
        f"{server.url}/api/v1/images",
        files={"file": ("late.png", png_bytes(), "image/png")},
        headers=auth,
        timeout=10,
    )
    assert refused.status_code == 401, refused.text


# --------------------------------------------------------------------------------------------
# 5. ShareX


def test_sharex_uploader_download_upload_and_delete(
    page: Page, new_page: PageFactory, server: RunningServer, account: Account
) -> None:
    page.goto("/account")
    with page.expect_download() as download_info:
        page.locator("#sharex-download").click()
    download = download_info.value
    assert download.suggested_filename == "chitram-127.0.0.1.sxcu"
    config = json.loads(Path(download.path()).read_text(encoding="utf-8"))

    assert isinstance(config["Version"], str)
    assert re.fullmatch(r"\d+\.\d+\.\d+", config["Version"]), config["Version"]
    assert config["DestinationType"] == "ImageUploader"
    assert config["RequestMethod"] == "POST"
    assert config["Body"] == "MultipartFormData"
    assert config["RequestURL"] == f"{server.url}/api/v1/images"
    assert re.fullmatch(r"Bearer chi_[A-Za-z0-9_-]+", config["Headers"]["Authorization"])
    assert config["FileFormName"] == "file"
    assert config["URL"] == "{json:url}"
    assert config["DeletionURL"] == "{json:delete_url}"

    # The file's token is listed on the account page (never shown there itself).
    page.goto("/account")
    expect(page.locator("#tokens tbody tr", has_text="ShareX")).to_have_count(1)
    assert config["Headers"]["Authorization"].removeprefix("Bearer ") not in page.content()

    # What ShareX does with the file: one multipart POST, then it reads url and delete_url.
    response = httpx.post(
        config["RequestURL"],
        headers=config["Headers"],
        data=config.get("Arguments", {}),
        files={config["FileFormName"]: ("Screenshot.png", png_bytes((200, 100)), "image/png")},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    image_url, delete_url = answer["url"], answer["delete_url"]
    assert httpx.get(image_url, timeout=10).status_code == 200
    assert re.search(r"/delete#token=[A-Za-z0-9_-]+$", delete_url), delete_url

    # The deletion link opens in whatever browser ShareX hands it to: here one not logged in.
    browser_page = new_page()
    browser_page.goto(delete_url)
    expect(browser_page.locator("h1")).to_have_text("Delete this image?")
    expect(browser_page.locator("input#delete-token")).to_have_value(delete_url.split("#token=")[1])
    browser_page.on("dialog", lambda dialog: dialog.accept())
    browser_page.get_by_role("button", name="Delete this image").click()
    expect(browser_page.locator("article.deleted h1")).to_have_text("Image deleted")
    assert httpx.get(image_url, timeout=10).status_code == 404
    assert api_status(server, answer["id"]) == 404


# --------------------------------------------------------------------------------------------
# 6. accessibility, console errors, inline code


class InlineCode(HTMLParser):
    """Finds what a strict CSP would block in served HTML: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        self.found.extend(f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on"))


def served_problems(response: Response | None) -> list[str]:
    """Inline code in the HTML as served, and a CSP that would let it run."""
    assert response is not None
    problems: list[str] = []
    parser = InlineCode()
    parser.feed(response.text())
    problems.extend(parser.found)
    policy = response.headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    if directives.get("script-src") != ["'self'"] or "unsafe-inline" in policy or "unsafe-eval" in policy:
        problems.append(f"weak CSP: {policy!r}")
    return problems


def page_problems(page: Page, response: Response | None) -> list[str]:
    """Inline code, and axe (WCAG 2.1 AA) in light on a desktop and in dark on a phone."""
    problems = served_problems(response)
    page.wait_for_load_state("networkidle")
    for scheme, viewport in PASSES:
        page.set_viewport_size(viewport)
        page.emulate_media(color_scheme=scheme)
        results = Axe().run(page, options=WCAG_AA)
        if results.violations_count:
            problems.append(f"axe, {scheme} at {viewport['width']} px:\n{results.generate_report()}")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    return problems


def test_account_pages_pass_axe_and_the_csp(page: Page, server: RunningServer, page_errors: PageErrors) -> None:
    page_errors.allow("status of 401")  # the login page showing a wrong password
    found: dict[str, list[str]] = {}

    found["/register"] = page_problems(page, page.goto("/register"))
    found["/login"] = page_problems(page, page.goto("/login"))
    page.fill("#email", unique_email("nobody"))
    page.fill("#password", "wrong password here")
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("alert")).to_be_visible()
    found["/login with an error"] = page_problems(page, refused.value)

    register(page)
    token = create_token(page, "Checked by axe")
    token_upload(server.url, token, title="Unlisted one")
    token_upload(server.url, token, title="Public one", visibility="public")
    private = token_upload(server.url, token, title="Private one", visibility="private")

    page.goto("/account")
    page.fill("#token-name", "Second token")
    with page.expect_navigation() as created:
        page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token-value")).to_be_visible()
    expect(page.locator("#tokens tbody tr")).to_have_count(2)
    found["/account with a new token"] = page_problems(page, created.value)

    found["/me/images"] = page_problems(page, page.goto("/me/images"))
    expect(page.locator("#my-images > li.card")).to_have_count(3)
    found["edit page"] = page_problems(page, page.goto(f"/i/{private['id']}/edit"))

    response = page.goto(f"/i/{private['id']}")
    page.get_by_role("button", name="Make a link").click()
    expect(page.locator("#private-url")).to_be_visible()
    found["private image with a link"] = page_problems(page, response)

    failing = {where: problems for where, problems in found.items() if problems}
    assert not failing, "\n\n".join(f"{where}:\n" + "\n".join(problems) for where, problems in failing.items())
    # The page fixture fails the test at teardown on console errors or CSP violations.


def test_logged_in_pages_fit_a_phone(new_page: PageFactory) -> None:
    """The logged-in nav has five entries: on a phone it wraps, and Log out stays on screen."""
    page = new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    register(page)
    wide: dict[str, int] = {}
    for path in ("/", "/me/images", "/account"):
        page.goto(path)
        wide[path] = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        logout = nav_button(page, "Log out")
        box = logout.bounding_box()
        assert box is not None
        if box["x"] + box["width"] > PHONE["width"]:
            wide[f"{path}: Log out is off screen"] = int(box["x"] + box["width"] - PHONE["width"])
    assert not {path: px for path, px in wide.items() if px > 0}, wide
