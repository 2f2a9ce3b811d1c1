"""`chitram-admin backup`: create, list, verify, restore and prune, on either stack and across them."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import TaskGroup

from chitram import __version__
from chitram.backups.database import (
    DatabaseExport,
    drop_all_tables,
    export_database,
    load_database,
    needed_keys_now,
    tables_with_rows,
)
from chitram.backups.repository import (
    HEARTBEAT,
    ID_FORMAT,
    ID_PATTERN,
    MANIFEST,
    OBJECT_LIST,
    VERIFICATION,
    BackupError,
    Heartbeat,
    Manifest,
    ObjectEntry,
    Repository,
    SnapshotFiles,
    StoredFile,
    TableDump,
    Verification,
)
from chitram.db import known_revisions, missing_database_file, upgrade_to
from chitram.images.processing import EXTENSIONS
from chitram.settings import Settings
from chitram.storage import ObjectInfo, ObjectNotFound, ObjectStorage, StorageError, create_storage

HEARTBEAT_SECONDS = 60.0
# A running backup rewrites its heartbeat every minute; one silent for this long has died.
ABANDONED_AFTER = timedelta(minutes=15)
# Objects listed before the previous backup began are unchanged when their size is the same.
CLOCK_MARGIN = timedelta(seconds=2)
SNAPSHOT_ATTEMPTS = 3
STORAGE_PREFIXES = ("originals/", "thumbnails/", "previews/")
TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")
MISSING = "missing from the backup"

Report = Callable[[str], None]
T = TypeVar("T")


def _quiet(_message: str) -> None:
    return None


@asynccontextmanager
async def _task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose failure is the first task's own error, not an ExceptionGroup around it."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as failure:
        raise _first_cause(failure) from None


async def _for_each(items: Iterable[T], work: Callable[[T], Awaitable[None]], *, workers: int) -> None:
    """Run ``work`` on every item, ``workers`` at a time, with one task per worker (not per item:
    a backup of a large site handles hundreds of thousands of objects)."""
    shared = iter(items)

    async def worker() -> None:
        for item in shared:  # next() never awaits, so workers never take the same item
            await work(item)

    async with _task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)


def _first_cause(failure: BaseException) -> BaseException:
    while isinstance(failure, BaseExceptionGroup):
        failure = failure.exceptions[0]
    return failure


# -- create ------------------------------------------------------------------------------


@dataclass
class _Copied:
    entries: list[ObjectEntry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0


async def create_backup(
    settings: Settings,
    repo: Repository,
    *,
    note: str = "",
    allow_missing: bool = False,
    report: Report = _quiet,
) -> Manifest:
    """Snapshot the database, copy the objects it needs that the destination lacks, write the manifest."""
    _require_database(settings)
    storage = create_storage(settings)
    try:
        await repo.ensure_ready()
        backup_id, started, beat = await _claim_id(repo)
        report(f"backup {backup_id} to {repo.description}")
        try:
            async with _task_group() as group:
                group.start_soon(_keep_beating, repo, backup_id, beat)
                manifest = await _take(settings, storage, repo, backup_id, started, note, allow_missing, report)
                group.cancel_scope.cancel()
        except Exception:
            # Tidy up what can be tidied; a killed backup leaves its folder to `prune`.
            with suppress(Exception):
                await _remove_snapshot(repo, SnapshotFiles(backup_id, await _files_of(repo, backup_id)))
            raise
        await repo.delete(repo.snapshot_name(backup_id, HEARTBEAT))
        return manifest
    finally:
        await storage.close()


def _require_database(settings: Settings) -> None:
    """An embedded database that is not there: say so, instead of backing up a new empty one."""
    missing = missing_database_file(settings)
    if missing is not None:
        raise BackupError(
            f"there is no database at {missing}; set CHITRAM_DATA_DIR (or CHITRAM_DATABASE_URL) to the installation's"
        )


async def _files_of(repo: Repository, backup_id: str) -> dict[str, ObjectInfo]:
    for snapshot in await repo.snapshots():
        if snapshot.id == backup_id:
            return snapshot.files
    return {}


async def _claim_id(repo: Repository) -> tuple[str, datetime, Heartbeat]:
    """A timestamp id no other backup in this destination has, claimed by writing its heartbeat.

    The heartbeat goes first, before anything in the destination is read: from then on `prune`
    leaves every object alone. Two backups starting in the same second both write one; the
    one that reads back a heartbeat that is not its own waits for the next second.
    """
    while True:
        taken = {snapshot.id for snapshot in await repo.snapshots()}
        now = datetime.now(UTC)
        backup_id = now.strftime(ID_FORMAT)
        if backup_id not in taken:
            beat = Heartbeat(started_at=now, host=socket.gethostname(), pid=os.getpid(), nonce=secrets.token_hex(8))
            name = repo.snapshot_name(backup_id, HEARTBEAT)
            await repo.put_json(name, beat)
            if await repo.get_json(name, Heartbeat) == beat:
                return backup_id, now, beat
        await anyio.sleep(1.0 - now.microsecond / 1_000_000)


async def _keep_beating(repo: Repository, backup_id: str, beat: Heartbeat) -> None:
    """Tell `prune` this backup is alive, so it leaves the objects being copied alone."""
    while True:
        await anyio.sleep(HEARTBEAT_SECONDS)
        await repo.put_json(repo.snapshot_name(backup_id, HEARTBEAT), beat)


async def _take(
    settings: Settings,
    storage: ObjectStorage,
    repo: Repository,
    backup_id: str,
    started: datetime,
    note: str,
    allow_missing: bool,
    report: Report,
) -> Manifest:
    parent, known = await _previous_backup(repo, report)
    unchanged_before = parent.started_at - CLOCK_MARGIN if parent else started
    present = await repo.object_sizes()
    with tempfile.TemporaryDirectory(prefix="chitram-backup-") as work:
        export, copied = await _consistent_copy(
            settings, storage, repo, Path(work), known, unchanged_before, present, allow_missing, report
        )
        tables = {}
        for table in export.tables:
            stored = await repo.upload(repo.snapshot_name(backup_id, f"db/{table.name}.jsonl.gz"), table.path)
            tables[table.name] = TableDump(rows=table.rows, file=stored)
        object_list = await _upload_object_list(repo, backup_id, copied.entries, Path(work))
    manifest = Manifest(
        id=backup_id,
        started_at=started,
        finished_at=datetime.now(UTC),
        app_version=__version__,
        revision=export.revision,
        database=export.dialect,
        storage=settings.storage.storage_backend.value,
        tables=tables,
        sequences=export.sequences,
        objects=object_list,
        object_count=len(copied.entries),
        object_bytes=sum(entry.size for entry in copied.entries),
        copied_objects=copied.objects,
        copied_bytes=copied.bytes,
        missing_objects=sorted(copied.missing),
        note=note,
    )
    # The manifest goes last: until it exists, nothing lists this snapshot as a backup.
    await repo.put_json(repo.snapshot_name(backup_id, MANIFEST), manifest)
    return manifest


async def _previous_backup(repo: Repository, report: Report) -> tuple[Manifest | None, dict[str, ObjectEntry]]:
    """The newest complete backup and its objects by key, to skip hashing unchanged objects.

    If it cannot be read, this backup hashes everything: a damaged backup must not stop
    every later one.
    """
    try:
        parent = await latest_manifest(repo)
        known = {entry.key: entry for entry in await repo.object_list(parent)} if parent else {}
    except (BackupError, StorageError) as exc:
        report(f"warning: the previous backup cannot be read ({exc}); hashing every object again")
        return None, {}
    return parent, known


async def _consistent_copy(
    settings: Settings,
    storage: ObjectStorage,
    repo: Repository,
    work: Path,
    known: dict[str, ObjectEntry],
    unchanged_before: datetime,
    present: dict[str, int],
    allow_missing: bool,
    report: Report,
) -> tuple[DatabaseExport, _Copied]:
    """Export the database, then copy what it needs; again if images were deleted in between.

    An object the snapshot needs can vanish only when its image was deleted after the
    snapshot (blobs are immutable). A fresh snapshot then no longer needs it.
    """
    for _attempt in range(SNAPSHOT_ATTEMPTS):
        export = await export_database(settings.database_url, work)
        rows = sum(table.rows for table in export.tables)
        report(f"database: {len(export.tables)} tables, {rows} rows (revision {export.revision})")
        listing = {info.key: info for prefix in STORAGE_PREFIXES async for info in storage.list(prefix)}
        copied = await _copy_objects(
            storage, repo, export.needed_keys, listing, known, unchanged_before, present, settings, report
        )
        if not copied.missing:
            return export, copied
        still_needed = sorted(set(copied.missing) & await needed_keys_now(settings.database_url))
        if not still_needed:
            report(f"{len(copied.missing)} object(s) went with images deleted during the backup; taking a new snapshot")
            continue
        if allow_missing:
            report(f"warning: {len(still_needed)} object(s) the database needs are missing from storage; recorded")
            return export, copied
        shown = ", ".join(still_needed[:10]) + (" …" if len(still_needed) > 10 else "")
        raise BackupError(
            f"{len(still_needed)} object(s) the database needs are missing from storage ({shown}); "
            "`chitram-admin gc` lists them; restore them, or back up anyway with --allow-missing"
        )
    raise BackupError("images kept being deleted while the backup ran; run it again")


async def _copy_objects(
    storage: ObjectStorage,
    repo: Repository,
    needed: Iterable[str],
    listing: dict[str, ObjectInfo],
    known: dict[str, ObjectEntry],
    unchanged_before: datetime,
    present: dict[str, int],
    settings: Settings,
    report: Report,
) -> _Copied:
    copied = _Copied()

    async def copy(key: str) -> None:
        entry = await _copy_one(storage, repo, key, listing.get(key), known.get(key), unchanged_before, present)
        if entry is None:
            copied.missing.append(key)
            return
        copied.entries.append(entry)
        if present.get(entry.sha256) != entry.size:
            present[entry.sha256] = entry.size
            copied.objects += 1
            copied.bytes += entry.size

    await _for_each(sorted(needed), copy, workers=settings.backup.backup_concurrency)
    copied.entries.sort(key=lambda entry: entry.key)
    report(f"objects: {len(copied.entries)} needed, {copied.objects} new copied ({copied.bytes} bytes)")
    return copied


async def _copy_one(
    storage: ObjectStorage,
    repo: Repository,
    key: str,
    info: ObjectInfo | None,
    previous: ObjectEntry | None,
    unchanged_before: datetime,
    present: dict[str, int],
) -> ObjectEntry | None:
    if info is None:
        return None
    if (
        previous is not None
        and previous.size == info.size
        and info.last_modified < unchanged_before
        and present.get(previous.sha256) == previous.size
    ):
        return previous  # the last backup hashed it, and it has not changed since: like restic's parent
    try:
        data = b"".join([chunk async for chunk in storage.read(key, chunk_size=1024 * 1024)])
    except ObjectNotFound:
        return None
    sha256 = await anyio.to_thread.run_sync(_sha256, data)
    if present.get(sha256) != len(data):
        # Counted by the caller, which sees the same `present` (marked there, not here, so two
        # keys with the same content copy it at most twice and count it once).
        await repo.put_object(sha256, data)
    return ObjectEntry(key=key, sha256=sha256, size=len(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _upload_object_list(repo: Repository, backup_id: str, entries: list[ObjectEntry], work: Path) -> StoredFile:
    path = work / OBJECT_LIST
    encoder = msgspec.json.Encoder()
    with gzip.open(path, "wb", compresslevel=6) as out:
        for entry in entries:
            out.write(encoder.encode(entry) + b"\n")
    return await repo.upload(repo.snapshot_name(backup_id, OBJECT_LIST), path)


# -- list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupEntry:
    """One snapshot folder: a complete backup (with a manifest) or an unfinished one."""

    id: str
    manifest: Manifest | None
    verification: Verification | None
    last_change: datetime | None
    damaged: str = ""  # why its manifest (or verification record) cannot be read

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def abandoned(self, now: datetime) -> bool:
        """Unfinished and silent long enough that its process must be gone (never a damaged backup:
        that one is left for a person to look at)."""
        silent = self.last_change is None or now - self.last_change > ABANDONED_AFTER
        return not self.complete and not self.damaged and silent

    @property
    def status(self) -> str:
        if self.damaged:
            return "DAMAGED"
        if self.manifest is None:
            return "incomplete"
        if self.verification is None:
            return "not verified"
        return "verified" if self.verification.ok else "FAILED verification"


async def list_backups(repo: Repository) -> list[BackupEntry]:
    """Every backup in the destination, oldest first; unfinished ones are marked, never good."""
    entries = []
    for snapshot in await repo.snapshots():
        entries.append(await _entry(repo, snapshot))
    return entries


async def _entry(repo: Repository, snapshot: SnapshotFiles) -> BackupEntry:
    try:
        manifest = await repo.manifest(snapshot.id) if snapshot.complete else None
        verification = None
        if manifest is not None and VERIFICATION in snapshot.files:
            verification = await repo.get_json(repo.snapshot_name(snapshot.id, VERIFICATION), Verification)
    except (BackupError, StorageError) as exc:
        return BackupEntry(snapshot.id, None, None, snapshot.last_change, damaged=str(exc) or type(exc).__name__)
    return BackupEntry(snapshot.id, manifest, verification, snapshot.last_change)


async def latest_manifest(repo: Repository) -> Manifest | None:
    """The newest backup whose manifest can be read."""
    for snapshot in reversed(await repo.snapshots()):
        if snapshot.complete:
            entry = await _entry(repo, snapshot)
            if entry.manifest is not None:
                return entry.manifest
    return None


async def find_manifest(repo: Repository, backup_id: str) -> Manifest:
    """The manifest of ``backup_id`` ("latest": the newest complete backup)."""
    if backup_id == "latest":
        manifest = await latest_manifest(repo)
        if manifest is None:
            raise BackupError(f"there is no complete backup in {repo.description} yet")
        return manifest
    if not ID_PATTERN.fullmatch(backup_id):
        raise BackupError(f"{backup_id!r} is not a backup id (YYYYMMDD-HHMMSS, or latest); `backup list` shows them")
    manifest = await repo.manifest(backup_id)
    if manifest is None:
        raise BackupError(
            f"there is no complete backup {backup_id} in {repo.description}; `chitram-admin backup list` shows them"
        )
    return manifest


# -- verify ------------------------------------------------------------------------------


async def verify_backup(repo: Repository, backup_id: str, *, concurrency: int = 8) -> Verification:
    """Re-read every file and object of a backup and check each hash and size; record the result."""
    started = time.monotonic()
    manifest = await find_manifest(repo, backup_id)
    problems: list[str] = []
    files = [dump.file for dump in manifest.tables.values()] + [manifest.objects]
    for stored in files:
        problem = await _check(repo, stored.key, stored.sha256, stored.size, stored.key)
        if problem:
            problems.append(problem)
    entries = [] if any(manifest.objects.key in problem for problem in problems) else await repo.object_list(manifest)
    checked_bytes = 0

    async def check_object(group: tuple[ObjectEntry, list[str]]) -> None:
        nonlocal checked_bytes
        entry, keys = group
        name = repo.object_name(entry.sha256)
        problem = await _check(repo, name, entry.sha256, entry.size, ", ".join(keys))
        if problem and not problem.endswith(MISSING):
            # Useless to every restore as it is, and it would stop the next backup from
            # copying the object again (the destination seems to hold it): take it away.
            await repo.delete(name)
            problem += "; the damaged copy was removed, the next backup copies it again"
        checked_bytes += entry.size
        if problem:
            problems.append(problem)

    await _for_each(_by_content(entries), check_object, workers=concurrency)
    problems.extend(f"{key}: was already missing from storage when the backup ran" for key in manifest.missing_objects)
    verification = Verification(
        ok=not problems,
        checked_at=datetime.now(UTC),
        seconds=round(time.monotonic() - started, 2),
        objects=len(entries),
        bytes=checked_bytes,
        problems=sorted(problems),
    )
    await repo.put_json(repo.snapshot_name(manifest.id, VERIFICATION), verification)
    return verification


def _by_content(entries: list[ObjectEntry]) -> list[tuple[ObjectEntry, list[str]]]:
    """Each stored content once, with every key that has it (identical variants share one object)."""
    groups: dict[str, tuple[ObjectEntry, list[str]]] = {}
    for entry in entries:
        groups.setdefault(entry.sha256, (entry, []))[1].append(entry.key)
    return list(groups.values())


async def _check(repo: Repository, name: str, sha256: str, size: int, label: str) -> str | None:
    found = await repo.digest(name)
    where = f"{label}" if label == name else f"{label} (stored as {name})"
    if found is None:
        return f"{where}: {MISSING}"
    actual_sha, actual_size = found
    if actual_size != size:
        return f"{where}: {actual_size} bytes instead of {size} (truncated or overwritten)"
    if actual_sha != sha256:
        return f"{where}: corrupt (SHA-256 {actual_sha[:16]}… instead of {sha256[:16]}…)"
    return None


# -- restore -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    manifest: Manifest
    rows: dict[str, int]
    objects: int
    bytes: int
    safety_backup: str | None
    cleared_cache: bool
    seconds: float


async def restore_backup(
    settings: Settings,
    repo: Repository,
    backup_id: str,
    *,
    replace: bool = False,
    report: Report = _quiet,
) -> RestoreReport:
    """Load a backup into the configured database and storage.

    Nothing in the target changes until the backup's table files have been read and checked;
    the objects go first (each checked against its hash before it is written); the database is
    replaced last: emptied, migrated to the backup's revision, loaded in one transaction, then
    upgraded to head.
    """
    started = time.monotonic()
    manifest = await find_manifest(repo, backup_id)
    if manifest.revision not in known_revisions():
        raise BackupError(
            f"backup {manifest.id} was made by chitram {manifest.app_version} at migration {manifest.revision}, "
            f"which this version ({__version__}) does not know; restore it with that version or a newer one"
        )
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    occupied = await tables_with_rows(settings.database_url)
    if occupied and not replace:
        raise BackupError(
            f"the target database is not empty (rows in {', '.join(occupied)}); restoring replaces everything in "
            "it: add --yes to go ahead (a safety backup of what is there now is taken first)"
        )
    with tempfile.TemporaryDirectory(prefix="chitram-restore-") as work:
        files = await _fetch_tables(repo, manifest, Path(work))
        entries = await repo.object_list(manifest)
        safety = None
        if occupied:
            report("taking a safety backup of the target first")
            safety = (
                await create_backup(
                    settings, repo, note=f"safety backup before restoring {manifest.id}", allow_missing=True
                )
            ).id
            report(f"safety backup {safety} written")
        restored_bytes = await _restore_objects(settings, repo, entries, report)
        report("database: replacing every table")
        await drop_all_tables(settings.database_url)
        try:
            await anyio.to_thread.run_sync(upgrade_to, settings, manifest.revision)
            rows = await load_database(settings.database_url, files, manifest.sequences)
            await anyio.to_thread.run_sync(upgrade_to, settings, "head")
        except Exception as exc:
            before = f"; what was there before is in safety backup {safety}" if safety else ""
            raise BackupError(
                f"loading the database failed after it was emptied ({type(exc).__name__}: {exc}); fix the cause "
                f"and run the restore again{before}"
            ) from exc
    if manifest.missing_objects:
        report(
            f"warning: {len(manifest.missing_objects)} object(s) were already missing when backup {manifest.id} "
            "was made; their images have no bytes (`chitram-admin gc` lists them)"
        )
    cleared = await clear_cached_state(settings, report)
    return RestoreReport(
        manifest=manifest,
        rows=rows,
        objects=len(entries),
        bytes=restored_bytes,
        safety_backup=safety,
        cleared_cache=cleared,
        seconds=round(time.monotonic() - started, 2),
    )


async def _fetch_tables(repo: Repository, manifest: Manifest, work: Path) -> dict[str, Path]:
    files = {}
    for name, dump in manifest.tables.items():
        if not TABLE_NAME.fullmatch(name):  # it becomes a file name below
            raise BackupError(f"the manifest of backup {manifest.id} names a table {name!r}; it is damaged")
        path = work / f"{name}.jsonl.gz"
        await repo.download(dump.file, path)
        files[name] = path
    return files


async def _restore_objects(settings: Settings, repo: Repository, entries: list[ObjectEntry], report: Report) -> int:
    storage = create_storage(settings)
    restored = 0

    async def restore(entry: ObjectEntry) -> None:
        nonlocal restored
        try:
            data = await repo.read_object(entry.sha256)
        except ObjectNotFound:
            raise BackupError(f"{entry.key} is missing from the backup; nothing was changed in the database") from None
        if len(data) != entry.size or await anyio.to_thread.run_sync(_sha256, data) != entry.sha256:
            raise BackupError(f"{entry.key} is corrupt in the backup; nothing was changed in the database")
        await storage.put(entry.key, data, content_type=_content_type(entry.key))
        restored += entry.size

    try:
        await storage.ensure_ready()
        await _for_each(entries, restore, workers=settings.backup.backup_concurrency)
    finally:
        await storage.close()
    report(f"objects: {len(entries)} restored ({restored} bytes)")
    return restored


# What the app gave each object when it stored it: keys end in their type's own extension.
_TYPE_BY_EXTENSION = {extension: content_type for content_type, extension in EXTENSIONS.items()}


def _content_type(key: str) -> str:
    return _TYPE_BY_EXTENSION.get(key.rsplit(".", 1)[-1], "application/octet-stream")


async def clear_cached_state(settings: Settings, report: Report = _quiet) -> bool:
    """Drop cached metadata and web sessions from Redis (restored epochs must not revive old sessions).

    False when that did not happen: without Redis a running embedded server keeps both in its
    own memory; with Redis unreachable the operator is told what to clear.
    """
    if not settings.cache.redis_url:
        return False
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from chitram.stores import NAMESPACE

    client = Redis.from_url(settings.cache.redis_url)
    patterns = (f"{NAMESPACE}:cache:*", f"{NAMESPACE}:session:*")
    try:
        for pattern in patterns:
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                await client.unlink(*keys[start : start + 500])
    except (RedisError, OSError) as exc:
        report(
            f"warning: could not clear Redis ({exc}); delete the keys {' and '.join(patterns)} "
            "or restart Redis before starting the app"
        )
        return False
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    return True


# -- prune -------------------------------------------------------------------------------


@dataclass
class PruneReport:
    kept: dict[str, str]  # id -> why
    removed: list[str]
    abandoned: list[str]
    removed_objects: int = 0
    removed_bytes: int = 0
    objects_skipped_because: str = ""


async def prune_backups(
    repo: Repository,
    *,
    keep_days: int,
    keep_last: int,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Remove backups outside the policy, then the objects no kept backup needs.

    Kept: every backup younger than ``keep_days``, the newest ``keep_last``, and always the
    newest verified one. Manifests go first, so an interrupted prune never leaves a listed
    backup without its objects.
    """
    now = now or datetime.now(UTC)
    entries = await list_backups(repo)
    complete = [entry for entry in reversed(entries) if entry.manifest is not None]
    kept = _policy(complete, keep_days=keep_days, keep_last=keep_last, now=now)
    result = PruneReport(
        kept=kept,
        removed=[entry.id for entry in complete if entry.id not in kept],
        abandoned=[entry.id for entry in entries if entry.abandoned(now)],
    )
    if not dry_run:
        snapshots = {snapshot.id: snapshot for snapshot in await repo.snapshots()}
        for backup_id in result.removed + result.abandoned:
            await _remove_snapshot(repo, snapshots[backup_id])
    # Looked at again now, not at the start: a backup that began meanwhile may rely on any object.
    reason = await _objects_must_stay(repo, now)
    if reason:
        result.objects_skipped_because = reason
        return result
    needed: set[str] = set()
    for entry in complete:
        if entry.id in kept and entry.manifest is not None:
            try:
                needed.update(item.sha256 for item in await repo.object_list(entry.manifest))
            except (BackupError, StorageError) as exc:
                result.objects_skipped_because = f"the object list of kept backup {entry.id} cannot be read ({exc})"
                return result
    for sha256, size in (await repo.object_sizes()).items():
        if sha256 not in needed:
            result.removed_objects += 1
            result.removed_bytes += size
            if not dry_run:
                await repo.delete_object(sha256)
    return result


