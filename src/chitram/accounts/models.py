"""Tables for accounts and their API tokens."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import IdentityAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column


class User(IdentityAuditBase):
    """An account. `email_key` (the casefolded address) is what makes an address unique."""

    __tablename__ = "users"
    # SQLite reuses the highest rowid after a delete unless told not to: a session or token of a
    # deleted account must never fit a newer one (PostgreSQL identities never repeat).
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy reads it from the class

    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Every session remembers the epoch it was made in; bumping it ends them all at once
    # (password change, "log out everywhere", disabling the account).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    # Bytes of originals this account keeps, kept in step with its images in the same
    # transaction, so the quota check is one atomic UPDATE.
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class ApiToken(IdentityAuditBase):
    """A personal token for the JSON API. Only its SHA-256 is stored; it is shown once."""

    __tablename__ = "api_tokens"
    # As for users: a revoke form left open in another tab must never hit a newer token.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy reads it from the class

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so people can tell their tokens apart in the list.
    hint: Mapped[str] = mapped_column(String(16))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
