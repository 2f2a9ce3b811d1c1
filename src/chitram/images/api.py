"""JSON API for images under /api/v1 (HTTP only: parsing and shaping; rules live in services)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from chitram.errors import InvalidRequestError
from chitram.images.models import Visibility
from chitram.images.schemas import CachedImage, ImageCreated, ImagePage, ImageRead, ImageUpdate
from chitram.images.services import MAX_PAGE_SIZE, ImageService, UploadResult, clean_title, parse_visibility
from chitram.settings import Settings
from chitram.uploads import UploadForm, read_upload_form

DeleteToken = Annotated[
    str | None,
    HeaderParameter(name="X-Delete-Token", description="The delete_token returned by the upload.", required=False),
]


def base_url(request: Request[Any, Any, Any]) -> str:
    settings: Settings = request.app.state.settings
    return (settings.server.public_url or str(request.base_url)).rstrip("/")


def to_read(image: CachedImage, base: str) -> ImageRead:
    links = image_links(image, base)
    return ImageRead(
        id=image.public_id,
        width=image.original.width,
        height=image.original.height,
        size=image.original.size,
        content_type=image.original.content_type,
        sha256=image.sha256,
        title=image.title,
        visibility=image.visibility,
        created_at=image.created_at,
        **links,
    )


def image_links(image: CachedImage, base: str) -> dict[str, str]:
    page = f"{base}/i/{image.public_id}"
    return {
        "url": f"{page}.{image.extension}",
        "thumbnail_url": f"{page}/thumbnail.webp",
        "preview_url": f"{page}/preview.webp",
        "page_url": page,
    }


async def receive_upload(
    request: Request[Any, Any, Any],
    image_service: ImageService,
    *,
    check_form: Callable[[UploadForm], None] | None = None,
) -> UploadResult:
    """Stream the multipart body to disk and store the image; shared by the API and the upload page."""
    settings: Settings = request.app.state.settings
    async with read_upload_form(
        request, max_file_bytes=settings.upload.max_upload_bytes, tmp_dir=settings.data_dir / "tmp"
    ) as form:
        if check_form is not None:
            check_form(form)
        if form.file is None or form.file.size == 0:
            raise InvalidRequestError("no image received; choose a file (multipart field 'file') and send it again")
        return await image_service.upload_image(
            source=form.file.path,
            filename=form.file.filename,
            title=clean_title(form.fields.get("title")),
            visibility=parse_visibility(form.fields.get("visibility")),
        )


@dataclass
class UploadOperation(Operation):
    """OpenAPI for the upload: the body is streamed by hand, so describe it here."""

    def __post_init__(self) -> None:
        properties: dict[str, Any] = {
            "file": Schema(
                type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description="JPEG, PNG, GIF, WebP or AVIF."
            ),
            "title": Schema(type=OpenAPIType.STRING, max_length=200),
            "visibility": Schema(type=OpenAPIType.STRING, enum=[v.value for v in Visibility], default="unlisted"),
        }
        self.request_body = RequestBody(
            required=True,
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.OBJECT, properties=properties, required=["file"])
                )
            },
        )


class ImageController(Controller):
    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        operation_class=UploadOperation,
        status_code=201,
        summary="Upload an image",
        description="Multipart field `file`; optional `title` and `visibility`. The delete_token is returned once.",
    )
    async def upload(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService]
    ) -> ImageCreated:
        result = await receive_upload(request, image_service)
        read = to_read(result.image, base_url(request))
        return ImageCreated(**msgspec.structs.asdict(read), delete_token=result.delete_token)

    @get("/", summary="List public images, newest first")
    async def list_images(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = 24,
        cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page.")] = None,
    ) -> ImagePage:
        images, next_cursor = await image_service.list_public(limit=limit, cursor=cursor)
        base = base_url(request)
        return ImagePage(items=[to_read(image, base) for image in images], next_cursor=next_cursor)

    @get("/{image_id:str}", summary="Describe one image")
    async def get_image(
        self, request: Request[Any, Any, Any], image_service: NamedDependency[ImageService], image_id: FromPath[str]
    ) -> ImageRead:
        return to_read(await image_service.get_image(image_id), base_url(request))

    @patch("/{image_id:str}", summary="Change title or visibility (needs X-Delete-Token)")
    async def update_image(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        image_id: FromPath[str],
        data: JSONBody[ImageUpdate],
        delete_token: DeleteToken = None,
    ) -> ImageRead:
        image = await image_service.update_image(
            public_id=image_id, delete_token=delete_token, title=data.title, visibility=data.visibility
        )
        return to_read(image, base_url(request))

    @delete("/{image_id:str}", status_code=204, summary="Delete an image (needs X-Delete-Token)")
    async def delete_image(
        self, image_service: NamedDependency[ImageService], image_id: FromPath[str], delete_token: DeleteToken = None
    ) -> None:
        await image_service.delete_image(public_id=image_id, delete_token=delete_token)
