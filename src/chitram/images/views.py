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
from litestar.response import Template

from chitram.errors import ForbiddenError, NotFoundError
from chitram.images.api import base_url, image_links, receive_upload
from chitram.images.delivery import serve_variant
from chitram.images.models import Visibility
from chitram.images.schemas import CachedImage
from chitram.images.services import ImageService
from chitram.images.sharing import alt_text, describe, share_snippets, shown_on_page, unfurl_image
from chitram.security import CSRF_FIELD, SELF_CHECKED, verify_csrf
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
    async def home(self, request: Request[Any, Any, Any]) -> Template:
        settings = request.app.state.settings
        return Template(
            template_name="index.html",
            context={"max_upload_bytes": settings.upload.max_upload_bytes, "visibilities": list(Visibility)},
        )

    @post("/upload", opt=SELF_CHECKED, status_code=201)
    async def upload(self, request: HTMXRequest, image_service: NamedDependency[ImageService]) -> Template:
        """The upload form's target: the script sends each file here; without it, the browser does."""

        def check_csrf(form: UploadForm) -> None:
            verify_csrf(request, form.fields.get(CSRF_FIELD))

        result = await receive_upload(request, image_service, check_form=check_csrf)
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
        image = await image_service.get_image(public_id)
        if not dot:
            view = _view(image, base_url(request))
            context = {
                "view": view,
                "snippets": share_snippets(image, view.links),
                "unfurl": unfurl_image(image, view.links),
                "shown": shown_on_page(image, view.links),
            }
            return Template(template_name="image.html", context=context)
        if extension.lower() != image.extension:
            raise NotFoundError(f"this image is a {image.extension.upper()}; its address ends in .{image.extension}")
        return await serve_variant(request, image_service.storage, image, "original")

    @route("/i/{public_id:str}/delete", http_method=READ_METHODS)
    async def delete_page(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService], public_id: FromPath[str]
    ) -> Template:
        """Where the delete link leads; the token travels in the #fragment, which browsers never send."""
        view = _view(await image_service.get_image(public_id), base_url(request))
        return Template(template_name="delete.html", context={"view": view})

    @post("/i/{public_id:str}/delete", status_code=200)
    async def delete(
        self,
        request: HTMXRequest,
        image_service: NamedDependency[ImageService],
        public_id: FromPath[str],
        data: Annotated[DeleteForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template:
        try:
            await image_service.delete_image(public_id=public_id, delete_token=data.delete_token.strip() or None)
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
        image = await image_service.get_image(public_id)
        return await serve_variant(request, image_service.storage, image, variant)
