"""Contract tests for ObjectStorage, run against the filesystem adapter and the S3 adapter.

S3 runs against moto's server started in this process, or against a real server when
CHITRAM_TEST_S3_ENDPOINT (+ CHITRAM_TEST_S3_ACCESS_KEY / CHITRAM_TEST_S3_SECRET_KEY) is set.
Failure modes (a hanging server, a refused port, scripted S3 errors) use tiny local servers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import anyio
import pytest
import pytest_asyncio
from minio import Minio

from chitram.settings import Settings, StorageBackend, StorageSettings
from chitram.storage import (
    TEMP_SUFFIX,
    FilesystemStorage,
    ObjectInfo,
    ObjectNotFound,
    ObjectStorage,
    S3Storage,
    StorageConfigError,
    StorageUnavailable,
    create_storage,
    validate_key,
)

DIGEST = "ab" * 32
KEY = f"originals/ab/cd/{DIGEST}.jpg"
RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable modulo 256


# --- fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False

    def client(self) -> Minio:
        return Minio(self.endpoint, self.access_key, self.secret_key, secure=self.secure)


@pytest.fixture(scope="module")
def s3_target() -> Iterator[S3Target]:
    """A real S3 server: the one from the environment, else moto's, started for this module."""
    endpoint = os.environ.get("CHITRAM_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Target(
            endpoint,
            os.environ.get("CHITRAM_TEST_S3_ACCESS_KEY", ""),
            os.environ.get("CHITRAM_TEST_S3_SECRET_KEY", ""),
            secure=os.environ.get("CHITRAM_TEST_S3_SECURE", "") in {"1", "true"},
        )
        return
    from moto.server import ThreadedMotoServer  # imported here: only S3 tests pay for it

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Target(f"{host}:{port}", "testing", "testing")
    finally:
        server.stop()


def _s3_storage(target: S3Target, bucket: str, *, timeout_seconds: float = 5.0) -> S3Storage:
    return S3Storage(
        endpoint=target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        bucket=bucket,
        secure=target.secure,
        region=None,
        timeout_seconds=timeout_seconds,
    )


def _drop_bucket(target: S3Target, bucket: str) -> None:
    """Remove a test bucket so a shared real server does not fill up."""
    client = target.client()
    with suppress(Exception):
        if client.bucket_exists(bucket):
            for found in client.list_objects(bucket, recursive=True):
                client.remove_object(bucket, found.object_name)
            client.remove_bucket(bucket)


@pytest.fixture(params=["filesystem", "s3"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ObjectStorage]]:
    """Build a not-yet-ready storage of each kind: an empty folder, or a bucket nobody created."""
    if request.param == "filesystem":
        yield lambda: FilesystemStorage(tmp_path / "objects")
        return
    target: S3Target = request.getfixturevalue("s3_target")
    bucket = f"chitram-test-{uuid.uuid4().hex[:16]}"
    yield lambda: _s3_storage(target, bucket)
    _drop_bucket(target, bucket)


@pytest_asyncio.fixture
async def storage(make_storage: Callable[[], ObjectStorage]) -> AsyncIterator[ObjectStorage]:
    store = make_storage()
    await store.ensure_ready()
    yield store
    await store.close()


async def read_all(storage: ObjectStorage, key: str, **kwargs: int | None) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, **kwargs)])  # type: ignore[arg-type]


async def list_keys(storage: ObjectStorage, prefix: str = "") -> list[str]:
    return sorted([info.key async for info in storage.list(prefix)])


def _files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def black_hole() -> Iterator[str]:
    """host:port of a server that accepts TCP connections and never answers, like a hung S3."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture
def closed_port() -> str:
    """host:port where nobody listens, so connecting is refused."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    # HTTP method -> (status, S3 error code); HEAD answers carry no body, as in S3.
    script: dict[str, tuple[int, str]]


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: _ScriptedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, code = self.server.script[self.command]
        body = b""
        if self.command != "HEAD":
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>scripted</Message><RequestId>1</RequestId></Error>"
            ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def scripted_s3() -> Iterator[Callable[[dict[str, tuple[int, str]]], str]]:
    """Start an HTTP server answering each method with a fixed S3 error; returns host:port."""
    servers: list[_ScriptedServer] = []

    def start(script: dict[str, tuple[int, str]]) -> str:
        server = _ScriptedServer(("127.0.0.1", 0), _ScriptedHandler)
        server.script = script
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _unreachable_s3(endpoint: str, *, timeout_seconds: float, region: str | None = None) -> S3Storage:
    return S3Storage(
        endpoint=endpoint,
        access_key="key",
        secret_key="secret",
        bucket="chitram",
        secure=False,
        region=region,
        timeout_seconds=timeout_seconds,
    )


