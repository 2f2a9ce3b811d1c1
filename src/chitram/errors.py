"""Exceptions → RFC 9457 problem+json for the API, a small HTML page for everything else."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from chitram.images.processing import ImageRejected
from chitram.logs import current_request_id
from chitram.storage import ObjectNotFound, StorageConfigError, StorageUnavailable
from chitram.stores import RedisUnavailable

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"
RETRY_AFTER_SECONDS = 30


class ChitramError(Exception):
    """An error a client can act on: it carries its status and a message that says what to do."""

    status_code: int = 400
    problem_type: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class NotFoundError(ChitramError):
    status_code = 404
    problem_type = "not-found"
    title = "Not found"


class ForbiddenError(ChitramError):
    status_code = 403
    problem_type = "forbidden"
    title = "Forbidden"


class PayloadTooLargeError(ChitramError):
    status_code = 413
    problem_type = "payload-too-large"
    title = "Upload too large"


class InvalidRequestError(ChitramError):
    status_code = 400
    problem_type = "invalid-request"
    title = "Invalid request"


class NotAuthenticatedError(ChitramError):
    status_code = 401
    problem_type = "not-authenticated"
    title = "Not authenticated"


class ConflictError(ChitramError):
    status_code = 409
    problem_type = "conflict"
    title = "Conflict"


class GoneError(ChitramError):
    status_code = 410
    problem_type = "gone"
    title = "Gone"


class RateLimitedError(ChitramError):
    status_code = 429
    problem_type = "rate-limited"
    title = "Too many requests"


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None  # on 5xx, so a user's report can be found in the logs


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    """Browsers (which ask for text/html) get a page; the API and every other client a problem."""
    if _path(request).startswith("/api/"):
        return True
    if request.headers.get("hx-request") == "true":
        # htmx and the upload script show the problem's detail in a toast or next to the file.
        return True
    return "text/html" not in request.headers.get("accept", "")


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    problem_type: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> Response[Any]:
    # The same URL answers with a page or a problem depending on these request headers, and an
    # error must never be served from a cache in place of a later success.
    headers = {"Vary": "Accept, HX-Request", "Cache-Control": "no-store", **(headers or {})}
    request_id = current_request_id() if status >= 500 else None
    if not _wants_json(request):
        return Template(
            template_name="error.html",
            context={
                "status": status,
                "title": title,
                "detail": detail,
                "retry_after": headers.get("Retry-After"),
                "problem_type": problem_type,
                "request_id": request_id,
            },
            status_code=status,
            headers=headers,
            media_type=MediaType.HTML,
        )
    body = Problem(
        type=PROBLEM_BASE + problem_type,
        title=title,
        status=status,
        detail=detail,
        instance=_path(request),
        errors=errors,
        request_id=request_id,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_HTTP_PROBLEMS = {
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Upload too large"),
}


def _http_exception_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = exc.detail
    errors: list[dict[str, Any]] | None = None
    problem_type, title = _HTTP_PROBLEMS.get(status, ("http-error", "Request failed"))
    if status == 403 and "CSRF" in detail:
        detail = "this form has expired or did not come from this site; reload the page and try again"
    elif status == 404 and _wants_json(request):
        detail = f"nothing is at {_path(request)}; check the address (the API lives under /api/v1)"
    elif status == 404:
        detail = "there is no page at this address; check it for typos"
    elif status == 405:
        detail = f"{request.method} is not allowed on {_path(request)}"
    elif status == 413:
        limit = request.app.state.settings.upload.max_upload_bytes
        detail = f"the request body is larger than the upload limit of {format_bytes(limit)}; send a smaller file"
    elif isinstance(exc, ValidationException):
        problem_type, title = "validation-error", "Invalid request"
        errors = exc.extra if isinstance(exc.extra, list) else None
        detail = _validation_detail(exc)
    elif isinstance(exc, NotAuthorizedException):
        problem_type, title = "not-authorized", "Not authorized"
    return problem_response(
        request,
        status=status,
        problem_type=problem_type,
        title=title,
        detail=detail,
        headers=exc.headers,
        errors=errors,
    )


def _validation_detail(exc: ValidationException) -> str:
    if isinstance(exc.extra, list) and exc.extra:
        parts = []
        for item in exc.extra:
            if isinstance(item, dict):
                key = item.get("key") or item.get("source") or "request"
                parts.append(f"{key}: {item.get('message', 'invalid value')}")
        if parts:
            return "; ".join(parts) + "; fix these and send the request again"
    return f"{exc.detail}; fix the request and send it again"


def _login_would_help(request: Request[Any, Any, Any]) -> bool:
    """A person who opened a page that needs an account is sent to log in (and back afterwards)."""
    return request.method in ("GET", "HEAD") and not _wants_json(request)


def _path(request: Request[Any, Any, Any]) -> str:
    """The path as the server gave it. Not `request.url`: that parses the client's Host header,
    which can be anything ("a:b"), and an error page must never depend on it."""
    return str(request.scope.get("path", "/"))


def _path_and_query(request: Request[Any, Any, Any]) -> str:
    query = request.scope.get("query_string", b"").decode("latin-1")
    return _path(request) + (f"?{query}" if query else "")


def format_bytes(size: int) -> str:
    gib = size / 1024**3
    if gib >= 1:
        return f"{gib:g} GiB" if gib == int(gib) else f"{gib:.1f} GiB"
    mib = size / (1024 * 1024)
    if mib >= 1:
        return f"{mib:g} MiB" if mib == int(mib) else f"{mib:.1f} MiB"
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.0f} KiB"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one exception handler: maps every error to a problem (API) or an error page (UI).

    It must never raise itself (Litestar would answer with its own bare 500, or none at all):
    whatever goes wrong while describing the error, the client still gets a problem document."""
    try:
        return _handle_exception(request, exc)
    except Exception as failure:
        logger.exception("the error handler failed while handling %r", exc, exc_info=failure)
        return _last_resort_response(exc)


