"""Where backups live — a folder or an S3 bucket — and how they are laid out there.

    objects/<sha256[:2]>/<sha256>          each stored object once, named by the SHA-256 of its bytes
    snapshots/<ID>/db/<table>.jsonl.gz      one file per table: a header line, then one JSON array per row
    snapshots/<ID>/objects.jsonl.gz         [storage key, sha256, size] for every object the backup needs
    snapshots/<ID>/heartbeat.json           while the backup runs, rewritten every minute
    snapshots/<ID>/manifest.json            written last: a snapshot without one is not a backup
    snapshots/<ID>/verify.json              the result of the last `backup verify`

Objects are shared by every backup that needs them, which is what makes each backup copy only
what is new while every backup on its own still restores completely.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
import msgspec

from chitram.settings import Settings
from chitram.storage import FilesystemStorage, ObjectInfo, ObjectNotFound, ObjectStorage, S3Storage, validate_key

FORMAT = 1
ID_FORMAT = "%Y%m%d-%H%M%S"
ID_PATTERN = re.compile(r"\d{8}-\d{6}")
MANIFEST = "manifest.json"
HEARTBEAT = "heartbeat.json"
VERIFICATION = "verify.json"
OBJECT_LIST = "objects.jsonl.gz"
JSON_TYPE = "application/json"
GZIP_TYPE = "application/gzip"
HASH_CHUNK = 1024 * 1024

S = TypeVar("S", bound=msgspec.Struct)


class BackupError(Exception):
    """A backup step that cannot go on; the message says what is wrong and what to do."""


class StoredFile(msgspec.Struct, frozen=True):
    """A file of one backup (a table export or the object list), with what it must hash to."""

    key: str
    size: int
    sha256: str


class TableDump(msgspec.Struct, frozen=True):
    rows: int
    file: StoredFile


class ObjectEntry(msgspec.Struct, frozen=True, array_like=True):
    """One object a backup needs: its key in the app's storage and its content's hash."""

    key: str
    sha256: str
    size: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What one backup holds. Its presence is what makes the backup complete."""

    format: int = FORMAT
    id: str
    started_at: datetime
    finished_at: datetime
    app_version: str
    revision: str
    database: str
    storage: str
    tables: dict[str, TableDump]
    sequences: dict[str, int]
    objects: StoredFile
    object_count: int
    object_bytes: int
    copied_objects: int
    copied_bytes: int
    missing_objects: list[str] = []  # msgspec copies mutable defaults
    note: str = ""

    @property
    def database_bytes(self) -> int:
        return sum(table.file.size for table in self.tables.values()) + self.objects.size

    @property
    def size(self) -> int:
        """Bytes a restore reads: the objects it needs and the database files."""
        return self.object_bytes + self.database_bytes

    def rows(self, table: str) -> int:
        dump = self.tables.get(table)
        return dump.rows if dump else 0


class Verification(msgspec.Struct, frozen=True):
    ok: bool
    checked_at: datetime
    seconds: float
    objects: int
    bytes: int
    problems: list[str]


class Heartbeat(msgspec.Struct, frozen=True):
    started_at: datetime
    host: str
    pid: int
    nonce: str = ""  # tells two backups that started in the same second apart


@dataclass
class SnapshotFiles:
    """What a snapshot folder holds, as listed (nothing read yet)."""

    id: str
    files: dict[str, ObjectInfo] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def last_change(self) -> datetime | None:
        return max((info.last_modified for info in self.files.values()), default=None)