# --- contract, both adapters ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_put_stat_read(storage: ObjectStorage) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    await storage.put(KEY, b"hello world", content_type="image/jpeg")

    info = await storage.stat(KEY)
    assert info is not None
    assert (info.key, info.size) == (KEY, 11)
    assert info.last_modified.utcoffset() == timedelta(0)
    assert before < info.last_modified < datetime.now(UTC) + timedelta(minutes=5)
    assert await read_all(storage, KEY) == b"hello world"


@pytest.mark.asyncio
async def test_put_replaces(storage: ObjectStorage) -> None:
    await storage.put(KEY, b"first version", content_type="image/jpeg")
    await storage.put(KEY, b"second", content_type="image/jpeg")
    assert await read_all(storage, KEY) == b"second"
    info = await storage.stat(KEY)
    assert info is not None
    assert info.size == 6


@pytest.mark.asyncio
async def test_empty_object(storage: ObjectStorage) -> None:
    await storage.put(KEY, b"", content_type="image/jpeg")
    info = await storage.stat(KEY)
    assert info is not None
    assert info.size == 0
    assert await read_all(storage, KEY) == b""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, RANGE_DATA),
        (100, None, RANGE_DATA[100:]),
        (100, 50, RANGE_DATA[100:150]),
        (1023, None, RANGE_DATA[1023:]),
        (1023, 1, RANGE_DATA[1023:]),
        (1000, 100, RANGE_DATA[1000:]),  # length past the end: up to the end
        (0, 0, b""),
        (1024, None, b""),  # offset at the end: nothing
    ],
)
async def test_read_range(storage: ObjectStorage, offset: int, length: int | None, expected: bytes) -> None:
    await storage.put(KEY, RANGE_DATA, content_type="image/jpeg")
    assert await read_all(storage, KEY, offset=offset, length=length) == expected


@pytest.mark.asyncio
async def test_read_streams_in_chunks(storage: ObjectStorage) -> None:
    data = os.urandom(1024 * 1024)
    await storage.put(KEY, data, content_type="image/jpeg")

    chunks = [chunk async for chunk in storage.read(KEY, chunk_size=64 * 1024)]

    assert len(chunks) >= 16
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    assert b"".join(chunks) == data


@pytest.mark.asyncio
async def test_read_stopped_early_leaves_storage_usable(storage: ObjectStorage) -> None:
    data = os.urandom(512 * 1024)
    await storage.put(KEY, data, content_type="image/jpeg")

    for _ in range(3):  # a leaked or dirty connection would break the following reads
        # The adapters return async generators; the protocol only promises an iterator.
        stream = cast("AsyncGenerator[bytes, None]", storage.read(KEY, chunk_size=16 * 1024))
        async with aclosing(stream) as chunks:
            assert len(await anext(chunks)) == 16 * 1024

    assert await read_all(storage, KEY) == data


@pytest.mark.asyncio
async def test_missing_object(storage: ObjectStorage) -> None:
    assert await storage.stat(KEY) is None
    with pytest.raises(ObjectNotFound):
        await read_all(storage, KEY)
    with pytest.raises(ObjectNotFound):
        await read_all(storage, KEY, offset=10, length=0)


@pytest.mark.asyncio
async def test_delete_is_idempotent(storage: ObjectStorage) -> None:
    await storage.put(KEY, b"data", content_type="image/jpeg")
    await storage.delete(KEY)
    assert await storage.stat(KEY) is None
    await storage.delete(KEY)
    await storage.delete("originals/never/written.jpg")


