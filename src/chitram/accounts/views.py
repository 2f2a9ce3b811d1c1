"""Account pages: register, log in and out, the account page (password, sessions, API tokens,
ShareX, deletion) and "My images". Plain forms that work without JavaScript."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from chitram.accounts.auth import (
    Viewer,
    device_token,
    end_session,
    remember_device,
    require_admin,
    require_viewer,
    start_session,
)
from chitram.accounts.removal import delete_account
from chitram.accounts.services import AccountService
from chitram.errors import ChitramError, ForbiddenError, InvalidRequestError, NotFoundError
from chitram.images.api import base_url, image_links
from chitram.images.services import ImageService
from chitram.proxies import limit_key

MY_IMAGES_PAGE_SIZE = 24
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
NO_STORE = {"Cache-Control": "no-store"}


class RegisterForm(msgspec.Struct):
    email: str = ""
    password: str = ""
    password_confirm: str = ""


class LoginForm(msgspec.Struct):
    email: str = ""
    password: str = ""
    next: str = ""


class PasswordForm(msgspec.Struct):
    current_password: str = ""
    new_password: str = ""
    new_password_confirm: str = ""


class TokenForm(msgspec.Struct):
    name: str = ""


class DeleteAccountForm(msgspec.Struct):
    password: str = ""
    images: str = ""  # "delete" or "keep": asked explicitly, no default


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to somewhere else."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/me/images"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/me/images"
    return target


def _form_page(template: str, context: dict[str, Any], error: ChitramError | None = None) -> Template:
    """Show a form again with what went wrong next to it (and the error's status and headers)."""
    if error is None:
        return Template(template_name=template, context=context)
    return Template(
        template_name=template,
        context={**context, "error": error.detail},
        status_code=error.status_code,
        headers={"Cache-Control": "no-store", **error.headers},
    )


class AccountPages(Controller):
    path = "/"
    include_in_schema = False
    request_class = HTMXRequest

    # -- register, log in, log out ---------------------------------------------------
    # Pages that take `viewer` without using it do so for the navigation bar, which reads the
    # resolved viewer from the request (base.html).

    @get("/register")
    async def register_page(self, request: Request[Any, Any, Any], viewer: NamedDependency[Viewer | None]) -> Template:
        return Template(template_name="register.html", context=_register_context(request))

    @post("/register", status_code=303)
    async def register(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        data: Annotated[RegisterForm, Form],
    ) -> Response[Any]:
        context = {**_register_context(request), "email": data.email}
        try:
            if not request.app.state.settings.accounts.allow_registration:
                raise ForbiddenError("this site does not take new accounts; ask its operator for one")
            if data.password != data.password_confirm:
                raise InvalidRequestError("the two passwords differ; type the same password twice")
            user = await account_service.register(data.email, data.password, client_ip=limit_key(request))
        except ChitramError as error:
            return _form_page("register.html", context, error)
        response: Response[Any] = Redirect("/me/images", status_code=303)
        await start_session(request, response, user)
        return response

    @get("/login")
    async def login_page(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer | None],
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
    ) -> Template:
        return Template(template_name="login.html", context=_login_context(request, next_path))

    @post("/login", status_code=303)
    async def login(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        data: Annotated[LoginForm, Form],
    ) -> Response[Any]:
        try:
            login = await account_service.log_in_device(
                data.email, data.password, client_ip=limit_key(request), device_token=device_token(request)
            )
        except ChitramError as error:
            context = {**_login_context(request, data.next), "email": data.email}
            return _form_page("login.html", context, error)
        response: Response[Any] = Redirect(safe_next(data.next), status_code=303)
        await start_session(request, response, login.user)
        remember_device(request, response, login.device_token)
        return response

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        response: Response[Any] = Redirect("/", status_code=303)
        await end_session(request, response)
        return response

    # -- the account page --------------------------------------------------------------

    @get("/account")
    async def account_page(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> Template:
        viewer = await require_viewer(request)
        context = await _account_context(request, account_service, viewer)
        # Personal pages: not even the back button after logging out may show them again.
        return Template(template_name="account.html", context=context, headers=NO_STORE)

    @post("/account/password", status_code=303)
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        data: Annotated[PasswordForm, Form],
    ) -> Response[Any]:
        viewer = await require_viewer(request)
        try:
            if data.new_password != data.new_password_confirm:
                raise InvalidRequestError("the two new passwords differ; type the same password twice")
            user = await account_service.change_password(
                viewer.id,
                data.current_password,
                data.new_password,
                client_ip=limit_key(request),
                device_token=device_token(request),
            )
        except ChitramError as error:
            context = await _account_context(request, account_service, viewer)
            return _form_page("account.html", {**context, "password_error": True}, error)
        # Every other session ended with the new epoch; this browser stays logged in on a new one.
        response: Response[Any] = Redirect("/account?changed=password", status_code=303)
        await start_session(request, response, user)
        return response

    @post("/account/sessions/end", status_code=303)
    async def end_all_sessions(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> Response[Any]:
        viewer = await require_viewer(request)
        await account_service.end_all_sessions(viewer.id)
        response: Response[Any] = Redirect("/login", status_code=303)
        await end_session(request, response)
        return response

    @post("/account/tokens", status_code=201)
    async def create_token(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        data: Annotated[TokenForm, Form],
    ) -> Template:
        viewer = await require_viewer(request)
        try:
            created = await account_service.create_token(viewer.id, data.name)
        except ChitramError as error:
            context = await _account_context(request, account_service, viewer)
            return _form_page("account.html", {**context, "token_error": True}, error)
        context = {**await _account_context(request, account_service, viewer), "new_token": created}
        # The page shows the token itself: no cache may keep it.
        return Template(
            template_name="account.html", context=context, status_code=201, headers={"Cache-Control": "no-store"}
        )

    @post("/account/tokens/{token_id:int}/revoke", status_code=303)
    async def revoke_token(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService], token_id: FromPath[int]
    ) -> Redirect:
        viewer = await require_viewer(request)
        await account_service.revoke_token(viewer.id, token_id)
        return Redirect("/account?changed=token-revoked", status_code=303)

    @post("/account/sharex", status_code=200)
    async def sharex(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> Response[bytes]:
        """A ShareX custom uploader for this account, with a token made for it (shown nowhere else)."""
        viewer = await require_viewer(request)
        base = base_url(request)
        host = urlsplit(base).hostname or "chitram"
        created = await account_service.create_token(viewer.id, f"ShareX ({datetime.now(UTC):%Y-%m-%d %H:%M})")
        return Response(
            content=sharex_uploader(base, created.secret, host).encode(),
            media_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="chitram-{host}.sxcu"',
                "Cache-Control": "no-store",
            },
        )

    @post("/account/delete", status_code=200)
    async def delete_account(
        self,
        request: Request[Any, Any, Any],
        account_service: NamedDependency[AccountService],
        image_service: NamedDependency[ImageService],
        data: Annotated[DeleteAccountForm, Form],
    ) -> Response[Any]:
        viewer = await require_viewer(request)
        try:
            if data.images not in ("delete", "keep"):
                raise InvalidRequestError("choose whether your images are deleted with the account or kept online")
            user = await account_service.get_user(viewer.id)
            await account_service.confirm_password(
                user, data.password, client_ip=limit_key(request), device_token=device_token(request)
            )
        except ChitramError as error:
            context = await _account_context(request, account_service, viewer)
            return _form_page("account.html", {**context, "delete_error": True}, error)
        await account_service.session.rollback()
        deleted = await delete_account(account_service, image_service, viewer.id, delete_images=data.images == "delete")
        response: Response[Any] = Template(
            template_name="account_deleted.html", context={"deleted_images": deleted, "kept": data.images == "keep"}
        )
        await end_session(request, response)
        return response

    # -- my images ---------------------------------------------------------------------

    @get("/me/images")
    async def my_images(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        cursor: Annotated[str | None, QueryParameter(description="Where the previous page ended.")] = None,
    ) -> Template:
        viewer = await require_viewer(request)
        images, next_cursor = await image_service.list_owned(viewer.id, limit=MY_IMAGES_PAGE_SIZE, cursor=cursor)
        base = base_url(request)
        items = [{"image": image, "links": image_links(image, base)} for image in images]
        context = {"items": items, "next_cursor": next_cursor, "first_page": cursor is None}
        return Template(template_name="my_images.html", context=context, headers=NO_STORE)

    @post("/me/images/delete", status_code=303)
    async def delete_my_images(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService]
    ) -> Redirect:
        """Bulk delete: every checked image that this account may delete. One that is gone already
        (deleted in another tab) or not its own is skipped; the rest are still deleted."""
        viewer = await require_viewer(request)
        form = await request.form()
        ids = [value for value in form.getall("ids") if isinstance(value, str)][: MY_IMAGES_PAGE_SIZE * 4]
        if not ids:
            raise InvalidRequestError("no image was selected; tick the images to delete first")
        deleted = skipped = 0
        as_owner = dataclasses.replace(viewer, is_admin=False)  # "my" images, even for an admin
        for public_id in ids:
            try:
                await image_service.delete_image(public_id=public_id, delete_token=None, viewer=as_owner)
            except (NotFoundError, ForbiddenError):
                skipped += 1
                continue
            deleted += 1
        query = f"deleted={deleted}" + (f"&skipped={skipped}" if skipped else "")
        return Redirect(f"/me/images?{query}", status_code=303)


