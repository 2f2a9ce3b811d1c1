"""`chitram-admin`: migrations, health probes, garbage collection and accounts for operators."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx
from advanced_alchemy.cli import add_migration_commands

from chitram.cli.backup import backup_group
from chitram.cli.common import CommandError, load_settings
from chitram.cli.status import status_command
from chitram.cli.storage import storage_group
from chitram.db import Database, build_alchemy_config, missing_database_file
from chitram.images.services import GarbageReport
from chitram.settings import Settings

if TYPE_CHECKING:
    from chitram.accounts.services import AccountService
    from chitram.images.services import ImageService
    from chitram.system.health import Readiness

T = TypeVar("T")
# Tables the account and image commands need; without them the database is not migrated yet.
REQUIRED_TABLES = ("users", "api_tokens", "images", "blobs")
STDIN_OPTION_HELP = (
    "Read the password from the first line of stdin instead of asking for it "
    "(for scripts; the password is never accepted as an argument)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Operate a Chitram installation; settings come from CHITRAM_* variables (see .env.example)."""
    ctx.ensure_object(dict)


@cli.group(name="db")
@click.pass_context
def db_group(ctx: click.Context) -> None:
    """Database migrations (advanced-alchemy / Alembic). Use `upgrade --no-prompt` in scripts."""
    settings = load_settings()
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx.obj["configs"] = [build_alchemy_config(settings)]


add_migration_commands(db_group)