@pytest.mark.asyncio
async def test_list_with_prefix(storage: ObjectStorage) -> None:
    keys = [
        f"originals/ab/cd/{DIGEST}.jpg",
        f"originals/ab/ef/{DIGEST}.png",
        f"originals/ba/cd/{DIGEST}.gif",
        f"thumbnails/ab/cd/{DIGEST}.webp",
    ]
    for key in keys:
        await storage.put(key, key.encode(), content_type="application/octet-stream")

    assert await list_keys(storage) == sorted(keys)
    assert await list_keys(storage, "originals/") == sorted(keys[:3])
    assert await list_keys(storage, "originals/ab/") == sorted(keys[:2])
    assert await list_keys(storage, "originals/ab/c") == [keys[0]]  # a prefix, not a folder
    assert await list_keys(storage, "thumbnails") == [keys[3]]
    assert await list_keys(storage, "nothing/") == []

    infos = [info async for info in storage.list("thumbnails/")]
    assert infos == [ObjectInfo(keys[3], len(keys[3]), infos[0].last_modified)]
    assert infos[0].last_modified.tzinfo is not None


@pytest.mark.asyncio
async def test_ensure_ready_creates_the_folder_or_bucket(make_storage: Callable[[], ObjectStorage]) -> None:
    storage = make_storage()
    with pytest.raises(StorageUnavailable):
        await storage.ping()

    await storage.ensure_ready()
    await storage.ensure_ready()  # idempotent: every worker runs it on start

    await storage.ping()
    await storage.put(KEY, b"data", content_type="image/jpeg")
    assert await read_all(storage, KEY) == b"data"
    await storage.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("key", ["../escape.jpg", "/etc/passwd", "originals/../../x", "a//b", "a\\b"])
async def test_bad_keys_are_refused(storage: ObjectStorage, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        await storage.put(key, b"x", content_type="image/jpeg")
    with pytest.raises(ValueError, match="invalid object key"):
        await storage.stat(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await read_all(storage, key)
    with pytest.raises(ValueError, match="invalid object key"):
        await storage.delete(key)
    assert _files_under(tmp_path) == []  # the filesystem root is tmp_path/objects: nothing escaped it


# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [KEY, f"thumbnails/ab/cd/{DIGEST}.webp", "a", "a-b_c.d/e", "x/.hidden"],
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        ".",
        "/abs/path",
        "a//b",
        "a/",
        "a\\b",
        "..\\x",
        "A.jpg",
        "a b",
        "é.jpg",
        "a\n",
        "a\x00b",
        "c:/x",
        "a" * 1025,
    ],
)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        validate_key(key)


# --- filesystem specifics -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_filesystem_put_is_atomic(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    await storage.ensure_ready()
    versions = {b"a" * 300_000, b"b" * 300_000}
    await storage.put(KEY, b"a" * 300_000, content_type="image/jpeg")
    seen: list[bytes] = []

    async def write() -> None:
        for _ in range(20):
            for version in versions:
                await storage.put(KEY, version, content_type="image/jpeg")

    async def read() -> None:
        for _ in range(40):
            seen.append(await read_all(storage, KEY))

    async with anyio.create_task_group() as group:
        group.start_soon(write)
        group.start_soon(read)

    assert set(seen) <= versions  # never a torn or truncated file
    assert _files_under(tmp_path) == [KEY]  # no temp file left behind


@pytest.mark.asyncio
async def test_filesystem_failed_put_keeps_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FilesystemStorage(tmp_path)
    await storage.put(KEY, b"old", content_type="image/jpeg")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageUnavailable):
        await storage.put(KEY, b"new" * 1000, content_type="image/jpeg")
    monkeypatch.undo()

    assert await read_all(storage, KEY) == b"old"
    assert _files_under(tmp_path) == [KEY]


