"""`chitram` and `chitram-admin` as an operator runs them: real processes, real HTTP."""

from __future__ import annotations

import io
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from chitram.settings import Settings
from tests.support.faults import FaultProxy
from tests.support.server import BIN, RunningServer, clean_env, free_port, start_server, stop


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(clean_env(), cwd=tmp_path)
    yield server
    stop(server)


def admin(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "chitram-admin"), *args],
        env=env or clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_embedded_default_starts_migrates_and_serves(tmp_path: Path, embedded_server: RunningServer) -> None:
    assert re.search(r"http://localhost:\d+/", embedded_server.first_line), embedded_server.first_line
    assert (tmp_path / "data" / "chitram.db").exists()
    assert (tmp_path / "data" / "secret_key").exists()
    created = httpx.post(
        embedded_server.url + "/api/v1/images",
        files={"file": ("blue.jpg", jpeg(), "image/jpeg")},
        data={"visibility": "public"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    served = httpx.get(body["url"], timeout=10)
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    ranged = httpx.get(body["url"], headers={"Range": "bytes=0-9"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == served.content[:10]
    deleted = httpx.delete(
        f"{embedded_server.url}/api/v1/images/{body['id']}", headers={"X-Delete-Token": body["delete_token"]}
    )
    assert deleted.status_code == 204
    assert httpx.get(body["url"], timeout=10).status_code == 404


def test_admin_health_exit_codes(embedded_server: RunningServer) -> None:
    ready = admin("health", "--url", embedded_server.url)
    assert ready.returncode == 0, ready.stderr
    as_json = admin("health", "--url", embedded_server.url, "--json")
    assert '"status": "ready"' in as_json.stdout
    closed = admin("health", "--url", f"http://127.0.0.1:{free_port()}", "--wait", "1")
    assert closed.returncode == 1
    assert "unreachable" in closed.stderr


def test_production_without_secret_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "chitram")],
        env=clean_env(CHITRAM_ENV="production", CHITRAM_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "CHITRAM_SECRET_KEY" in result.stderr


def test_production_without_public_url_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "chitram")],
        env=clean_env(CHITRAM_ENV="production", CHITRAM_DATA_DIR=str(tmp_path), CHITRAM_SECRET_KEY="k" * 48),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "CHITRAM_PUBLIC_URL" in result.stderr


def test_db_upgrade_and_gc_from_the_command_line(tmp_path: Path) -> None:
    env = clean_env(CHITRAM_DATA_DIR=str(tmp_path / "data"))
    upgraded = admin("db", "upgrade", "--no-prompt", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    current = admin("db", "show-current-revision", env=env)
    assert re.search(r"[0-9a-f]{12}", current.stdout), current.stdout
    gc = admin("gc", "--dry-run", env=env)
    assert gc.returncode == 0, gc.stderr
    assert "would remove 0" in gc.stdout


def test_chitram_help_lists_its_options() -> None:
    result = subprocess.run([str(BIN / "chitram"), "--help"], capture_output=True, text=True, check=True)
    for option in ("--host", "--port", "--workers", "--reload"):
        assert option in result.stdout


def test_hanging_s3_fails_admin_health_and_recovers_without_restart(
    tmp_path: Path, proxied_settings: Settings, s3_proxy: FaultProxy
) -> None:
    storage = proxied_settings.storage
    env = clean_env(
        CHITRAM_DATA_DIR=str(tmp_path / "data"),
        CHITRAM_DATABASE_URL=proxied_settings.database.database_url,
        CHITRAM_REDIS_URL=proxied_settings.cache.redis_url,
        CHITRAM_STORAGE_BACKEND="s3",
        CHITRAM_S3_ENDPOINT=storage.s3_endpoint,
        CHITRAM_S3_ACCESS_KEY=storage.s3_access_key,
        CHITRAM_S3_SECRET_KEY=storage.s3_secret_key,
        CHITRAM_S3_BUCKET=storage.s3_bucket,
        CHITRAM_S3_REGION=storage.s3_region or "",
    )
    upgraded = admin("db", "upgrade", "--no-prompt", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    server = start_server(env, cwd=tmp_path)
    try:
        assert admin("health", "--url", server.url).returncode == 0
        s3_proxy.hang()
        started = time.monotonic()
        response = httpx.get(server.url + "/health/ready", timeout=10)
        assert response.status_code == 503
        assert time.monotonic() - started < 5
        failing = admin("health", "--url", server.url)
        assert failing.returncode == 1
        assert "storage" in failing.stderr
        s3_proxy.heal()
        recovered = admin("health", "--url", server.url, "--wait", "15")
        assert recovered.returncode == 0, recovered.stderr
    finally:
        stop(server)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "2"], {}, "CHITRAM_REDIS_URL"),
        ([], {"CHITRAM_STORAGE_BACKEND": "s3"}, "CHITRAM_S3_ENDPOINT"),
        ([], {"CHITRAM_MAX_UPLOAD_BYTES": "lots"}, "max_upload_bytes"),
    ],
)
def test_unworkable_settings_are_refused_with_a_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [str(BIN / "chitram"), *args],
        env=clean_env(CHITRAM_DATA_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
