"""polyfactory factories for rows, to seed many images without decoding any pixels."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from polyfactory import Use
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory

from chitram.images.models import Blob, Image, Visibility
from chitram.images.services import new_public_id, object_keys


def _now() -> datetime:
    return datetime.now(UTC)


def _sha() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


class BlobFactory(SQLAlchemyFactory[Blob]):
    __set_relationships__ = False
    sha256 = Use(_sha)
    content_type = "image/png"
    refcount = 0
    created_at = Use(_now)
    updated_at = Use(_now)

    @classmethod
    def build(cls, **kwargs: Any) -> Blob:
        blob = super().build(**kwargs)
        blob.original_key, blob.thumbnail_key, blob.preview_key = object_keys(blob.sha256, "png")
        return blob


class ImageFactory(SQLAlchemyFactory[Image]):
    __set_relationships__ = False
    __set_primary_key__ = False
    public_id = Use(new_public_id)
    visibility = Use(lambda: Visibility.PUBLIC.value)
    delete_token_hash = None
    owner_id = None
    created_at = Use(_now)
    updated_at = Use(_now)
