"""HTML pages for images (htmx-aware: one handler renders the page or the fragment) and their bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, HttpMethod, Request, Response, post, route
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from chitram.accounts.auth import Viewer, forget_viewer, load_viewer
from chitram.errors import ForbiddenError, GoneError, NotAuthenticatedError, NotFoundError
from chitram.guard import UPLOAD_ROUTE
from chitram.images.access import LinkSigner, can_manage
from chitram.images.api import base_url, drain_body, image_links, receive_upload, signed_urls
from chitram.images.delivery import IMMUTABLE_CACHE, serve_variant
from chitram.images.models import Visibility
from chitram.images.schemas import CachedImage
from chitram.images.services import ImageService, parse_visibility
from chitram.images.sharing import alt_text, describe, share_snippets, shown_on_page, unfurl_image
from chitram.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, SELF_CHECKED, verify_csrf
from chitram.uploads import UploadForm

# Link checkers and chat apps often probe with HEAD before they GET.
READ_METHODS = [HttpMethod.GET, HttpMethod.HEAD]
VARIANT_FILES = {"thumbnail.webp": "thumbnail", "preview.webp": "preview"}
GALLERY_PAGE_SIZE = 24
# The same URL answers with a page or an htmx fragment; caches must keep them apart.
VARY_HTMX = {"Vary": "HX-Request"}


@dataclass(frozen=True)
class ImageView:
    """An image with its absolute links, as the templates show it."""

    image: CachedImage
    links: dict[str, str]

    @property
    def alt(self) -> str:
        return alt_text(self.image)

    @property
    def description(self) -> str:
        return describe(self.image)


class DeleteForm(msgspec.Struct):
    delete_token: str = ""


class EditForm(msgspec.Struct):
    # Absent fields change nothing (an empty visibility must never mean "the upload default").
    title: str | None = None
    visibility: str | None = None


class LinkForm(msgspec.Struct):
    expires_in: int = 86400


# Offered on the owner's image page for links to a private image.
LINK_LIFETIMES = [(3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days")]
SIGNED_LINK_MAX_AGE = 3600


async def visible_bytes(
    request: Request[Any, Any, Any], image_service: ImageService, public_id: str
) -> tuple[CachedImage, str]:
    """The image whose bytes this request may have, and how they may be cached.

    Only public and unlisted images are ever in the cache, and they need nobody's identity. On a
    miss, the signed link and the viewer are settled first and then one query asks for an image
    they may see, so a private image costs exactly what an id that does not exist costs.
    A private image is served to its owner's session (no shared cache, revalidated each time) or
    through a signed link (cached privately, never past its expiry).
    """
    cached = await image_service.cached_image(public_id)
    if cached is not None:
        return cached, IMMUTABLE_CACHE
    signer: LinkSigner = request.app.state.signer
    query = request.query_params
    left = signer.seconds_left(public_id, query.get("expires"), query.get("signature"))
    signed = left is not None and left > 0
    try:
        viewer = None if signed else await load_viewer(request)
    except NotAuthenticatedError:
        viewer = None  # a bad token gets the same 404 as anyone else
    try:
        image = await image_service.load_image_for(public_id, viewer, signed=signed)
    except NotFoundError:
        forget_viewer(request)  # answered as if nobody had asked: no cookie changes either
        if left is not None:  # only a genuine link, which we minted for an existing image, gets here
            raise GoneError("this link has expired; ask the image's owner for a new one") from None
        raise
    if image.visibility is not Visibility.PRIVATE:
        return image, IMMUTABLE_CACHE
    if signed and left is not None:
        return image, f"private, max-age={min(left, SIGNED_LINK_MAX_AGE)}"
    return image, "private, no-cache"


def _view(image: CachedImage, base: str) -> ImageView:
    return ImageView(image, image_links(image, base))


def _page_or_fragment(
    request: HTMXRequest,
    *,
    page: str,
    fragment: str,
    context: dict[str, Any],
    status_code: int = 200,
    toast: str | None = None,
    headers: dict[str, str] | None = None,
) -> Template:
    headers = {**VARY_HTMX, **(headers or {})}
    if request.htmx:
        return HTMXTemplate(
            template_name=fragment,
            context={**context, "fragment": True},
            status_code=status_code,
            headers=headers,
            trigger_event="chitram:toast" if toast else None,
            params={"message": toast} if toast else None,
            after="receive",  # the requesting element may be swapped out by the time htmx settles
        )
    return Template(template_name=page, context=context, status_code=status_code, headers=headers)


class ImagePages(Controller):
    path = "/"
    include_in_schema = False
    request_class = HTMXRequest

    @route("/", http_method=READ_METHODS)
    async def home(self, request: Request[Any, Any, Any], viewer: NamedDependency[Viewer | None]) -> Template:
        settings = request.app.state.settings
        visibilities = list(Visibility) if viewer else [v for v in Visibility if v is not Visibility.PRIVATE]
        return Template(
            template_name="index.html",
            context={
                "max_upload_bytes": settings.upload.max_upload_bytes,
                "visibilities": visibilities,
                "may_upload": viewer is not None or settings.accounts.allow_anonymous_uploads,
            },
        )

    @post("/upload", opt={**SELF_CHECKED, **UPLOAD_ROUTE}, status_code=201)
    async def upload(
        self,
        request: HTMXRequest,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
    ) -> Template:
        """The upload form's target: the script sends each file here; without it, the browser does."""

        def check_csrf_field(form: UploadForm) -> None:
            verify_csrf(request, form.fields.get(CSRF_FIELD))

        # A cross-site post carries no CSRF cookie (it is SameSite=Lax) and the script sends the
        # header: either settles it before the upload is counted against anyone's limits. Only a
        # plain form's token waits in the body.
        csrf_cookie = request.app.csrf_config.cookie_name if request.app.csrf_config else CSRF_COOKIE
        settled_early = CSRF_HEADER in request.headers or csrf_cookie not in request.cookies
        if settled_early:
            try:
                verify_csrf(request, None)
            except ForbiddenError:
                await drain_body(request)
                raise
        check_form = None if settled_early else check_csrf_field
        result = await receive_upload(request, image_service, viewer, check_form=check_form)
        view = _view(result.image, base_url(request))
        context = {
            "view": view,
            "snippets": share_snippets(view.image, view.links),
            "delete_token": result.delete_token,
        }
        return _page_or_fragment(
            request,
            page="uploaded.html",
            fragment="partials/upload_result.html",
            context=context,
            status_code=201,
            headers={"Cache-Control": "no-store"},  # it shows the delete key: keep it out of every cache
        )

    @route("/gallery", http_method=READ_METHODS)
    async def gallery(
        self,
        request: HTMXRequest,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],  # resolved for the navigation bar (base.html)
        cursor: Annotated[str | None, QueryParameter(description="Where the previous page ended.")] = None,
    ) -> Template:
        images, next_cursor = await image_service.list_public(limit=GALLERY_PAGE_SIZE, cursor=cursor)
        base = base_url(request)
        context = {
            "views": [_view(image, base) for image in images],
            "next_cursor": next_cursor,
            "first_page": cursor is None,
        }
        return _page_or_fragment(request, page="gallery.html", fragment="partials/gallery_items.html", context=context)

    @route("/i/{name:str}", http_method=READ_METHODS)
    async def image_or_original(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        name: FromPath[str],
    ) -> Response[Any]:
        """`/i/ID` is the image's page; `/i/ID.ext` is its original bytes."""
        public_id, dot, extension = name.partition(".")
        if not dot:
            # Who is asking is settled first, so "private" and "no such id" give the same page.
            viewer = await load_viewer(request)
            image = await image_service.get_image_for(public_id, viewer)
            view = _view(image, base_url(request))
            context = {
                "view": view,
                "snippets": share_snippets(image, view.links),
                "unfurl": unfurl_image(image, view.links),
                "shown": shown_on_page(image, view.links),
                "can_manage": can_manage(image, viewer),
                "link_lifetimes": LINK_LIFETIMES,
            }
            # A private page must not be kept by anything between the owner and us.
            headers = {"Cache-Control": "no-store"} if image.visibility is Visibility.PRIVATE else None
            return Template(template_name="image.html", context=context, headers=headers)
        image, cache_control = await visible_bytes(request, image_service, public_id)
        if extension.lower() != image.extension:
            raise NotFoundError(f"this image is a {image.extension.upper()}; its address ends in .{image.extension}")
        return await serve_variant(request, image_service.storage, image, "original", cache_control=cache_control)

    @route("/i/{public_id:str}/delete", http_method=READ_METHODS)
    async def delete_page(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService], public_id: FromPath[str]
    ) -> Template:
        """Where the delete link leads; the token travels in the #fragment, which browsers never send."""
        viewer = await load_viewer(request)
        # A private image does not exist for others, here too (its owner deletes it logged in;
        # the API still takes its delete token).
        image = await image_service.get_image_for(public_id, viewer)
        view = _view(image, base_url(request))
        context = {"view": view, "can_manage": can_manage(image, viewer)}
        return Template(template_name="delete.html", context=context, headers={"Cache-Control": "no-store"})

    @post("/i/{public_id:str}/delete", status_code=200)
    async def delete(
        self,
        request: HTMXRequest,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        public_id: FromPath[str],
        data: Annotated[DeleteForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template:
        try:
            await image_service.delete_image(
                public_id=public_id, delete_token=data.delete_token.strip() or None, viewer=viewer
            )
        except ForbiddenError:
            # The service's message speaks of the API's header; a page visitor holds a delete link.
            raise ForbiddenError(
                "the delete key is missing or wrong; use the key from the delete link you got when uploading"
            ) from None
        return _page_or_fragment(
            request,
            page="deleted.html",
            fragment="partials/deleted.html",
            context={"public_id": public_id},
            toast="The image was deleted.",
        )

    @route("/i/{public_id:str}/{filename:str}", http_method=READ_METHODS)
    async def variant(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        public_id: FromPath[str],
        filename: FromPath[str],
    ) -> Response[Any]:
        variant = VARIANT_FILES.get(filename)
        if variant is None:
            raise NotFoundError("images have /thumbnail.webp and /preview.webp variants only")
        image, cache_control = await visible_bytes(request, image_service, public_id)
        return await serve_variant(request, image_service.storage, image, variant, cache_control=cache_control)

    @route("/i/{public_id:str}/edit", http_method=READ_METHODS)
    async def edit_page(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        public_id: FromPath[str],
    ) -> Template:
        image = await image_service.get_managed_image(public_id, viewer)
        context = {"view": _view(image, base_url(request)), "visibilities": _visibilities_for(image)}
        return Template(template_name="edit.html", context=context)

    @post("/i/{public_id:str}/edit", status_code=303)
    async def edit(
        self,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        public_id: FromPath[str],
        data: Annotated[EditForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        if viewer is None:  # the form has no delete-key field: only accounts edit here
            raise NotAuthenticatedError("log in to change your images")
        await image_service.update_image(
            public_id=public_id,
            delete_token=None,
            viewer=viewer,
            title=msgspec.UNSET if data.title is None else data.title,
            visibility=msgspec.UNSET if not data.visibility else parse_visibility(data.visibility),
        )
        return Redirect(f"/i/{public_id}", status_code=303)

    @post("/i/{public_id:str}/link", status_code=200)
    async def private_link(
        self,
        request: HTMXRequest,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        public_id: FromPath[str],
        data: Annotated[LinkForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template:
        """Links to a private image that anyone may open until they expire."""
        image = await image_service.get_managed_image(public_id, viewer)
        urls = signed_urls(request, image, data.expires_in)
        context = {"view": _view(image, base_url(request)), "urls": urls}
        return _page_or_fragment(
            request,
            page="private_link.html",
            fragment="partials/private_link.html",
            context=context,
            headers={"Cache-Control": "no-store"},
        )


def _visibilities_for(image: CachedImage) -> list[Visibility]:
    # An image without an owner cannot be private: nobody could see it any more.
    return [v for v in Visibility if image.owner_id is not None or v is not Visibility.PRIVATE]
