"""When something around a backup fails — a damaged earlier backup, a database or Redis that
does not answer, a load that fails half-way — the operator gets one line saying what, and the
next step still works."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import anyio.to_thread
import msgspec

from chitram.backups.repository import Manifest, StoredFile, TableDump
from chitram.settings import CacheSettings, DatabaseSettings
from tests.backups.conftest import Stacks, state_of
from tests.backups.test_commands import backed_up, cli, production_backup_and_target, seeded
from tests.support.server import free_port


async def test_a_damaged_earlier_backup_does_not_stop_later_ones(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    await seeded(source)
    dest = str(tmp_path / "backups")
    first = await backed_up(source, dest)
    second = await backed_up(source, dest)
    object_list = tmp_path / "backups" / "snapshots" / second / "objects.jsonl.gz"
    object_list.write_bytes(object_list.read_bytes() + b"x")  # the newest backup's list no longer matches
    manifest = tmp_path / "backups" / "snapshots" / first / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])  # and an older manifest is cut short

    code, out, err = await cli(source, "create", "--dest", dest, "--verify")
    assert code == 0, err
    assert "warning: the previous backup cannot be read" in err and "hashing every object again" in err
    assert " verified: " in out

    code, listed, _ = await cli(source, "list", "--dest", dest, "--json")
    statuses = {entry["id"]: entry["status"] for entry in json.loads(listed)}
    assert statuses[first] == "DAMAGED" and statuses[second] == "not verified"
    code, table, _ = await cli(source, "list", "--dest", dest)
    assert f"DAMAGED: snapshots/{first}/manifest.json is damaged" in table

    # Prune leaves a damaged backup for a person to look at, and every object with it.
    code, out, err = await cli(source, "prune", "--dest", dest, "--keep-days", "0", "--keep-last", "1")
    assert code == 0, err
    assert f"backup {first} is damaged (its manifest cannot be read)" in out
    assert (tmp_path / "backups" / "snapshots" / first / "manifest.json").exists()


async def test_an_unreachable_database_is_one_line_not_a_traceback(stacks: Stacks, tmp_path: Path) -> None:
    nowhere = stacks.embedded("source")
    closed = f"postgresql+asyncpg://chitram@127.0.0.1:{free_port()}/chitram"
    settings = dataclasses.replace(nowhere, database=DatabaseSettings(database_url=closed))
    code, _, err = await cli(settings, "create", "--dest", str(tmp_path / "backups"))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the database failed (")
    assert "check CHITRAM_DATABASE_URL and that the database is running" in last
    assert "Traceback" not in err

    missing = stacks.embedded("never-installed")
    code, _, err = await cli(missing, "create", "--dest", str(tmp_path / "backups"))
    assert code == 1
    assert f"error: there is no database at {missing.data_dir / 'chitram.db'}" in err
    assert not (missing.data_dir / "chitram.db").exists()


async def test_a_restore_with_redis_down_succeeds_and_says_what_to_clear(
    production_stacks: Stacks, tmp_path: Path
) -> None:
    dest = str(tmp_path / "backups")
    source, target = await production_backup_and_target(production_stacks, dest)
    no_redis = dataclasses.replace(target, cache=CacheSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    code, out, err = await cli(no_redis, "restore", "latest", "--dest", dest)
    assert code == 0, err
    assert out.startswith("restored backup ")
    assert "warning: could not clear Redis" in err and "chitram:session:*" in err
    assert (await state_of(target)).rows == (await state_of(source)).rows


async def test_a_load_that_fails_after_the_target_was_emptied_names_the_safety_backup(
    stacks: Stacks, tmp_path: Path
) -> None:
    source = stacks.embedded("source")
    await seeded(source)
    dest = tmp_path / "backups"
    backup_id = await backed_up(source, str(dest))
    _break_the_users_table(dest, backup_id)

    code, _, err = await cli(source, "restore", backup_id, "--dest", str(dest), "--yes")
    assert code == 1
    assert "error: loading the database failed after it was emptied (" in err
    assert "fix the cause and run the restore again; what was there before is in safety backup " in err
    safety_id = err.rsplit("safety backup ", 1)[1].strip()

    # The safety backup is whole: it brings everything back.
    code, _, err = await cli(source, "restore", safety_id, "--dest", str(dest), "--yes")
    assert code == 0, err


def _break_the_users_table(dest: Path, backup_id: str) -> None:
    """Two accounts with one address, with hashes to match: verification passes, the load fails."""
    folder = dest / "snapshots" / backup_id
    path = folder / "db" / "users.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).splitlines()
    header, first = lines[0], json.loads(lines[1])
    twin = list(first)
    twin[json.loads(header)["columns"].index("id")] = 999
    path.write_bytes(gzip.compress(b"\n".join([*lines, json.dumps(twin).encode()]) + b"\n"))
    manifest = msgspec.json.decode((folder / "manifest.json").read_bytes(), type=Manifest)
    data = path.read_bytes()
    stored = StoredFile(key=manifest.tables["users"].file.key, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    tables = dict(manifest.tables) | {"users": TableDump(rows=manifest.tables["users"].rows + 1, file=stored)}
    (folder / "manifest.json").write_bytes(msgspec.json.encode(msgspec.structs.replace(manifest, tables=tables)))


async def test_health_direct_reports_settings_it_cannot_use(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from chitram.cli import admin
    from tests.conftest import base_settings, settings_env

    settings = base_settings(tmp_path)
    env = settings_env(settings) | {
        "CHITRAM_STORAGE_BACKEND": "s3",
        "CHITRAM_S3_ENDPOINT": "127.0.0.1:9",
        "CHITRAM_S3_BUCKET": "Not_A_Bucket",
        "CHITRAM_DATABASE_URL": "postgres://chitram@127.0.0.1:1/chitram",
    }
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(admin.cli, ["health", "--direct", "--json"], env=env, catch_exceptions=False)
    )
    assert result.exit_code == 1
    components = json.loads(result.stdout)["components"]
    assert "Not_A_Bucket' is not a valid bucket name" in components["storage"]["error"]
    assert components["database"]["status"] == "down" and "postgres" in components["database"]["error"]
