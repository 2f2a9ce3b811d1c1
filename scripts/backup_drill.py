"""Time a backup and a restore of a seeded stack, against a plain copy of the same objects.

    uv run python -m scripts.backup_drill [--images 300] [--users 6] [--stack embedded|production|both]

Seeds users and images (photo-sized JPEGs) through the app, then measures, on the same machine
in the same run:

- the yardstick: reading every stored object and writing it to a folder, nothing else;
- a first (full) backup, a second one with nothing changed (incremental), verify, and a
  restore into an empty stack of the same kind and of the other kind;
- memory: the peak Python allocation while exporting a table of 20,000 and of 200,000 rows
  (streaming means the two are about the same).

The production stack uses the PostgreSQL, Redis and S3 servers the tests use
(CHITRAM_TEST_* or throwaway ones). Nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import random
import shutil
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from PIL import Image

from chitram.app import create_app
from chitram.backups.database import export_database, open_engine
from chitram.backups.repository import open_repository
from chitram.backups.service import CLOCK_MARGIN, create_backup, restore_backup, verify_backup
from chitram.db import upgrade_to_head
from chitram.settings import (
    BackupSettings,
    CacheSettings,
    DatabaseSettings,
    LimitSettings,
    ServerSettings,
    Settings,
    StorageBackend,
    StorageSettings,
    UploadSettings,
)
from chitram.storage import create_storage
from tests.support.services import start_postgres, start_redis, start_s3

SECRET = "backup-drill-secret-key-0123456789abcdef"
# The drill uploads hundreds of images from one address in a minute.
NO_LIMITS = LimitSettings(
    uploads_per_hour_per_ip=0,
    anonymous_uploads_per_hour_per_ip=0,
    uploads_per_hour_per_account=0,
    anonymous_bytes_per_day_per_ip=0,
)


def photo(rng: random.Random) -> bytes:
    """A JPEG of a few hundred kB: smooth gradients plus noise, like a phone photo scaled down."""
    width, height = rng.choice([(1280, 960), (1024, 768), (1600, 900)])
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    Image.blend(base, noise, 0.35).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def seed(settings: Settings, images: int, users: int) -> int:
    rng = random.Random(7)
    total = 0
    async with AsyncTestClient(create_app(settings)) as client:
        app = client.app
        tokens = []

        async def make(n: int) -> str:
            async with app.state.database.sessions() as db:
                accounts = app.state.account_service_factory(db)
                user = await accounts.register(f"user{n}@drill.example", "drill password 123")
                return str((await accounts.create_token(user.id, "drill")).secret)

        for n in range(users):
            # The app's pool lives on the test client's own event loop.
            tokens.append(await anyio.to_thread.run_sync(partial(client.blocking_portal.call, make, n)))
        for n in range(images):
            data = photo(rng)
            total += len(data)
            anonymous = n % 10 == 0
            visibility = ("public", "unlisted", "private")[n % (2 if anonymous else 3)]
            headers = {} if anonymous else {"Authorization": f"Bearer {tokens[n % users]}"}
            response = await client.post(
                "/api/v1/images",
                files={"file": (f"photo{n}.jpg", data, "image/jpeg")},
                data={"visibility": visibility},
                headers=headers,
            )
            assert response.status_code == 201, response.text
    return total


async def seed_more(settings: Settings, images: int) -> None:
    rng = random.Random(99)
    async with AsyncTestClient(create_app(settings)) as client:
        for n in range(images):
            files = {"file": (f"more{n}.jpg", photo(rng), "image/jpeg")}
            response = await client.post("/api/v1/images", files=files, data={"visibility": "public"})
            assert response.status_code == 201, response.text


async def plain_copy(settings: Settings, folder: Path) -> int:
    """The yardstick: every object read from storage and written to a file, and nothing more."""
    storage = create_storage(settings)
    copied = 0
    try:
        for prefix in ("originals/", "thumbnails/", "previews/"):
            async for info in storage.list(prefix):
                data = b"".join([chunk async for chunk in storage.read(info.key, chunk_size=1024 * 1024)])
                target = folder / info.key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                copied += len(data)
    finally:
        await storage.close()
    return copied


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


@dataclasses.dataclass
class Stacks:
    root: Path
    postgres: Any = None
    s3: Any = None
    redis: Any = None
    cleanups: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def embedded(self, name: str) -> Settings:
        return Settings(
            server=ServerSettings(data_dir=self.root / name, secret_key=SECRET),
            upload=UploadSettings(processing_concurrency=2),
            limits=NO_LIMITS,
        )

    def production(self, name: str) -> Settings:
        if self.postgres is None:
            self.postgres, stop_pg = start_postgres(self.root / "pg")
            self.s3, stop_s3 = start_s3()
            self.redis, stop_redis = start_redis(self.root / "redis")
            self.cleanups += [stop_redis, stop_s3, stop_pg]
        database = f"drill_{uuid.uuid4().hex[:10]}"
        self.postgres.create_database(database)
        self.cleanups.insert(0, lambda: self.postgres.drop_database(database))
        bucket = f"drill-{uuid.uuid4().hex[:10]}"
        return Settings(
            server=ServerSettings(data_dir=self.root / name, secret_key=SECRET),
            database=DatabaseSettings(database_url=self.postgres.asyncpg_url(database)),
            storage=StorageSettings(
                storage_backend=StorageBackend.S3,
                s3_endpoint=self.s3.endpoint,
                s3_access_key=self.s3.access_key,
                s3_secret_key=self.s3.secret_key,
                s3_bucket=bucket,
                s3_region=self.s3.region,
            ),
            cache=CacheSettings(redis_url=self.redis.url_for_db(3)),
            upload=UploadSettings(processing_concurrency=2),
            limits=NO_LIMITS,
            backup=BackupSettings(),
        )

    def make(self, kind: str, name: str) -> Settings:
        return self.embedded(name) if kind == "embedded" else self.production(name)


async def drill(stacks: Stacks, kind: str, images: int, users: int) -> None:
    other = "production" if kind == "embedded" else "embedded"
    source = stacks.make(kind, f"{kind}-source")
    await anyio.to_thread.run_sync(upgrade_to_head, source)
    seed_seconds, upload_bytes = await timed(lambda: seed(source, images, users))
    print(f"\n## {kind} stack: {images} images ({upload_bytes / 1e6:.0f} MB uploaded), {users} users")
    print(f"seeded through the app in {seed_seconds:.1f} s")

    yard_dir = stacks.root / f"{kind}-yardstick"
    yard, copied = await timed(lambda: plain_copy(source, yard_dir))
    shutil.rmtree(yard_dir)
    dest = stacks.root / f"{kind}-backups"
    repo = open_repository(source, str(dest))
    rows: list[tuple[str, float]] = []
    # Nightly backups see objects written before the last one began, not seconds ago.
    await asyncio.sleep(CLOCK_MARGIN.total_seconds() + 1)
    full, manifest = await timed(lambda: create_backup(source, repo))
    rows.append(("backup create (first, full)", full))
    await asyncio.sleep(CLOCK_MARGIN.total_seconds() + 1)
    again, second = await timed(lambda: create_backup(source, repo))
    rows.append((f"backup create (nothing changed: {second.copied_objects} copied)", again))
    added = max(1, images // 20)
    await seed_more(source, added)
    next_day, third = await timed(lambda: create_backup(source, repo))
    rows.append((f"backup create ({added} new images: {third.copied_objects} objects copied)", next_day))
    check, verification = await timed(lambda: verify_backup(repo, manifest.id))
    assert verification.ok, verification.problems
    rows.append(("backup verify", check))
    for target_kind in (kind, other):
        target = stacks.make(target_kind, f"{kind}-to-{target_kind}")
        target_repo = open_repository(target, str(dest))
        seconds, _ = await timed(partial(restore_backup, target, target_repo, manifest.id))
        rows.append((f"backup restore into an empty {target_kind} stack", seconds))
    await repo.close()

    print(
        f"objects: {manifest.object_count} ({manifest.object_bytes / 1e6:.1f} MB); database files: "
        f"{manifest.database_bytes / 1e3:.0f} kB"
    )
    print("\n| step | seconds | × yardstick |\n|---|---|---|")
    print(f"| yardstick: read every object, write it to a folder ({copied / 1e6:.1f} MB) | {yard:.2f} | 1.00 |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / yard:.2f} |")


async def export_peak(root: Path, rows: int) -> tuple[int, float]:
    """Peak traced allocation while exporting a `users` table of `rows` rows."""
    settings = Settings(server=ServerSettings(data_dir=root / f"memory-{rows}", secret_key=SECRET))
    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    engine = open_engine(settings.database_url)
    async with engine.begin() as connection:
        users = await connection.run_sync(lambda sync: sa.Table("users", sa.MetaData(), autoload_with=sync))
        batch = 5000
        now = datetime.now(UTC)
        for start in range(0, rows, batch):
            await connection.execute(
                users.insert(),
                [
                    {
                        "email": f"u{n}@x.example",
                        "email_key": f"u{n}@x.example",
                        "password_hash": "x" * 97,
                        "is_admin": False,
                        "is_disabled": False,
                        "session_epoch": 0,
                        "used_bytes": n,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(start, min(start + batch, rows))
                ],
            )
    await engine.dispose()
    folder = root / f"export-{rows}"
    folder.mkdir()
    tracemalloc.start()
    started = time.perf_counter()
    await export_database(settings.database_url, folder)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, seconds


async def memory_check(root: Path) -> None:
    small, small_seconds = await export_peak(root, 20_000)
    large, large_seconds = await export_peak(root, 200_000)
    print("\n## streaming export (SQLite, users table)")
    print("\n| rows | peak Python memory | seconds |\n|---|---|---|")
    print(f"| 20,000 | {small / 1e6:.1f} MB | {small_seconds:.2f} |")
    print(f"| 200,000 | {large / 1e6:.1f} MB | {large_seconds:.2f} |")
    print(f"\n10× the rows: {large / small:.2f}× the peak memory, {large_seconds / small_seconds:.1f}× the time")


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chitram-drill-") as root:
        yield Path(root)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--stack", choices=("embedded", "production", "both"), default="both")
    options = parser.parse_args()
    with workspace() as root:
        stacks = Stacks(root)
        try:
            for kind in ("embedded", "production"):
                if options.stack in (kind, "both"):
                    await drill(stacks, kind, options.images, options.users)
            await memory_check(root)
        finally:
            for cleanup in stacks.cleanups:
                cleanup()


if __name__ == "__main__":
    asyncio.run(main())
