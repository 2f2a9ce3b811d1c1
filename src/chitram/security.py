"""Browser-facing protections: CSRF for forms, and the security headers every response carries."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from secrets import compare_digest
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware.csrf import CSRF_SECRET_LENGTH, generate_csrf_hash
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
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
        cookie_name=cookie_name(CSRF_COOKIE, production=secure_cookie),
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
    # frame-ancestors says the same to current browsers; older ones only understand this.
    headers.setdefault("x-frame-options", "DENY")


# -- CSRF in depth: tokens bound to the session, and where the request came from -----------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CROSS_SITE_MESSAGE = (
    "this form was sent from another website, and this site only takes forms from its own pages; "
    "open the page on this site and send it from there"
)
FOREIGN_CSRF_MESSAGE = "this form was made for another login on this browser; reload the page and try again"
# A refused body is read (and dropped) up to this much, so a browser sees our 403 rather than a
# reset connection; a larger one is cut off.
DRAIN_LIMIT = 1024 * 1024


class SessionCsrf:
    """CSRF tokens bound to the web session.

    Litestar's double-submit check only compares the form's token with the CSRF cookie, so a
    token pair an attacker got for themselves, planted as the cookie in a victim's browser, would
    pass inside the victim's session. For a browser with a session cookie the only valid CSRF
    cookie is the one derived (HMAC) from that session's token: it is rotated with every new
    session (at login) and cannot be computed without the session token and the secret key.
    """

    def __init__(self, secret_key: str, config: CSRFConfig) -> None:
        self._key = derive_key(secret_key, "csrf-session").encode()
        self.config = config

    def token_for(self, session_token: str) -> str:
        raw = hmac.new(self._key, session_token.encode(), hashlib.sha256).hexdigest()[:CSRF_SECRET_LENGTH]
        return raw + generate_csrf_hash(raw, self.config.secret)

    def cookie(self, token: str) -> Cookie:
        config = self.config
        return Cookie(
            key=config.cookie_name,
            value=token,
            path=config.cookie_path,
            secure=config.cookie_secure,
            httponly=config.cookie_httponly,
            samesite=config.cookie_samesite,
            domain=config.cookie_domain,
        )


def csrf_guard_middleware(
    session_csrf: SessionCsrf, *, session_cookie: str, public_url: str
) -> Callable[[ASGIApp], ASGIApp]:
    """Refuse cross-site state changes and CSRF cookies that belong to another session.

    Runs before Litestar's CSRF middleware (which still compares the submitted token with the
    cookie) on the same paths: pages and forms, not the token-only API, bytes or probes.
    """
    config = session_csrf.config
    excluded = re.compile("|".join(config.exclude or []) or r"(?!)")
    public = urlsplit(public_url)
    public_origin = f"{public.scheme}://{public.netloc}".lower() if public.scheme and public.netloc else None

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or excluded.search(scope["path"]):
                await app(scope, receive, send)
                return
            headers = Headers.from_scope(scope)
            cookies = _cookies(headers.get("cookie", ""))
            unsafe = scope["method"] not in SAFE_METHODS
            if unsafe and not _same_origin(headers, public_origin):
                await _drain(receive)
                raise ForbiddenError(CROSS_SITE_MESSAGE)
            # The last of several same-named cookies is the one Litestar (and so auth.py) reads.
            session = cookies.get(session_cookie, [""])[-1]
            if not session:
                await app(scope, receive, send)
                return
            bound = session_csrf.token_for(session)
            # Every CSRF cookie sent must be the bound one: a second, planted with a narrower
            # Path, would otherwise be the one compared with the form.
            csrf_cookies = cookies.get(config.cookie_name, [""])
            if all(compare_digest(value, bound) for value in csrf_cookies):
                await app(scope, receive, send)
                return
            if unsafe:
                await _drain(receive)
                raise ForbiddenError(FOREIGN_CSRF_MESSAGE)
            # A page for a logged-in browser whose CSRF cookie is not its session's (planted, or
            # from before this feature): Litestar renders the bound token, and the browser keeps it.
            cookies[config.cookie_name] = [bound]
            # In place: hooks that run on the app's own scope (auth's dead-session flag) must see it.
            scope["headers"] = _with_cookies(scope, cookies)
            # Litestar caches parsed headers and cookies in the scope: make it parse them again.
            state = ScopeState.from_scope(scope)
            state.cookies = state.headers = Empty
            cookie_header = session_csrf.cookie(bound).to_header(header="")

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableScopeHeaders.from_message(message).add("set-cookie", cookie_header)
                await send(message)

            await app(scope, receive, send_with_cookie)

        return guard

    return middleware


def _same_origin(headers: Headers, public_origin: str | None) -> bool:
    """Whether a state-changing request may come from where it says it comes from.

    Browsers send `Sec-Fetch-Site` (all current ones) and `Origin` on every POST; when present,
    they decide. A request with neither is not from a browser (curl, a script): it cannot ride a
    visitor's cookies, and the CSRF token still has to match, so it is let through.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        # "same-site" is a sibling subdomain, which may be someone else's; "none" is the user's own doing.
        return site.lower() in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True
    origin = origin.lower()
    if origin == public_origin:
        return True
    host = headers.get("host", "").lower()
    return bool(host) and origin != "null" and urlsplit(origin).netloc == host


def _cookies(header: str) -> dict[str, list[str]]:
    """Every value of every cookie, in the order sent."""
    cookies: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name:
            cookies.setdefault(name, []).append(value.strip('"'))
    return cookies


def _with_cookies(scope: Scope, cookies: dict[str, list[str]]) -> list[tuple[bytes, bytes]]:
    pairs = [f"{name}={value}" for name, values in cookies.items() for value in values]
    header = "; ".join(pairs).encode("latin-1")
    kept = [(name, value) for name, value in scope["headers"] if name.lower() != b"cookie"]
    return [*kept, (b"cookie", header)]


async def _drain(receive: Receive) -> None:
    received = 0
    while received <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
