"""`chitram-admin status` and the alert webhook: exit codes and reasons with storage down, an old
backup and a full disk; the webhook told of every backup round (a real HTTP server here), an
unreachable one never failing a backup, and a bad webhook URL refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from chitram.cli import admin
from chitram.db import Database, upgrade_to_head
from chitram.settings import AlertSettings, Settings
from chitram.storage import create_storage
from chitram.system.facts import RoundResult, backup_facts, record_backup_round
from chitram.system.health import ComponentStatus, Readiness
from chitram.system.status import DiskUsage, gather_status
from tests.conftest import base_settings, production_storage, settings_env
from tests.support.server import BIN, clean_env, free_port
from tests.support.services import S3Service


class Webhook:
    """A real HTTP server on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret"

    def __enter__(self) -> Webhook:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as server:
        yield server


def admin_cli(settings: Settings, *args: str, **env: str) -> Result:
    return CliRunner().invoke(admin.cli, list(args), env={**settings_env(settings), **env}, catch_exceptions=False)


@pytest.fixture
def ready(tmp_path: Path) -> Settings:
    """An embedded installation as the app leaves it: migrated, with its storage folder."""
    settings = base_settings(tmp_path)
    upgrade_to_head(settings)
    asyncio.run(_prepare_storage(settings))
    return settings


async def _prepare_storage(settings: Settings) -> None:
    storage = create_storage(settings)
    try:
        await storage.ensure_ready()
    finally:
        await storage.close()


def record_round(settings: Settings, *, hours_ago: float, ok: bool = True, verified: bool = True) -> None:
    async def record() -> None:
        database = Database.from_settings(settings)
        finished = datetime.now(UTC) - timedelta(hours=hours_ago)
        try:
            async with database.sessions() as session:
                result = RoundResult(finished - timedelta(minutes=2), finished, ok, verified, "20260101-030000", 99)
                await record_backup_round(session, result)
        finally:
            await database.dispose()

    asyncio.run(record())


def last_round(settings: Settings) -> RoundResult | None:
    async def read() -> RoundResult | None:
        database = Database.from_settings(settings)
        try:
            async with database.sessions() as session:
                return (await backup_facts(session)).last_round
        finally:
            await database.dispose()

    return asyncio.run(read())


# -- status ---------------------------------------------------------------------------------


def test_all_good_after_a_backup_round(ready: Settings, tmp_path: Path) -> None:
    backup = admin_cli(ready, "backup", "run", "--dest", str(tmp_path / "backups"))
    assert backup.exit_code == 0, backup.output
    result = admin_cli(ready, "status", CHITRAM_ALERT_DISK_MAX_PERCENT="100")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("all good\n")
    assert "backup:    " in result.stdout and ", verified (0.0 h ago)" in result.stdout
    document = json.loads(admin_cli(ready, "status", "--json", CHITRAM_ALERT_DISK_MAX_PERCENT="100").stdout)
    assert document["ok"] is True and document["problems"] == []
    assert {name: part["status"] for name, part in document["components"].items()} == {
        "database": "ok",
        "storage": "ok",
        "cache": "ok",
    }
    assert document["backup"]["last_round"]["verified"] is True
    assert document["backup"]["age_seconds"] < 60
    assert document["storage"] == {"location": str(ready.storage_path), "images": 0, "stored_bytes": 0}
    assert document["uploads_24h"] == {"stored": 0, "refused": {}}
    assert document["disk"]["total"] > 0


def test_no_verified_backup_within_26_hours_needs_attention(ready: Settings) -> None:
    none = admin_cli(ready, "status", CHITRAM_ALERT_DISK_MAX_PERCENT="100")
    assert none.exit_code == 1
    assert "  - no verified backup is recorded; run `chitram-admin backup run`" in none.stdout

    record_round(ready, hours_ago=27)
    record_round(ready, hours_ago=1, ok=False, verified=False)  # a failed round verifies nothing
    old = admin_cli(ready, "status", CHITRAM_ALERT_DISK_MAX_PERCENT="100")
    assert old.exit_code == 1
    assert old.stdout.startswith("NEEDS ATTENTION:\n")
    assert "the newest verified backup is 27 h old (the limit is 26 h)" in old.stdout
    assert "FAILED" in old.stdout

    relaxed = admin_cli(ready, "status", CHITRAM_ALERT_DISK_MAX_PERCENT="100", CHITRAM_ALERT_BACKUP_MAX_AGE_HOURS="48")
    assert relaxed.exit_code == 0, relaxed.output


def test_a_full_disk_needs_attention(ready: Settings) -> None:
    record_round(ready, hours_ago=1)
    # Every real filesystem holding a database is more than 0 % used.
    result = admin_cli(ready, "status", "--json", CHITRAM_ALERT_DISK_MAX_PERCENT="0")
    assert result.exit_code == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem.startswith(f"the disk holding {ready.data_dir} is ") and problem.endswith(
        "% full (the limit is 0 %)"
    )


async def test_the_disk_threshold_is_judged_against_the_probe(tmp_path: Path) -> None:
    readiness = Readiness("ready", {"database": ComponentStatus("ok", 1.0)})
    settings = base_settings(tmp_path)

    def probe(used: int) -> DiskUsage:
        return DiskUsage(total=1000, used=used, free=1000 - used)

    full = await gather_status(settings, readiness=readiness, database=None, probe_disk=lambda _path: probe(860))
    assert full.problems == [f"the disk holding {settings.data_dir} is 86 % full (the limit is 85 %)"]
    roomy = await gather_status(settings, readiness=readiness, database=None, probe_disk=lambda _path: probe(850))
    assert roomy.problems == []


