"""Restore drills: seed a stack through the app, back it up, wipe or replace it, restore, compare.

"The same" means every row of every table (times compared as UTC instants) and every stored
object's bytes (by SHA-256), read straight from the database and storage, not through the app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chitram.accounts.services import AccountService
from chitram.backups.database import open_engine
from chitram.backups.repository import Repository, open_repository
from chitram.settings import BackupSettings, DatabaseSettings, Settings
from chitram.storage import StorageConfigError, create_storage
from tests.accounts.conftest import (
    PASSWORD,
    bearer,
    create_test_app,
    create_token,
    create_user,
    set_disabled,
    unique_png,
    upload_as,
    with_accounts,
)
from tests.conftest import base_settings, production_storage
from tests.support.services import PostgresService, RedisService, S3Service

Client = AsyncTestClient[Litestar]
STORAGE_PREFIXES = ("originals/", "thumbnails/", "previews/")


@dataclass
class Seeded:
    """What the seed made, to check the restored stack through the app afterwards."""

    tokens: dict[str, str] = field(default_factory=dict)  # email -> API token
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # public id -> upload answer
    private_ids: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # public id -> the owner's API token
    deleted_user_id: int = 0


async def seed(settings: Settings, *, images_per_user: int = 2) -> Seeded:
    """Users (an admin, a disabled one, a deleted one), tokens (one revoked), images of every
    visibility, deduplicated twins, an anonymous upload and a deleted image."""
    seeded = Seeded()
    async with AsyncTestClient(create_test_app(settings)) as client:
        admin_id = await create_user(client, "admin@drill.test", admin=True)
        bob_id = await create_user(client, "Bob@Drill.test")
        carol_id = await create_user(client, "carol@drill.test")
        gone_id = await create_user(client, "gone@drill.test")
        seeded.tokens["admin@drill.test"] = await create_token(client, admin_id, "laptop")
        seeded.tokens["Bob@Drill.test"] = await create_token(client, bob_id, "sharex")
        revoked = await create_token(client, bob_id, "old")
        for token in seeded.tokens.values():
            for visibility in ("public", "unlisted", "private") * images_per_user:
                await _upload(client, seeded, token, visibility)
        twin = unique_png((50, 40))
        await _upload(client, seeded, seeded.tokens["Bob@Drill.test"], "public", data=twin)
        await _upload(client, seeded, None, "public", data=twin)  # same bytes: one blob, refcount 2
        await _upload(client, seeded, None, "unlisted")
        doomed = await _upload(client, seeded, seeded.tokens["Bob@Drill.test"], "public")
        response = await client.delete(f"/api/v1/images/{doomed}", headers=bearer(seeded.tokens["Bob@Drill.test"]))
        assert response.status_code == 204, response.text
        del seeded.images[doomed]
        await with_accounts(client, lambda accounts: _revoke(accounts, bob_id, "old"))
        assert (await client.get("/api/v1/me", headers=bearer(revoked))).status_code == 401
        await set_disabled(client, carol_id)
        # The newest account goes: its id is the highest ever handed out, and must stay unused.
        await with_accounts(client, lambda accounts: accounts.delete_user_row(gone_id))
        seeded.deleted_user_id = gone_id
    return seeded


async def _revoke(accounts: AccountService, user_id: int, name: str) -> None:
    token = next(token for token in await accounts.list_tokens(user_id) if token.name == name)
    await accounts.revoke_token(user_id, token.id)


async def _upload(
    client: Client, seeded: Seeded, token: str | None, visibility: str, *, data: bytes | None = None
) -> str:
    response = await upload_as(client, token, visibility=visibility, data=data if data is not None else unique_png())
    assert response.status_code == 201, response.text
    body = response.json()
    seeded.images[body["id"]] = body
    if visibility == "private":
        seeded.private_ids.append(body["id"])
    if token is not None:
        seeded.owners[body["id"]] = token
    return str(body["id"])


# -- what a stack holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    rows: dict[str, list[tuple[tuple[str, Any], ...]]]
    objects: dict[str, str]  # storage key -> SHA-256

    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}


async def state_of(settings: Settings) -> State:
    return State(rows=await table_rows(settings), objects=await stored_objects(settings))


async def table_rows(settings: Settings) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
    engine = open_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            metadata = await connection.run_sync(_reflect)
            rows = {}
            for table in metadata.sorted_tables:
                # A backup round is recorded after its backup's snapshot, so it is never in it.
                if table.name in ("alembic_version", "backup_rounds"):
                    continue
                result = await connection.execute(sa.select(table))
                rows[table.name] = sorted(
                    (tuple(sorted((key, _comparable(value)) for key, value in row._mapping.items())) for row in result),
                    key=repr,  # rows may hold None where others hold a value
                )
            return rows
    finally:
        await engine.dispose()


def _reflect(connection: sa.Connection) -> sa.MetaData:
    metadata = sa.MetaData()
    metadata.reflect(connection)
    return metadata


def _comparable(value: Any) -> Any:
    """SQLite hands times back without a zone (they are UTC); PostgreSQL with one."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return value


