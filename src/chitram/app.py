"""create_app(settings): the one place where routes, stores, storage and lifespan are wired."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from litestar import Litestar
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession

from chitram import __version__
from chitram.accounts.api import MeController, TokenController
from chitram.accounts.auth import clear_dead_session, identified_user_id, load_viewer
from chitram.accounts.devices import DeviceTokens
from chitram.accounts.passwords import Passwords
from chitram.accounts.services import AccountLimits, AccountService
from chitram.accounts.sessions import SESSION_COOKIE, SessionStore
from chitram.accounts.views import AccountPages, AdminPages
from chitram.db import Database, upgrade_to_head
from chitram.errors import exception_handlers
from chitram.guard import guard_requests
from chitram.images.abuse import UploadGate, UploadPolicy
from chitram.images.access import LinkSigner
from chitram.images.api import ImageController, mark_host_links
from chitram.images.cursors import PageCursors
from chitram.images.processing import ImageLimits, ImageProcessor
from chitram.images.services import ImageService
from chitram.images.views import ImagePages
from chitram.limits import RateLimiter
from chitram.logs import configure_logging
from chitram.openapi import StrictStructSchemaPlugin, answer_options
from chitram.proxies import trusted_proxy_middleware
from chitram.security import SessionCsrf, cookie_name, csrf_config, csrf_guard_middleware, security_headers_hook
from chitram.settings import Settings, check_production_settings, resolve_secret_key
from chitram.storage import ObjectStorage, StorageConfigError, StorageUnavailable, TimedStorage, create_storage
from chitram.stores import SafeCache, Stores, create_stores
from chitram.system.gauges import refresh_operational_gauges
from chitram.system.health import HealthChecker, HealthController
from chitram.system.metrics import GaugeRefresher, metrics_handlers
from chitram.system.requests import observe_requests
from chitram.system.views import OperatorPages
from chitram.templating import configure_templates

logger = logging.getLogger(__name__)

STORAGE_RETRY_SECONDS = 5
STALE_UPLOAD_SECONDS = 3600
STATIC_MAX_AGE = 365 * 24 * 3600
MEMORY_SWEEP_SECONDS = 600


def frontend_dir() -> Path:
    """Templates and static files: inside the installed wheel, or at the repository root."""
    packaged = Path(__file__).parent / "frontend"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "frontend"


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    check_production_settings(settings)
    secret_key = resolve_secret_key(settings)
    database = Database.from_settings(settings)
    storage: ObjectStorage = TimedStorage(create_storage(settings))
    stores = create_stores(settings)
    cache = SafeCache(stores, ttl_seconds=settings.cache.cache_ttl_seconds)
    processor = ImageProcessor(
        limits=ImageLimits(
            max_pixels=settings.upload.max_pixels,
            max_frames=settings.upload.max_frames,
            max_total_pixels=settings.upload.max_total_pixels,
        ),
        concurrency=settings.upload.processing_concurrency,
    )
    health = HealthChecker(database, storage, stores, settings.health.health_timeout_seconds)
    passwords = Passwords()
    limiter = RateLimiter(stores)  # one per app: in memory mode it holds the counters
    account_limits = AccountLimits.from_settings(settings.limits)
    sessions = SessionStore(stores, lifetime_seconds=settings.accounts.session_days * 24 * 3600)
    upload_gate = UploadGate(UploadPolicy.from_settings(settings), limiter)
    cursors = PageCursors(secret_key)
    devices = DeviceTokens(secret_key)
    csrf = csrf_config(secret_key, secure_cookie=settings.is_production)
    session_csrf = SessionCsrf(secret_key, csrf)
    csrf_guard = csrf_guard_middleware(
        session_csrf,
        session_cookie=cookie_name(SESSION_COOKIE, production=settings.is_production),
        public_url=settings.server.public_url,
    )

    def account_service(db_session: NamedDependency[AsyncSession]) -> AccountService:
        """Per request (a dependency), and for code that opens its own session (auth, tests)."""
        return AccountService(db_session, passwords=passwords, limiter=limiter, limits=account_limits, devices=devices)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        if settings.is_embedded_database:
            # The embedded shape migrates its own data dir; production migrates as its own step.
            await anyio.to_thread.run_sync(upgrade_to_head, settings)
        await anyio.to_thread.run_sync(_clear_stale_uploads, settings.data_dir / "tmp")
        await passwords.warm_up()
        try:
            async with anyio.create_task_group() as background:
                if not await _prepare_storage(storage):
                    background.start_soon(_keep_preparing_storage, storage)
                if stores.redis is None:
                    background.start_soon(_sweep_memory_store, stores)
                try:
                    yield
                finally:
                    background.cancel_scope.cancel()
        finally:
            # Outside the cancelled task group, or these awaits would be cancelled too and
            # leave connections open.
            await storage.close()
            await stores.close()
            await database.dispose()

    def provide_image_service(db_session: NamedDependency[AsyncSession]) -> ImageService:
        return ImageService(db_session, storage=storage, cache=cache, processor=processor, cursors=cursors)

    # Scrape-time gauges (images, stored bytes, last backup): async callables that set them,
    # run before each /metrics answer (see system/metrics.py).
    async def refresh_facts() -> None:
        await refresh_operational_gauges(database)

    refresh_gauges: list[GaugeRefresher] = [refresh_facts]

    templates = frontend_dir() / "templates"
    app = Litestar(
        route_handlers=[
            ImageController,
            MeController,
            TokenController,
            ImagePages,
            AccountPages,
            AdminPages,
            HealthController,
            *metrics_handlers(token=settings.metrics.metrics_token, refresh_gauges=refresh_gauges),
            OperatorPages,
            create_static_files_router(
                path="/static",
                directories=[frontend_dir() / "static"],
                include_in_schema=False,
                # Pages link static files with a content hash in the query (templating.static_url).
                cache_control=CacheControlHeader(public=True, max_age=STATIC_MAX_AGE),
            ),
        ],
        dependencies={
            "db_session": Provide(database.session),
            "image_service": Provide(provide_image_service, sync_to_thread=False),
            "account_service": Provide(account_service, sync_to_thread=False),
            "viewer": Provide(load_viewer),
        },
        middleware=[csrf_guard],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        template_config=TemplateConfig(
            directory=templates,
            engine=JinjaTemplateEngine,
            engine_callback=lambda engine: configure_templates(engine, static_dir=frontend_dir() / "static"),
        ),
        plugins=[HTMXPlugin(), StrictStructSchemaPlugin()],
        before_request=answer_options,
        csrf_config=csrf,
        before_send=[security_headers_hook(settings.server.public_url), clear_dead_session, mark_host_links],
        openapi_config=OpenAPIConfig(
            title="Chitram",
            version=__version__,
            description="Upload, share and browse images.",
            path="/schema",
            # Only the document: the interactive viewers load their scripts from CDNs.
            render_plugins=[JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A personal API token, created on /account or with POST /api/v1/tokens.",
                    )
                }
            ),
        ),
        request_max_body_size=settings.request_body_limit,
        state=State(
            {
                "settings": settings,
                "secret_key": secret_key,
                "health": health,
                "database": database,
                "storage": storage,
                "stores": stores,
                "cache": cache,
                "processor": processor,
                "passwords": passwords,
                "limiter": limiter,
                "sessions": sessions,
                "signer": LinkSigner(secret_key),
                "upload_gate": upload_gate,
                "account_service_factory": account_service,
                "session_csrf": session_csrf,
            }
        ),
        debug=False,
        # The process sets up logging (chitram.logs: JSON in production); Litestar's default
        # would replace the root handler with its own text format when the app starts.
        logging_config=None,
    )
    # Around Litestar's whole handler rather than in `middleware` (which runs only once a route
    # matched), from the inside out: the guard (time, size and framing limits), then the request
    # id, metrics and log line (so the guard's refusals are logged and counted too), then the
    # client's address behind the trusted proxy, which both of them use.
    guarded = guard_requests(app.asgi_handler, settings)
    observed = observe_requests(guarded, user_id_of=identified_user_id)
    app.asgi_handler = trusted_proxy_middleware(settings.server.trusted_proxies)(observed)
    return app


async def _prepare_storage(storage: ObjectStorage) -> bool:
    """Create the bucket (or folder) if needed; False when storage does not answer yet."""
    try:
        await storage.ensure_ready()
    except StorageConfigError as exc:
        # Waiting would not help (e.g. the bucket is missing and the key may not create it).
        logger.critical("storage is misconfigured, not starting: %s", exc)
        raise
    except StorageUnavailable:
        # Start anyway: readiness reports storage as down until it answers.
        logger.warning("storage is not answering at start; /health/ready will say so", exc_info=True)
        return False
    return True


async def _keep_preparing_storage(storage: ObjectStorage) -> None:
    """Retry until storage answers, so a bucket missing at start is created once S3 is back."""
    while True:
        await anyio.sleep(STORAGE_RETRY_SECONDS)
        try:
            await storage.ensure_ready()
        except StorageUnavailable:
            continue
        except StorageConfigError:
            logger.critical("storage is misconfigured", exc_info=True)
            continue
        logger.info("storage answers again and is ready")
        return


async def _sweep_memory_store(stores: Stores) -> None:
    """The memory store forgets an expired entry only when it is read again; sessions that are
    never used again (a login whose cookie was thrown away) would pile up for 30 days."""
    while True:
        await anyio.sleep(MEMORY_SWEEP_SECONDS)
        await stores.memory.delete_expired()


def _clear_stale_uploads(folder: Path) -> None:
    """Spooled uploads are removed after each request; a crash can leave some behind."""
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_UPLOAD_SECONDS
    for leftover in folder.glob("upload-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def create_app_from_env() -> Litestar:
    """Factory for granian (`--factory`)."""
    settings = Settings.from_env()
    configure_logging(json_lines=settings.is_production)
    return create_app(settings)
