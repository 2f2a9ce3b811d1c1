"""The database part of a backup is one snapshot: a write that lands while the tables are being
exported is in none of them, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import sqlalchemy as sa

import chitram.backups.database as database
from chitram.db import upgrade_to_head
from chitram.settings import Settings


async def test_rows_written_during_the_export_are_not_in_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    export_table = database._export_table
    exported: list[str] = []

    async def export_then_write(connection: Any, table: sa.Table, folder: Path) -> database.TableFile:
        result = await export_table(connection, table, folder)
        exported.append(table.name)
        if len(exported) == 1:
            await _add_user(settings.database_url)  # committed by another connection, mid-export
        return result

    monkeypatch.setattr(database, "_export_table", export_then_write)
    snapshot = await database.export_database(settings.database_url, tmp_path)
    assert exported[0] != "users" and "users" in exported  # the write landed before users was read
    assert {table.name: table.rows for table in snapshot.tables}["users"] == 0
    assert await _count_users(settings.database_url) == 1  # yet it is there


async def _add_user(url: str) -> None:
    engine = database.open_engine(url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as connection:
            users = await connection.run_sync(lambda sync: sa.Table("users", sa.MetaData(), autoload_with=sync))
            await connection.execute(
                users.insert(),
                {
                    "email": "mid@x.example",
                    "email_key": "mid@x.example",
                    "password_hash": "x",
                    "is_admin": False,
                    "is_disabled": False,
                    "session_epoch": 0,
                    "used_bytes": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
    finally:
        await engine.dispose()


async def _count_users(url: str) -> int:
    engine = database.open_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(sa.text("SELECT count(*) FROM users"))).scalar_one())
    finally:
        await engine.dispose()
