"""`chitram-admin backup …`: create, list, verify, restore, prune, and the nightly run."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chitram.cli.common import CommandError, load_settings
from chitram.settings import Settings

if TYPE_CHECKING:
    from chitram.system.facts import RoundResult

T = TypeVar("T")

DEST_HELP = (
    "A folder, or s3://BUCKET[/PREFIX] (server and keys from CHITRAM_BACKUP_S3_*, else CHITRAM_S3_*). "
    "Default: CHITRAM_BACKUP_DEST, else DATA_DIR/backups."
)
dest_option = click.option("--dest", default=None, metavar="DEST", help=DEST_HELP)


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one async step; every failure an operator can act on becomes `error: …` and exit 1."""
    settings = load_settings()
    try:
        return asyncio.run(work(settings))
    except Exception as exc:
        raise CommandError(_explain(exc)) from exc


def _explain(exc: Exception) -> str:
    """A one-line reason naming what failed; anything unforeseen keeps its type in the message."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    from chitram.backups.repository import BackupError
    from chitram.storage import ObjectNotFound, StorageError

    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, ObjectNotFound):
        return f"{exc} is missing from the backup destination"
    if isinstance(exc, StorageError):
        return f"storage failed: {exc}"
    if isinstance(exc, SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"the database failed ({detail}); check CHITRAM_DATABASE_URL and that the database is running"
    if isinstance(exc, RedisError):
        return f"Redis failed ({exc}); check CHITRAM_REDIS_URL and that Redis is running"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "") + f" ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _repository(settings: Settings, dest: str | None) -> Any:
    from chitram.backups.repository import open_repository

    return open_repository(settings, dest)


@click.group(name="backup")
def backup_group() -> None:
    """Backups of the database and every stored image, that are proven to restore.

    A backup is a logical export of every table plus the stored objects, copied by content
    (each backup copies only what the destination lacks, yet restores on its own). It restores
    into either stack: SQLite + folder or PostgreSQL + S3. IDs are UTC timestamps, YYYYMMDD-HHMMSS.
    """


@backup_group.command(name="create")
@dest_option
@click.option("--note", default="", help="A remark stored with the backup (shown by `backup list --json`).")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Record objects the database names but storage lacks, instead of refusing to back up.",
)
@click.option(
    "--verify", "then_verify", is_flag=True, help="Verify the new backup right away (re-reads it); exit 1 if it fails."
)
def backup_create(dest: str | None, note: str, allow_missing: bool, then_verify: bool) -> None:
    """Back up the database and the objects it needs; prints the new backup's id."""
    from chitram.backups.service import create_backup, verify_backup

    async def work(settings: Settings) -> tuple[Any, Any]:
        repo = _repository(settings, dest)
        try:
            manifest = await create_backup(settings, repo, note=note, allow_missing=allow_missing, report=_progress)
            verification = None
            if then_verify:
                verification = await verify_backup(repo, manifest.id, concurrency=settings.backup.backup_concurrency)
            return manifest, verification
        finally:
            await repo.close()

    started = time.monotonic()
    started_at = datetime.now(UTC)
    try:
        manifest, verification = _run(work)
    except click.ClickException as exc:
        _record_round(_failed_round(started_at, exc))
        raise
    _record_round(_finished_round(started_at, manifest, verification))
    click.echo(
        f"backup {manifest.id}: {manifest.rows('images')} images, {manifest.rows('users')} users, "
        f"{manifest.object_count} objects ({_size(manifest.object_bytes)}), "
        f"{manifest.copied_objects} copied ({_size(manifest.copied_bytes)}) in {time.monotonic() - started:.1f} s"
    )
    if verification is not None:
        _show_verification(manifest.id, verification)
        sys.exit(0 if verification.ok else 1)


@backup_group.command(name="list")
@dest_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (byte counts, ISO 8601 times).")
def backup_list(dest: str | None, as_json: bool) -> None:
    """List backups, oldest first: time, size, counts and whether they are verified."""
    from chitram.backups.service import list_backups

    async def work(settings: Settings) -> tuple[str, list[Any]]:
        repo = _repository(settings, dest)
        try:
            return repo.description, await list_backups(repo)
        finally:
            await repo.close()

    where, entries = _run(work)
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([_entry_json(entry, now) for entry in entries], indent=2))
        return
    if not entries:
        click.echo(f"no backups in {where} yet; make one with `chitram-admin backup create`")
        return
    _print_entries(entries, now)


