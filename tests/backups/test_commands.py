"""The `chitram-admin backup` commands as an operator uses them: output, refusals, the safety
backup, Redis clean-up, the scheduled round, and images deleted while a backup runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import msgspec
import pytest
import redis
from litestar.testing import AsyncTestClient

import chitram.backups.database
import chitram.backups.service
from chitram.backups.repository import Manifest
from chitram.cli.backup import _seconds_until
from chitram.db import upgrade_to_head
from chitram.settings import Settings
from chitram.storage import create_storage
from tests.accounts.conftest import bearer, create_test_app, unique_png, upload_as
from tests.backups.conftest import Stacks, seed, state_of, stored_objects
from tests.backups.test_damage import backup_cli

ID = re.compile(r"\d{8}-\d{6}")


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = await anyio.to_thread.run_sync(backup_cli, settings, *args)
    return result.exit_code, result.stdout, result.stderr


async def seeded(settings: Settings) -> None:
    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    await seed(settings, images_per_user=1)


async def production_backup_and_target(stacks: Stacks, dest: str) -> tuple[Settings, Settings]:
    """A seeded production stack with one backup in ``dest``, and an empty one to restore into."""
    source = stacks.production("source")
    await seeded(source)
    await backed_up(source, dest)
    return source, stacks.production("target")


async def backed_up(settings: Settings, dest: str) -> str:
    """`backup create`; the new backup's id."""
    code, out, err = await cli(settings, "create", "--dest", dest)
    assert code == 0, err
    return out.split(":")[0].removeprefix("backup ")


async def test_create_list_and_verify_report_what_an_operator_needs(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    await seeded(source)
    dest = str(tmp_path / "backups")

    code, out, err = await cli(source, "create", "--dest", dest, "--verify")
    assert code == 0, err
    found = re.fullmatch(
        r"backup (\d{8}-\d{6}): (\d+) images, 3 users, (\d+) objects \(.+\), (\d+) copied .+ in [\d.]+ s\n"
        r"backup \1 verified: \d+ objects \(.+\) and every table file intact, in [\d.]+ s\n",
        out,
    )
    assert found, out
    backup_id = found.group(1)
    assert f"backup {backup_id} to {dest}" in err and "database: 7 tables" in err

    code, out, _ = await cli(source, "create", "--dest", dest)
    assert code == 0
    second = out.split(":")[0].removeprefix("backup ")
    assert ", 0 copied (0 bytes)" in out  # nothing changed: incremental copies nothing

    code, out, _ = await cli(source, "list", "--dest", dest)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "(UTC)", "SIZE", "NEW", "IMAGES", "USERS", "OBJECTS", "STATUS"]
    assert lines[1].startswith(backup_id) and "verified 20" in lines[1]
    assert lines[2].startswith(second) and lines[2].endswith("not verified")

    code, out, _ = await cli(source, "list", "--dest", dest, "--json")
    listed = json.loads(out)
    assert [entry["id"] for entry in listed] == [backup_id, second]
    assert listed[0]["verification"]["ok"] is True and listed[1]["verification"] is None
    assert listed[0]["rows"]["users"] == 3 and listed[0]["revision"] and listed[0]["database"] == "sqlite"
    assert listed[1]["copied_bytes"] == 0 and listed[1]["objects"] == listed[0]["objects"]


async def test_restore_refuses_a_target_with_data_unless_told_and_then_keeps_a_safety_backup(
    stacks: Stacks, tmp_path: Path
) -> None:
    source = stacks.embedded("source")
    await seeded(source)
    dest = str(tmp_path / "backups")
    backup_id = await backed_up(source, dest)
    saved = await state_of(source)

    target = stacks.embedded("target")
    await anyio.to_thread.run_sync(upgrade_to_head, target)
    async with AsyncTestClient(create_test_app(target)) as client:
        assert (await upload_as(client, None, visibility="public", data=unique_png())).status_code == 201
    occupied = await state_of(target)

    code, _, err = await cli(target, "restore", backup_id, "--dest", dest)
    assert code == 1
    assert "the target database is not empty (rows in blobs, images)" in err and "add --yes" in err
    assert await state_of(target) == occupied

    code, out, err = await cli(target, "restore", "latest", "--dest", dest, "--yes")
    assert code == 0, err
    assert out.startswith(f"restored backup {backup_id}: ") and "3 users" in out and "2 api_tokens" in out, out
    safety = re.search(r"what was there before is in safety backup (\d{8}-\d{6})", out)
    assert safety, out
    assert (await state_of(target)).rows == saved.rows
    assert "note: without Redis a running `chitram` keeps its own cache: restart it now" in err

    _, listed, _ = await cli(target, "list", "--dest", dest, "--json")
    notes = {entry["id"]: entry["note"] for entry in json.loads(listed)}
    assert notes[safety.group(1)] == f"safety backup before restoring {backup_id}"

    # The safety backup is a backup like any other: it brings the replaced data back.
    code, _, err = await cli(target, "restore", safety.group(1), "--dest", dest, "--yes")
    assert code == 0, err
    assert (await state_of(target)).rows == occupied.rows


