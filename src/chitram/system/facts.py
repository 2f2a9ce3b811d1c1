"""Reading and changing the operational facts (system/models.py) without scanning big tables.

Writers pass their own session and commit with the change they count; readers are single
primary-key or short-range queries, so the cost does not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.system.models import BackupRound, Counter, UploadOutcomeCount

IMAGES = "images"
STORED_BYTES = "stored_bytes"


@dataclass(frozen=True)
class Totals:
    images: int
    stored_bytes: int


def _insert(session: AsyncSession) -> type[postgresql.Insert] | type[sqlite.Insert]:
    dialect = session.get_bind().dialect.name
    return postgresql.Insert if dialect == "postgresql" else sqlite.Insert


async def add_to_counters(session: AsyncSession, changes: Mapping[str, int]) -> None:
    """Add to running totals inside the caller's transaction (it commits).

    One statement, names in a fixed order: concurrent transactions lock the rows in the same
    order, so they wait for each other instead of deadlocking. Call it last, just before the
    commit, so the shared rows stay locked only briefly.
    """
    if not any(changes.values()):
        return
    # Zeros are written too: a duplicate upload (no new bytes) must run the very statement a new
    # one runs, or the uploader could tell that someone already stored that content.
    rows = [{"name": name, "value": delta} for name, delta in sorted(changes.items())]
    insert = _insert(session)(Counter).values(rows)
    statement = insert.on_conflict_do_update(
        index_elements=[Counter.name], set_={"value": Counter.value + insert.excluded.value}
    )
    await session.execute(statement)


async def read_totals(session: AsyncSession) -> Totals:
    values = dict((await session.execute(select(Counter.name, Counter.value))).all())
    return Totals(images=values.get(IMAGES, 0), stored_bytes=values.get(STORED_BYTES, 0))


def epoch_hour(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


async def count_upload_outcome(session: AsyncSession, outcome: str, *, at: datetime | None = None) -> None:
    """Count one upload's outcome in its hour, and commit (its own short transaction)."""
    hour = epoch_hour(at or datetime.now(UTC))
    insert = _insert(session)(UploadOutcomeCount).values(epoch_hour=hour, outcome=outcome, count=1)
    statement = insert.on_conflict_do_update(
        index_elements=[UploadOutcomeCount.epoch_hour, UploadOutcomeCount.outcome],
        set_={"count": UploadOutcomeCount.count + 1},
    )
    await session.execute(statement)
    await session.commit()


async def upload_outcomes_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    """Uploads per outcome from the hour that holds `since` on (a primary-key range scan)."""
    statement = (
        select(UploadOutcomeCount.outcome, func.sum(UploadOutcomeCount.count))
        .where(UploadOutcomeCount.epoch_hour >= epoch_hour(since))
        .group_by(UploadOutcomeCount.outcome)
    )
    return {outcome: int(total) for outcome, total in (await session.execute(statement)).all()}


@dataclass(frozen=True)
class RoundResult:
    """What a backup round reports about itself."""

    started_at: datetime
    finished_at: datetime
    ok: bool
    verified: bool
    backup_id: str | None = None
    size: int | None = None
    error: str | None = None

    @property
    def age(self) -> timedelta:
        return datetime.now(UTC) - self.finished_at


async def record_backup_round(session: AsyncSession, result: RoundResult) -> None:
    session.add(
        BackupRound(
            started_at=result.started_at,
            finished_at=result.finished_at,
            ok=result.ok,
            verified=result.verified,
            backup_id=result.backup_id,
            size=result.size,
            error=result.error,
        )
    )
    await session.commit()


@dataclass(frozen=True)
class BackupFacts:
    last_round: RoundResult | None
    last_verified: RoundResult | None


async def backup_facts(session: AsyncSession) -> BackupFacts:
    newest = select(BackupRound).order_by(BackupRound.id.desc()).limit(1)
    verified = newest.where(BackupRound.verified.is_(True))
    last = (await session.scalars(newest)).one_or_none()
    last_verified = (await session.scalars(verified)).one_or_none()
    return BackupFacts(_round(last), _round(last_verified))


def _round(row: BackupRound | None) -> RoundResult | None:
    if row is None:
        return None
    return RoundResult(
        started_at=row.started_at,
        finished_at=row.finished_at,
        ok=row.ok,
        verified=row.verified,
        backup_id=row.backup_id,
        size=row.size,
        error=row.error,
    )
