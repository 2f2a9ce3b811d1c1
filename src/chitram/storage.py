"""Object storage for image files: one small async interface, a filesystem and an S3 adapter.

Callers only see :class:`ObjectStorage` and the :class:`StorageError` family; which adapter runs
is decided once, by :func:`create_storage`. Both adapters do their blocking work (file I/O, the
synchronous minio client) in worker threads so the event loop keeps serving other requests.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import anyio.to_thread
import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, MIN_PART_SIZE, check_bucket_name

from chitram.metrics import count_dependency_error, observe_dependency, timed_dependency
from chitram.settings import Settings, StorageBackend

T = TypeVar("T")

DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_KEY_LENGTH = 1024  # the S3 limit; also keeps filesystem paths well below PATH_MAX
# Objects are public images; readable by others so a front web server or a backup job can read them.
FILE_MODE = 0o644
# "~" can never appear in a key, so a temp file left by a crash is never mistaken for an object.
TEMP_SUFFIX = ".tmp~"
# How many listed objects one worker-thread hop fetches: fewer hops, bounded memory.
LIST_BATCH = 256
S3_POOL_SIZE = 32
S3_MAX_CONNECT_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 2.0

_KEY_PATTERN = re.compile(r"[a-z0-9._-]+(?:/[a-z0-9._-]+)*")
# S3 error codes that mean "the server is struggling", not "the request is wrong".
_UNAVAILABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# Everything minio or urllib3 raise for a failed request; programming errors (ValueError…) pass through.
_S3_FAILURES = (MinioException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What storage knows about one object."""

    key: str
    size: int
    last_modified: datetime  # timezone-aware UTC


class StorageError(Exception):
    """Base class for every storage failure."""


class StorageUnavailable(StorageError):
    """The backend is down, hanging, timing out or failing (5xx): worth retrying later."""


class StorageConfigError(StorageError):
    """The backend works but is set up wrongly; the message says what to change."""


class ObjectNotFound(StorageError):
    """No object has this key."""


