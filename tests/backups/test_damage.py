"""Damaged backups: `verify` names every missing, corrupt or truncated object, and `restore` refuses
a damaged backup before it changes anything in the target."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import anyio.to_thread
import pytest
from click.testing import CliRunner, Result

from chitram.backups.repository import Repository
from chitram.backups.service import create_backup, find_manifest, verify_backup
from chitram.cli import admin
from chitram.db import upgrade_to_head
from chitram.settings import Settings
from tests.backups.conftest import Stacks, repository, seed, state_of, stored_objects
from tests.conftest import settings_env


def backup_cli(settings: Settings, *args: str) -> Result:
    env = settings_env(settings)
    backup = settings.backup
    env.update(
        {
            "CHITRAM_BACKUP_S3_ENDPOINT": backup.backup_s3_endpoint,
            "CHITRAM_BACKUP_S3_ACCESS_KEY": backup.backup_s3_access_key,
            "CHITRAM_BACKUP_S3_SECRET_KEY": backup.backup_s3_secret_key,
            "CHITRAM_BACKUP_S3_REGION": backup.backup_s3_region or "",
        }
    )
    return CliRunner().invoke(admin.cli, ["backup", *args], env=env, catch_exceptions=False)


async def seeded_backup(settings: Settings, dest: str) -> tuple[Repository, str]:
    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    await seed(settings, images_per_user=1)
    repo = repository(settings, dest)
    manifest = await create_backup(settings, repo)
    return repo, manifest.id


def object_file(dest: Path, sha256: str) -> Path:
    return dest / "objects" / sha256[:2] / sha256


async def test_verify_names_each_corrupt_truncated_and_missing_object(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    dest = tmp_path / "backups"
    repo, backup_id = await seeded_backup(source, str(dest))
    ok = await anyio.to_thread.run_sync(backup_cli, source, "verify", backup_id, "--dest", str(dest))
    assert ok.exit_code == 0, ok.output
    assert f"backup {backup_id} verified" in ok.stdout

    entries = await repo.object_list(await find_manifest(repo, backup_id))
    originals = [entry for entry in entries if entry.key.startswith("originals/")]
    corrupt, truncated, lost = originals[0], originals[1], next(e for e in entries if e.key.startswith("thumbnails/"))
    path = object_file(dest, corrupt.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    path = object_file(dest, truncated.sha256)
    path.write_bytes(path.read_bytes()[:100])
    object_file(dest, lost.sha256).unlink()

    result = await anyio.to_thread.run_sync(backup_cli, source, "verify", backup_id, "--dest", str(dest))
    assert result.exit_code == 1
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == 3, result.stderr
    assert any(line.startswith(corrupt.key) and "corrupt" in line for line in problems)
    assert any(line.startswith(truncated.key) and "100 bytes instead of" in line for line in problems)
    assert any(line.startswith(lost.key) and "missing from the backup" in line for line in problems)

    assert sum("the damaged copy was removed" in line for line in problems) == 2

    listed = await anyio.to_thread.run_sync(backup_cli, source, "list", "--dest", str(dest), "--json")
    assert json.loads(listed.stdout)[0]["status"] == "FAILED verification"

    # The next backup copies the three objects again from storage, and is whole.
    again = await anyio.to_thread.run_sync(backup_cli, source, "create", "--dest", str(dest), "--verify")
    assert again.exit_code == 0, again.output
    assert ", 3 copied (" in again.stdout and " verified: " in again.stdout


async def test_restore_refuses_a_damaged_backup_and_leaves_the_target_as_it_was(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    dest = tmp_path / "backups"
    repo, backup_id = await seeded_backup(source, str(dest))
    entries = await repo.object_list(await find_manifest(repo, backup_id))
    path = object_file(dest, entries[-1].sha256)
    path.write_bytes(b"not the image" + path.read_bytes()[13:])

    target = stacks.embedded("target")
    result = await anyio.to_thread.run_sync(backup_cli, target, "restore", backup_id, "--dest", str(dest))
    assert result.exit_code == 1
    # Identical variants of different images share one stored object: any of their keys may be named.
    sharing = [entry.key for entry in entries if entry.sha256 == entries[-1].sha256]
    assert any(
        f"{key} is corrupt in the backup; nothing was changed in the database" in result.stderr for key in sharing
    )
    assert (await state_of(target)).counts() == {}  # not a single table: the database was never touched


async def test_a_damaged_table_file_is_named_and_stops_restore_before_anything_changes(
    stacks: Stacks, tmp_path: Path
) -> None:
    source = stacks.embedded("source")
    dest = tmp_path / "backups"
    _repo, backup_id = await seeded_backup(source, str(dest))
    users = dest / "snapshots" / backup_id / "db" / "users.jsonl.gz"
    lines = gzip.decompress(users.read_bytes()).splitlines()
    users.write_bytes(gzip.compress(b"\n".join(lines[:-1]) + b"\n"))  # one account fewer

    verify = await anyio.to_thread.run_sync(backup_cli, source, "verify", backup_id, "--dest", str(dest))
    assert verify.exit_code == 1
    assert f"snapshots/{backup_id}/db/users.jsonl.gz:" in verify.stderr

    target = stacks.embedded("target")
    restore = await anyio.to_thread.run_sync(backup_cli, target, "restore", backup_id, "--dest", str(dest))
    assert restore.exit_code == 1
    assert "users.jsonl.gz is damaged" in restore.stderr
    assert await stored_objects(target) == {}


async def test_verify_finds_an_object_overwritten_in_an_s3_destination(production_stacks: Stacks) -> None:
    source = production_stacks.production("source")
    source, dest = production_stacks.s3_destination(source)
    repo, backup_id = await seeded_backup(source, dest)
    entries = await repo.object_list(await find_manifest(repo, backup_id))
    victim = entries[0]
    bucket, _, prefix = dest.removeprefix("s3://").partition("/")
    assert production_stacks.s3 is not None
    client = production_stacks.s3.client()
    key = f"{prefix}/objects/{victim.sha256[:2]}/{victim.sha256}"
    response = client.get_object(bucket, key)
    original = response.read()
    response.close()
    client.put_object(bucket, key, io.BytesIO(bytes(reversed(original))), len(original))

    verification = await verify_backup(repo, backup_id)
    assert not verification.ok
    assert len(verification.problems) == 1
    assert (
        verification.problems[0].startswith(f"{victim.key} (stored as objects/")
        and "corrupt" in verification.problems[0]
    )


@pytest.mark.parametrize("backup_id", ["20990101-000000", "yesterday"])
async def test_verify_and_restore_of_an_unknown_backup_say_what_exists(
    stacks: Stacks, tmp_path: Path, backup_id: str
) -> None:
    source = stacks.embedded("source")
    await seeded_backup(source, str(tmp_path / "backups"))
    for command in ("verify", "restore"):
        result = await anyio.to_thread.run_sync(
            backup_cli, source, command, backup_id, "--dest", str(tmp_path / "backups")
        )
        assert result.exit_code == 1
        assert "backup list` shows them" in result.stderr
