"""JSON API for the account behind a token: who am I, my images, my tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from chitram.accounts.auth import require_viewer
from chitram.accounts.models import ApiToken
from chitram.accounts.services import AccountService
from chitram.images.api import API_CACHE_CONTROL, BEARER, PageCursor, PageLimit, image_page
from chitram.images.schemas import ImagePage
from chitram.images.services import ImageService
from chitram.openapi import problems


class AccountRead(msgspec.Struct):
    id: int
    email: str
    is_admin: bool
    used_bytes: int
    quota_bytes: int
    """0 means no quota."""
    created_at: datetime


class TokenRead(msgspec.Struct):
    id: int
    name: str
    hint: str
    """The token's first characters, to tell tokens apart."""
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenRead):
    token: str
    """Shown once; send it as 'Authorization: Bearer <token>'."""


# Documented, not enforced by the decoder: the service explains an unusable name better.
# At least one character that survives the service's clean-up (not space, not a control).
VISIBLE_CHARACTER = r"[^\s\x00-\x1f\x7f]"


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, extra_json_schema={"extra": {"pattern": VISIBLE_CHARACTER}})
    ]


def _token_read(token: ApiToken) -> TokenRead:
    return TokenRead(
        id=token.id, name=token.name, hint=token.hint, created_at=token.created_at, last_used_at=token.last_used_at
    )


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["account"]  # noqa: RUF012 - Litestar reads it as a class attribute
    security = BEARER
    cache_control = API_CACHE_CONTROL

    @get("/", summary="The account this token belongs to", responses=problems(401))
    async def me(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> AccountRead:
        viewer = await require_viewer(request)
        user = await account_service.get_user(viewer.id)
        await account_service.end_read()
        return AccountRead(
            id=user.id,
            email=user.email,
            is_admin=user.is_admin,
            used_bytes=user.used_bytes,
            quota_bytes=request.app.state.settings.accounts.account_quota_bytes,
            created_at=user.created_at,
        )

    @get("/images", summary="My images of every visibility, newest first", responses=problems(400, 401))
    async def my_images(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        limit: PageLimit = 24,
        cursor: PageCursor = None,
    ) -> ImagePage:
        viewer = await require_viewer(request)
        images, next_cursor = await image_service.list_owned(viewer.id, limit=limit, cursor=cursor)
        return image_page(request, images, next_cursor)


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["account"]  # noqa: RUF012 - Litestar reads it as a class attribute
    security = BEARER
    cache_control = API_CACHE_CONTROL

    @get("/", summary="My API tokens (never the tokens themselves)", responses=problems(401))
    async def list_tokens(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> list[TokenRead]:
        viewer = await require_viewer(request)
        return [_token_read(token) for token in await account_service.list_tokens(viewer.id)]

    @post("/", status_code=201, summary="Create a token; it is shown once", responses=problems(400, 401))
    async def create_token(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        data: JSONBody[TokenCreate],
    ) -> TokenCreated:
        viewer = await require_viewer(request)
        created = await account_service.create_token(viewer.id, data.name)
        return TokenCreated(**msgspec.structs.asdict(_token_read(created.token)), token=created.secret)

    @delete(
        "/{token_id:int}",
        status_code=204,
        summary="Revoke a token; it stops working at once",
        responses=problems(400, 401, 404),
    )
    async def revoke_token(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService], token_id: FromPath[int]
    ) -> None:
        viewer = await require_viewer(request)
        await account_service.revoke_token(viewer.id, token_id)
