"""The upload page with JavaScript: picker, drop, paste, several files, copy buttons, this browser's list."""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import PageErrors, api_upload, b64, png_bytes, png_file, text_file
from tests.support.server import RunningServer

pytestmark = pytest.mark.timeout(60)

SNIPPETS = ("direct", "page", "markdown", "bbcode", "html")


def result_for(page: Page, row: Locator) -> dict[str, str]:
    """The finished upload in ``row``: its data attributes and every share snippet's value."""
    article = row.locator("article.result[data-uploaded]")
    expect(article).to_have_count(1)
    image_id = article.get_attribute("data-id")
    assert image_id and re.fullmatch(r"[A-Za-z0-9_-]{12}", image_id), image_id
    values = {key: page.locator(f"#share-{key}-{image_id}").input_value() for key in SNIPPETS}
    values["id"] = image_id
    values["delete_link"] = page.locator(f"#delete-{image_id}").input_value()
    values["delete_token"] = article.get_attribute("data-delete-token") or ""
    values["page_url"] = article.get_attribute("data-page-url") or ""
    return values


def assert_good_result(page: Page, server: RunningServer, row: Locator) -> dict[str, str]:
    """A done row with a loaded thumbnail and correct, absolute share links; returns its values."""
    expect(row).to_have_class(re.compile(r"\bdone\b"))
    values = result_for(page, row)
    image_id = values["id"]
    thumbnail = row.locator("article.result img")
    expect(thumbnail).to_have_attribute("src", f"{server.url}/i/{image_id}/thumbnail.webp")
    natural_width = thumbnail.evaluate("img => img.decode().then(() => img.naturalWidth)")
    assert natural_width > 0
    assert values["direct"] == f"{server.url}/i/{image_id}.png"
    assert values["page"] == f"{server.url}/i/{image_id}"
    assert values["page_url"] == values["page"]
    assert values["markdown"].endswith(f"]({values['direct']})]({values['page']})")
    assert values["bbcode"] == f"[url={values['page']}][img]{values['direct']}[/img][/url]"
    assert f'href="{values["page"]}"' in values["html"]
    assert f'src="{values["direct"]}"' in values["html"]
    assert values["delete_token"]
    assert values["delete_link"] == f"{values['page']}/delete#token={values['delete_token']}"
    # Every share row has a label, a read-only field and a copy button for that field.
    for key in SNIPPETS:
        field_id = f"share-{key}-{image_id}"
        copy_row = row.locator(".copy-row", has=page.locator(f"#{field_id}"))
        expect(copy_row.locator("label")).to_have_count(1)
        expect(copy_row.locator("input[readonly]")).to_have_count(1)
        expect(copy_row.locator(f'button.copy[data-copy="{field_id}"]')).to_have_count(1)
    return values


def fetch_png(url: str) -> Image.Image:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def record_rows(page: Page) -> None:
    """Note each upload row as the script adds it (uploads finish too fast to catch it later)."""
    page.evaluate(
        """() => {
          window.__rowsSeen = [];
          new MutationObserver((mutations) => {
            for (const mutation of mutations) {
              for (const node of mutation.addedNodes) {
                if (node.matches && node.matches("li.upload-row")) {
                  window.__rowsSeen.push({
                    name: node.querySelector(".file-name")?.textContent,
                    progress: node.querySelector("progress") !== null,
                  });
                }
              }
            }
          }).observe(document.getElementById("upload-list"), { childList: true });
        }"""
    )


def rows_seen(page: Page) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = page.evaluate("window.__rowsSeen")
    return seen


def rows(page: Page) -> Locator:
    return page.locator("#upload-list > li.upload-row")