async def stored_objects(settings: Settings) -> dict[str, str]:
    storage = create_storage(settings)
    try:
        found = {}
        for prefix in STORAGE_PREFIXES:
            async for info in storage.list(prefix):
                data = b"".join([chunk async for chunk in storage.read(info.key)])
                found[info.key] = hashlib.sha256(data).hexdigest()
        return found
    except StorageConfigError:  # the bucket does not exist (yet)
        return {}
    finally:
        await storage.close()


async def needed_objects(settings: Settings) -> set[str]:
    engine = open_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.text("SELECT original_key, thumbnail_key, preview_key FROM blobs WHERE refcount > 0")
            )
            return {key for row in result for key in row}
    finally:
        await engine.dispose()


async def alembic_revision(settings: Settings) -> str | None:
    engine = open_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            return (await connection.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()


# -- stacks -----------------------------------------------------------------------------------


@dataclass
class Stacks:
    """Makes fresh, empty targets: an embedded data dir, or a PostgreSQL database + S3 bucket."""

    tmp_path: Path
    postgres: PostgresService | None = None
    redis: RedisService | None = None
    s3: S3Service | None = None
    databases: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)

    def embedded(self, name: str) -> Settings:
        return base_settings(self.tmp_path / name)

    def production(self, name: str) -> Settings:
        """An empty PostgreSQL database (not even migrated) and a bucket nobody created yet."""
        assert self.postgres is not None and self.redis is not None and self.s3 is not None
        from chitram.settings import CacheSettings

        database = f"chitram_drill_{uuid.uuid4().hex[:12]}"
        self.postgres.create_database(database)
        self.databases.append(database)
        bucket = f"drill-{uuid.uuid4().hex[:12]}"
        self.buckets.append(bucket)
        return base_settings(
            self.tmp_path / name,
            database=DatabaseSettings(database_url=self.postgres.asyncpg_url(database), database_pool_size=5),
            storage=production_storage(self.s3, bucket),
            cache=CacheSettings(redis_url=self.redis.url_for_db(2)),
        )

    def make(self, kind: str, name: str) -> Settings:
        return self.embedded(name) if kind == "embedded" else self.production(name)

    def s3_destination(self, settings: Settings) -> tuple[Settings, str]:
        """Settings whose backups go to a second bucket on the S3 server (the off-site copy)."""
        assert self.s3 is not None
        bucket = f"offsite-{uuid.uuid4().hex[:12]}"
        self.buckets.append(bucket)
        backup = BackupSettings(
            backup_s3_endpoint=self.s3.endpoint,
            backup_s3_access_key=self.s3.access_key,
            backup_s3_secret_key=self.s3.secret_key,
            backup_s3_secure=self.s3.secure,
            backup_s3_region=self.s3.region,
        )
        return dataclasses.replace(settings, backup=backup), f"s3://{bucket}/chitram"

    def cleanup(self) -> None:
        for database in self.databases:
            assert self.postgres is not None
            self.postgres.drop_database(database)
        for bucket in self.buckets:
            assert self.s3 is not None
            self.s3.remove_bucket(bucket)


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Stacks]:
    made = Stacks(tmp_path)
    yield made
    made.cleanup()


@pytest.fixture
def production_stacks(
    tmp_path: Path, postgres: PostgresService, redis_service: RedisService, s3: S3Service
) -> Iterator[Stacks]:
    made = Stacks(tmp_path, postgres, redis_service, s3)
    yield made
    made.cleanup()


def repository(settings: Settings, dest: str | Path) -> Repository:
    return open_repository(settings, str(dest))


def wipe_embedded(settings: Settings) -> None:
    """Lose the embedded installation: database, WAL files and stored objects."""
    for name in ("chitram.db", "chitram.db-wal", "chitram.db-shm"):
        (settings.data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(settings.storage_path, ignore_errors=True)


__all__ = ["PASSWORD", "Seeded", "Stacks", "State"]
