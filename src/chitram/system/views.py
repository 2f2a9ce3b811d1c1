"""/admin: the operator's page — what `chitram-admin status` says, and the newest uploads to
remove abuse from (administrators only; the user list is /admin/users)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from chitram.accounts.auth import require_admin
from chitram.images.api import base_url, image_links
from chitram.images.services import ImageService
from chitram.system.health import HealthChecker
from chitram.system.status import describe_backup, gather_status

NEWEST_PAGE_SIZE = 48


class OperatorPages(Controller):
    path = "/admin"
    include_in_schema = False

    @get("/")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        cursor: Annotated[str | None, QueryParameter(description="Where the previous page ended.")] = None,
    ) -> Template:
        await require_admin(request)
        state = request.app.state
        health: HealthChecker = state.health
        report = await gather_status(state.settings, readiness=await health.readiness(), database=state.database)
        images, next_cursor = await image_service.list_newest(limit=NEWEST_PAGE_SIZE, cursor=cursor)
        base = base_url(request)
        context = {
            "report": report,
            "items": [{"image": image, "links": image_links(image, base)} for image in images],
            "next_cursor": next_cursor,
            "first_page": cursor is None,
            "deleted": request.query_params.get("deleted"),
            "describe_backup": describe_backup,
        }
        return Template(template_name="admin.html", context=context, headers={"Cache-Control": "no-store"})

    @post("/images/{public_id:str}/delete", status_code=303)
    async def delete_image(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService], public_id: FromPath[str]
    ) -> Redirect:
        """The same deletion as the image's owner gets: row, cache entry and (when unshared) objects."""
        viewer = await require_admin(request)
        await image_service.delete_image(public_id=public_id, delete_token=None, viewer=viewer)
        return Redirect(f"/admin?deleted={public_id}", status_code=303)
