"""Restore drills on both stacks and across them: seed, back up, wipe, restore, compare everything."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio.to_thread
import pytest
from litestar.testing import AsyncTestClient

from chitram.backups.service import create_backup, restore_backup, verify_backup
from chitram.db import known_revisions, upgrade_to_head
from chitram.settings import Settings
from tests.accounts.conftest import bearer, create_test_app, create_user
from tests.backups.conftest import (
    Seeded,
    Stacks,
    alembic_revision,
    needed_objects,
    repository,
    seed,
    state_of,
    wipe_embedded,
)

# (source stack, where the backup goes, target stack): every pair of stacks, both kinds of destination.
DRILLS = [
    pytest.param("embedded", "folder", "embedded", id="embedded-folder-embedded"),
    pytest.param("production", "s3", "production", id="production-s3-production"),
    pytest.param("embedded", "s3", "production", id="embedded-s3-production"),
    pytest.param("production", "folder", "embedded", id="production-folder-embedded"),
]


@pytest.mark.parametrize(("source_kind", "dest_kind", "target_kind"), DRILLS)
async def test_backup_wipe_restore_gives_back_every_row_and_byte(
    source_kind: str, dest_kind: str, target_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    needs_services = "production" in (source_kind, target_kind) or dest_kind == "s3"
    stacks: Stacks = request.getfixturevalue("production_stacks" if needs_services else "stacks")
    source = stacks.make(source_kind, "source")
    await anyio.to_thread.run_sync(upgrade_to_head, source)
    seeded = await seed(source)
    before = await state_of(source)
    _check_seed_is_interesting(before.counts(), before.rows)
    assert set(before.objects) == await needed_objects(source)

    if dest_kind == "s3":
        source, dest = stacks.s3_destination(source)
    else:
        dest = str(tmp_path / "backups")
    repo = repository(source, dest)
    manifest = await create_backup(source, repo)
    assert manifest.object_count == len(before.objects)
    assert manifest.tables["images"].rows == len(before.rows["images"])
    assert (await verify_backup(repo, manifest.id)).ok

    if target_kind == source_kind:
        target = await _wipe(stacks, source)
    else:
        target = stacks.make(target_kind, "target")
        target = _with_backup_settings(target, source)
    assert await state_of_or_empty(target) == {}

    result = await restore_backup(target, repository(target, dest), manifest.id)
    assert result.safety_backup is None  # the target was empty
    after = await state_of(target)
    assert after.rows == before.rows
    assert after.objects == before.objects
    assert await alembic_revision(target) in known_revisions()
    await _app_serves_what_was_seeded(target, seeded)


def _check_seed_is_interesting(counts: dict[str, int], rows: dict[str, list[tuple[tuple[str, object], ...]]]) -> None:
    """The drill only proves something if the seed has what can go wrong."""
    assert counts["users"] == 3 and counts["api_tokens"] == 2
    assert counts["images"] > counts["blobs"]  # deduplicated twins share a blob
    visibilities = {dict(row)["visibility"] for row in rows["images"]}
    assert visibilities == {"public", "unlisted", "private"}
    assert any(dict(row)["owner_id"] is None for row in rows["images"])  # anonymous uploads
    assert any(dict(row)["is_disabled"] for row in rows["users"])


async def state_of_or_empty(settings: Settings) -> dict[str, int]:
    """What the target holds before the restore: nothing at all."""
    from tests.backups.conftest import stored_objects

    objects = await stored_objects(settings)
    if settings.is_embedded_database and not (settings.data_dir / "chitram.db").exists():
        return {"objects": len(objects)} if objects else {}
    state = await state_of(settings)
    held = {table: count for table, count in state.counts().items() if count}
    return held | ({"objects": len(objects)} if objects else {})


async def _wipe(stacks: Stacks, settings: Settings) -> Settings:
    """Lose everything the stack had; the backup destination survives."""
    if settings.is_embedded_database:
        wipe_embedded(settings)
        return settings
    assert stacks.postgres is not None and stacks.s3 is not None
    database = stacks.databases[-1]
    stacks.postgres.drop_database(database)
    stacks.postgres.create_database(database)  # empty: not even migrated
    stacks.s3.remove_bucket(settings.storage.s3_bucket)
    return settings


def _with_backup_settings(target: Settings, source: Settings) -> Settings:
    import dataclasses

    return dataclasses.replace(target, backup=source.backup)


async def _app_serves_what_was_seeded(settings: Settings, seeded: Seeded) -> None:
    async with AsyncTestClient(create_test_app(settings)) as client:
        for image_id, image in seeded.images.items():
            if image_id in seeded.private_ids:
                # Still private: the owner's token sees it, nobody else does.
                owner = await client.get(f"/api/v1/images/{image_id}", headers=bearer(seeded.owners[image_id]))
                assert owner.status_code == 200, owner.text
                assert (await client.get(f"/api/v1/images/{image_id}")).status_code == 404
                continue
            response = await client.get(image["url"])
            assert response.status_code == 200, (image_id, response.status_code)
            assert hashlib.sha256(response.content).hexdigest() == image["sha256"]
        for email, token in seeded.tokens.items():
            me = await client.get("/api/v1/me", headers=bearer(token))
            assert me.status_code == 200 and me.json()["email"] == email
        # Ids are never handed out twice: the deleted account's id stays retired.
        newcomer = await create_user(client, "newcomer@drill.test")
        assert newcomer > seeded.deleted_user_id
