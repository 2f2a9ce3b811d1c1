"""`backup prune` keeps what it promises: young backups, the newest N, always the newest verified
one, every object a kept backup needs — and removes the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread
from litestar.testing import AsyncTestClient

from chitram.backups.repository import Heartbeat, Repository
from chitram.backups.service import create_backup, list_backups, prune_backups, restore_backup, verify_backup
from chitram.db import upgrade_to_head
from chitram.settings import Settings
from tests.accounts.conftest import create_test_app, unique_png, upload_as
from tests.backups.conftest import Stacks, repository, state_of
from tests.backups.test_damage import backup_cli

LATER = datetime.now(UTC) + timedelta(days=30)


async def backups_with_new_images_between(settings: Settings, repo: Repository, count: int) -> list[str]:
    """`count` backups, each holding one image that none of the others has (so objects of its own)."""
    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    ids = []
    previous: dict[str, str] | None = None
    for _ in range(count):
        async with AsyncTestClient(create_test_app(settings)) as client:
            response = await upload_as(client, None, visibility="public", data=unique_png())
            assert response.status_code == 201
            if previous is not None:
                gone = await client.delete(
                    f"/api/v1/images/{previous['id']}", headers={"X-Delete-Token": previous["delete_token"]}
                )
                assert gone.status_code == 204
            previous = response.json()
        ids.append((await create_backup(settings, repo)).id)
    return ids


async def objects_of(repo: Repository, backup_id: str) -> set[str]:
    manifest = await repo.manifest(backup_id)
    assert manifest is not None
    return {entry.sha256 for entry in await repo.object_list(manifest)}


async def test_prune_keeps_the_newest_and_the_newest_verified_and_their_objects(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    repo = repository(source, tmp_path / "backups")
    first, second, third, fourth = await backups_with_new_images_between(source, repo, 4)
    assert (await verify_backup(repo, second)).ok
    needed = await objects_of(repo, second) | await objects_of(repo, fourth)
    only_in_removed = (await objects_of(repo, first) | await objects_of(repo, third)) - needed
    assert await objects_of(repo, third) - needed  # the third backup's image is in no kept backup

    preview = await prune_backups(repo, keep_days=0, keep_last=1, dry_run=True, now=LATER)
    assert preview.kept == {fourth: "one of the newest 1", second: "the newest verified backup"}
    assert sorted(preview.removed) == [first, third]
    assert [entry.id for entry in await list_backups(repo)] == [first, second, third, fourth]  # nothing gone

    pruned = await prune_backups(repo, keep_days=0, keep_last=1, now=LATER)
    assert sorted(pruned.removed) == [first, third]
    assert pruned.removed_objects == len(only_in_removed)
    assert [entry.id for entry in await list_backups(repo)] == [second, fourth]
    assert set(await repo.object_sizes()) == needed
    for kept in (second, fourth):
        assert (await verify_backup(repo, kept)).ok

    # What is kept still restores on its own.
    target = stacks.embedded("target")
    await restore_backup(target, repository(target, tmp_path / "backups"), fourth)
    assert await state_of(target) == await state_of(source)


async def test_prune_keeps_young_backups_and_never_the_only_verified_one(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    repo = repository(source, tmp_path / "backups")
    first, second = await backups_with_new_images_between(source, repo, 2)

    young = await prune_backups(repo, keep_days=7, keep_last=0)
    assert young.removed == [] and set(young.kept) == {first, second}

    assert (await verify_backup(repo, first)).ok
    everything = await prune_backups(repo, keep_days=0, keep_last=0, now=LATER)
    assert everything.removed == [second]
    assert everything.kept == {first: "the newest verified backup"}
    assert [entry.id for entry in await list_backups(repo)] == [first]


async def test_objects_are_left_alone_while_a_backup_is_running(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    repo = repository(source, tmp_path / "backups")
    first, _second = await backups_with_new_images_between(source, repo, 2)
    running = "29990101-000000"
    await repo.put_json(repo.snapshot_name(running, "heartbeat.json"), Heartbeat(datetime.now(UTC), "host", 1))
    before = await repo.object_sizes()

    pruned = await prune_backups(repo, keep_days=0, keep_last=1)
    assert pruned.removed == [first]
    assert pruned.objects_skipped_because == f"backup {running} is running"
    assert await repo.object_sizes() == before  # a running backup may rely on any of them


async def test_prune_command_reports_and_reads_its_defaults_from_settings(stacks: Stacks, tmp_path: Path) -> None:
    source = stacks.embedded("source")
    dest = tmp_path / "backups"
    repo = repository(source, dest)
    first, second, third, fourth = await backups_with_new_images_between(source, repo, 4)
    only_in_first = await objects_of(repo, first)
    for later in (second, third, fourth):
        only_in_first -= await objects_of(repo, later)
    assert only_in_first

    result = await anyio.to_thread.run_sync(backup_cli, source, "prune", "--dest", str(dest), "--keep-days", "0")
    assert result.exit_code == 0, result.output
    # CHITRAM_BACKUP_KEEP_LAST defaults to 3.
    assert f"removed backup {first}" in result.stdout
    for kept in (second, third, fourth):
        assert f"kept {kept}: one of the newest 3" in result.stdout
    assert f"removed {len(only_in_first)} object(s) no kept backup needs" in result.stdout
    assert not set(await repo.object_sizes()) & only_in_first
