"""`chitram`: serve the app with granian. With no configuration it runs the embedded shape."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

# Nothing imported here may import prometheus_client (chitram.db, chitram.app do): it picks
# its single- or multi-process mode once, at import, from PROMETHEUS_MULTIPROC_DIR.
from chitram.logs import granian_log_config
from chitram.settings import Settings, UnsafeSettingsError, check_production_settings, resolve_secret_key

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chitram",
        description="Serve Chitram. Settings come from CHITRAM_* variables (see .env.example); "
        "with none set it keeps everything in ./data (SQLite, files, memory cache).",
    )
    parser.add_argument("--host", default=settings.server.host, help="address to listen on (CHITRAM_HOST)")
    parser.add_argument("--port", type=int, default=settings.server.port, help="port to listen on (CHITRAM_PORT)")
    parser.add_argument(
        "--workers", type=int, default=settings.server.workers, help="worker processes (CHITRAM_WORKERS)"
    )
    parser.add_argument("--reload", action="store_true", help="restart when the code changes (development)")
    return parser.parse_args(argv)


def prepare_metrics_dir() -> Path:
    """An empty directory for this server's metric files, named to prometheus_client.

    Workers (forked or spawned by granian) inherit the variable, so each writes its own files
    there and /metrics sums them. A new directory per start: counters from an earlier run, or
    from another server on this machine, are never added in.
    """
    if "prometheus_client" in sys.modules:
        # Imported before the variable was set: each worker would count alone, silently.
        raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
    path = Path(tempfile.mkdtemp(prefix="chitram-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def main(argv: list[str] | None = None) -> None:
    metrics_dir = prepare_metrics_dir()
    try:
        serve(argv)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(argv: list[str] | None) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    from chitram.db import upgrade_to_head

    try:
        settings = Settings.from_env()
    except ValidationError as exc:
        sys.exit(f"chitram: refusing to start: invalid settings:\n{exc}")
    args = parse_args(argv, settings)
    try:
        check_production_settings(settings)
        resolve_secret_key(settings)
    except UnsafeSettingsError as exc:
        sys.exit(f"chitram: refusing to start: {exc}")
    if args.workers > 1 and not settings.cache.redis_url:
        sys.exit(
            "chitram: refusing to start: --workers above 1 needs CHITRAM_REDIS_URL; "
            "the memory cache is per process, so workers would serve each other's stale metadata"
        )
    if settings.is_embedded_database:
        upgrade_to_head(settings)
    local_or_any = ("127.0.0.1", "0.0.0.0", "::")  # noqa: S104 - only decides which address to print
    shown_host = "localhost" if args.host in local_or_any else args.host
    print(f"Chitram is starting on http://{shown_host}:{args.port}/ (data in {settings.data_dir})", flush=True)
    Granian(
        "chitram.app:create_app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        address=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        log_access=False,  # the app logs each request itself (chitram.system.requests)
        log_dictconfig=granian_log_config(json_lines=settings.is_production),
        # Headers must arrive within this time; granian also closes an idle keep-alive connection
        # after it (the wait for the next request's headers). Bodies are timed by chitram.guard.
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.requests.header_timeout_seconds * 1000)),
    ).serve()


if __name__ == "__main__":
    main()
