"""`chitram-admin health --direct`: the database, storage and Redis checked from the settings,
without the app, with the same exit codes and --json as the HTTP probe."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from chitram.cli import admin
from chitram.db import upgrade_to_head
from chitram.settings import CacheSettings, Settings
from chitram.storage import create_storage
from tests.conftest import base_settings, production_storage, settings_env
from tests.support.server import free_port
from tests.support.services import S3Service


def health(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(admin.cli, ["health", *args], env=settings_env(settings), catch_exceptions=False)


def test_ready_on_both_stacks(settings: Settings) -> None:
    asyncio.run(_storage_as_the_app_leaves_it(settings))
    result = health(settings, "--direct")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ready\n"
    document = json.loads(health(settings, "--direct", "--json").stdout)
    assert document["status"] == "ready"
    assert {name: part["status"] for name, part in document["components"].items()} == {
        "database": "ok",
        "storage": "ok",
        "cache": "ok",
    }


async def _storage_as_the_app_leaves_it(settings: Settings) -> None:
    """The app makes the folder or bucket at start; --direct only looks."""
    storage = create_storage(settings)
    try:
        await storage.ensure_ready()
    finally:
        await storage.close()


def test_a_missing_embedded_database_is_down_and_not_created(tmp_path: Path) -> None:
    settings = base_settings(tmp_path / "nowhere")
    result = health(settings, "--direct")
    assert result.exit_code == 1
    database = settings.data_dir / "chitram.db"
    assert f"database (FileNotFoundError: no database at {database}; run `chitram-admin db upgrade`)" in result.stderr
    assert not database.exists()


def test_services_that_do_not_answer_are_named_in_full(tmp_path: Path, s3: S3Service) -> None:
    closed = free_port()
    settings = base_settings(
        tmp_path,
        storage=production_storage(s3, "direct-health", endpoint=f"127.0.0.1:{closed}", timeout=1.0),
        cache=CacheSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    upgrade_to_head(settings)
    result = health(settings, "--direct", "--json")
    assert result.exit_code == 1
    components = json.loads(result.stdout)["components"]
    assert components["database"]["status"] == "ok"
    assert components["storage"]["status"] == "down" and f"port={closed}" in components["storage"]["error"]
    assert components["cache"]["status"] == "down" and "ConnectionError" in components["cache"]["error"]

    plain = health(settings, "--direct")
    assert plain.exit_code == 1
    assert plain.stderr.startswith("not ready: down: storage (StorageUnavailable: ")
    assert ", cache (ConnectionError: " in plain.stderr


def test_direct_and_url_are_exclusive(tmp_path: Path) -> None:
    result = health(base_settings(tmp_path), "--direct", "--url", "http://127.0.0.1:8000")
    assert result.exit_code == 2
    assert "--direct checks the services themselves and --url asks the app: give one of them" in result.output