def test_upload_through_the_file_picker(page: Page, server: RunningServer) -> None:
    page.goto("/")
    expect(page.locator("#upload-section")).to_be_hidden()
    expect(page.locator("#file")).to_have_js_property("multiple", True)

    form = page.locator("form#upload-form")
    expect(form).to_have_attribute("action", "/upload")
    expect(form).to_have_attribute("enctype", "multipart/form-data")
    expect(form.locator('input[type=hidden][name="_csrf_token"]')).to_have_count(1)
    expect(page.locator("input[name=visibility][value=unlisted]")).to_be_checked()
    page.check("input[name=visibility][value=public]")

    page.set_input_files("#file", png_file("picker.png", size=(150, 90)))  # no click on Upload needed

    expect(page.locator("#upload-section")).to_be_visible()
    expect(rows(page)).to_have_count(1)
    values = assert_good_result(page, server, rows(page).first)
    image = fetch_png(values["direct"])
    assert image.size == (150, 90)
    assert image.format == "PNG"
    described = httpx.get(f"{server.url}/api/v1/images/{values['id']}", timeout=10).json()
    assert described["visibility"] == "public"

    page.goto("/gallery")
    expect(page.locator(f'#gallery > li.tile > a[href="{values["page"]}"]')).to_have_count(1)


def drop_files(page: Page, files: list[tuple[str, bytes]], target: str = "#drop-zone") -> None:
    """Drag ``files`` over ``target`` and drop them there, as a file manager would."""
    data_transfer = page.evaluate_handle(
        """(files) => {
          const dt = new DataTransfer();
          for (const [name, data] of files) {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, { type: "image/png" }));
          }
          return dt;
        }""",
        [[name, b64(data)] for name, data in files],
    )
    page.dispatch_event(target, "dragenter", {"dataTransfer": data_transfer})
    page.dispatch_event(target, "dragover", {"dataTransfer": data_transfer})
    expect(page.locator("#drop-zone")).to_have_class(re.compile(r"\bdragging\b"))
    page.dispatch_event(target, "drop", {"dataTransfer": data_transfer})


def test_upload_through_a_dropped_file(page: Page, server: RunningServer) -> None:
    page.goto("/")
    drop_files(page, [("dropped.png", png_bytes((100, 100)))])

    expect(page.locator("#drop-zone")).not_to_have_class(re.compile(r"\bdragging\b"))
    expect(rows(page)).to_have_count(1)
    values = assert_good_result(page, server, rows(page).first)
    assert fetch_png(values["direct"]).size == (100, 100)
    described = httpx.get(f"{server.url}/api/v1/images/{values['id']}", timeout=10).json()
    assert described["visibility"] == "unlisted", "unlisted is the default"
    # The page stayed put: a drop must not navigate to the file.
    assert page.url == f"{server.url}/"


def test_a_drop_outside_the_zone_uploads_too(page: Page, server: RunningServer) -> None:
    page.goto("/")
    drop_files(page, [("near-miss.png", png_bytes())], target="h1")
    expect(rows(page)).to_have_count(1)
    assert_good_result(page, server, rows(page).first)


def test_upload_through_paste(page: Page, server: RunningServer) -> None:
    page.goto("/")
    record_rows(page)
    page.evaluate(
        """(data) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const dt = new DataTransfer();
          // Screenshots arrive from the clipboard as a nameless "image.png".
          dt.items.add(new File([bytes], "image.png", { type: "image/png" }));
          const event = new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
          document.body.dispatchEvent(event);
        }""",
        b64(png_bytes((64, 64))),
    )
    expect(rows(page)).to_have_count(1)
    values = assert_good_result(page, server, rows(page).first)
    assert fetch_png(values["direct"]).size == (64, 64)
    # The script names the nameless paste.
    [seen] = rows_seen(page)
    assert re.fullmatch(r"pasted-\d+-0\.png", seen["name"]), seen