def _last_resort_response(exc: Exception) -> Response[Any]:
    """A problem built from constants and the exception's own status only: nothing here can fail."""
    status = getattr(exc, "status_code", HTTP_500_INTERNAL_SERVER_ERROR)
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = HTTP_500_INTERNAL_SERVER_ERROR
    body = Problem(
        type=PROBLEM_BASE + ("bad-request" if status < 500 else "internal-error"),
        title="Request failed",
        status=status,
        detail="the request could not be handled; check it and try again",
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers={"Cache-Control": "no-store"},
    )


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, NotAuthenticatedError) and _login_would_help(request):
        return Redirect(f"/login?{urlencode({'next': _path_and_query(request)})}", status_code=303)
    if isinstance(exc, ChitramError | ImageRejected):
        return problem_response(
            request,
            status=exc.status_code,
            problem_type=exc.problem_type,
            title=exc.title,
            detail=exc.detail,
            headers=getattr(exc, "headers", None),
        )
    if isinstance(exc, HTTPException):
        return _http_exception_problem(request, exc)
    if isinstance(exc, ObjectNotFound):
        # The database names bytes storage does not have: deleted meanwhile (a stale cache in
        # another worker) or lost. Either way there is nothing to serve; gc reports the lost ones.
        logger.warning("object missing from storage on %s: %s", _path(request), exc)
        return problem_response(
            request,
            status=404,
            problem_type="not-found",
            title="Not found",
            detail="this image is no longer available; it may have just been deleted",
        )
    if any(_is_outage(cause) for cause in _causes(exc)):
        return _unavailable(request, exc)
    logger.exception("unhandled error on %s %s", request.method, _path(request), exc_info=exc)
    return problem_response(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        problem_type="internal-error",
        title="Internal server error",
        detail="something went wrong on our side; try again, and tell the operator if it keeps happening",
    )


# SQLSTATE classes that mean "the database is not there right now", not "the query is wrong":
# connection exceptions, insufficient resources, operator intervention (shutdown, restart),
# and 55000 (e.g. a database that is not accepting connections).
_OUTAGE_SQLSTATE_PREFIXES = ("08", "53", "57P", "55000")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: libraries re-raise driver errors as their own."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, StorageUnavailable | StorageConfigError | OperationalError | PoolTimeoutError | RedisError):
        return True
    if isinstance(exc, DBAPIError):
        return _is_database_outage(exc)
    return _is_network_error(exc)


_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def _is_network_error(exc: BaseException) -> bool:
    """A dependency we could not reach, as opposed to a local OSError (a bug, e.g. a missing file)."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    # asyncpg reports several failed addresses as one plain OSError.
    return isinstance(exc, OSError) and (exc.errno in _NETWORK_ERRNOS or "Connect call failed" in str(exc))


def _is_database_outage(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES)


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if not isinstance(exc, RedisUnavailable):  # the breaker logs a Redis outage once, not per request
        logger.error("dependency unavailable on %s %s: %s", request.method, _path(request), exc)
    return problem_response(
        request,
        status=HTTP_503_SERVICE_UNAVAILABLE,
        problem_type="service-unavailable",
        title="Service temporarily unavailable",
        detail="storage or the database is not answering, so nothing was changed; try again in a minute",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


exception_handlers: ExceptionHandlersMap = {Exception: handle_exception}
