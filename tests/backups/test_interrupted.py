"""Backups that do not finish — killed, or their S3 destination gone half-way — never show up as
good, and the next backup completes and restores."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread
from PIL import Image

from chitram.backups.service import list_backups, prune_backups, restore_backup, verify_backup
from chitram.db import upgrade_to_head
from chitram.settings import Settings
from tests.accounts.conftest import create_test_app, create_token, create_user, upload_as
from tests.backups.conftest import Stacks, repository, state_of
from tests.backups.test_damage import backup_cli
from tests.conftest import settings_env
from tests.support.faults import FaultProxy
from tests.support.server import BIN

IMAGES = 10


def noise_png(seed: int, side: int = 500) -> bytes:
    """About 750 kB that no compressor shrinks: copying these takes long enough to interrupt."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


async def seed_large(settings: Settings) -> None:
    from litestar.testing import AsyncTestClient

    await anyio.to_thread.run_sync(upgrade_to_head, settings)
    async with AsyncTestClient(create_test_app(settings)) as client:
        token = await create_token(client, await create_user(client, "big@drill.test"))
        for n in range(IMAGES):
            response = await upload_as(client, token, visibility="public", data=noise_png(n))
            assert response.status_code == 201, response.text


def start_backup(settings: Settings, dest: str) -> subprocess.Popen[str]:
    env = settings_env(settings) | {"CHITRAM_BACKUP_CONCURRENCY": "1"}
    backup = settings.backup
    if backup.backup_s3_endpoint:
        env |= {
            "CHITRAM_BACKUP_S3_ENDPOINT": backup.backup_s3_endpoint,
            "CHITRAM_BACKUP_S3_ACCESS_KEY": backup.backup_s3_access_key,
            "CHITRAM_BACKUP_S3_SECRET_KEY": backup.backup_s3_secret_key,
        }
    return subprocess.Popen(
        [str(BIN / "chitram-admin"), "backup", "create", "--dest", dest],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the backup ended before it could be interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "the backup never started copying"
        time.sleep(0.001)


def copied_objects(dest: Path) -> int:
    folder = dest / "objects"
    return sum(len(files) for _root, _dirs, files in os.walk(folder)) if folder.exists() else 0


async def test_a_killed_backup_is_never_listed_as_good_and_the_next_one_completes(
    stacks: Stacks, tmp_path: Path
) -> None:
    source = stacks.embedded("source")
    await seed_large(source)
    dest = tmp_path / "backups"

    process = start_backup(source, str(dest))
    wait_for(lambda: copied_objects(dest) >= 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    snapshots = list((dest / "snapshots").iterdir())
    assert len(snapshots) == 1 and not (snapshots[0] / "manifest.json").exists()
    assert copied_objects(dest) < IMAGES * 3  # it really was half-way

    listed = await anyio.to_thread.run_sync(backup_cli, source, "list", "--dest", str(dest), "--json")
    assert [(entry["status"], entry["complete"]) for entry in json.loads(listed.stdout)] == [("incomplete", False)]
    table = await anyio.to_thread.run_sync(backup_cli, source, "list", "--dest", str(dest))
    assert "incomplete (running?)" in table.stdout and "verified" not in table.stdout
    verify = await anyio.to_thread.run_sync(backup_cli, source, "verify", "latest", "--dest", str(dest))
    assert verify.exit_code == 1 and "there is no complete backup" in verify.stderr

    await _next_backup_completes_and_restores(stacks, source, str(dest), killed=snapshots[0].name)


async def test_a_backup_whose_s3_destination_goes_away_fails_and_the_next_one_completes(
    production_stacks: Stacks,
) -> None:
    source = production_stacks.production("source")
    source, dest = production_stacks.s3_destination(source)
    await seed_large(source)
    assert production_stacks.s3 is not None
    real = production_stacks.s3
    bucket, _, prefix = dest.removeprefix("s3://").partition("/")
    real.create_bucket(bucket)  # the off-site bucket exists; only the network to it fails
    host, port = real.tcp_address
    with FaultProxy(host, port) as proxy:
        through_proxy = _backup_endpoint(source, proxy.address)
        process = start_backup(through_proxy, dest)
        client = real.client()

        def copying() -> bool:
            return any(True for _ in client.list_objects(bucket, prefix=f"{prefix}/objects/", recursive=True))

        wait_for(copying, process)
        proxy.refuse()
        _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "error: storage failed" in stderr

    repo = repository(source, dest)
    entries = await list_backups(repo)
    assert all(not entry.complete for entry in entries)
    await _next_backup_completes_and_restores(production_stacks, source, dest, killed=None)


def _backup_endpoint(settings: Settings, endpoint: str) -> Settings:
    return dataclasses.replace(settings, backup=settings.backup.model_copy(update={"backup_s3_endpoint": endpoint}))


async def _next_backup_completes_and_restores(
    stacks: Stacks, source: Settings, dest: str, *, killed: str | None
) -> None:
    process = start_backup(source, dest)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    repo = repository(source, dest)
    complete = [entry for entry in await list_backups(repo) if entry.complete]
    assert len(complete) == 1
    backup_id = complete[0].id
    assert stdout.startswith(f"backup {backup_id}:")
    assert (await verify_backup(repo, backup_id)).ok

    target = dataclasses.replace(stacks.embedded("target"), backup=source.backup)
    await restore_backup(target, repository(target, dest), backup_id)
    assert await state_of(target) == await state_of(source)

    if killed is not None:
        # Abandoned once its heartbeat is a quarter of an hour old: prune clears it away.
        later = datetime.now(UTC) + timedelta(minutes=20)
        pruned = await prune_backups(repo, keep_days=7, keep_last=3, now=later)
        assert pruned.abandoned == [killed] and pruned.removed == []
        assert [entry.id for entry in await list_backups(repo)] == [backup_id]