async def test_restore_clears_cached_metadata_and_sessions_in_redis_but_not_rate_limits(
    production_stacks: Stacks, tmp_path: Path
) -> None:
    dest = str(tmp_path / "backups")
    _source, target = await production_backup_and_target(production_stacks, dest)
    store = redis.Redis.from_url(target.cache.redis_url)
    store.set("chitram:cache:image:abc", b"stale")
    store.set("chitram:session:0123", b"an old session")
    store.set("chitram:limit:upload:1.2.3.4", b"7")
    try:
        code, _out, err = await cli(target, "restore", "latest", "--dest", dest)
        assert code == 0, err
        assert "restart it now" not in err
        assert store.get("chitram:cache:image:abc") is None and store.get("chitram:session:0123") is None
        assert store.get("chitram:limit:upload:1.2.3.4") == b"7"
    finally:
        store.flushdb()
        store.close()


async def test_a_backup_from_a_newer_version_is_refused_with_what_to_do(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    await anyio.to_thread.run_sync(upgrade_to_head, source)
    dest = tmp_path / "backups"
    backup_id = await backed_up(source, str(dest))
    path = dest / "snapshots" / backup_id / "manifest.json"
    manifest = msgspec.json.decode(path.read_bytes(), type=Manifest)
    newer = msgspec.structs.replace(manifest, revision="ffffffffffff", app_version="9.0.0")
    path.write_bytes(msgspec.json.encode(newer))

    code, _, err = await cli(stacks.embedded("target"), "restore", backup_id, "--dest", str(dest))
    assert code == 1
    assert "made by chitram 9.0.0 at migration ffffffffffff, which this version" in err
    assert "restore it with that version or a newer one" in err


async def test_a_missing_object_stops_the_backup_unless_allowed(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    await seeded(source)
    lost = sorted(await stored_objects(source))[0]
    storage = create_storage(source)
    await storage.delete(lost)
    dest = str(tmp_path / "backups")

    code, _, err = await cli(source, "create", "--dest", dest)
    assert code == 1
    assert f"1 object(s) the database needs are missing from storage ({lost})" in err
    assert "--allow-missing" in err
    _, out, _ = await cli(source, "list", "--dest", dest, "--json")
    assert json.loads(out) == []  # the failed backup tidied up after itself

    code, out, err = await cli(source, "create", "--dest", dest, "--allow-missing")
    assert code == 0, err
    _, listed, _ = await cli(source, "list", "--dest", dest, "--json")
    assert json.loads(listed)[0]["missing_objects"] == [lost]
    code, _, err = await cli(source, "verify", "latest", "--dest", dest)
    assert code == 1 and f"{lost}: was already missing from storage when the backup ran" in err


async def test_images_deleted_while_the_backup_runs_make_it_take_a_new_snapshot(
    stacks: Stacks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = stacks.embedded("source")
    await anyio.to_thread.run_sync(upgrade_to_head, source)
    seeded = await seed(source, images_per_user=1)
    victim = next(image_id for image_id in seeded.images if image_id in seeded.owners)
    export = chitram.backups.database.export_database
    calls = 0

    async def export_then_delete(url: str, folder: Path) -> object:
        """The snapshot is taken; then, before the objects are copied, an owner deletes an image."""
        nonlocal calls
        calls += 1
        result = await export(url, folder)
        if calls == 1:
            async with AsyncTestClient(create_test_app(source)) as client:
                response = await client.delete(f"/api/v1/images/{victim}", headers=bearer(seeded.owners[victim]))
                assert response.status_code == 204
        return result

    monkeypatch.setattr(chitram.backups.service, "export_database", export_then_delete)
    messages: list[str] = []
    from chitram.backups.service import create_backup, restore_backup
    from tests.backups.conftest import repository

    repo = repository(source, tmp_path / "backups")
    manifest = await create_backup(source, repo, report=messages.append)
    assert calls == 2
    assert any("went with images deleted during the backup; taking a new snapshot" in line for line in messages)
    target = stacks.embedded("target")
    await restore_backup(target, repository(target, tmp_path / "backups"), manifest.id)
    assert await state_of(target) == await state_of(source)


async def test_the_scheduled_round_creates_verifies_and_prunes(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    await anyio.to_thread.run_sync(upgrade_to_head, source)
    dest = str(tmp_path / "backups")
    code, out, err = await cli(source, "run", "--dest", dest)
    assert code == 0, err
    backup_id = ID.search(out)
    assert backup_id
    assert f"backup {backup_id.group(0)} verified" in out
    assert f"kept {backup_id.group(0)}: one of the newest 3" in out


def test_schedule_takes_a_time_of_day_and_waits_for_the_next_one() -> None:
    from click.testing import CliRunner

    from chitram.cli import admin

    result = CliRunner().invoke(admin.cli, ["backup", "schedule", "--at", "25:00"])
    assert result.exit_code == 2 and "'25:00' is not a time of day; give HH:MM" in result.output
    morning = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert _seconds_until(3, 0, morning) == 3600
    assert _seconds_until(3, 0, morning.replace(hour=3)) == 24 * 3600  # just ran: tomorrow
    assert _seconds_until(3, 0, morning.replace(hour=23, minute=30)) == 3.5 * 3600


def test_an_unknown_kind_of_destination_is_refused(tmp_path: Path) -> None:
    from chitram.backups.repository import BackupError, open_repository
    from tests.conftest import base_settings

    with pytest.raises(BackupError, match="give a folder or s3://BUCKET"):
        open_repository(base_settings(tmp_path), "ftp://backups.example/chitram")
    with pytest.raises(BackupError, match="CHITRAM_BACKUP_S3_ENDPOINT"):
        open_repository(base_settings(tmp_path), "s3://offsite")
