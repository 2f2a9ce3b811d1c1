"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by test_schemathesis.py).

A schema cannot say which strings are authentic page cursors (they are sealed by the server)
or which bytes decode as an image; what it can say is checked as generated.
"""

from __future__ import annotations

import io
import random
from typing import Any

import schemathesis
from PIL import Image


@schemathesis.hook
def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    # A made-up cursor is refused with 400 by design (tests/images/test_gallery_paging.py);
    # real ones come from next_cursor, which the stateful phase follows.
    if isinstance(query, dict):
        query.pop("cursor", None)
    return query


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("file"), bytes) and random.random() < 0.8:
        body["file"] = _small_png()
    return body


def _small_png() -> bytes:
    colour = tuple(random.randrange(256) for _ in range(3))
    buffer = io.BytesIO()
    Image.new("RGB", (random.randint(1, 48), random.randint(1, 48)), colour).save(buffer, "PNG")
    return buffer.getvalue()