class AdminPages(Controller):
    """Moderation for administrators: see every account and disable or enable it."""

    path = "/admin"
    include_in_schema = False

    @get("/users")
    async def users(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> Template:
        await require_admin(request)
        rows = await account_service.list_users()
        return Template(template_name="admin_users.html", context={"rows": rows})

    @post("/users/{user_id:int}/disable", status_code=303)
    async def disable(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService], user_id: FromPath[int]
    ) -> Redirect:
        """Sessions end and tokens stop working at once (both are checked on every request)."""
        viewer = await require_admin(request)
        if user_id == viewer.id:
            raise ForbiddenError("you cannot disable your own account; ask another administrator")
        await account_service.set_disabled(user_id, True)
        return Redirect("/admin/users", status_code=303)

    @post("/users/{user_id:int}/enable", status_code=303)
    async def enable(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService], user_id: FromPath[int]
    ) -> Redirect:
        await require_admin(request)
        await account_service.set_disabled(user_id, False)
        return Redirect("/admin/users", status_code=303)


def _register_context(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"allow_registration": request.app.state.settings.accounts.allow_registration}


def _login_context(request: Request[Any, Any, Any], next_path: str | None) -> dict[str, Any]:
    return {"next": safe_next(next_path), "allow_registration": request.app.state.settings.accounts.allow_registration}


async def _account_context(
    request: Request[Any, Any, Any], account_service: AccountService, viewer: Viewer
) -> dict[str, Any]:
    user = await account_service.get_user(viewer.id)
    tokens = await account_service.list_tokens(viewer.id)
    settings = request.app.state.settings
    return {
        "user": user,
        "tokens": tokens,
        "quota_bytes": settings.accounts.account_quota_bytes,
        "changed": request.query_params.get("changed"),
    }


def sharex_uploader(base: str, token: str, host: str) -> str:
    """ShareX's custom uploader format (.sxcu, version 14+): `{json:…}` reads our JSON answer."""
    config = {
        "Version": "14.0.0",
        "Name": f"Chitram ({host})",
        "DestinationType": "ImageUploader",
        "RequestMethod": "POST",
        "RequestURL": f"{base}/api/v1/images",
        "Headers": {"Authorization": f"Bearer {token}"},
        "Body": "MultipartFormData",
        "Arguments": {"visibility": "unlisted"},
        "FileFormName": "file",
        "URL": "{json:url}",
        "ThumbnailURL": "{json:thumbnail_url}",
        "DeletionURL": "{json:delete_url}",
        "ErrorMessage": "{json:detail}",
    }
    return json.dumps(config, indent=2)
