"""`chitram-admin`: migrations, health probes and garbage collection for operators."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
import httpx
from advanced_alchemy.cli import add_migration_commands
from pydantic import ValidationError

from chitram.db import Database, build_alchemy_config
from chitram.images.services import GarbageReport
from chitram.settings import Settings


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


@cli.command()
@click.option("--url", default=None, help="Base URL of the app (default: http://127.0.0.1:$CHITRAM_PORT).")
@click.option("--wait", "wait_seconds", type=float, default=0.0, help="Keep trying up to this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the readiness document as JSON.")
def health(url: str | None, wait_seconds: float, as_json: bool) -> None:
    """Exit 0 when the app is ready (database, storage and cache answer); otherwise 1, naming what is down."""
    settings = load_settings()
    base = (url or f"http://127.0.0.1:{settings.server.port}").rstrip("/")
    deadline = time.monotonic() + wait_seconds
    while True:
        ok, document, problem = _probe(base + "/health/ready")
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
    down = [
        f"{name} ({status.get('error') or 'down'})"
        for name, status in document.get("components", {}).items()
        if status.get("status") != "ok"
    ]
    return False, document, "down: " + ", ".join(down) if down else f"status {response.status_code}"


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
    from chitram.images.processing import ImageLimits, ImageProcessor
    from chitram.images.services import ImageService, collect_garbage
    from chitram.storage import create_storage
    from chitram.stores import SafeCache, create_stores

    database = Database.from_settings(settings)
    storage = create_storage(settings)
    stores = create_stores(settings)
    try:
        async with database.sessions() as session:
            service = ImageService(
                session,
                storage=storage,
                cache=SafeCache(stores, ttl_seconds=1),
                processor=ImageProcessor(limits=ImageLimits(), concurrency=1),
            )
            return await collect_garbage(service, grace_seconds=grace_seconds, dry_run=dry_run)
    finally:
        await storage.close()
        await stores.close()
        await database.dispose()


def load_settings() -> Settings:
    """Settings from the environment, or a one-line refusal instead of a traceback."""
    try:
        return Settings.from_env()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from None


def main() -> None:
    cli(obj={})
