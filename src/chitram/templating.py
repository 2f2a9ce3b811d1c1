"""Jinja helpers shared by every page: cache-busted static URLs and human-friendly values."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from litestar.plugins.jinja import JinjaTemplateEngine

from chitram.errors import format_bytes
from chitram.images.sharing import human_size
from chitram.limits import human_wait


def configure_templates(engine: JinjaTemplateEngine, *, static_dir: Path) -> None:
    engine.engine.globals["static_url"] = _static_url_factory(static_dir)
    engine.engine.filters["human_size"] = human_size
    engine.engine.filters["binary_size"] = format_bytes
    engine.engine.filters["human_time"] = human_time
    engine.engine.filters["human_wait"] = human_wait


def _static_url_factory(static_dir: Path) -> Callable[[str], str]:
    @functools.lru_cache(maxsize=64)
    def digest(path: str, _mtime_ns: int) -> str:
        return hashlib.sha256((static_dir / path).read_bytes()).hexdigest()[:10]

    def static_url(path: str) -> str:
        """/static/<path>?v=<content hash>: cached for a year, yet a changed file is fetched at once."""
        return f"/static/{path}?v={digest(path, (static_dir / path).stat().st_mtime_ns)}"

    return static_url


def human_time(moment: datetime) -> str:
    """27 Nov 2026, 07:30 UTC — unambiguous in every locale."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")