def test_several_files_at_once_with_one_that_is_not_an_image(
    page: Page, server: RunningServer, page_errors: PageErrors
) -> None:
    page_errors.allow("status of 415")  # Chromium logs the rejected XHR upload
    page.goto("/")
    record_rows(page)

    page.set_input_files("#file", [png_file("one.png"), text_file("notes.txt"), png_file("two.png")])

    expect(rows(page)).to_have_count(3)
    expect(page.locator("li.upload-row.done")).to_have_count(2)
    failed = page.locator("li.upload-row.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".file-name")).to_have_text("notes.txt")
    expect(failed.locator("progress")).to_have_count(0)
    status = failed.locator("p.status")
    expect(status).to_contain_text("JPEG")
    expect(status).to_contain_text("AVIF")
    assert (status.text_content() or "")[:1].isupper(), "the server's detail is shown capitalised"

    seen = rows_seen(page)
    assert sorted(row["name"] for row in seen) == ["notes.txt", "one.png", "two.png"]
    assert all(row["progress"] for row in seen), seen

    done = page.locator("li.upload-row.done")
    ids = {assert_good_result(page, server, done.nth(i))["id"] for i in range(2)}
    assert len(ids) == 2


def test_copy_buttons_put_snippets_on_the_clipboard(page: Page, server: RunningServer) -> None:
    page.goto("/")
    page.fill("#title", "Sunset")
    page.set_input_files("#file", png_file("sunset.png"))
    values = assert_good_result(page, server, rows(page).first)
    image_id = values["id"]

    markdown_button = page.locator(f'button.copy[data-copy="share-markdown-{image_id}"]')
    markdown_button.click()
    expect(markdown_button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"[![Sunset]({values['direct']})]({values['page']})"

    direct_button = page.locator(f'button.copy[data-copy="share-direct-{image_id}"]')
    direct_button.click()
    expect(direct_button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{server.url}/i/{image_id}.png"

    delete_button = page.locator(f'button.copy[data-copy="delete-{image_id}"]')
    delete_button.click()
    expect(delete_button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == values["delete_link"]
    # "Copied" is brief: the label comes back.
    expect(markdown_button).to_have_text("Copy")


def test_uploads_are_remembered_and_deletable_from_the_home_page(page: Page, server: RunningServer) -> None:
    page.goto("/")
    expect(page.locator("#mine-section")).to_be_hidden()
    page.fill("#title", "Keep me")
    page.set_input_files("#file", png_file("keep.png"))
    keep = assert_good_result(page, server, rows(page).first)
    page.fill("#title", "Remove me")
    page.set_input_files("#file", png_file("remove.png"))
    expect(page.locator("li.upload-row.done")).to_have_count(2)
    remove = result_for(page, page.locator("li.upload-row.done").first)
    assert remove["id"] != keep["id"]

    page.reload()
    expect(page.locator("#mine-section")).to_be_visible()
    cards = page.locator("#mine-list > li.card")
    expect(cards).to_have_count(2)
    expect(cards.first).to_have_attribute("data-id", remove["id"])  # newest first
    expect(cards.first.locator(".card-title")).to_have_text("Remove me")

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(f'#mine-list > li.card[data-id="{remove["id"]}"] [data-action="forget-delete"]').click()
    expect(page.locator(f'#mine-list > li.card[data-id="{remove["id"]}"]')).to_have_count(0)
    expect(page.locator("#toasts .toast.success")).to_contain_text("deleted")
    expect(cards).to_have_count(1)
    assert httpx.get(remove["page"], timeout=10).status_code == 404
    assert httpx.get(keep["page"], timeout=10).status_code == 200

    page.reload()
    expect(page.locator("#mine-list > li.card")).to_have_count(1)
    expect(page.locator("#mine-list > li.card")).to_have_attribute("data-id", keep["id"])


def test_api_uploads_are_not_listed_as_this_browsers(page: Page, server: RunningServer) -> None:
    api_upload(server.url, visibility="unlisted")
    page.goto("/")
    expect(page.locator("#mine-section")).to_be_hidden()
    expect(page.locator("#mine-list > li")).to_have_count(0)


def test_copy_button_label_comes_back_after_quick_repeated_clicks(page: Page, server: RunningServer) -> None:
    page.goto("/")
    page.set_input_files("#file", png_file("twice.png"))
    values = assert_good_result(page, server, rows(page).first)
    button = page.locator(f'button.copy[data-copy="share-page-{values["id"]}"]')
    button.click()
    expect(button).to_have_text("Copied")
    button.click()  # again while it still says "Copied"
    assert page.evaluate("navigator.clipboard.readText()") == values["page"]
    expect(button).to_have_text("Copy")
    expect(button).not_to_have_class(re.compile(r"\bcopied\b"))


def test_a_batch_keeps_the_title_and_visibility_chosen_with_it(page: Page, server: RunningServer) -> None:
    """Files still queued keep the batch's choices even when the form changes for the next batch."""
    held: list[Any] = []
    page.route("**/upload", lambda route: held.append(route))
    page.goto("/")
    page.fill("#title", "Batch A")
    page.check("input[name=visibility][value=public]")
    page.set_input_files("#file", [png_file(f"batch-{n}.png") for n in range(5)])
    while len(held) < 3:  # three in flight, two waiting in the queue
        page.wait_for_timeout(20)
    page.fill("#title", "Batch B")
    page.check("input[name=visibility][value=unlisted]")
    released = 0
    while released < 5:
        while len(held) <= released:
            page.wait_for_timeout(20)
        held[released].continue_()
        released += 1
    expect(page.locator("li.upload-row.done")).to_have_count(5)
    ids = page.locator("article.result[data-uploaded]").evaluate_all("els => els.map(e => e.dataset.id)")
    for image_id in ids:
        described = httpx.get(f"{server.url}/api/v1/images/{image_id}", timeout=10).json()
        assert (described["title"], described["visibility"]) == ("Batch A", "public")


def test_pasting_text_into_the_title_stays_text(page: Page) -> None:
    page.goto("/")
    page.focus("#title")
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.setData("text/plain", "Quarterly chart");
            transfer.items.add(new File([bytes], "image.png", {type: "image/png"}));
            document.activeElement.dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
        }""",
        b64(png_bytes()),
    )
    expect(page.locator("#upload-section")).to_be_hidden()
    expect(page.locator("li.upload-row")).to_have_count(0)


def test_a_title_names_one_batch_and_a_deleted_upload_says_so(page: Page, server: RunningServer) -> None:
    page.goto("/")
    page.fill("#title", "My cat")
    page.set_input_files("#file", png_file("cat.png"))
    expect(page.locator("li.upload-row.done")).to_have_count(1)
    expect(page.locator("#title")).to_have_value("")  # the next batch starts untitled
    page.set_input_files("#file", png_file("dog.png"))
    expect(page.locator("li.upload-row.done")).to_have_count(2)
    newest = result_for(page, page.locator("li.upload-row.done").first)
    assert httpx.get(f"{server.url}/api/v1/images/{newest['id']}", timeout=10).json()["title"] is None
    expect(page.locator("li.upload-row.done").first).to_contain_text("dog.png")  # untitled: named by file

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(f'#mine-list > li.card[data-id="{newest["id"]}"] [data-action="forget-delete"]').click()
    # Its result above no longer offers links and a key that lead nowhere.
    expect(page.locator(f'#upload-list .result[data-id="{newest["id"]}"]')).to_have_count(0)
    expect(page.locator("#upload-list li.deleted")).to_have_text("Untitled image: deleted.")


def test_the_image_page_shows_an_animated_gif_itself(page: Page, server: RunningServer) -> None:
    frames = [Image.new("RGB", (60, 40), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    response = httpx.post(
        f"{server.url}/api/v1/images",
        files={"file": ("spin.gif", buffer.getvalue(), "image/gif")},
        data={"visibility": "unlisted"},
        timeout=30,
    )
    created = response.json()
    page.goto(f"/i/{created['id']}")
    # The WebP preview holds the first frame only; the page shows the GIF, which moves.
    expect(page.locator("figure.image img")).to_have_attribute("src", created["url"])
