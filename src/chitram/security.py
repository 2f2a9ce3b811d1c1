"""Browser-facing protections: CSRF for forms, and the security headers every response carries."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from secrets import compare_digest
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.csrf import CSRF_SECRET_LENGTH, generate_csrf_hash
from litestar.types import Message, Scope
from litestar.utils.scope.state import ScopeState

from chitram.errors import ForbiddenError

CSRF_COOKIE = "chitram_csrf"
CSRF_HEADER = "x-csrftoken"
CSRF_FIELD = "_csrf_token"  # the field name Litestar's middleware reads from forms
# Routes that stream their own multipart body opt out of the middleware (it would buffer the whole
# body to look for the form field) and call `verify_csrf` once they have parsed it.
SELF_CHECKED = {"exclude_from_csrf": True}


def cookie_name(name: str, *, production: bool) -> str:
    """In production cookies carry the `__Host-` prefix: browsers then take them only with Secure,
    Path=/ and no Domain, so a sibling subdomain (or plain http) cannot plant or overwrite them.
    Development on http://localhost keeps the plain name, since `__Host-` requires Secure."""
    return f"__Host-{name}" if production else name


def page_policy(public_url: str = "") -> str:
    """Pages load scripts, styles and images from this origin only (and images from PUBLIC_URL,
    which their links are built from). htmx is configured by a meta tag and a static file, so
    neither scripts nor styles need 'unsafe-inline'."""
    parts = urlsplit(public_url)
    image_origin = f" {parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self'{image_origin}",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


# Anything that is not a page (JSON, problems, static files) has nothing to load and no reason to be framed.
RESOURCE_POLICY = "default-src 'none'; frame-ancestors 'none'"
REFERRER_POLICY = "same-origin"


def derive_key(secret_key: str, purpose: str) -> str:
    """A separate key per use, so a token minted for one purpose never verifies for another."""
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def csrf_config(secret_key: str, *, secure_cookie: bool) -> CSRFConfig:
    return CSRFConfig(
        secret=derive_key(secret_key, "csrf"),
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_secure=secure_cookie,
        cookie_httponly=True,  # pages carry the token themselves; scripts never read the cookie
        cookie_samesite="lax",
        # The JSON API believes bearer tokens only, never cookies (accounts/auth.py), so a forged
        # cross-site request to it is anonymous: there is nothing for a CSRF token to protect.
        # Bytes, probes and static files change nothing and must not set a cookie (shared caches
        # skip responses that do).
        exclude=[
            r"^/api/",
            r"^/static/",
            r"^/health(/|$)",
            r"^/schema(/|$)",
            r"^/i/[A-Za-z0-9_-]{12}\.[A-Za-z0-9]{1,5}$",
            r"^/i/[A-Za-z0-9_-]{12}/(thumbnail|preview)\.webp$",
        ],
    )


def verify_csrf(request: Request[Any, Any, Any], submitted: str | None) -> None:
    """The check Litestar's middleware makes, for routes that parse their own form (SELF_CHECKED)."""
    config: CSRFConfig = request.app.csrf_config  # type: ignore[assignment]
    cookie = request.cookies.get(config.cookie_name)
    submitted = request.headers.get(config.header_name) or submitted
    if not (cookie and submitted and _same_token(submitted, cookie, config.secret)):
        raise ForbiddenError("this form has expired or did not come from this site; reload the page and try again")
    # Pages rendered by this request (the no-JavaScript result) carry the token on.
    ScopeState.from_scope(request.scope).csrf_token = submitted


def _same_token(submitted: str, cookie: str, secret: str) -> bool:
    def unsigned(token: str) -> str | None:
        raw, signature = token[:CSRF_SECRET_LENGTH], token[CSRF_SECRET_LENGTH:]
        valid = len(raw) == CSRF_SECRET_LENGTH and compare_digest(signature, generate_csrf_hash(raw, secret))
        return raw if valid else None

    a, b = unsigned(submitted), unsigned(cookie)
    return a is not None and b is not None and compare_digest(a, b)


def security_headers_hook(public_url: str) -> Callable[[Message, Scope], Awaitable[None]]:
    """A before_send hook, so it covers every response, routed or not (404s, 405s, errors).

    CSP, Referrer-Policy and nosniff are added unless a handler chose its own (image bytes do).
    """
    policy = page_policy(public_url)

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            _add_headers(MutableScopeHeaders.from_message(message), policy)

    return add_security_headers


def _add_headers(headers: MutableScopeHeaders, policy: str) -> None:
    is_page = headers.get("content-type", "").startswith("text/html")
    if "content-security-policy" not in headers:
        headers["content-security-policy"] = policy if is_page else RESOURCE_POLICY
    if is_page and "cache-control" not in headers:
        # Pages carry a per-visitor CSRF token and delete forms: never from a shared cache.
        headers["cache-control"] = "no-cache, private"
    headers.setdefault("referrer-policy", REFERRER_POLICY)
    headers.setdefault("x-content-type-options", "nosniff")
