"""Tests of the test-support helpers: real services and the TCP fault proxy."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .faults import FaultProxy
from .services import (
    PostgresService,
    RedisService,
    S3Service,
    ServiceUnavailable,
    normalise_postgres_url,
    services_required,
    skip_unless_required,
    start_postgres,
    start_redis,
    start_s3,
)

pytestmark = pytest.mark.timeout(120)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def support_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    try:
        service, cleanup = start_postgres(tmp_path_factory.mktemp("pg"))
    except ServiceUnavailable as exc:
        skip_unless_required(exc)
    try:
        yield service
    finally:
        cleanup()


@pytest.fixture(scope="module")
def support_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    try:
        service, cleanup = start_redis(tmp_path_factory.mktemp("redis"))
    except ServiceUnavailable as exc:
        skip_unless_required(exc)
    try:
        yield service
    finally:
        cleanup()


@pytest.fixture(scope="module")
def support_s3() -> Iterator[S3Service]:
    try:
        service, cleanup = start_s3()
    except ServiceUnavailable as exc:
        skip_unless_required(exc)
    try:
        yield service
    finally:
        cleanup()


@pytest.fixture
def support_redis_address(support_redis: RedisService) -> tuple[str, int]:
    address = support_redis.tcp_address
    if address is None:
        pytest.skip("the Redis under test is not reachable over TCP")
    return address


def _redis_client(host: str, port: int, *, timeout: float = 1.0) -> redis.Redis[bytes]:
    # No retries: a hung or refused connection must surface at once.
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- PostgreSQL --------------------------------------------------------------------------------


def _scalar(url: str, sql: str) -> Any:
    """Run one query through SQLAlchemy + asyncpg, as the application does."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(sql))).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_postgres_create_database_from_template(support_pg: PostgresService) -> None:
    suffix = uuid.uuid4().hex[:8]
    template, copy = f"support_tpl_{suffix}", f"support_copy_{suffix}"
    support_pg.create_database(template)
    try:
        _scalar(support_pg.asyncpg_url(template), "SELECT 1")  # connect once, then close
        import asyncpg  # type: ignore[import-untyped]

        async def seed() -> None:
            conn = await asyncpg.connect(support_pg.url(template))
            try:
                await conn.execute("CREATE TABLE marker (value text); INSERT INTO marker VALUES ('seeded')")
            finally:
                await conn.close()

        asyncio.run(seed())
        support_pg.create_database(copy, template=template)
        assert _scalar(support_pg.asyncpg_url(copy), "SELECT value FROM marker") == "seeded"
        assert _scalar(support_pg.asyncpg_url(copy), "SELECT current_database()") == copy
    finally:
        support_pg.drop_database(copy)
        support_pg.drop_database(template)
    support_pg.drop_database(copy)  # IF EXISTS: dropping twice is fine


def test_postgres_unix_socket_url(support_pg: PostgresService) -> None:
    if support_pg.socket_url is None:
        pytest.skip("no unix socket for this server")
    over_socket = PostgresService(admin_url=support_pg.socket_url)
    url = over_socket.asyncpg_url("postgres")
    assert url.startswith("postgresql+asyncpg://postgres@/postgres?host=/")
    assert _scalar(url, "SELECT 1") == 1
    name = f"support_sock_{uuid.uuid4().hex[:8]}"
    over_socket.create_database(name)
    try:
        assert _scalar(over_socket.asyncpg_url(name), "SELECT current_database()") == name
    finally:
        over_socket.drop_database(name)


def test_postgres_stop_and_start(support_pg: PostgresService) -> None:
    if not support_pg.can_restart:
        pytest.skip("server comes from CHITRAM_TEST_DATABASE_URL and cannot be restarted")
    support_pg.stop()
    try:
        assert not support_pg.is_running
        with pytest.raises(OSError):  # noqa: PT011 - any connection error proves it is down
            support_pg.ping(timeout=1)
    finally:
        support_pg.start()
    assert support_pg.is_running
    assert _scalar(support_pg.asyncpg_url("postgres"), "SELECT 1") == 1


