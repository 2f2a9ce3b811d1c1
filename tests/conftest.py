"""Two stacks for every API test: embedded (SQLite, folder, memory) and production
(PostgreSQL, Redis, S3 — real servers, from CHITRAM_TEST_* or started throwaway)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chitram.app import create_app
from chitram.db import upgrade_to_head
from chitram.settings import (
    CacheSettings,
    DatabaseSettings,
    HealthSettings,
    ServerSettings,
    Settings,
    StorageBackend,
    StorageSettings,
    UploadSettings,
)
from tests.support.faults import FaultProxy
from tests.support.server import clean_env
from tests.support.services import (
    PostgresService,
    RedisService,
    S3Service,
    ServiceUnavailable,
    services_required,
    start_postgres,
    start_redis,
    start_s3,
)

STACKS = ("embedded", "production")
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def pytest_configure(config: pytest.Config) -> None:
    # The app reads nothing from the developer's environment or .env during tests.
    for name in list(os.environ):
        if name.startswith("CHITRAM_") and not name.startswith(("CHITRAM_TEST_", "CHITRAM_REQUIRE_")):
            del os.environ[name]


def _start_or_skip(name: str, start: Callable[[], tuple[Any, Callable[[], None]]]) -> Iterator[Any]:
    try:
        service, stop = start()
    except ServiceUnavailable as exc:
        if services_required():
            pytest.fail(f"{name} is required (CHITRAM_REQUIRE_SERVICES=1) but did not start: {exc}")
        pytest.skip(f"{name} unavailable: {exc}")
    try:
        yield service
    finally:
        stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    root = tmp_path_factory.mktemp("pg")
    yield from _start_or_skip("PostgreSQL", lambda: start_postgres(root))


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    root = tmp_path_factory.mktemp("redis")
    yield from _start_or_skip("Redis", lambda: start_redis(root))


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    yield from _start_or_skip("S3", start_s3)


def base_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Embedded settings in `data_dir`; keyword arguments replace whole sections."""
    sections: dict[str, Any] = {
        "server": ServerSettings(data_dir=data_dir, secret_key=TEST_SECRET),
        "database": DatabaseSettings(),
        "storage": StorageSettings(),
        "cache": CacheSettings(),
        "upload": UploadSettings(processing_concurrency=2),
        "health": HealthSettings(health_timeout_seconds=1.5),
    }
    sections.update(overrides)
    return Settings(**sections)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    upgrade_to_head(base_settings(data_dir))
    return data_dir / "chitram.db"


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresService) -> str:
    name = f"chitram_template_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    upgrade_to_head(
        base_settings(Path("/nonexistent"), database=DatabaseSettings(database_url=postgres.asyncpg_url(name)))
    )
    return name


@pytest.fixture
def embedded_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    shutil.copy(sqlite_template, tmp_path / "chitram.db")
    return base_settings(tmp_path)


@pytest.fixture
def production_settings(
    tmp_path: Path, postgres: PostgresService, pg_template: str, redis_service: RedisService, s3: S3Service
) -> Iterator[Settings]:
    yield from production_stack(tmp_path, postgres, pg_template, redis_service.url_for_db(1), s3)


def production_stack(
    tmp_path: Path,
    postgres: PostgresService,
    pg_template: str,
    redis_url: str,
    s3: S3Service,
    *,
    s3_endpoint: str | None = None,
    s3_timeout: float = 10.0,
) -> Iterator[Settings]:
    """Settings on a fresh database (cloned from the migrated template), bucket and Redis db."""
    database = f"chitram_test_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database, template=pg_template)
    bucket = f"chitram-test-{uuid.uuid4().hex[:12]}"
    redis.Redis.from_url(redis_url).flushdb()
    yield base_settings(
        tmp_path,
        database=DatabaseSettings(database_url=postgres.asyncpg_url(database), database_pool_size=5),
        storage=production_storage(s3, bucket, endpoint=s3_endpoint, timeout=s3_timeout),
        cache=CacheSettings(redis_url=redis_url),
    )
    postgres.drop_database(database)
    s3.remove_bucket(bucket)


def production_storage(
    s3: S3Service, bucket: str, endpoint: str | None = None, timeout: float = 10.0
) -> StorageSettings:
    return StorageSettings(
        storage_backend=StorageBackend.S3,
        s3_endpoint=endpoint or s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_bucket=bucket,
        s3_secure=s3.secure,
        s3_region=s3.region,
        s3_timeout_seconds=timeout,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The CHITRAM_* variables that make a `chitram` process use these settings."""
    storage = settings.storage
    return clean_env(
        CHITRAM_DATA_DIR=str(settings.data_dir),
        CHITRAM_SECRET_KEY=settings.server.secret_key,
        CHITRAM_DATABASE_URL=settings.database.database_url,
        CHITRAM_REDIS_URL=settings.cache.redis_url,
        CHITRAM_STORAGE_BACKEND=storage.storage_backend.value,
        CHITRAM_S3_ENDPOINT=storage.s3_endpoint,
        CHITRAM_S3_ACCESS_KEY=storage.s3_access_key,
        CHITRAM_S3_SECRET_KEY=storage.s3_secret_key,
        CHITRAM_S3_BUCKET=storage.s3_bucket,
        CHITRAM_S3_REGION=storage.s3_region or "",
    )


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(stack: str, request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue(f"{stack}_settings")  # type: ignore[no-any-return]


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest.fixture
def s3_proxy(s3: S3Service) -> Iterator[FaultProxy]:
    host, port = s3.endpoint.rsplit(":", 1)
    with FaultProxy(host, int(port)) as proxy:
        yield proxy


@pytest.fixture
def proxied_settings(
    tmp_path: Path,
    postgres: PostgresService,
    pg_template: str,
    redis_service: RedisService,
    s3: S3Service,
    s3_proxy: FaultProxy,
) -> Iterator[Settings]:
    yield from production_stack(
        tmp_path, postgres, pg_template, redis_service.url_for_db(2), s3, s3_endpoint=s3_proxy.address, s3_timeout=2.0
    )
