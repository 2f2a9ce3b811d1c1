"""Log lines: one JSON object per line in production (for a log collector), readable text in
development, and the request id on every line logged while a request is being served.

stdlib logging, not structlog: every module already logs through ``logging.getLogger(__name__)``,
and so do the libraries (SQLAlchemy, granian, Litestar). A formatter and a filter on the one
handler give all of them the same format and the request id; a second logging API would not.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

import msgspec

REQUEST_ID: ContextVar[str | None] = ContextVar("chitram_request_id", default=None)
FIELDS = "fields"  # the `extra` key whose mapping a JSON line carries as top-level keys
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def current_request_id() -> str | None:
    """The id of the request being served in this task, if any."""
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request id,
    the record's ``fields`` (extra={"fields": {...}}) and the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id and request_id != "-":
            line["request_id"] = request_id
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return msgspec.json.encode(line).decode()


def _utc_iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def text_formatter() -> logging.Formatter:
    return logging.Formatter(_TEXT_FORMAT)


def log_handler(stream: IO[str], *, json_lines: bool) -> logging.Handler:
    """A handler writing chitram's format to ``stream``, with the request id on every record."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else text_formatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(*, json_lines: bool, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every logger's records through one handler (on stderr), replacing earlier ones."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(stream or sys.stderr, json_lines=json_lines))
    root.setLevel(level)
    # httpx logs every request's full URL at INFO, and an outgoing URL may carry a credential.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def granian_log_config(*, json_lines: bool) -> dict[str, Any]:
    """granian's own loggers (start-up, worker spawns) in the same format, for Granian(log_dictconfig=…)."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if json_lines else {"format": _TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "chitram", "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"chitram": formatter},
        "handlers": {"chitram": handler},
        "loggers": {
            "_granian": {"handlers": ["chitram"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["chitram"], "level": "INFO", "propagate": False},
        },
    }
