"""Settings: environment names, production refusals, the development secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from chitram.app import create_app
from chitram.settings import (
    Environment,
    ServerSettings,
    Settings,
    StorageBackend,
    UnsafeSettingsError,
    resolve_secret_key,
)
from tests.conftest import TEST_SECRET, base_settings


def test_settings_come_from_chitram_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHITRAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHITRAM_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("CHITRAM_S3_ENDPOINT", "minio:9000")
    monkeypatch.setenv("CHITRAM_MAX_UPLOAD_BYTES", "1048576")
    monkeypatch.setenv("CHITRAM_REDIS_URL", "redis://cache:6379/0")
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path.resolve()
    assert settings.storage.storage_backend is StorageBackend.S3
    assert settings.storage.s3_endpoint == "minio:9000"
    assert settings.upload.max_upload_bytes == 1048576
    assert settings.cache.redis_url == "redis://cache:6379/0"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'chitram.db'}"


def test_s3_without_endpoint_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHITRAM_STORAGE_BACKEND", "s3")
    with pytest.raises(ValueError, match="CHITRAM_S3_ENDPOINT"):
        Settings.from_env()


@pytest.mark.parametrize("secret", ["", "change-me", "short"])
def test_production_refuses_missing_or_default_secret(tmp_path: Path, secret: str) -> None:
    settings = base_settings(
        tmp_path, server=ServerSettings(env=Environment.PRODUCTION, secret_key=secret, data_dir=tmp_path)
    )
    with pytest.raises(UnsafeSettingsError, match="CHITRAM_SECRET_KEY"):
        create_app(settings)


@pytest.mark.parametrize("public_url", ["", "img.example.com", "https://", "ftp://img.example.com"])
def test_production_refuses_a_missing_public_url(tmp_path: Path, public_url: str) -> None:
    server = ServerSettings(
        env=Environment.PRODUCTION, secret_key=TEST_SECRET, public_url=public_url, data_dir=tmp_path
    )
    with pytest.raises(UnsafeSettingsError, match="CHITRAM_PUBLIC_URL is required in production"):
        create_app(base_settings(tmp_path, server=server))


def test_production_starts_with_a_public_url(tmp_path: Path) -> None:
    server = ServerSettings(
        env=Environment.PRODUCTION, secret_key=TEST_SECRET, public_url="https://img.example.com", data_dir=tmp_path
    )
    assert create_app(base_settings(tmp_path, server=server)) is not None


def test_development_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, server=ServerSettings(data_dir=tmp_path, secret_key=""))
    first = resolve_secret_key(settings)
    assert len(first) >= 32
    assert (tmp_path / "secret_key").read_text() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert resolve_secret_key(settings) == first


@pytest.mark.parametrize(
    ("given", "endpoint", "secure"),
    [
        ("minio:9000", "minio:9000", False),
        ("http://minio:9000/", "minio:9000", False),
        ("https://s3.example.com", "s3.example.com", True),
    ],
)
def test_s3_endpoint_may_carry_a_scheme(
    monkeypatch: pytest.MonkeyPatch, given: str, endpoint: str, secure: bool
) -> None:
    monkeypatch.setenv("CHITRAM_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("CHITRAM_S3_ENDPOINT", given)
    storage = Settings.from_env().storage
    assert storage.s3_endpoint == endpoint
    assert storage.s3_secure is secure