def test_storage_down_is_named_and_fails_the_status(tmp_path: Path, s3: S3Service) -> None:
    closed = free_port()
    settings = base_settings(tmp_path, storage=production_storage(s3, "status-down", endpoint=f"127.0.0.1:{closed}"))
    upgrade_to_head(settings)
    record_round(settings, hours_ago=1)
    result = admin_cli(settings, "status", CHITRAM_ALERT_DISK_MAX_PERCENT="100", CHITRAM_S3_TIMEOUT_SECONDS="1")
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and problems[0].startswith("  - storage is down (StorageUnavailable: ")
    assert f"port={closed}" in problems[0]
    assert "  storage   DOWN (" in result.stdout
    assert "storage:   0 images, 0 bytes (s3://status-down at 127.0.0.1:" in result.stdout


def test_a_database_that_is_down_is_reported_without_its_facts(tmp_path: Path) -> None:
    settings = base_settings(tmp_path / "nowhere")
    result = admin_cli(settings, "status", "--json", CHITRAM_ALERT_DISK_MAX_PERCENT="100")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["problems"][0].startswith("database is down (FileNotFoundError: no database at ")
    assert document["backup"] is None and document["uploads_24h"] is None
    assert not (settings.data_dir / "chitram.db").exists()


def test_notify_sends_the_problems_to_the_webhook(ready: Settings, webhook: Webhook) -> None:
    quiet = admin_cli(ready, "status", "--notify", CHITRAM_ALERT_WEBHOOK_URL=webhook.url)
    assert quiet.exit_code == 1
    (body,) = webhook.bodies
    assert body["event"] == "status" and body["ok"] is False
    assert body["problems"] == ["no verified backup is recorded; run `chitram-admin backup run`"]
    assert "ATTENTION: no verified backup is recorded" in body["text"]
    assert body["content"] == body["text"]  # Discord reads `content`, Slack and ntfy templates `text`

    record_round(ready, hours_ago=1)
    fine = admin_cli(
        ready, "status", "--notify", CHITRAM_ALERT_WEBHOOK_URL=webhook.url, CHITRAM_ALERT_DISK_MAX_PERCENT="100"
    )
    assert fine.exit_code == 0
    assert len(webhook.bodies) == 1  # nothing needs attention: nobody is woken up


# -- backup rounds and the webhook ------------------------------------------------------------


def test_the_webhook_receives_each_backup_rounds_result(ready: Settings, webhook: Webhook, tmp_path: Path) -> None:
    ok = admin_cli(ready, "backup", "run", "--dest", str(tmp_path / "backups"), CHITRAM_ALERT_WEBHOOK_URL=webhook.url)
    assert ok.exit_code == 0, ok.output
    (success,) = webhook.bodies
    recorded = last_round(ready)
    assert recorded is not None and recorded.ok and recorded.verified
    assert success["event"] == "backup" and success["ok"] is True
    assert success["backup"]["id"] == recorded.backup_id and success["backup"]["verified"] is True
    assert success["backup"]["size"] == recorded.size and recorded.size
    assert f"ok: backup {recorded.backup_id} done and verified" in success["text"]

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    failed = admin_cli(ready, "backup", "run", "--dest", str(not_a_folder), CHITRAM_ALERT_WEBHOOK_URL=webhook.url)
    assert failed.exit_code == 1
    failure = webhook.bodies[1]
    assert failure["ok"] is False and "ATTENTION: the backup round FAILED: " in failure["text"]
    assert failure["backup"]["error"]
    recorded = last_round(ready)
    assert recorded is not None and not recorded.ok and recorded.error == failure["backup"]["error"]


def test_an_unreachable_webhook_never_breaks_a_backup(ready: Settings, tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/hook"
    result = admin_cli(
        ready,
        "backup",
        "run",
        "--dest",
        str(tmp_path / "backups"),
        CHITRAM_ALERT_WEBHOOK_URL=unreachable,
        CHITRAM_ALERT_WEBHOOK_TIMEOUT_SECONDS="1",
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "alert webhook" in line]
    assert warnings == [warnings[0]] and "(the backup itself is unaffected)" in warnings[0]
    assert "127.0.0.1 failed: ConnectError" in warnings[0]
    recorded = last_round(ready)
    assert recorded is not None and recorded.ok and recorded.verified


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.org/x", "must start with https://"),
        ("hooks.slack.com/services/T0/B0/x", "must start with https://"),
        ("https:///services/T0", "has no host"),
        ("http://user:secret@ntfy.example.org/topic", "over plain http://"),
    ],
)
def test_a_bad_webhook_url_is_refused_before_anything_starts(url: str, reason: str, ready: Settings) -> None:
    with pytest.raises(ValidationError, match=reason):
        AlertSettings(alert_webhook_url=url)
    result = admin_cli(ready, "status", CHITRAM_ALERT_WEBHOOK_URL=url)
    assert result.exit_code == 1
    assert "invalid settings" in result.stderr and "CHITRAM_ALERT_WEBHOOK_URL" in result.stderr


def test_webhook_urls_services_hand_out_are_accepted() -> None:
    for url in (
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://discord.com/api/webhooks/1/abc",
        "https://ntfy.sh/chitram-alerts?tpl=1&m={{.text}}",
        "https://hc-ping.com/5f4e3d2c-0000-4000-8000-000000000000",
        "https://user:token@ntfy.example.org/topic",  # credentials are fine over TLS
    ):
        assert AlertSettings(alert_webhook_url=url).alert_webhook_url == url


def test_the_server_refuses_to_start_with_a_bad_webhook_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "chitram")],
        env=clean_env(CHITRAM_DATA_DIR=str(tmp_path), CHITRAM_ALERT_WEBHOOK_URL="http://me:pw@hooks.example.org/x"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "CHITRAM_ALERT_WEBHOOK_URL" in result.stderr
    assert "use https://" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "chitram.db").exists()
