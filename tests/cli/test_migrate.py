"""`chitram-admin migrate`: the deploy's migration step. It upgrades to this release's head, and
leaves alone a database that a newer release migrated (one rolled back since), so that the
stack's later starts do not fail on it."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result
from sqlalchemy import text

from chitram.cli import admin
from chitram.db import build_alchemy_config, database_revision, known_revisions
from chitram.settings import Settings
from tests.conftest import settings_env

FROM_A_NEWER_RELEASE = "0123456789ab"


def migrate(settings: Settings) -> Result:
    return CliRunner().invoke(admin.cli, ["migrate"], env=settings_env(settings), catch_exceptions=False)


def test_it_brings_the_database_to_this_release_and_is_idempotent(settings: Settings) -> None:
    for _ in range(2):
        result = migrate(settings)
        assert result.exit_code == 0, result.output
    revision = database_revision(settings)
    assert revision in known_revisions()
    assert result.stdout == f"the database is at this release's schema (revision {revision})\n"


def test_a_database_a_newer_release_migrated_is_left_as_it_is(settings: Settings) -> None:
    assert migrate(settings).exit_code == 0
    asyncio.run(_set_revision(settings, FROM_A_NEWER_RELEASE))
    result = migrate(settings)
    assert result.exit_code == 0, result.output
    assert f"the database is at revision {FROM_A_NEWER_RELEASE}, which this release" in result.stdout
    assert "does not know: a newer release migrated it; leaving it as it is" in result.stdout
    assert database_revision(settings) == FROM_A_NEWER_RELEASE
    # Plain `db upgrade` fails on it: that is what every start after a rollback ran before.
    upgrade = CliRunner().invoke(admin.cli, ["db", "upgrade", "--no-prompt"], env=settings_env(settings))
    assert upgrade.exit_code != 0


async def _set_revision(settings: Settings, revision: str) -> None:
    engine = build_alchemy_config(settings).get_engine()
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        await engine.dispose()