async def _objects_must_stay(repo: Repository, now: datetime) -> str:
    """Why no object may be removed now, or "" when objects may go."""
    entries = await list_backups(repo)
    running = [entry.id for entry in entries if not entry.complete and not entry.damaged and not entry.abandoned(now)]
    if running:
        return f"backup {', '.join(running)} is running"
    damaged = [entry.id for entry in entries if entry.damaged]
    if damaged:
        return f"backup {', '.join(damaged)} is damaged (its manifest cannot be read), so what it needs is unknown"
    return ""


def _policy(newest_first: list[BackupEntry], *, keep_days: int, keep_last: int, now: datetime) -> dict[str, str]:
    kept: dict[str, str] = {}
    for entry in newest_first[:keep_last]:
        kept[entry.id] = f"one of the newest {keep_last}"
    for entry in newest_first:
        assert entry.manifest is not None
        if now - entry.manifest.started_at < timedelta(days=keep_days):
            kept.setdefault(entry.id, f"younger than {keep_days} days")
    verified = next((entry for entry in newest_first if entry.verification and entry.verification.ok), None)
    if verified is not None:
        kept.setdefault(verified.id, "the newest verified backup")
    return kept


async def _remove_snapshot(repo: Repository, snapshot: SnapshotFiles) -> None:
    names = sorted(snapshot.files, key=lambda name: name != MANIFEST)  # the manifest first
    for name in names:
        await repo.delete(repo.snapshot_name(snapshot.id, name))
