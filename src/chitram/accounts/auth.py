"""Who is asking: an API token (Authorization: Bearer), a web session cookie, or nobody.

Resolved lazily, once per request, only by handlers that need it: serving public image bytes
never touches the session store or the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.types import Message, Scope
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.accounts.devices import DEVICE_COOKIE
from chitram.accounts.models import User
from chitram.accounts.services import AccountService
from chitram.accounts.sessions import SESSION_COOKIE, SessionStore
from chitram.errors import ForbiddenError, NotAuthenticatedError
from chitram.security import SessionCsrf, cookie_name

_VIEWER = "chitram.viewer"
CLEAR_SESSION_COOKIE = "chitram.clear_session_cookie"


@dataclass(frozen=True)
class Viewer:
    """The account a request acts for."""

    id: int
    email: str
    is_admin: bool

    @classmethod
    def account(cls, user_id: int) -> Viewer:
        """The account itself, for work done on its behalf without a request (its own removal)."""
        return cls(id=user_id, email="", is_admin=False)


async def load_viewer(request: Request[Any, Any, Any]) -> Viewer | None:
    """The viewer of this request (cached in its scope); None for anonymous visitors.

    The JSON API believes tokens only, never cookies: a site that tricks a logged-in browser
    into calling it gets an anonymous request, so the API needs no CSRF token.
    """
    scope = request.scope
    if _VIEWER in scope:
        viewer: Viewer | None = scope[_VIEWER]  # type: ignore[literal-required]
        return viewer
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        # Other schemes (Basic from a proxy's login in front of the site) are not ours to judge.
        viewer = await _viewer_from_token(request, secret.strip())
    elif request.url.path.startswith("/api/"):
        viewer = None
    else:
        viewer = await _viewer_from_session(request)
    scope[_VIEWER] = viewer  # type: ignore[literal-required]
    return viewer


def identified_user_id(scope: Scope) -> int | None:
    """The account this request was found to act for, if it looked (for the request log)."""
    viewer = scope.get(_VIEWER)
    return viewer.id if isinstance(viewer, Viewer) else None


def forget_viewer(request: Request[Any, Any, Any]) -> None:
    """Answer the rest of this request as if nobody had been identified (see images.views)."""
    request.scope.pop(_VIEWER, None)  # type: ignore[misc]
    request.scope.pop(CLEAR_SESSION_COOKIE, None)  # type: ignore[misc]


async def _viewer_from_token(request: Request[Any, Any, Any], secret: str) -> Viewer:
    if not secret:
        raise _token_problem("send the API token as 'Authorization: Bearer <token>'")
    async with request.app.state.database.sessions() as db:
        user = await _accounts(request, db).user_for_token(secret)
    if user is None:
        raise _token_problem("this API token is not valid (mistyped or revoked); create a new one on /account")
    if user.is_disabled:
        raise _token_problem("the account this token belongs to is disabled")
    return Viewer(id=user.id, email=user.email, is_admin=user.is_admin)


BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chitram"'}


def _token_problem(detail: str) -> NotAuthenticatedError:
    return NotAuthenticatedError(detail, headers=BEARER_CHALLENGE)


def _production(request: Request[Any, Any, Any]) -> bool:
    return bool(request.app.state.settings.is_production)


def session_cookie_name(request: Request[Any, Any, Any]) -> str:
    return cookie_name(SESSION_COOKIE, production=_production(request))


def device_token(request: Request[Any, Any, Any]) -> str | None:
    """The trusted-device token this browser brought, if any (accounts/devices.py)."""
    return request.cookies.get(cookie_name(DEVICE_COOKIE, production=_production(request)))


def remember_device(request: Request[Any, Any, Any], response: Response[Any], token: str) -> None:
    """Keep the trusted-device token in this browser (renewed at every login)."""
    if not token:
        return
    production = _production(request)
    response.set_cookie(
        Cookie(
            key=cookie_name(DEVICE_COOKIE, production=production),
            value=token,
            max_age=request.app.state.settings.accounts.trusted_device_days * 24 * 3600,
            path="/",
            httponly=True,
            secure=production,
            samesite="lax",
        )
    )


async def _viewer_from_session(request: Request[Any, Any, Any]) -> Viewer | None:
    token = request.cookies.get(session_cookie_name(request))
    if not token:
        return None
    sessions: SessionStore = request.app.state.sessions
    record = await sessions.get(token)
    viewer: Viewer | None = None
    if record is not None:
        async with request.app.state.database.sessions() as db:
            user = await db.get(User, record.user_id)
            if user is not None and not user.is_disabled and user.session_epoch == record.epoch:
                viewer = Viewer(id=user.id, email=user.email, is_admin=user.is_admin)
            await db.rollback()
    if viewer is None:
        # Expired, logged out, ended everywhere or disabled: anonymous, and the browser may forget it.
        if record is not None:
            await sessions.delete(token)
        request.scope[CLEAR_SESSION_COOKIE] = True  # type: ignore[literal-required]
    return viewer


def _accounts(request: Request[Any, Any, Any], db: AsyncSession) -> AccountService:
    factory = request.app.state.account_service_factory
    service: AccountService = factory(db)
    return service


async def require_viewer(request: Request[Any, Any, Any]) -> Viewer:
    """The viewer, or a 401 that says how to authenticate (pages turn it into the login page)."""
    viewer = await load_viewer(request)
    if viewer is None:
        if request.url.path.startswith("/api/"):
            raise NotAuthenticatedError(
                "this needs an API token: send 'Authorization: Bearer <token>' (create one on /account)",
                headers=BEARER_CHALLENGE,
            )
        raise NotAuthenticatedError("log in to see this page")
    return viewer


async def require_admin(request: Request[Any, Any, Any]) -> Viewer:
    viewer = await require_viewer(request)
    if not viewer.is_admin:
        raise ForbiddenError("only administrators may do this")
    return viewer


def session_cookie(token: str, *, secure: bool, max_age: int) -> Cookie:
    """`secure` is production: the cookie is then also `__Host-` prefixed."""
    return Cookie(
        key=cookie_name(SESSION_COOKIE, production=secure),
        value=token,
        max_age=max_age,
        path="/",
        httponly=True,  # scripts never need it, so an injected one cannot steal it
        secure=secure,
        samesite="lax",
    )


def expired_session_cookie(*, secure: bool) -> Cookie:
    name = cookie_name(SESSION_COOKIE, production=secure)
    return Cookie(key=name, value="", max_age=0, path="/", httponly=True, secure=secure, samesite="lax")


async def start_session(request: Request[Any, Any, Any], response: Response[Any], user: User) -> None:
    """Log `user` in on this browser: a brand-new session token, the old one (if any) ended."""
    sessions: SessionStore = request.app.state.sessions
    old = request.cookies.get(session_cookie_name(request))
    if old:
        await sessions.delete(old)
    token = await sessions.create(user.id, user.session_epoch)
    secure = request.app.state.settings.is_production
    response.set_cookie(session_cookie(token, secure=secure, max_age=sessions.lifetime_seconds))
    # A new CSRF token with the new session: one the browser had before (perhaps planted) stops working.
    session_csrf: SessionCsrf = request.app.state.session_csrf
    response.set_cookie(session_csrf.cookie(session_csrf.token_for(token)))
    request.scope.pop(CLEAR_SESSION_COOKIE, None)  # type: ignore[misc]


async def end_session(request: Request[Any, Any, Any], response: Response[Any]) -> None:
    sessions: SessionStore = request.app.state.sessions
    token = request.cookies.get(session_cookie_name(request))
    if token:
        await sessions.delete(token)
    response.set_cookie(expired_session_cookie(secure=request.app.state.settings.is_production))


async def clear_dead_session(message: Message, scope: Scope) -> None:
    """A before_send hook: tell the browser to drop a session cookie that no longer logs anyone in."""
    if message["type"] != "http.response.start" or not scope.get(CLEAR_SESSION_COOKIE):
        return
    headers = MutableScopeHeaders.from_message(message)
    secure = scope["app"].state.settings.is_production
    headers.add("set-cookie", expired_session_cookie(secure=secure).to_header(header=""))
