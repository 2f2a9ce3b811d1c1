"""Operational facts kept small so that reading them never scans the images table.

`counters` holds running totals changed in the same transaction as the rows they count;
`upload_outcomes` counts how uploads ended, per hour; `backup_rounds` records each backup's
result where both the app and the backup service can read it (they share only the database).
"""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import DefaultBase, IdentityAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class Counter(DefaultBase):
    """A running total, e.g. `images` or `stored_bytes`. No row means zero."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class UploadOutcomeCount(DefaultBase):
    """How many uploads ended with `outcome` during one hour (hours since the Unix epoch, UTC)."""

    __tablename__ = "upload_outcomes"

    epoch_hour: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class BackupRound(IdentityAuditBase):
    """One backup (`backup run`, `backup schedule` or `backup create`) and how it ended."""

    __tablename__ = "backup_rounds"

    started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    verified: Mapped[bool] = mapped_column(Boolean)
    backup_id: Mapped[str | None] = mapped_column(String(32), default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
