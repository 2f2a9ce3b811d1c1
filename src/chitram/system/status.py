"""One report of everything an operator watches: shared by `chitram-admin status` and /admin.

It needs attention when a dependency is down, no verified backup is recent enough, or the disk
holding DATA_DIR is too full (thresholds in settings). Every fact is cheap: readiness checks,
counters, the hourly upload outcomes of one day and the newest backup rounds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from chitram.db import Database
from chitram.settings import Settings
from chitram.system.facts import BackupFacts, RoundResult, Totals, backup_facts, read_totals, upload_outcomes_since
from chitram.system.health import Readiness

STORED = "stored"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


DiskProbe = Callable[[Path], DiskUsage]


def disk_usage(path: Path) -> DiskUsage:
    """The filesystem holding `path` (or its nearest existing parent: DATA_DIR may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    total, used, free = shutil.disk_usage(path)
    return DiskUsage(total, used, free)


@dataclass(frozen=True)
class Disk:
    path: str
    total: int
    used: int
    free: int

    @property
    def percent(self) -> float:
        """As `df` counts it: of the space the app can use (blocks kept for root are not)."""
        usable = self.used + self.free
        return round(100 * self.used / usable, 1) if usable else 0.0


@dataclass(frozen=True)
class Uploads:
    since: datetime
    by_outcome: dict[str, int]

    @property
    def stored(self) -> int:
        return self.by_outcome.get(STORED, 0)

    @property
    def refused(self) -> dict[str, int]:
        return {outcome: count for outcome, count in sorted(self.by_outcome.items()) if outcome != STORED}


@dataclass(frozen=True)
class StatusReport:
    checked_at: datetime
    readiness: Readiness
    disk: Disk | None
    totals: Totals | None
    uploads: Uploads | None
    backups: BackupFacts | None
    storage: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def backup_age(self) -> timedelta | None:
        verified = self.backups.last_verified if self.backups else None
        return self.checked_at - verified.finished_at if verified else None


async def gather_status(
    settings: Settings,
    *,
    readiness: Readiness,
    database: Database | None,
    probe_disk: DiskProbe = disk_usage,
    now: datetime | None = None,
) -> StatusReport:
    """Collect the facts and judge them. `database` None (or one that is down): the facts kept
    in it are reported as unknown rather than waited for."""
    now = now or datetime.now(UTC)
    problems = [
        f"{name} is down ({component.error or 'no answer'})"
        for name, component in readiness.components.items()
        if component.status != "ok"
    ]
    totals = uploads = backups = None
    database_check = readiness.components.get("database")
    if database is not None and database_check is not None and database_check.status == "ok":
        since = now - timedelta(hours=24)
        try:
            async with database.sessions() as session:
                totals = await read_totals(session)
                uploads = Uploads(since, await upload_outcomes_since(session, since))
                backups = await backup_facts(session)
        except Exception as exc:  # noqa: BLE001 - reported as a problem with its reason
            problems.append(f"the operational facts could not be read ({type(exc).__name__}: {exc})")
    disk = _disk(settings, probe_disk, problems)
    report = StatusReport(
        checked_at=now,
        readiness=readiness,
        disk=disk,
        totals=totals,
        uploads=uploads,
        backups=backups,
        storage=_storage_location(settings),
        problems=problems,
    )
    _judge_backups(report, settings.alerts.alert_backup_max_age_hours)
    return report


def _disk(settings: Settings, probe: DiskProbe, problems: list[str]) -> Disk | None:
    try:
        usage = probe(settings.data_dir)
    except OSError as exc:
        problems.append(f"the disk usage of {settings.data_dir} is unknown ({exc})")
        return None
    disk = Disk(str(settings.data_dir), usage.total, usage.used, usage.free)
    limit = settings.alerts.alert_disk_max_percent
    if disk.percent > limit:
        problems.append(f"the disk holding {disk.path} is {disk.percent:g} % full (the limit is {limit:g} %)")
    return disk


def _judge_backups(report: StatusReport, max_age_hours: float) -> None:
    if report.backups is None:
        return  # unknown: the database problem is reported already
    age = report.backup_age()
    if age is None:
        report.problems.append("no verified backup is recorded; run `chitram-admin backup run`")
    elif age > timedelta(hours=max_age_hours):
        report.problems.append(f"the newest verified backup is {_hours(age)} old (the limit is {max_age_hours:g} h)")


def _storage_location(settings: Settings) -> str:
    if settings.storage.storage_backend.value == "s3":
        return f"s3://{settings.storage.s3_bucket} at {settings.storage.s3_endpoint}"
    return str(settings.storage_path)


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"


# -- presentation ------------------------------------------------------------------------


def to_json(report: StatusReport) -> dict[str, Any]:
    """The report as plain JSON types (ISO 8601 times, byte counts)."""
    import msgspec

    backups = report.backups
    age = report.backup_age()
    return {
        "ok": report.ok,
        "problems": report.problems,
        "checked_at": report.checked_at.isoformat(),
        "components": msgspec.to_builtins(report.readiness.components),
        "backup": None
        if backups is None
        else {
            "last_round": _round_json(backups.last_round),
            "last_verified": _round_json(backups.last_verified),
            "age_seconds": round(age.total_seconds()) if age is not None else None,
        },
        "disk": None if report.disk is None else {**vars(report.disk), "percent": report.disk.percent},
        "storage": {
            "location": report.storage,
            "images": report.totals.images if report.totals else None,
            "stored_bytes": report.totals.stored_bytes if report.totals else None,
        },
        "uploads_24h": None
        if report.uploads is None
        else {"stored": report.uploads.stored, "refused": report.uploads.refused},
    }


def _round_json(result: RoundResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "ok": result.ok,
        "verified": result.verified,
        "backup_id": result.backup_id,
        "size": result.size,
        "error": result.error,
    }


def to_text(report: StatusReport, size: Callable[[int], str]) -> str:
    """The report for a terminal: what needs attention first, then each fact on its line."""
    lines = ["NEEDS ATTENTION:" if report.problems else "all good"]
    lines += [f"  - {problem}" for problem in report.problems]
    lines.append("components:")
    for name, component in report.readiness.components.items():
        state = "ok" if component.status == "ok" else f"DOWN ({component.error})"
        lines.append(f"  {name:<9} {state} ({component.latency_ms:g} ms)")
    lines.append(f"backup:    {describe_backup(report)}")
    if report.disk is not None:
        disk = report.disk
        lines.append(f"disk:      {disk.percent:g} % used, {size(disk.free)} free of {size(disk.total)} ({disk.path})")
    if report.totals is not None:
        totals = report.totals
        lines.append(f"storage:   {totals.images} images, {size(totals.stored_bytes)} ({report.storage})")
    if report.uploads is not None:
        refused = ", ".join(f"{outcome} {count}" for outcome, count in report.uploads.refused.items()) or "none"
        lines.append(f"uploads:   {report.uploads.stored} stored in the last 24 h; refused: {refused}")
    return "\n".join(lines)


def describe_backup(report: StatusReport) -> str:
    backups = report.backups
    if backups is None:
        return "unknown (the database cannot be read)"
    last, verified = backups.last_round, backups.last_verified
    if last is None:
        return "none recorded yet"
    when = last.finished_at.strftime("%Y-%m-%d %H:%M UTC")
    if last.ok and last.verified:
        text = f"{last.backup_id} at {when}, verified"
    elif last.ok:
        text = f"{last.backup_id} at {when}, not verified"
    else:
        text = f"the round at {when} FAILED: {last.error or 'verification failed'}"
    age = report.backup_age()
    if verified is not None and age is not None and verified != last:
        text += f"; newest verified {verified.backup_id}, {_hours(age)} ago"
    elif age is not None:
        text += f" ({_hours(age)} ago)"
    return text