@cli.command(name="migrate")
def migrate_command() -> None:
    """Bring the database to this release's schema: the deploy's migration step.

    As `db upgrade --no-prompt`, except for a database already at a revision this release does
    not know. A newer release migrated it and was then rolled back; migrations only add
    (docs/deployment/README.md), so this release runs on that schema, and the step leaves it
    as it is and succeeds instead of failing every later start.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from chitram import __version__
    from chitram.db import database_revision, head_revision, known_revisions, upgrade_to_head

    settings = load_settings()
    try:
        revision = database_revision(settings)
        if revision is not None and revision not in known_revisions():
            click.echo(
                f"the database is at revision {revision}, which this release ({__version__}) does not know: "
                "a newer release migrated it; leaving it as it is"
            )
            return
        upgrade_to_head(settings)
        click.echo(f"the database is at this release's schema (revision {head_revision()})")
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(f"cannot migrate the database: {exc}") from None


@cli.command()
@click.option("--url", default=None, help="Base URL of the app (default: http://127.0.0.1:$CHITRAM_PORT).")
@click.option(
    "--direct",
    is_flag=True,
    help="Check the database, storage and Redis named by the CHITRAM_* settings directly, "
    "without the app (e.g. before it starts); errors are shown in full.",
)
@click.option("--wait", "wait_seconds", type=float, default=0.0, help="Keep trying up to this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the readiness document as JSON.")
def health(url: str | None, direct: bool, wait_seconds: float, as_json: bool) -> None:
    """Exit 0 when the app is ready (database, storage and cache answer); otherwise 1, naming what is down."""
    settings = load_settings()
    if direct and url:
        raise click.UsageError("--direct checks the services themselves and --url asks the app: give one of them")
    base = (url or f"http://127.0.0.1:{settings.server.port}").rstrip("/")
    deadline = time.monotonic() + wait_seconds
    while True:
        ok, document, problem = _probe_direct(settings) if direct else _probe(base + "/health/ready")
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if as_json:
        click.echo(json.dumps(document if document is not None else {"status": "unreachable", "error": problem}))
    elif ok:
        click.echo("ready")
    else:
        click.echo(f"not ready: {problem}", err=True)
    sys.exit(0 if ok else 1)


def _probe_direct(settings: Settings) -> tuple[bool, dict[str, object] | None, str]:
    import msgspec

    readiness = asyncio.run(_direct_readiness(settings))
    document = msgspec.to_builtins(readiness)
    return readiness.ready, document, "" if readiness.ready else _down(document)


async def _direct_readiness(settings: Settings) -> Readiness:
    """The app's readiness checks, run from the settings in this process.

    Each client is made inside its own check, so a setting it refuses (a malformed URL, an
    invalid bucket name) reports that component as down instead of ending the command.
    """
    from chitram.storage import create_storage
    from chitram.stores import create_stores
    from chitram.system.health import check_components, select_one

    closers: list[Callable[[], Awaitable[None]]] = []

    async def check_database() -> None:
        missing = missing_database_file(settings)
        if missing is not None:
            # Connecting would create an empty SQLite file: report the missing one instead.
            raise FileNotFoundError(f"no database at {missing}; run `chitram-admin db upgrade`")
        database = Database.from_settings(settings)
        closers.append(database.dispose)
        await select_one(database.engine)

    async def check_storage() -> None:
        storage = create_storage(settings)
        closers.append(storage.close)
        await storage.ping()

    async def check_cache() -> None:
        stores = create_stores(settings)
        closers.append(stores.close)
        await stores.ping()

    checks = {"database": check_database, "storage": check_storage, "cache": check_cache}
    try:
        return await check_components(checks, limit_seconds=settings.health.health_timeout_seconds, full_errors=True)
    finally:
        for close in closers:
            with suppress(Exception):
                await close()


def _down(document: dict[str, Any]) -> str:
    down = [
        f"{name} ({status.get('error') or 'down'})"
        for name, status in document.get("components", {}).items()
        if status.get("status") != "ok"
    ]
    return "down: " + ", ".join(down) if down else "not ready"


def _probe(url: str) -> tuple[bool, dict[str, object] | None, str]:
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        return False, None, f"{url} is unreachable ({type(exc).__name__}: {exc})"
    try:
        document = response.json()
    except ValueError:
        return False, None, f"{url} answered {response.status_code} without a readiness document"
    if response.status_code == 200:
        return True, document, ""
    if not document.get("components"):
        return False, document, f"status {response.status_code}"
    return False, document, _down(document)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option(
    "--grace",
    "grace_seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="Leave objects younger than this many seconds (uploads in flight).",
)
def gc(dry_run: bool, grace_seconds: float) -> None:
    """Remove stored objects no image uses; report images whose objects are missing (exit 1 then)."""
    report = asyncio.run(_gc(load_settings(), dry_run=dry_run, grace_seconds=grace_seconds))
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.collected_blobs)} unreferenced blob(s)")
    click.echo(f"{verb} {len(report.orphan_objects)} orphan object(s)")
    for key in report.orphan_objects:
        click.echo(f"  orphan: {key}")
    for key in report.missing_objects:
        click.echo(f"  MISSING: {key} (an image needs it; restore it from a backup)", err=True)
    sys.exit(1 if report.missing_objects else 0)


async def _gc(settings: Settings, *, dry_run: bool, grace_seconds: float) -> GarbageReport:
    from chitram.images.services import collect_garbage

    async with open_services(settings) as (_accounts, images):
        return await collect_garbage(images, grace_seconds=grace_seconds, dry_run=dry_run)


# -- services outside the web app ------------------------------------------------------


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[tuple[AccountService, ImageService]]:
    """The account and image services on one database session, wired as create_app wires them.

    Refuses an unmigrated database up front (a hint beats a SQL error halfway through a change),
    and closes storage, stores and the engine however the block ends.
    """
    from chitram.accounts.passwords import Passwords
    from chitram.accounts.services import AccountLimits, AccountService
    from chitram.images.processing import ImageLimits, ImageProcessor
    from chitram.images.services import ImageService
    from chitram.limits import RateLimiter
    from chitram.storage import create_storage
    from chitram.stores import SafeCache, create_stores

    _require_database_file(settings)
    database = Database.from_settings(settings)
    storage = create_storage(settings)
    stores = create_stores(settings)
    try:
        await _require_tables(database)
        async with database.sessions() as session:
            accounts = AccountService(
                session,
                passwords=Passwords(),
                limiter=RateLimiter(stores),
                limits=AccountLimits.from_settings(settings.limits),
            )
            images = ImageService(
                session,
                storage=storage,
                # Only invalidated here. With Redis the app sees the tombstones; without it the
                # server's cache lives in its own memory and keeps stale entries until they expire.
                cache=SafeCache(stores, ttl_seconds=settings.cache.cache_ttl_seconds),
                processor=ImageProcessor(limits=ImageLimits(), concurrency=1),
            )
            yield accounts, images
    finally:
        await storage.close()
        await stores.close()
        await database.dispose()


def _require_database_file(settings: Settings) -> None:
    """Refuse before connecting: SQLite would create an empty file (and folder) at a mistyped path."""
    path = missing_database_file(settings)
    if path is not None:
        raise CommandError(
            f"there is no database at {path}; run `chitram-admin db upgrade` to create it, "
            "or set CHITRAM_DATA_DIR (or CHITRAM_DATABASE_URL) to the installation's"
        )


async def _require_tables(database: Database) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    try:
        async with database.engine.connect() as connection:
            present = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    except (DBAPIError, OSError) as exc:
        raise CommandError(
            f"cannot reach the database ({exc}); check CHITRAM_DATABASE_URL and that the database is running"
        ) from None
    missing = [table for table in REQUIRED_TABLES if table not in present]
    if missing:
        raise CommandError(
            f"the database is not migrated (missing tables: {', '.join(missing)}); run `chitram-admin db upgrade` first"
        )


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run one async step; a service's refusal becomes `error: <detail>` and exit status 1."""
    from chitram.errors import ChitramError

    try:
        return asyncio.run(work)
    except ChitramError as exc:
        raise CommandError(exc.detail) from None


