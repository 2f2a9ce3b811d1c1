"""What crosses HTTP for images (msgspec), and the metadata kept in the cache."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from chitram.images.models import Visibility

TitleField = Annotated[str, msgspec.Meta(max_length=200, description="Shown on the image page and used as alt text.")]


# How long signed links to a private image may live.
MIN_LINK_SECONDS = 60
MAX_LINK_SECONDS = 7 * 24 * 3600


class ImageRead(msgspec.Struct):
    id: str
    url: str
    thumbnail_url: str
    preview_url: str
    page_url: str
    width: int
    height: int
    size: int
    content_type: str
    sha256: str
    title: str | None
    visibility: Visibility
    created_at: datetime


class ImageCreated(ImageRead):
    delete_token: str
    """Shown once; send it back in the X-Delete-Token header to edit or delete the image."""
    delete_url: str
    """A page that deletes the image (the token is in its #fragment); for tools such as ShareX."""


class ImageUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: TitleField | msgspec.UnsetType | None = msgspec.UNSET
    visibility: Visibility | msgspec.UnsetType = msgspec.UNSET


class SignedUrlRequest(msgspec.Struct, forbid_unknown_fields=True):
    expires_in: Annotated[
        int,
        msgspec.Meta(
            ge=MIN_LINK_SECONDS, le=MAX_LINK_SECONDS, description="Seconds the links stay valid (60 to 604800)."
        ),
    ] = 3600


class SignedUrls(msgspec.Struct):
    url: str
    thumbnail_url: str
    preview_url: str
    expires_at: datetime


class ImagePage(msgspec.Struct):
    items: list[ImageRead]
    next_cursor: str | None


class StoredVariant(msgspec.Struct, frozen=True):
    key: str
    size: int
    width: int
    height: int
    content_type: str


class CachedImage(msgspec.Struct, frozen=True):
    """Everything needed to serve an image and describe it, without touching the database."""

    public_id: str
    title: str | None
    visibility: Visibility
    original_filename: str | None
    created_at: datetime
    sha256: str
    extension: str
    original: StoredVariant
    thumbnail: StoredVariant
    preview: StoredVariant
    delete_token_hash: str | None = None
    owner_id: int | None = None