def _entry_json(entry: Any, now: datetime) -> dict[str, object]:
    import msgspec

    manifest = entry.manifest
    result: dict[str, object] = {"id": entry.id, "status": entry.status, "complete": entry.complete}
    if manifest is None:
        result["abandoned"] = entry.abandoned(now)
        result["damaged"] = entry.damaged or None
        return result
    result.update(
        created_at=manifest.started_at.isoformat(),
        finished_at=manifest.finished_at.isoformat(),
        size=manifest.size,
        objects=manifest.object_count,
        object_bytes=manifest.object_bytes,
        copied_bytes=manifest.copied_bytes,
        rows={name: dump.rows for name, dump in manifest.tables.items()},
        app_version=manifest.app_version,
        revision=manifest.revision,
        database=manifest.database,
        storage=manifest.storage,
        missing_objects=manifest.missing_objects,
        note=manifest.note,
        verification=msgspec.to_builtins(entry.verification) if entry.verification else None,
    )
    return result


def _print_entries(entries: list[Any], now: datetime) -> None:
    header = ("ID", "CREATED (UTC)", "SIZE", "NEW", "IMAGES", "USERS", "OBJECTS", "STATUS")
    lines = [header]
    for entry in entries:
        manifest = entry.manifest
        if manifest is None:
            if entry.damaged:
                state = f"DAMAGED: {entry.damaged}"
            else:
                state = "incomplete (abandoned)" if entry.abandoned(now) else "incomplete (running?)"
            lines.append((entry.id, "", "", "", "", "", "", state))
            continue
        status = entry.status
        if entry.verification is not None:
            status += " " + entry.verification.checked_at.strftime("%Y-%m-%d %H:%M")
        lines.append(
            (
                entry.id,
                manifest.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                _size(manifest.size),
                _size(manifest.copied_bytes),
                str(manifest.rows("images")),
                str(manifest.rows("users")),
                str(manifest.object_count),
                status + (" (safety)" if manifest.note.startswith("safety") else ""),
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@backup_group.command(name="verify")
@click.argument("backup_id", metavar="ID")
@dest_option
def backup_verify(backup_id: str, dest: str | None) -> None:
    """Re-read every object and file of backup ID (or `latest`) and check its hash and size.

    Exit 0 when everything is there and intact; otherwise 1, naming each missing or damaged object.
    """
    from chitram.backups.service import find_manifest, verify_backup

    async def work(settings: Settings) -> tuple[str, Any]:
        repo = _repository(settings, dest)
        try:
            manifest = await find_manifest(repo, backup_id)
            verification = await verify_backup(repo, manifest.id, concurrency=settings.backup.backup_concurrency)
            return manifest.id, verification
        finally:
            await repo.close()

    found_id, verification = _run(work)
    _show_verification(found_id, verification)
    sys.exit(0 if verification.ok else 1)


def _show_verification(backup_id: str, verification: Any) -> None:
    if verification.ok:
        click.echo(
            f"backup {backup_id} verified: {verification.objects} objects ({_size(verification.bytes)}) "
            f"and every table file intact, in {verification.seconds:.1f} s"
        )
        return
    click.echo(f"backup {backup_id} is DAMAGED: {len(verification.problems)} problem(s)", err=True)
    for problem in verification.problems:
        click.echo(f"  {problem}", err=True)


@backup_group.command(name="restore")
@click.argument("backup_id", metavar="ID")
@dest_option
@click.option(
    "--yes",
    is_flag=True,
    help="Replace a database that holds data (a safety backup of it is taken first). Without it, "
    "only an empty target is restored into.",
)
def backup_restore(backup_id: str, dest: str | None, yes: bool) -> None:
    """Restore backup ID (or `latest`) into the configured database and storage.

    Stop the app first. The backup is checked before anything changes; the database is migrated
    to the backup's revision, loaded, then upgraded to this version's head; cached metadata and
    web sessions in Redis are cleared.
    """
    from chitram.backups.service import restore_backup

    async def work(settings: Settings) -> tuple[Any, bool]:
        repo = _repository(settings, dest)
        try:
            return await restore_backup(settings, repo, backup_id, replace=yes, report=_progress), bool(
                settings.cache.redis_url
            )
        finally:
            await repo.close()

    result, with_redis = _run(work)
    rows = ", ".join(f"{count} {name}" for name, count in result.rows.items())
    click.echo(
        f"restored backup {result.manifest.id}: {rows}; {result.objects} objects ({_size(result.bytes)}) "
        f"in {result.seconds:.1f} s"
    )
    if result.safety_backup:
        click.echo(f"what was there before is in safety backup {result.safety_backup}")
    if not with_redis:
        click.echo("note: without Redis a running `chitram` keeps its own cache: restart it now", err=True)


@backup_group.command(name="prune")
@dest_option
@click.option("--keep-days", type=click.IntRange(min=0), default=None, help="Keep backups younger than this [7].")
@click.option("--keep-last", type=click.IntRange(min=0), default=None, help="Keep at least the newest N backups [3].")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def backup_prune(dest: str | None, keep_days: int | None, keep_last: int | None, dry_run: bool) -> None:
    """Remove old backups and the objects no remaining backup needs.

    Never removes the newest verified backup. Defaults come from CHITRAM_BACKUP_KEEP_DAYS and
    CHITRAM_BACKUP_KEEP_LAST.
    """
    result = _run(lambda settings: _prune(settings, dest, keep_days, keep_last, dry_run))
    _show_prune(result, dry_run)


async def _prune(
    settings: Settings, dest: str | None, keep_days: int | None, keep_last: int | None, dry_run: bool
) -> Any:
    from chitram.backups.service import prune_backups

    repo = _repository(settings, dest)
    try:
        return await prune_backups(
            repo,
            keep_days=settings.backup.backup_keep_days if keep_days is None else keep_days,
            keep_last=settings.backup.backup_keep_last if keep_last is None else keep_last,
            dry_run=dry_run,
        )
    finally:
        await repo.close()


def _show_prune(result: Any, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    for backup_id, why in sorted(result.kept.items()):
        click.echo(f"kept {backup_id}: {why}")
    for backup_id in result.removed:
        click.echo(f"{verb} backup {backup_id}")
    for backup_id in result.abandoned:
        click.echo(f"{verb} unfinished backup {backup_id} (abandoned)")
    if result.objects_skipped_because:
        click.echo(f"objects left alone: {result.objects_skipped_because}")
    else:
        click.echo(f"{verb} {result.removed_objects} object(s) no kept backup needs ({_size(result.removed_bytes)})")


@backup_group.command(name="run")
@dest_option
def backup_run(dest: str | None) -> None:
    """One scheduled round: create a backup, verify it, prune. What cron or a systemd timer runs."""
    sys.exit(_round(dest))


def _round(dest: str | None) -> int:
    """create → verify → prune; 0 when all three succeeded. The result is recorded in the database
    (for `status`, /admin and /metrics) and sent to the alert webhook, whatever it is."""
    started_at = datetime.now(UTC)
    try:
        status, manifest, verification = _round_steps(dest)
    except click.ClickException as exc:
        result = _failed_round(started_at, exc)
        _record_round(result)
        _announce_round(result)
        raise
    result = _finished_round(started_at, manifest, verification)
    _record_round(result)
    _announce_round(result)
    return status


def _round_steps(dest: str | None) -> tuple[int, Any, Any]:
    from chitram.backups.service import create_backup, verify_backup

    async def work(settings: Settings) -> tuple[Any, Any, Any]:
        repo = _repository(settings, dest)
        try:
            manifest = await create_backup(settings, repo, report=_progress)
            verification = await verify_backup(repo, manifest.id, concurrency=settings.backup.backup_concurrency)
        finally:
            await repo.close()
        pruned = await _prune(settings, dest, None, None, dry_run=False) if verification.ok else None
        return manifest, verification, pruned

    manifest, verification, pruned = _run(work)
    click.echo(f"backup {manifest.id}: {manifest.object_count} objects, {_size(manifest.copied_bytes)} new")
    _show_verification(manifest.id, verification)
    if pruned is not None:
        _show_prune(pruned, dry_run=False)
    else:
        click.echo("not pruned: the new backup failed verification", err=True)
    return 0 if verification.ok else 1, manifest, verification


def _finished_round(started_at: datetime, manifest: Any, verification: Any) -> RoundResult:
    from chitram.system.facts import RoundResult

    problems = "" if verification is None or verification.ok else "; ".join(verification.problems[:5])
    return RoundResult(
        started_at=started_at,
        finished_at=datetime.now(UTC),
        ok=verification is None or verification.ok,
        verified=verification is not None and verification.ok,
        backup_id=manifest.id,
        size=manifest.size,
        error=f"verification failed: {problems}" if problems else None,
    )


def _failed_round(started_at: datetime, exc: click.ClickException) -> RoundResult:
    from chitram.system.facts import RoundResult

    return RoundResult(
        started_at=started_at, finished_at=datetime.now(UTC), ok=False, verified=False, error=exc.format_message()
    )


def _record_round(result: RoundResult) -> None:
    """Keep the result where the app and `status` read it; a database that cannot take it is
    reported, never a reason to fail a backup that worked."""
    from chitram.db import Database, missing_database_file
    from chitram.system.facts import record_backup_round

    settings = load_settings()
    if missing_database_file(settings):
        click.echo("warning: no database to record this backup round in", err=True)
        return

    async def save() -> None:
        database = Database.from_settings(settings)
        try:
            async with database.sessions() as session:
                await record_backup_round(session, result)
        finally:
            await database.dispose()

    try:
        asyncio.run(save())
    except Exception as exc:  # noqa: BLE001 - the backup's own result stands; say why it is not recorded
        click.echo(f"warning: this backup round could not be recorded in the database: {_explain(exc)}", err=True)


def _announce_round(result: RoundResult) -> None:
    """Tell the alert webhook, if there is one: success or failure, every round."""
    from chitram.system.alerts import alert_body, send_alert

    settings = load_settings()
    url = settings.alerts.alert_webhook_url
    if not url:
        return
    if result.ok:
        summary = f"backup {result.backup_id} done and verified ({_size(result.size or 0)})"
    else:
        summary = f"the backup round FAILED: {result.error}"
    details = {
        "backup": {
            "id": result.backup_id,
            "ok": result.ok,
            "verified": result.verified,
            "size": result.size,
            "started_at": result.started_at.isoformat(),
            "finished_at": result.finished_at.isoformat(),
            "error": result.error,
        }
    }
    body = alert_body(event="backup", ok=result.ok, summary=summary, details=details)
    failure = send_alert(url, body, timeout=settings.alerts.alert_webhook_timeout_seconds)
    if failure:
        click.echo(f"warning: {failure} (the backup itself is unaffected)", err=True)


@backup_group.command(name="schedule")
@dest_option
@click.option(
    "--at", "at", default="03:00", show_default=True, metavar="HH:MM", help="Time of day (UTC) of the daily round."
)
def backup_schedule(dest: str | None, at: str) -> None:
    """Run `backup run` every day at HH:MM UTC, forever (the Compose `backup` service).

    A failed round is reported and the next one happens the next day; SIGTERM stops it at once.
    """
    hour, minute = _time_of_day(at)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        wait = _seconds_until(hour, minute, datetime.now(UTC))
        click.echo(f"next backup at {at} UTC, in {wait / 3600:.1f} h", err=True)
        time.sleep(wait)
        try:
            _round(dest)
        except click.ClickException as exc:
            exc.show()
        except Exception as exc:  # noqa: BLE001 - the schedule outlives one bad night; say why, go on
            click.echo(f"error: the backup round failed: {_explain(exc)}", err=True)


def _time_of_day(text: str) -> tuple[int, int]:
    try:
        moment = datetime.strptime(text, "%H:%M")
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time of day; give HH:MM, e.g. 03:00", param_hint="--at") from None
    return moment.hour, moment.minute


def _seconds_until(hour: int, minute: int, now: datetime) -> float:
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


def _size(count: int) -> str:
    from chitram.images.sharing import human_size

    return human_size(count)