# -- passwords: typed twice at a terminal, or one line on stdin; never an argument ---------


def _stdin_is_a_terminal() -> bool:
    """Whether a person can answer prompts (a function of its own so tests can stand in for one)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _check_password_source(from_stdin: bool) -> None:
    """Fail at once, not hang on a prompt nobody sees, when no one is at a terminal."""
    if not from_stdin and not _stdin_is_a_terminal():
        raise click.UsageError(
            "stdin is not a terminal, so nobody can type the password; "
            "pipe it in and add --password-stdin (it is never taken from the command line)"
        )


def _read_new_password(from_stdin: bool) -> str:
    if from_stdin:
        return _password_from_stdin()
    return click.prompt(
        "New password",
        hide_input=True,
        confirmation_prompt="Repeat the password",
        value_proc=_acceptable_password,
        err=True,  # stdout carries only the result
    )


def _password_from_stdin() -> str:
    line = sys.stdin.readline()
    if not line:
        raise click.UsageError("--password-stdin: stdin was empty; pipe the password in as one line")
    # Only the line ending goes: spaces (and everything else) may belong to the password.
    return line.removesuffix("\n").removesuffix("\r")


def _acceptable_password(password: str) -> str:
    """The service's own rule, checked while prompting so a short password is asked again."""
    from chitram.accounts.passwords import check_new_password
    from chitram.errors import ChitramError

    try:
        return check_new_password(password)
    except ChitramError as exc:
        raise click.UsageError(exc.detail) from None


# -- accounts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """What the commands report about one account (plain values, no session needed)."""

    id: int
    email: str
    is_admin: bool
    images: int


@dataclass(frozen=True)
class AccountRow:
    """One line of `user list`."""

    id: int
    email: str
    admin: bool
    disabled: bool
    images: int
    used_bytes: int
    created_at: datetime
    last_login_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "admin": self.admin,
            "disabled": self.disabled,
            "images": self.images,
            "used_bytes": self.used_bytes,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }


async def _account(accounts: AccountService, images: ImageService, email: str) -> Account:
    user = await accounts.find_user(email)
    # Copied out first: owned_ids ends the transaction with a rollback, which expires `user`.
    user_id, address, is_admin = user.id, user.email, user.is_admin
    owned = await images.owned_ids(user_id)
    return Account(id=user_id, email=address, is_admin=is_admin, images=len(owned))


