"""Tables for uploaded images and the content-addressed objects they point at."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from advanced_alchemy.base import DefaultBase, IdentityAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chitram.accounts import models as _accounts  # noqa: F401  # images.owner_id refers to users.id


def _now() -> datetime:
    return datetime.now(UTC)


class Visibility(StrEnum):
    PUBLIC = "public"
    UNLISTED = "unlisted"
    PRIVATE = "private"


class Blob(DefaultBase):
    """One stored original and its variants, shared by every upload of the same content.

    `refcount` counts the images that point here. A blob at zero is garbage: it is collected
    (objects first, then the row) under the row's lock, so an upload of the same content
    waits and then stores the objects again instead of pointing at deleted bytes.
    """

    __tablename__ = "blobs"
    __table_args__ = (CheckConstraint("refcount >= 0", name="refcount_non_negative"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    original_key: Mapped[str] = mapped_column(String(128))
    thumbnail_key: Mapped[str] = mapped_column(String(128))
    thumbnail_size: Mapped[int] = mapped_column(BigInteger)
    thumbnail_width: Mapped[int] = mapped_column(Integer)
    thumbnail_height: Mapped[int] = mapped_column(Integer)
    preview_key: Mapped[str] = mapped_column(String(128))
    preview_size: Mapped[int] = mapped_column(BigInteger)
    preview_width: Mapped[int] = mapped_column(Integer)
    preview_height: Mapped[int] = mapped_column(Integer)
    refcount: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now, onupdate=_now)


class Image(IdentityAuditBase):
    """An upload: what a link points at. Its bytes live in the blob."""

    __tablename__ = "images"
    __table_args__ = (
        # Keyset pagination of the public gallery walks this index newest first.
        Index("ix_images_visibility_id", "visibility", "id"),
        Index("ix_images_blob_sha256", "blob_sha256"),
        # "My images" walks this one, newest first.
        Index("ix_images_owner_id_id", "owner_id", "id"),
    )

    public_id: Mapped[str] = mapped_column(String(24), unique=True)
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.UNLISTED.value)
    original_filename: Mapped[str | None] = mapped_column(String(255), default=None)
    delete_token_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="RESTRICT"))
    # None: uploaded without an account (or kept when its account was deleted).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)

    blob: Mapped[Blob] = relationship(lazy="joined", innerjoin=True)
