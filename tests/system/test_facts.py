"""Operational facts: counters that follow uploads, duplicates and deletes (and the migration
that backfills them), upload outcomes by reason, and the Prometheus gauges read from them."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import text

from chitram.backups.database import open_engine
from chitram.db import Database, build_alchemy_config, upgrade_to, upgrade_to_head
from chitram.settings import AccountSettings, DatabaseSettings, LimitSettings, Settings, UploadSettings
from chitram.system.facts import RoundResult, Totals, read_totals, record_backup_round, upload_outcomes_since
from chitram.system.gauges import refresh_operational_gauges
from tests.accounts.conftest import bearer, create_test_app, create_token, create_user, unique_png
from tests.conftest import base_settings
from tests.images.test_api import png_bytes, upload
from tests.images.test_services import own_sessions
from tests.support.services import PostgresService

Client = AsyncTestClient[Litestar]
BEFORE_FACTS = "230869a33c0f"  # the revision before the counters existed


async def totals(app: Litestar) -> Totals:
    async with own_sessions(app) as session:
        return await read_totals(session)


async def stored_object_bytes(app: Litestar) -> int:
    return sum([info.size async for info in app.state.storage.list("")])


async def test_counters_follow_uploads_duplicates_and_deletes(app: Litestar, client: Client) -> None:
    assert await totals(app) == Totals(images=0, stored_bytes=0)
    first = (await upload(client, png_bytes(color=(1, 2, 3)))).json()
    twin = (await upload(client, png_bytes(color=(1, 2, 3)))).json()  # the same content: stored once
    other = (await upload(client, png_bytes((30, 20), color=(9, 9, 9)))).json()
    # Stored bytes are what storage holds: each content once, original plus both variants.
    assert await totals(app) == Totals(images=3, stored_bytes=await stored_object_bytes(app))

    deleted = await client.delete(f"/api/v1/images/{twin['id']}", headers={"X-Delete-Token": twin["delete_token"]})
    assert deleted.status_code == 204
    assert await totals(app) == Totals(images=2, stored_bytes=await stored_object_bytes(app))

    for image in (first, other):
        headers = {"X-Delete-Token": image["delete_token"]}
        assert (await client.delete(f"/api/v1/images/{image['id']}", headers=headers)).status_code == 204
    assert await stored_object_bytes(app) == 0
    assert await totals(app) == Totals(images=0, stored_bytes=0)


async def test_a_refused_upload_changes_no_counter(app: Litestar, client: Client) -> None:
    await upload(client, png_bytes())
    before = await totals(app)
    assert (await upload(client, b"not an image at all")).status_code == 415
    assert await totals(app) == before


# -- the migration's backfill -------------------------------------------------------------


BLOB_COLUMNS = (
    "sha256, content_type, size, width, height, frames, original_key, thumbnail_key, thumbnail_size,"
    " thumbnail_width, thumbnail_height, preview_key, preview_size, preview_width, preview_height, refcount,"
    " created_at, updated_at"
)


def blob_row(sha: str, size: int, refcount: int) -> str:
    # size + thumbnail 10 + preview 100
    return (
        f"INSERT INTO blobs ({BLOB_COLUMNS}) VALUES ('{sha}', 'image/png', {size}, 1, 1, 1, 'o{sha}', 't{sha}',"
        f" 10, 1, 1, 'p{sha}', 100, 1, 1, {refcount}, '2026-01-01', '2026-01-01')"
    )


def image_row(public_id: str, sha: str) -> str:
    return (
        "INSERT INTO images (public_id, visibility, blob_sha256, created_at, updated_at)"
        f" VALUES ('{public_id}', 'unlisted', '{sha}', '2026-01-01', '2026-01-01')"
    )


async def _execute(url: str, statements: list[str]) -> None:
    engine = open_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _counter_rows(url: str) -> dict[str, int]:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT name, value FROM counters"))
            return {str(name): int(value) for name, value in rows.all()}
    finally:
        await engine.dispose()


def check_backfill(settings: Settings) -> None:
    upgrade_to(settings, BEFORE_FACTS)
    existing = [
        blob_row("shared", 1000, 2),  # two images share it
        blob_row("single", 500, 1),
        blob_row("garbage", 7000, 0),  # no image needs it: gc will remove it, it is not stored bytes
        image_row("AAAAAAAAAAAA", "shared"),
        image_row("BBBBBBBBBBBB", "shared"),
        image_row("CCCCCCCCCCCC", "single"),
    ]
    asyncio.run(_execute(settings.database_url, existing))
    upgrade_to_head(settings)
    assert asyncio.run(_counter_rows(settings.database_url)) == {"images": 3, "stored_bytes": 1110 + 610}


def test_the_migration_counts_what_is_there_on_sqlite(tmp_path: Path) -> None:
    check_backfill(base_settings(tmp_path))


def test_the_migration_counts_what_is_there_on_postgres(tmp_path: Path, postgres: PostgresService) -> None:
    name = f"chitram_backfill_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    try:
        check_backfill(base_settings(tmp_path, database=DatabaseSettings(database_url=postgres.asyncpg_url(name))))
    finally:
        postgres.drop_database(name)


def test_an_empty_database_gets_no_counter_rows_so_restore_still_sees_it_empty(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    upgrade_to_head(settings)
    assert asyncio.run(_counter_rows(settings.database_url)) == {}
    commands = AlembicCommands(sqlalchemy_config=build_alchemy_config(settings))
    commands.downgrade(revision=BEFORE_FACTS)  # and the migration goes back down cleanly
    upgrade_to_head(settings)


# -- upload outcomes ------------------------------------------------------------------------


def uploads_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("chitram_uploads_total", {"outcome": outcome}) or 0.0


def image_bytes(kind: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (5, 6, 7)).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    """Small limits, so that every refusal can be provoked with small files."""
    return dataclasses.replace(
        settings,
        upload=UploadSettings(max_upload_bytes=200_000, max_pixels=50 * 50, processing_concurrency=2),
        limits=LimitSettings(anonymous_uploads_per_hour_per_ip=8, uploads_per_hour_per_ip=0),
        accounts=AccountSettings(account_quota_bytes=1000),
    )


async def test_every_upload_outcome_is_counted_by_reason(strict_settings: Settings) -> None:
    app = create_test_app(strict_settings)
    before = {outcome: uploads_total(outcome) for outcome in OUTCOMES}
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        user_id = await create_user(client, "quota@example.org")
        token = await create_token(client, user_id)
        big = unique_png((40, 40)) + b"\0" * 1500  # fits the pixels, not the 1000-byte quota
        quota = await client.post("/api/v1/images", files={"file": ("q.png", big, "image/png")}, headers=bearer(token))
        assert quota.status_code == 413 and "quota" in quota.json()["detail"]

        answers = {
            "stored": await upload(client, png_bytes((40, 40))),
            "too_large": await upload(client, b"\x89PNG" + b"\0" * 300_000),
            "not_an_image": await upload(client, b"%PDF-1.7 not an image", filename="doc.pdf"),
            "unsupported": await upload(client, image_bytes("BMP"), filename="old.bmp", content_type="image/bmp"),
            "too_many_pixels": await upload(client, png_bytes((60, 60))),
            "corrupt": await upload(client, png_bytes((40, 40), color=(1, 1, 1))[:80]),
            "other": await client.post("/api/v1/images", files={"title": (None, "no file")}),
        }
        statuses = {outcome: response.status_code for outcome, response in answers.items()}
        assert statuses == {
            "stored": 201,
            "too_large": 413,
            "not_an_image": 415,
            "unsupported": 415,
            "too_many_pixels": 422,
            "corrupt": 422,
            "other": 400,
        }, {outcome: response.text for outcome, response in answers.items()}
        # Eight anonymous uploads an hour: the seven above, one more, then refused.
        assert (await upload(client, png_bytes((10, 10)))).status_code == 201
        assert (await upload(client, png_bytes((12, 12)))).status_code == 429

    expected = dict.fromkeys(OUTCOMES, 1) | {"stored": 2}
    async with own_sessions(app) as session:
        assert await upload_outcomes_since(session, datetime.now(UTC) - timedelta(hours=1)) == expected
        # An hour's counts are kept per hour: nothing is older than this one.
        assert await upload_outcomes_since(session, datetime.now(UTC) + timedelta(hours=1)) == {}
    assert {outcome: uploads_total(outcome) - before[outcome] for outcome in OUTCOMES} == expected


OUTCOMES = (
    "stored",
    "too_large",
    "not_an_image",
    "unsupported",
    "too_many_pixels",
    "corrupt",
    "rate_limited",
    "quota",
    "other",
)


# -- gauges ---------------------------------------------------------------------------------


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_gauges_are_set_from_the_facts(app: Litestar, client: Client) -> None:
    await upload(client, png_bytes())
    finished = datetime.now(UTC).replace(microsecond=0)
    async with own_sessions(app) as session:
        await record_backup_round(
            session,
            RoundResult(finished - timedelta(minutes=3), finished, ok=True, verified=True, backup_id="b1", size=4321),
        )
    database = Database.from_settings(app.state.settings)
    try:
        assert await refresh_operational_gauges(database)
    finally:
        await database.dispose()
    assert gauge("chitram_images") == 1
    assert gauge("chitram_stored_bytes") == await stored_object_bytes(app)
    assert gauge("chitram_backup_last_success_timestamp_seconds") == finished.timestamp()
    assert gauge("chitram_backup_last_ok") == 1
    assert gauge("chitram_backup_last_size_bytes") == 4321

    async with own_sessions(app) as session:
        await record_backup_round(session, RoundResult(finished, finished, ok=False, verified=False, error="disk full"))
    database = Database.from_settings(app.state.settings)
    try:
        assert await refresh_operational_gauges(database)
    finally:
        await database.dispose()
    assert gauge("chitram_backup_last_ok") == 0
    assert gauge("chitram_backup_last_success_timestamp_seconds") == finished.timestamp()


async def test_gauges_keep_their_values_when_the_database_is_down(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, database=DatabaseSettings(database_url="postgresql+asyncpg://x@127.0.0.1:1/x"))
    database = Database.from_settings(settings)
    try:
        assert not await refresh_operational_gauges(database)
    finally:
        await database.dispose()


def test_a_database_holding_only_operational_facts_is_still_an_empty_restore_target(tmp_path: Path) -> None:
    from chitram.backups.database import tables_with_rows

    settings = base_settings(tmp_path)
    upgrade_to_head(settings)
    facts = [
        "INSERT INTO counters (name, value) VALUES ('images', 0)",
        "INSERT INTO upload_outcomes (epoch_hour, outcome, count) VALUES (1, 'rate_limited', 3)",
        "INSERT INTO backup_rounds (started_at, finished_at, ok, verified, created_at, updated_at)"
        " VALUES ('2026-01-01', '2026-01-01', 0, 0, '2026-01-01', '2026-01-01')",
    ]
    asyncio.run(_execute(settings.database_url, facts))
    assert asyncio.run(tables_with_rows(settings.database_url)) == []
    asyncio.run(_execute(settings.database_url, [blob_row("one", 1, 1), image_row("AAAAAAAAAAAA", "one")]))
    assert asyncio.run(tables_with_rows(settings.database_url)) == ["blobs", "images"]