def test_postgres_url_helpers() -> None:
    tcp = PostgresService(admin_url=normalise_postgres_url("postgresql+asyncpg://u:p%40ss@db.example:6543"))
    assert tcp.admin_url == "postgresql://u:p%40ss@db.example:6543/postgres"
    assert tcp.asyncpg_url("app test") == "postgresql+asyncpg://u:p%40ss@db.example:6543/app%20test"
    assert tcp.url("x") == "postgresql://u:p%40ss@db.example:6543/x"
    assert tcp.tcp_address == ("db.example", 6543)
    assert not tcp.can_restart
    assert tcp.via("127.0.0.1", 1234).asyncpg_url("x") == "postgresql+asyncpg://u:p%40ss@127.0.0.1:1234/x"

    sock = PostgresService(admin_url=normalise_postgres_url("postgres://postgres:@/postgres?host=/tmp/pg"))
    assert sock.asyncpg_url("db") == "postgresql+asyncpg://postgres:@/db?host=/tmp/pg"
    assert sock.tcp_address is None
    assert sock.via("127.0.0.1", 5).admin_url == "postgresql://postgres:@127.0.0.1:5/postgres"

    assert normalise_postgres_url("postgresql://h/test") == "postgresql://h/test"
    with pytest.raises(ValueError, match="mysql"):
        normalise_postgres_url("mysql://h/db")


def test_start_postgres_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHITRAM_TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_closed_port()}/x")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="PostgreSQL") as info:
        start_postgres(tmp_path, wait=0)
    assert "CHITRAM_TEST_DATABASE_URL" in str(info.value)
    assert time.monotonic() - started < 5


def test_start_redis_and_s3_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHITRAM_TEST_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setenv("CHITRAM_TEST_S3_ENDPOINT", f"127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="Redis"):
        start_redis(tmp_path, wait=0)
    with pytest.raises(ServiceUnavailable, match="S3"):
        start_s3(wait=0)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("TRUE", True), ("0", False)])
def test_services_required(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CHITRAM_REQUIRE_SERVICES", value)
    assert services_required() is expected
    exc = ServiceUnavailable("Thing", "gone")
    with pytest.raises(ServiceUnavailable if expected else pytest.skip.Exception, match="Thing"):
        skip_unless_required(exc)


# -- Redis -------------------------------------------------------------------------------------


def test_redis_set_get(support_redis: RedisService) -> None:
    client = redis.Redis.from_url(support_redis.url_for_db(3), socket_timeout=5)
    try:
        key = f"support:{uuid.uuid4().hex}"
        client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
        assert client.connection_pool.connection_kwargs["db"] == 3
        client.delete(key)
    finally:
        client.close()


def test_redis_url_for_db() -> None:
    assert RedisService("redis://h:1/0").url_for_db(5) == "redis://h:1/5"
    assert RedisService("rediss://:pw@h:1").url_for_db(2) == "rediss://:pw@h:1/2"
    assert RedisService("unix:///tmp/r.sock?db=0").url_for_db(4) == "unix:///tmp/r.sock?db=4"
    assert RedisService("unix:///tmp/r.sock").tcp_address is None


# -- S3 ----------------------------------------------------------------------------------------


def test_s3_bucket_put_list_remove(support_s3: S3Service) -> None:
    bucket = f"support-{uuid.uuid4().hex[:12]}"
    support_s3.create_bucket(bucket)
    try:
        client = support_s3.client()
        for key in ("b/2.webp", "a/1.png", "c.txt"):
            client.put_object(bucket_name=bucket, object_name=key, data=io.BytesIO(b"xyz"), length=3)
        assert support_s3.list_keys(bucket) == ["a/1.png", "b/2.webp", "c.txt"]
    finally:
        support_s3.remove_bucket(bucket)
    assert bucket not in [b.name for b in support_s3.client().list_buckets()]
    support_s3.remove_bucket(bucket)  # a missing bucket is fine


# -- FaultProxy --------------------------------------------------------------------------------


def test_proxy_forwards_redis(support_redis_address: tuple[str, int]) -> None:
    with FaultProxy(*support_redis_address) as proxy:
        assert proxy.address == f"127.0.0.1:{proxy.port}"
        client = _redis_client(proxy.host, proxy.port, timeout=5)
        try:
            assert client.ping()
            key, big = f"support:{uuid.uuid4().hex}", bytes(range(256)) * 8192  # 2 MiB both ways
            client.set(key, big, ex=60)
            assert client.get(key) == big
            client.delete(key)
            assert proxy.connection_count == 1
        finally:
            client.close()


def test_proxy_hang_and_heal(support_redis_address: tuple[str, int]) -> None:
    with FaultProxy(*support_redis_address) as proxy:
        existing = _redis_client(proxy.host, proxy.port)
        assert existing.ping()

        proxy.hang()
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            existing.ping()  # existing connection: request swallowed, never answered
        fresh = _redis_client(proxy.host, proxy.port)
        with pytest.raises(redis.TimeoutError):
            fresh.ping()  # new connection: accepted, then silence
        assert time.monotonic() - started < 5

        proxy.heal()
        healed = _redis_client(proxy.host, proxy.port)
        assert healed.ping()
        for client in (existing, fresh, healed):
            client.close()


def test_proxy_stall_delivers_late(support_redis_address: tuple[str, int]) -> None:
    """Unlike a hang, what is sent during a stall is carried out when it ends."""
    with FaultProxy(*support_redis_address) as proxy, socket.create_connection((proxy.host, proxy.port)) as raw:
        raw.settimeout(5)
        direct = _redis_client(*support_redis_address)
        direct.delete("chitram-test:stalled")
        proxy.stall()
        raw.sendall(b"*3\r\n$3\r\nSET\r\n$20\r\nchitram-test:stalled\r\n$4\r\nlate\r\n")
        raw.settimeout(0.3)
        with pytest.raises(TimeoutError):
            raw.recv(100)  # no answer while stalled
        assert direct.get("chitram-test:stalled") is None, "a stalled command must not run yet"
        proxy.heal()
        raw.settimeout(5)
        assert raw.recv(100) == b"+OK\r\n"
        assert direct.get("chitram-test:stalled") == b"late"
        direct.delete("chitram-test:stalled")
        direct.close()


def test_proxy_refuse_and_heal(support_redis_address: tuple[str, int]) -> None:
    with FaultProxy(*support_redis_address) as proxy:
        existing = _redis_client(proxy.host, proxy.port)
        assert existing.ping()

        proxy.refuse()
        with pytest.raises(redis.ConnectionError):
            existing.ping()
        with pytest.raises(redis.ConnectionError):
            _redis_client(proxy.host, proxy.port).ping()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, proxy.port), timeout=1).close()

        proxy.heal()  # listens again on the same port
        assert _redis_client(proxy.host, proxy.port).ping()
        existing.close()


