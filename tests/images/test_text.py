"""Titles and file names cannot reorder, hide or break the text shown around them."""

from __future__ import annotations

import pytest

from chitram.images.text import clean_text
from tests.images.test_api import Client, png_bytes, upload
from tests.images.test_views import HTML, csrf_token, upload_page

# Each hostile string, and what is left of it.
HOSTILE = [
    ("\u202eexe.jpg", "exe.jpg"),  # right-to-left override
    ("a\u202ab\u202bc\u202cd\u202de", "abcde"),  # embeddings, pop
    ("\u2066isolated\u2069 \u2067rtl\u2068", "isolated rtl"),  # isolates
    ("mark\u200e\u200f\u061c", "mark"),  # LRM, RLM, arabic letter mark
    ("nul\x00bell\x07del\x7f", "nulbelldel"),  # C0 and DEL
    ("c1\x80\x9b[31mred", "c1[31mred"),  # C1 controls, CSI included
    ("line\u2028para\u2029end", "line para end"),  # separators become a space
    ("one\r\ntwo\tthree\x85four", "one  two three four"),
    ("\ufeffbom\ufff9note\ufffb", "bomnote"),
    ("\u206adeprecated\u206f", "deprecated"),
    ("\u202e\u2066\u200f", ""),  # nothing visible left
]
# Ordinary Unicode stays exactly as it is (after NFC).
KEPT = [
    "Café au lait",
    "東京の夜景 — 2026",
    "नमस्ते",  # Devanagari with combining signs
    "میخواهم",  # Persian, whose ZWNJ must stay
    "\U0001f469\u200d\U0001f4bb at work \U0001f3f3\ufe0f\u200d\U0001f308",  # ZWJ sequences
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # flag with tag characters
    "\U0001f44d\U0001f3fd",  # skin-tone modifier
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE)
def test_hostile_characters_are_removed(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_unicode_is_kept(text: str) -> None:
    assert clean_text(text) == text


def test_text_is_composed() -> None:
    assert clean_text("cafe\u0301") == "caf\u00e9"


async def test_api_titles_are_cleaned_on_upload_and_on_change(client: Client) -> None:
    created = await upload(client, png_bytes(), title="\u202eevil\u2028title\x9b")
    assert created.status_code == 201, created.text
    assert created.json()["title"] == "evil title"
    path = f"/api/v1/images/{created.json()['id']}"
    token = {"X-Delete-Token": created.json()["delete_token"]}
    changed = await client.patch(path, json={"title": "\u2067\U0001f469\u200d\U0001f4bb\u2069\n"}, headers=token)
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "\U0001f469\u200d\U0001f4bb"
    assert (await client.get(path)).json()["title"] == "\U0001f469\u200d\U0001f4bb"
    # Only controls: no title at all, rather than an invisible one.
    emptied = await client.patch(path, json={"title": "\u202e\u200f"}, headers=token)
    assert emptied.json()["title"] is None


async def test_page_upload_titles_are_cleaned(client: Client) -> None:
    token = await csrf_token(client)
    response = await upload_page(client, headers={**HTML, "x-csrftoken": token}, title="x\u202egnp.exe\u0085")
    assert response.status_code == 201, response.text
    assert "\u202e" not in response.text and "\x85" not in response.text
    assert "xgnp.exe" in response.text
