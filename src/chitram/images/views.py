"""HTML pages for images and the routes that serve their bytes."""

from __future__ import annotations

from typing import Any

from litestar import Controller, HttpMethod, Request, Response, get, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from chitram.errors import NotFoundError
from chitram.images.api import base_url, image_links
from chitram.images.delivery import serve_variant
from chitram.images.services import ImageService

VARIANT_FILES = {"thumbnail.webp": "thumbnail", "preview.webp": "preview"}


class ImagePages(Controller):
    path = "/"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request[Any, Any, Any]) -> Template:
        settings = request.app.state.settings
        return Template(template_name="index.html", context={"max_upload_bytes": settings.upload.max_upload_bytes})

    @route("/i/{name:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD])
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
            links = image_links(image, base_url(request))
            return Template(template_name="image.html", context={"image": image, "links": links})
        if extension.lower() != image.extension:
            raise NotFoundError(f"this image is a {image.extension.upper()}; its address ends in .{image.extension}")
        return await serve_variant(request, image_service.storage, image, "original")

    @route("/i/{public_id:str}/{filename:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD])
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