def test_proxy_in_front_of_postgres(support_pg: PostgresService) -> None:
    address = support_pg.tcp_address
    if address is None:
        pytest.skip("the PostgreSQL under test is not reachable over TCP")
    import asyncpg

    with FaultProxy(*address) as proxy:
        proxied = support_pg.via(proxy.host, proxy.port)

        async def scenario() -> None:
            conn = await asyncpg.connect(proxied.url("postgres"), timeout=5)
            try:
                assert await conn.fetchval("SELECT 41 + 1") == 42
                proxy.hang()
                with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                    await conn.fetchval("SELECT 1", timeout=1)
            finally:
                conn.terminate()
            proxy.heal()
            conn = await asyncpg.connect(proxied.url("postgres"), timeout=5)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()

        asyncio.run(scenario())
        assert _scalar(proxied.asyncpg_url("postgres"), "SELECT 2") == 2


class _EchoAfterEof(socketserver.BaseRequestHandler):
    """Reads until the client half-closes, then sends everything back and closes."""

    def handle(self) -> None:
        chunks = []
        while data := self.request.recv(65536):
            chunks.append(data)
        self.request.sendall(b"".join(chunks))


def test_proxy_half_close_and_dead_target() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoAfterEof)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultProxy("127.0.0.1", server.server_address[1]) as proxy:
            payload = bytes(range(256)) * 12_000  # ~3 MiB, more than the proxy buffers at once
            with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                received = bytearray()
                while data := sock.recv(65536):
                    received += data
            assert received == payload
    finally:
        server.shutdown()
        server.server_close()

    with (
        FaultProxy("127.0.0.1", _closed_port()) as proxy,
        socket.create_connection((proxy.host, proxy.port), timeout=2) as sock,
    ):
        assert sock.recv(10) == b""  # target refused: the proxy closes the client side


# -- the Docker engine's skip reasons ---------------------------------------------------------


def test_engine_reason_names_a_missing_dockerd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from . import docker

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    monkeypatch.setattr(docker, "_answers", lambda client: False)
    with pytest.raises(ServiceUnavailable, match="dockerd is not installed"):
        docker.start_engine(tmp_path)


def test_engine_reason_names_missing_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from . import docker

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(docker, "_answers", lambda client: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ServiceUnavailable, match=r"needs root"):
        docker.start_engine(tmp_path)