@pytest.mark.asyncio
async def test_filesystem_list_skips_temp_files(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    await storage.put(KEY, b"data", content_type="image/jpeg")
    (tmp_path / KEY).with_name(f".{DIGEST}.jpg.abc123{TEMP_SUFFIX}").write_bytes(b"half")

    assert await list_keys(storage) == [KEY]


@pytest.mark.asyncio
async def test_filesystem_ping_fails_when_folder_is_missing(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "missing")
    with pytest.raises(StorageUnavailable):
        await storage.ping()


# --- S3 failure modes -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_s3_ping_fails_fast_when_server_hangs(black_hole: str) -> None:
    storage = _unreachable_s3(black_hole, timeout_seconds=10)  # ping must not wait for the 10 s
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await storage.ping()
    elapsed = time.monotonic() - started
    print(f"ping against a hanging server failed after {elapsed:.2f} s")
    assert elapsed < 3
    await storage.close()


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_s3_put_fails_within_timeout_when_server_hangs(black_hole: str) -> None:
    storage = _unreachable_s3(black_hole, timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await storage.put(KEY, b"data", content_type="image/jpeg")
    elapsed = time.monotonic() - started
    print(f"put against a hanging server failed after {elapsed:.2f} s")
    assert elapsed < 1 * 2 + 1  # two attempts of timeout_seconds, plus slack
    await storage.close()


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_s3_connection_refused(closed_port: str) -> None:
    storage = _unreachable_s3(closed_port, timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await storage.ping()
    with pytest.raises(StorageUnavailable):
        await storage.ensure_ready()
    with pytest.raises(StorageUnavailable):
        await storage.put(KEY, b"data", content_type="image/jpeg")
    with pytest.raises(StorageUnavailable):
        await read_all(storage, KEY)
    assert time.monotonic() - started < 3
    await storage.close()


@pytest.mark.asyncio
async def test_s3_bucket_creation_denied(scripted_s3: Callable[[dict[str, tuple[int, str]]], str]) -> None:
    endpoint = scripted_s3({"HEAD": (404, ""), "PUT": (403, "AccessDenied")})
    storage = _unreachable_s3(endpoint, timeout_seconds=2, region="us-east-1")

    with pytest.raises(StorageConfigError) as raised:
        await storage.ensure_ready()

    message = str(raised.value)
    assert "'chitram' does not exist" in message
    assert "AccessDenied" in message
    assert "s3:CreateBucket" in message
    await storage.close()


@pytest.mark.asyncio
async def test_s3_server_errors_are_unavailable(
    scripted_s3: Callable[[dict[str, tuple[int, str]]], str],
) -> None:
    failing = (503, "ServiceUnavailable")
    endpoint = scripted_s3(dict.fromkeys(["GET", "PUT", "HEAD", "DELETE"], failing))
    storage = _unreachable_s3(endpoint, timeout_seconds=2, region="us-east-1")

    with pytest.raises(StorageUnavailable):
        await storage.put(KEY, b"data", content_type="image/jpeg")
    with pytest.raises(StorageUnavailable):
        await storage.stat(KEY)
    with pytest.raises(StorageUnavailable):
        await storage.ping()
    await storage.close()


def test_s3_refuses_bad_configuration() -> None:
    with pytest.raises(StorageConfigError):
        S3Storage(
            endpoint="minio:9000",
            access_key="",
            secret_key="",
            bucket="Not_A_Bucket",
            secure=False,
            region=None,
            timeout_seconds=1,
        )
    with pytest.raises(StorageConfigError):
        _unreachable_s3("http://minio:9000/path", timeout_seconds=1)


# --- factory --------------------------------------------------------------------------------------


def test_create_storage_filesystem(tmp_path: Path) -> None:
    settings = Settings(
        storage=StorageSettings(storage_backend=StorageBackend.FILESYSTEM, storage_path=tmp_path / "objects")
    )
    storage = create_storage(settings)
    assert isinstance(storage, FilesystemStorage)
    assert storage.root == settings.storage_path


def test_create_storage_s3() -> None:
    settings = Settings(
        storage=StorageSettings(
            storage_backend=StorageBackend.S3,
            s3_endpoint="minio:9000",
            s3_access_key="key",
            s3_secret_key="secret",
            s3_bucket="images",
        )
    )
    storage = create_storage(settings)
    assert isinstance(storage, S3Storage)
    assert storage.bucket == "images"


@pytest.mark.asyncio
async def test_s3_bucket_name_taken_by_another_account(
    scripted_s3: Callable[[dict[str, tuple[int, str]]], str],
) -> None:
    endpoint = scripted_s3({"HEAD": (404, ""), "PUT": (409, "BucketAlreadyExists")})
    storage = _unreachable_s3(endpoint, timeout_seconds=2, region="us-east-1")

    with pytest.raises(StorageConfigError, match="taken by another account"):
        await storage.ensure_ready()
    await storage.close()