class Repository:
    """A backup destination: an :class:`ObjectStorage` and a key prefix inside it."""

    def __init__(self, storage: ObjectStorage, *, prefix: str = "", description: str) -> None:
        if prefix:
            validate_key(prefix)
            prefix += "/"
        self._storage = storage
        self._prefix = prefix
        self.description = description

    def _key(self, name: str) -> str:
        return self._prefix + name

    @staticmethod
    def object_name(sha256: str) -> str:
        return f"objects/{sha256[:2]}/{sha256}"

    @staticmethod
    def snapshot_name(backup_id: str, name: str) -> str:
        return f"snapshots/{backup_id}/{name}"

    async def ensure_ready(self) -> None:
        await self._storage.ensure_ready()

    async def close(self) -> None:
        await self._storage.close()

    # -- objects ---------------------------------------------------------------------------

    async def object_sizes(self) -> dict[str, int]:
        """SHA-256 → size of every object the destination holds."""
        sizes: dict[str, int] = {}
        async for info in self._storage.list(self._key("objects/")):
            sizes[info.key.rsplit("/", 1)[-1]] = info.size
        return sizes

    async def put_object(self, sha256: str, data: bytes) -> None:
        await self._storage.put(self._key(self.object_name(sha256)), data, content_type="application/octet-stream")

    async def read_object(self, sha256: str) -> bytes:
        return await self.read(self.object_name(sha256))

    async def delete_object(self, sha256: str) -> None:
        await self._storage.delete(self._key(self.object_name(sha256)))

    # -- files -----------------------------------------------------------------------------

    async def read(self, name: str) -> bytes:
        """The whole file; raises ObjectNotFound."""
        return b"".join([chunk async for chunk in self._storage.read(self._key(name), chunk_size=HASH_CHUNK)])

    async def digest(self, name: str) -> tuple[str, int] | None:
        """(SHA-256, size) of a file, read in chunks; None when it is missing."""
        hasher = hashlib.sha256()
        size = 0
        try:
            async for chunk in self._storage.read(self._key(name), chunk_size=HASH_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        except ObjectNotFound:
            return None
        return hasher.hexdigest(), size

    async def download(self, stored: StoredFile, path: Path) -> None:
        """Copy a backup file to ``path``, refusing it unless it hashes to what the manifest says."""
        hasher = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as handle:
                async for chunk in self._storage.read(self._key(stored.key), chunk_size=HASH_CHUNK):
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
        except ObjectNotFound:
            raise BackupError(f"{stored.key} is missing from the backup") from None
        if hasher.hexdigest() != stored.sha256 or size != stored.size:
            raise BackupError(f"{stored.key} is damaged (its SHA-256 or size differs from the manifest)")

    async def upload(self, name: str, path: Path) -> StoredFile:
        """Store a local file (streamed) and describe it for the manifest."""
        sha256, size = await anyio.to_thread.run_sync(_file_digest, path)
        await self._storage.put_file(self._key(name), path, content_type=GZIP_TYPE)
        return StoredFile(key=name, size=size, sha256=sha256)

    async def put_json(self, name: str, value: msgspec.Struct) -> None:
        await self._storage.put(self._key(name), msgspec.json.encode(value), content_type=JSON_TYPE)

    async def get_json(self, name: str, kind: type[S]) -> S | None:
        try:
            data = await self.read(name)
        except ObjectNotFound:
            return None
        try:
            return msgspec.json.decode(data, type=kind)
        except msgspec.DecodeError as exc:
            raise BackupError(f"{name} is damaged ({exc})") from None

    async def delete(self, name: str) -> None:
        await self._storage.delete(self._key(name))

    # -- snapshots -------------------------------------------------------------------------

    async def snapshots(self) -> list[SnapshotFiles]:
        """Every snapshot folder, complete or not, oldest first."""
        found: dict[str, SnapshotFiles] = {}
        root = self._key("snapshots/")
        async for info in self._storage.list(root):
            backup_id, _, name = info.key.removeprefix(root).partition("/")
            if ID_PATTERN.fullmatch(backup_id) and name:
                found.setdefault(backup_id, SnapshotFiles(backup_id)).files[name] = info
        return [found[backup_id] for backup_id in sorted(found)]

    async def manifest(self, backup_id: str) -> Manifest | None:
        return await self.get_json(self.snapshot_name(backup_id, MANIFEST), Manifest)

    async def object_list(self, manifest: Manifest) -> list[ObjectEntry]:
        """The objects a backup needs (its list file is checked against the manifest first)."""
        data = await self.read(manifest.objects.key)
        if hashlib.sha256(data).hexdigest() != manifest.objects.sha256:
            raise BackupError(f"{manifest.objects.key} is damaged (its SHA-256 differs from the manifest)")
        return list(read_object_list(gzip.decompress(data)))


def _file_digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest(), handle.tell()


def read_object_list(text: bytes) -> Iterator[ObjectEntry]:
    decoder = msgspec.json.Decoder(ObjectEntry)
    for line in text.splitlines():
        if line:
            yield decoder.decode(line)


def open_repository(settings: Settings, dest: str | None = None) -> Repository:
    """The destination named by ``dest``, CHITRAM_BACKUP_DEST, or DATA_DIR/backups.

    A destination is a folder (a path, or file:///path) or ``s3://BUCKET[/PREFIX]``; the S3
    server and keys come from CHITRAM_BACKUP_S3_*, each falling back to the app's CHITRAM_S3_*.
    """
    target = (dest or settings.backup.backup_dest or "").strip()
    if not target:
        folder = settings.data_dir / "backups"
        return Repository(FilesystemStorage(folder), description=str(folder))
    if target.startswith("s3://"):
        return _s3_repository(settings, target)
    if "://" in target and not target.startswith("file://"):
        raise BackupError(f"unknown backup destination {target!r}: give a folder or s3://BUCKET[/PREFIX]")
    folder = Path(target.removeprefix("file://")).expanduser().resolve()
    return Repository(FilesystemStorage(folder), description=str(folder))


def _s3_repository(settings: Settings, target: str) -> Repository:
    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    backup, storage = settings.backup, settings.storage
    endpoint = backup.backup_s3_endpoint or storage.s3_endpoint
    if not endpoint:
        raise BackupError(
            f"{target} needs an S3 server: set CHITRAM_BACKUP_S3_ENDPOINT (host:port), or CHITRAM_S3_ENDPOINT"
        )
    if prefix:
        try:
            validate_key(prefix)
        except ValueError:
            raise BackupError(f"the prefix in {target!r} must be [a-z0-9._-] segments joined by '/'") from None
    secure = backup.backup_s3_secure if backup.backup_s3_secure is not None else storage.s3_secure
    s3 = S3Storage(
        endpoint=endpoint,
        access_key=backup.backup_s3_access_key or storage.s3_access_key,
        secret_key=backup.backup_s3_secret_key or storage.s3_secret_key,
        bucket=bucket,
        secure=secure,
        region=backup.backup_s3_region or storage.s3_region,
        timeout_seconds=max(storage.s3_timeout_seconds, 30.0),
    )
    return Repository(s3, prefix=prefix, description=f"s3://{endpoint}/{bucket}" + (f"/{prefix}" if prefix else ""))