class ObjectStorage(Protocol):
    """Where image files live. Keys are produced by the app and checked by :func:`validate_key`."""

    async def ensure_ready(self) -> None:
        """Create the folder or bucket when missing; raise StorageConfigError when that is impossible."""
        ...

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store ``data`` atomically: readers see the old object or the new one, never a partial one."""
        ...

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Store the file at ``path`` as ``put`` would, streaming it instead of holding it in memory."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's size and age, or None when it does not exist."""
        ...

    def read(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (default: to the end) from ``offset``; raise ObjectNotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, at any depth, in no particular order."""
        ...

    async def ping(self) -> None:
        """Cheap readiness check; raise StorageUnavailable when storage cannot serve requests."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ValueError.

    Keys come from the app, never from users; this second line of defence makes sure a bug can
    never address a file outside the storage root or name one object in two ways.
    """
    if (
        len(key) > MAX_KEY_LENGTH
        or not _KEY_PATTERN.fullmatch(key)
        or any(part in {".", ".."} for part in key.split("/"))
    ):
        raise ValueError(f"invalid object key {key!r}: use [a-z0-9._-] segments joined by '/', without '.' or '..'")
    return key


def _validate_prefix(prefix: str) -> str:
    """A prefix is a key, possibly ending in '/', or empty for everything."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True


def _check_range(offset: int, length: int | None, chunk_size: int) -> None:
    if offset < 0 or (length is not None and length < 0) or chunk_size <= 0:
        raise ValueError(f"invalid range: offset={offset}, length={length}, chunk_size={chunk_size}")


async def _iterate_in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking iterator from worker threads, a batch per hop."""
    try:
        while batch := await anyio.to_thread.run_sync(_take_batch, items):
            for item in batch:
                yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _take_batch(items: Iterator[T]) -> list[T]:
    return list(islice(items, LIST_BATCH))


# --- filesystem ----------------------------------------------------------------------------------


class FilesystemStorage:
    """Objects as files under ``root``; the key is the path relative to it."""

    def __init__(self, root: Path) -> None:
        # abspath, not resolve(): no filesystem access while the app is being built.
        self._root = Path(os.path.abspath(root))

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        # validate_key rules out "..", absolute paths and separators other than "/", so the
        # joined path is always inside root.
        return self._root.joinpath(*validate_key(key).split("/"))

    async def ensure_ready(self) -> None:
        """Create the root folder."""
        try:
            await anyio.to_thread.run_sync(partial(self._root.mkdir, parents=True, exist_ok=True))
        except OSError as exc:
            raise StorageConfigError(
                f"cannot create the storage folder {self._root} ({exc.strerror}): create it, make it "
                "writable for this user, or set CHITRAM_STORAGE_PATH"
            ) from exc

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write to a temp file in the same folder, fsync, then rename over the target."""
        # content_type is not stored: the app keeps it in its database.
        path = self._path(key)
        with _filesystem_errors(self._root):
            await anyio.to_thread.run_sync(_write_atomically, path, data)

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        target = self._path(key)
        with _filesystem_errors(self._root):
            await anyio.to_thread.run_sync(_copy_atomically, path, target)

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with _filesystem_errors(self._root):
            return await anyio.to_thread.run_sync(_stat_file, path, key)

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        _check_range(offset, length, chunk_size)
        path = self._path(key)
        with _filesystem_errors(self._root):
            handle = await anyio.to_thread.run_sync(_open_at, path, key, offset)
            try:
                remaining = length
                while remaining is None or remaining > 0:
                    size = chunk_size if remaining is None else min(chunk_size, remaining)
                    chunk = await anyio.to_thread.run_sync(handle.read, size)
                    if not chunk:
                        return
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk
            finally:
                # Closing a regular file does not block, and must happen even when cancelled.
                handle.close()

    async def delete(self, key: str) -> None:
        # Empty fan-out folders are kept: removing them would race with a concurrent put into them.
        path = self._path(key)
        with _filesystem_errors(self._root):
            await anyio.to_thread.run_sync(_unlink, path)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        folder = _validate_prefix(prefix).rpartition("/")[0]
        start = self._root.joinpath(*folder.split("/")) if folder else self._root
        with _filesystem_errors(self._root):
            async for info in _iterate_in_thread(_walk(start, self._root, prefix)):
                yield info

    async def ping(self) -> None:
        """Check the folder exists and is writable."""
        # abandon_on_cancel: a hung network mount must not hold up the caller's health-check timeout.
        usable = await anyio.to_thread.run_sync(_is_writable_dir, self._root, abandon_on_cancel=True)
        if not usable:
            raise StorageUnavailable(f"storage folder {self._root} is missing or not writable")

    async def close(self) -> None:
        return None


@contextmanager
def _filesystem_errors(root: Path) -> Iterator[None]:
    """Translate OSError into the StorageError family."""
    try:
        yield
    except PermissionError as exc:
        raise StorageConfigError(
            f"no permission in the storage folder {root} ({exc}): make it writable for this user"
        ) from exc
    except OSError as exc:
        raise StorageUnavailable(f"filesystem storage failed: {exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    _replace_atomically(path, lambda handle: handle.write(data))


def _copy_atomically(source: Path, path: Path) -> None:
    def copy(handle: BinaryIO) -> None:
        with source.open("rb") as reader:
            shutil.copyfileobj(reader, handle, DEFAULT_CHUNK_SIZE * 16)

    _replace_atomically(path, copy)


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Fill a temp file in the same folder, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is a rename within one filesystem, which is atomic.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)  # mkstemp creates 0600
            fill(handle)
            handle.flush()
            # Without fsync a crash after the rename can leave the name pointing at empty data.
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        _unlink(Path(temp_name))
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself, not only the file's content."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat_file(path: Path, key: str) -> ObjectInfo | None:
    try:
        result = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(result.st_mode):
        return None
    return ObjectInfo(key, result.st_size, datetime.fromtimestamp(result.st_mtime, UTC))


def _open_at(path: Path, key: str, offset: int) -> io.BufferedReader:
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise ObjectNotFound(key) from exc
    handle.seek(offset)
    return handle


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def _walk(folder: Path, root: Path, prefix: str) -> Iterator[ObjectInfo]:
    """Yield the files below ``folder`` whose key starts with ``prefix``, skipping temp files."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        key = Path(entry.path).relative_to(root).as_posix()
        if entry.is_dir(follow_symlinks=False):
            # Descend only where a matching key can live.
            if f"{key}/".startswith(prefix) or prefix.startswith(f"{key}/"):
                yield from _walk(Path(entry.path), root, prefix)
        elif key.startswith(prefix) and _is_valid_key(key) and entry.is_file():
            info = entry.stat()
            yield ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))


def _is_writable_dir(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


# --- S3 ------------------------------------------------------------------------------------------


class S3Storage:
    """Objects in one bucket of an S3-compatible server, through the (thread-safe) minio client."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool,
        region: str | None,
        timeout_seconds: float,
    ) -> None:
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise StorageConfigError(f"CHITRAM_S3_BUCKET {bucket!r} is not a valid bucket name") from exc
        self._bucket = bucket
        # Retry once, quickly: a retry hides a dropped keep-alive connection, more only delay the 503.
        self._http = _http_pool(
            connect=min(timeout_seconds, S3_MAX_CONNECT_SECONDS),
            read=timeout_seconds,
            retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=S3_POOL_SIZE,
        )
        # Health checks get their own short-fused client so they answer fast while requests wait.
        ping_seconds = min(timeout_seconds, PING_TIMEOUT_SECONDS)
        self._ping_http = _http_pool(connect=ping_seconds, read=ping_seconds, retries=False, maxsize=2)
        connect = partial(
            _minio_client,
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
        )
        self._client = connect(self._http)
        self._ping_client = connect(self._ping_http)

    @property
    def bucket(self) -> str:
        return self._bucket

    async def _run(self, call: Callable[[], T], *, key: str | None = None) -> T:
        """Run a minio call in a worker thread, translating its errors."""
        try:
            return await anyio.to_thread.run_sync(call)
        except _S3_FAILURES as exc:
            raise _s3_error(exc, self._bucket, key) from exc

    async def ensure_ready(self) -> None:
        """Create the bucket when it is missing."""
        if not await self._run(partial(self._client.bucket_exists, self._bucket)):
            await self._run(self._create_bucket)

    def _create_bucket(self) -> None:
        try:
            self._client.make_bucket(self._bucket)
        except S3Error as exc:
            if exc.code == "BucketAlreadyOwnedByYou":
                return  # another worker created it first
            if exc.code in _DENIED_CODES:
                raise StorageConfigError(
                    f"bucket {self._bucket!r} does not exist and these credentials cannot create it "
                    f"({exc.code}): create it or grant s3:CreateBucket"
                ) from exc
            if exc.code == "BucketAlreadyExists":
                # Some servers say this to the owner too; only a bucket we cannot use is a problem.
                if self._owns_bucket():
                    return
                raise StorageConfigError(
                    f"bucket name {self._bucket!r} is taken by another account: choose another CHITRAM_S3_BUCKET"
                ) from exc
            raise

    def _owns_bucket(self) -> bool:
        try:
            return self._client.bucket_exists(self._bucket)
        except S3Error:
            return False  # 403: the bucket belongs to someone else

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload in a single PUT, which S3 makes visible atomically."""
        validate_key(key)
        # One part up to 5 GiB: a single request is simpler, cheaper and atomic by itself.
        part_size = min(max(len(data), MIN_PART_SIZE), MAX_PART_SIZE)
        upload = partial(
            self._client.put_object,
            self._bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            part_size=part_size,
        )
        await self._run(upload, key=key)

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Multipart upload for large files (minio splits it), a single PUT for small ones."""
        validate_key(key)
        upload = partial(self._client.fput_object, self._bucket, key, str(path), content_type=content_type)
        await self._run(upload, key=key)

    async def stat(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            found = await self._run(partial(self._client.stat_object, self._bucket, key), key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, found.size or 0, _utc(found.last_modified))

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        _check_range(offset, length, chunk_size)
        validate_key(key)
        if length == 0:
            # S3 has no empty range; check existence so both adapters behave alike.
            if await self.stat(key) is None:
                raise ObjectNotFound(key)
            return
        response = await self._run(partial(self._get_range, key, offset, length), key=key)
        if response is None:
            return
        try:
            chunks = response.stream(chunk_size)
            while (chunk := await self._run(partial(next, chunks, None), key=key)) is not None:
                yield chunk
        finally:
            # close() drops a half-read connection instead of returning it dirty to the pool;
            # release_conn() then frees the pool slot. Neither blocks, so this is safe when cancelled.
            response.close()
            response.release_conn()

    def _get_range(self, key: str, offset: int, length: int | None) -> urllib3.BaseHTTPResponse | None:
        try:
            return self._client.get_object(self._bucket, key, offset=offset, length=length or 0)
        except S3Error as exc:
            if exc.code == "InvalidRange":
                return None  # offset at or past the end: nothing to send, as with a file
            raise

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._run(partial(self._client.remove_object, self._bucket, key), key=key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        # list_objects only builds a lazy generator; the pages are fetched in worker threads below.
        objects = self._client.list_objects(self._bucket, prefix=_validate_prefix(prefix) or None, recursive=True)
        try:
            async for found in _iterate_in_thread(objects):
                if found.object_name and not found.is_dir:
                    yield ObjectInfo(found.object_name, found.size or 0, _utc(found.last_modified))
        except _S3_FAILURES as exc:
            raise _s3_error(exc, self._bucket, None) from exc

    async def ping(self) -> None:
        """HEAD the bucket with the short-fused client."""
        try:
            exists = await anyio.to_thread.run_sync(
                self._ping_client.bucket_exists, self._bucket, abandon_on_cancel=True
            )
        except _S3_FAILURES as exc:
            error = _s3_error(exc, self._bucket, None)
            if isinstance(error, StorageUnavailable):
                raise error from exc
            raise StorageUnavailable(str(error)) from exc
        if not exists:
            raise StorageUnavailable(f"bucket {self._bucket!r} does not exist")

    async def close(self) -> None:
        self._http.clear()
        self._ping_http.clear()


def _http_pool(*, connect: float, read: float, retries: urllib3.Retry | bool, maxsize: int) -> urllib3.PoolManager:
    """A pool whose timeouts bound every request, so a hanging server fails fast."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect, read=read),
        retries=retries,
        # Above maxsize extra connections are opened and then discarded, never waited for.
        maxsize=maxsize,
        # Same trust store as minio's own default client.
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


def _minio_client(
    endpoint: str,
    http: urllib3.PoolManager,
    *,
    access_key: str,
    secret_key: str,
    secure: bool,
    region: str | None,
) -> Minio:
    try:
        return Minio(
            endpoint,
            # Empty keys mean anonymous access, which minio wants as None.
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region or None,
            http_client=http,
        )
    except ValueError as exc:
        raise StorageConfigError(
            f"invalid CHITRAM_S3_ENDPOINT {endpoint!r} ({exc}): expected host:port, e.g. minio:9000"
        ) from exc


def _s3_error(exc: BaseException, bucket: str, key: str | None) -> StorageError:
    """Map a minio/urllib3 failure to the StorageError family."""
    if isinstance(exc, S3Error):
        return _s3_response_error(exc, bucket, key)
    if isinstance(exc, ServerError):
        if exc.status_code >= 500:
            return StorageUnavailable(f"S3 server error: {exc}")
        return StorageError(f"unexpected S3 response: {exc}")
    if isinstance(exc, InvalidResponseError):
        # Usually a proxy's HTML error page (5xx) or an endpoint that is not an S3 server at all.
        status = getattr(exc, "_code", 0)
        if isinstance(status, int) and status >= 500:
            return StorageUnavailable(f"S3 server error: {exc}")
        return StorageConfigError(f"not an S3 response, check CHITRAM_S3_ENDPOINT: {exc}")
    return StorageUnavailable(f"S3 server unreachable or not answering: {exc}")


def _s3_response_error(exc: S3Error, bucket: str, key: str | None) -> StorageError:
    if exc.code == "NoSuchKey":
        return ObjectNotFound(key or "")
    if exc.code == "NoSuchBucket":
        return StorageConfigError(f"bucket {bucket!r} does not exist: create it or restart to create it")
    if exc.code in _DENIED_CODES:
        return StorageConfigError(
            f"S3 refused these credentials for bucket {bucket!r} ({exc.code}): check "
            "CHITRAM_S3_ACCESS_KEY, CHITRAM_S3_SECRET_KEY and the bucket policy"
        )
    if exc.code in _UNAVAILABLE_CODES or exc.response.status >= 500:
        return StorageUnavailable(f"S3 server error: {exc}")
    return StorageError(str(exc))


def _utc(value: datetime | None) -> datetime:
    # S3 always sends Last-Modified; the fallback only keeps the type honest.
    if value is None:
        return datetime.fromtimestamp(0, UTC)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


# --- measured ------------------------------------------------------------------------------------


class TimedStorage:
    """Any ObjectStorage, with each call's latency and failures counted as
    chitram_dependency_seconds / chitram_dependency_errors_total {dependency="storage"}.

    "No such object" is an answer, not a failure. Streams (read, list) are timed to their first
    item, the latency a request waits for, not to their end, which depends on the client.
    """

    def __init__(self, inner: ObjectStorage) -> None:
        self.inner = inner

    async def ensure_ready(self) -> None:
        with _timed("ensure_ready"):
            await self.inner.ensure_ready()

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        with _timed("put"):
            await self.inner.put(key, data, content_type=content_type)

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        with _timed("put"):
            await self.inner.put_file(key, path, content_type=content_type)

    async def stat(self, key: str) -> ObjectInfo | None:
        with _timed("stat"):
            return await self.inner.stat(key)

    def read(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        return _timed_stream("read", self.inner.read(key, offset=offset, length=length, chunk_size=chunk_size))

    async def delete(self, key: str) -> None:
        with _timed("delete"):
            await self.inner.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return _timed_stream("list", self.inner.list(prefix))

    async def ping(self) -> None:
        with _timed("ping"):
            await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


def _timed(operation: str) -> AbstractContextManager[None]:
    return timed_dependency("storage", operation, expected=(ObjectNotFound,))


async def _timed_stream(operation: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
    started = time.perf_counter()
    measured = False

    def measure(*, failed: bool) -> None:
        nonlocal measured
        if not measured:
            measured = True
            observe_dependency("storage", operation, time.perf_counter() - started, failed=failed)
        elif failed:  # after the first item: an error, but no second latency for one call
            count_dependency_error("storage", operation)

    try:
        async for item in items:
            measure(failed=False)
            yield item
    except ObjectNotFound:
        measure(failed=False)
        raise
    except Exception:
        measure(failed=True)
        raise
    finally:
        measure(failed=False)  # an empty stream, or a reader that stopped before the first item
        close = getattr(items, "aclose", None)
        if close is not None:
            # Now, not when collected: the S3 adapter frees its connection when its stream closes.
            await close()


def create_storage(settings: Settings) -> ObjectStorage:
    """Build the adapter the settings ask for."""
    storage = settings.storage
    if storage.storage_backend is StorageBackend.S3:
        return S3Storage(
            endpoint=storage.s3_endpoint,
            access_key=storage.s3_access_key,
            secret_key=storage.s3_secret_key,
            bucket=storage.s3_bucket,
            secure=storage.s3_secure,
            region=storage.s3_region,
            timeout_seconds=storage.s3_timeout_seconds,
        )
    return FilesystemStorage(settings.storage_path)