async def _lookup(settings: Settings, email: str) -> Account:
    async with open_services(settings) as (accounts, images):
        return await _account(accounts, images, email)


async def _existing(settings: Settings, email: str) -> Account | None:
    from chitram.accounts.services import clean_email
    from chitram.errors import NotFoundError

    clean_email(email)  # a malformed address is refused before anyone types a password
    async with open_services(settings) as (accounts, images):
        try:
            return await _account(accounts, images, email)
        except NotFoundError:
            return None


async def _create(settings: Settings, email: str, password: str, *, is_admin: bool) -> Account:
    async with open_services(settings) as (accounts, _images):
        user = await accounts.register(email, password, is_admin=is_admin)
        return Account(id=user.id, email=user.email, is_admin=user.is_admin, images=0)


async def _list(settings: Settings) -> list[AccountRow]:
    async with open_services(settings) as (accounts, _images):
        return [
            AccountRow(
                id=user.id,
                email=user.email,
                admin=user.is_admin,
                disabled=user.is_disabled,
                images=count,
                used_bytes=user.used_bytes,
                created_at=user.created_at,
                last_login_at=user.last_login_at,
            )
            for user, count in await accounts.list_users()
        ]


async def _set_disabled(settings: Settings, email: str, *, disabled: bool) -> Account:
    async with open_services(settings) as (accounts, images):
        account = await _account(accounts, images, email)
        await accounts.set_disabled(account.id, disabled)
        return account


async def _set_password(settings: Settings, user_id: int, password: str) -> None:
    async with open_services(settings) as (accounts, _images):
        await accounts.set_password(user_id, password)


async def _delete(settings: Settings, user_id: int, *, delete_images: bool) -> tuple[int, int]:
    """(images deleted, images kept online without an owner)."""
    from chitram.accounts.removal import delete_account

    async with open_services(settings) as (accounts, images):
        owned = len(await images.owned_ids(user_id))
        deleted = await delete_account(accounts, images, user_id, delete_images=delete_images)
        return deleted, owned - deleted


@cli.group(name="user")
def user_group() -> None:
    """Accounts: create, list, disable, enable, delete, set-password.

    Passwords are typed at a prompt (hidden, twice) or piped in with --password-stdin;
    they are never taken from the command line, where `ps` and shell history would show them.
    """


@user_group.command(name="create")
@click.option("--email", required=True, help="The account's email address, which it logs in with.")
@click.option("--admin", "is_admin", is_flag=True, help="Make the account an administrator.")
@click.option("--password-stdin", is_flag=True, help=STDIN_OPTION_HELP)
def user_create(email: str, is_admin: bool, password_stdin: bool) -> None:
    """Create an account; asks for its password twice (hidden) unless --password-stdin is given."""
    _check_password_source(password_stdin)
    settings = load_settings()
    existing = _run(_existing(settings, email))
    if existing is not None:
        raise CommandError(
            f"user {existing.id} {existing.email} exists already (addresses are compared ignoring case); "
            f"use another address, or `chitram-admin user set-password {existing.email}`"
        )
    password = _read_new_password(password_stdin)
    account = _run(_create(settings, email, password, is_admin=is_admin))
    click.echo(f"created user {account.id} {account.email}" + (" (admin)" if account.is_admin else ""))


@user_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (byte counts and ISO 8601 times).")
def user_list(as_json: bool) -> None:
    """List every account, oldest first: admin, disabled, images, space used, created, last login."""
    rows = _run(_list(load_settings()))
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
    elif not rows:
        click.echo("no accounts yet; create one with `chitram-admin user create --email EMAIL --admin`")
    else:
        _print_table(rows)


