"""Database wiring: metadata, engine and sessions, and where the migrations live."""

from __future__ import annotations

import fcntl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advanced_alchemy.base import orm_registry
from advanced_alchemy.config import AlembicAsyncConfig, AsyncSessionConfig, SQLAlchemyAsyncConfig
from sqlalchemy import MetaData, event
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from chitram.metrics import count_dependency_error, observe_dependency
from chitram.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"


def _engine_options(settings: Settings) -> dict[str, Any]:
    if settings.is_embedded_database:
        # Writers wait for each other instead of failing with "database is locked".
        return {"connect_args": {"timeout": 30}}
    return {
        "pool_size": settings.database.database_pool_size,
        "max_overflow": settings.database.database_pool_size,
        # A dead connection (database restarted) is replaced instead of failing a request.
        "pool_pre_ping": True,
        "pool_timeout": 10,
        "connect_args": {"timeout": 5, "command_timeout": 30},
    }


def build_alchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """advanced-alchemy's config: used for the engine and by `chitram-admin db …`."""
    from advanced_alchemy.config import EngineConfig

    options = _engine_options(settings)
    return SQLAlchemyAsyncConfig(
        connection_string=settings.database_url,
        engine_config=EngineConfig(**options),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name=VERSION_TABLE,
            render_as_batch=True,
            script_config=str(MIGRATIONS_DIR / "alembic.ini"),
        ),
    )


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers go on while one upload writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# Statements are labelled by their verb only: a bounded set, and no SQL text in a label.
_VERBS = frozenset({"select", "insert", "update", "delete"})
_STARTED = "_chitram_started"


def _operation(statement: str) -> str:
    verb = statement.lstrip()[:6].lower()
    return verb if verb in _VERBS else "other"


def _statement_started(
    _conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _executemany: bool
) -> None:
    if context is not None:
        setattr(context, _STARTED, time.perf_counter())


def _statement_finished(
    _conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _executemany: bool
) -> None:
    started = getattr(context, _STARTED, None)
    if started is not None:
        observe_dependency("database", _operation(statement), time.perf_counter() - started, failed=False)


def _statement_failed(exception_context: ExceptionContext) -> None:
    statement = exception_context.statement
    operation = _operation(statement) if statement else "connect"
    started = getattr(exception_context.execution_context, _STARTED, None)
    if started is None:
        count_dependency_error("database", operation)
    else:
        observe_dependency("database", operation, time.perf_counter() - started, failed=True)


def _time_statements(engine: AsyncEngine) -> None:
    """Count every statement's latency and failures (chitram_dependency_* {dependency="database"}).
    Engine events: two clock reads per statement, whatever code issued it."""
    event.listen(engine.sync_engine, "before_cursor_execute", _statement_started)
    event.listen(engine.sync_engine, "after_cursor_execute", _statement_finished)
    event.listen(engine.sync_engine, "handle_error", _statement_failed)


@dataclass
class Database:
    """The engine and session factory of one app instance."""

    config: SQLAlchemyAsyncConfig
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if settings.is_embedded_database:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        config = build_alchemy_config(settings)
        engine = config.get_engine()
        if settings.is_embedded_database:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _time_statements(engine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        return cls(config=config, engine=engine, sessions=sessions)

    async def session(self) -> AsyncIterator[AsyncSession]:
        """A request-scoped session (Litestar dependency); services decide when to commit."""
        async with self.sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def load_metadata() -> MetaData:
    """The metadata of every table; importing the feature model modules registers them."""
    from chitram.accounts import models as _accounts  # noqa: F401
    from chitram.images import models as _images  # noqa: F401
    from chitram.system import models as _system  # noqa: F401

    return orm_registry.metadata


def upgrade_to_head(settings: Settings) -> None:
    """Apply every migration (sync: Alembic runs its own event loop)."""
    upgrade_to(settings, "head")


def upgrade_to(settings: Settings, revision: str) -> None:
    """Migrate up to ``revision`` (sync: Alembic runs its own event loop).

    A lock file keeps several workers starting at once from migrating the same SQLite file
    together; PostgreSQL deployments migrate in their own step before the app starts.
    """
    from advanced_alchemy.alembic.commands import AlembicCommands

    commands = AlembicCommands(sqlalchemy_config=build_alchemy_config(settings))
    if not settings.is_embedded_database:
        commands.upgrade(revision=revision)
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            commands.upgrade(revision=revision)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def head_revision() -> str:
    """The newest migration revision this version ships."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head())


def known_revisions() -> set[str]:
    """Every migration revision this version ships."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}


def database_revision(settings: Settings) -> str | None:
    """The migration revision the database is at; None before its first migration."""
    import asyncio

    return asyncio.run(_database_revision(settings))


async def _database_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Any) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    engine = build_alchemy_config(settings).get_engine()
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


def missing_database_file(settings: Settings) -> str | None:
    """The embedded database's path when the file is not there (connecting would create it)."""
    from sqlalchemy.engine import make_url

    if not settings.is_embedded_database:
        return None
    path = make_url(settings.database_url).database
    if path and path != ":memory:" and not Path(path).exists():
        return path
    return None