def _print_table(rows: Sequence[AccountRow]) -> None:
    from chitram.images.sharing import human_size

    header = ("ID", "EMAIL", "ADMIN", "DISABLED", "IMAGES", "USED", "CREATED (UTC)", "LAST LOGIN (UTC)")
    lines = [header] + [
        (
            str(row.id),
            row.email,
            _yes_no(row.admin),
            _yes_no(row.disabled),
            str(row.images),
            human_size(row.used_bytes),
            _utc_minute(row.created_at),
            _utc_minute(row.last_login_at),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _utc_minute(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    if moment.tzinfo is None:  # stored as UTC; some drivers hand it back without a zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


@user_group.command(name="disable")
@click.argument("email")
def user_disable(email: str) -> None:
    """Disable an account: its web sessions end at once and its API tokens stop working."""
    account = _run(_set_disabled(load_settings(), email, disabled=True))
    click.echo(
        f"disabled user {account.id} {account.email}; its sessions have ended and its API tokens are refused "
        f"(undo with `chitram-admin user enable {account.email}`)"
    )


@user_group.command(name="enable")
@click.argument("email")
def user_enable(email: str) -> None:
    """Enable a disabled account: it can log in again and its API tokens work again."""
    account = _run(_set_disabled(load_settings(), email, disabled=False))
    click.echo(f"enabled user {account.id} {account.email}; it can log in again")


@user_group.command(name="delete")
@click.argument("email")
@click.option("--delete-images", is_flag=True, help="Delete the account's images too.")
@click.option(
    "--keep-images",
    is_flag=True,
    help="Keep its public and unlisted images online without an owner "
    "(its private ones are deleted: nobody could ever see them again).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
def user_delete(email: str, delete_images: bool, keep_images: bool, yes: bool) -> None:
    """Delete an account and its API tokens; say what happens to its images (--delete-images or --keep-images)."""
    if delete_images == keep_images:
        raise click.UsageError(
            "say what happens to the account's images: give exactly one of --delete-images and --keep-images"
        )
    if not yes and not _stdin_is_a_terminal():
        raise click.UsageError("stdin is not a terminal, so nobody can confirm; add --yes to delete without asking")
    settings = load_settings()
    account = _run(_lookup(settings, email))
    if not yes and not click.confirm(_deletion_question(account, delete_images=delete_images), err=True):
        raise CommandError("not confirmed; nothing was deleted")
    deleted, kept = _run(_delete(settings, account.id, delete_images=delete_images))
    summary = f"deleted user {account.id} {account.email}; {deleted} image(s) deleted"
    click.echo(summary + (f", {kept} kept online without an owner" if not delete_images else ""))
    if deleted and not settings.cache.redis_url:
        # Without Redis a running server caches metadata in its own memory, out of this process's reach.
        click.echo(
            "note: a running `chitram` may still describe the deleted images (not serve them) for up to "
            f"{settings.cache.cache_ttl_seconds} s; restart it to forget them at once",
            err=True,
        )


def _deletion_question(account: Account, *, delete_images: bool) -> str:
    subject = f"Delete user {account.id} {account.email}"
    if delete_images:
        return f"{subject} and its {account.images} image(s)? This cannot be undone."
    return (
        f"{subject}? Of its {account.images} image(s), the public and unlisted ones stay online without "
        "an owner and the private ones are deleted. This cannot be undone."
    )


@user_group.command(name="set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help=STDIN_OPTION_HELP)
def user_set_password(email: str, password_stdin: bool) -> None:
    """Set an account's password (no current password needed) and end its web sessions."""
    _check_password_source(password_stdin)
    settings = load_settings()
    account = _run(_lookup(settings, email))
    password = _read_new_password(password_stdin)
    _run(_set_password(settings, account.id, password))
    click.echo(
        f"set a new password for user {account.id} {account.email}; its web sessions have ended "
        "(its API tokens still work: the owner revokes them on /account, or disable the account)"
    )


def main() -> None:
    cli(obj={})


cli.add_command(backup_group)
cli.add_command(storage_group)
cli.add_command(status_command)
