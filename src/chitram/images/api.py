"""JSON API for images under /api/v1 (HTTP only: parsing and shaping; rules live in services)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.types import Message, Scope

from chitram.accounts.auth import Viewer, require_viewer
from chitram.errors import ChitramError, InvalidRequestError
from chitram.guard import UPLOAD_ROUTE
from chitram.images.abuse import UploadGate
from chitram.images.access import LinkSigner
from chitram.images.models import Visibility
from chitram.images.outcomes import UploadOutcome, classify, record_outcome
from chitram.images.schemas import (
    MAX_LINK_SECONDS,
    MIN_LINK_SECONDS,
    CachedImage,
    ImageCreated,
    ImagePage,
    ImageRead,
    ImageUpdate,
    SignedUrlRequest,
    SignedUrls,
)
from chitram.images.services import (
    MAX_PAGE_SIZE,
    ImageService,
    UploadDeadline,
    UploadResult,
    clean_title,
    parse_visibility,
)
from chitram.openapi import problems
from chitram.proxies import limit_key
from chitram.settings import Settings
from chitram.uploads import UploadForm, read_upload_form

PageLimit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")]
PageCursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page.")]

# The request guard refuses a path holding a control character before routing (a 400).
ImageIdPath = Annotated[
    str, PathParameter(pattern=r"^[^\x00-\x1f\x7f]+$", description="The image's id, e.g. from its link.")
]

DeleteToken = Annotated[
    str | None,
    HeaderParameter(name="X-Delete-Token", description="The delete_token returned by the upload.", required=False),
]


# Set in a request's scope when its links were built from its Host header (no PUBLIC_URL).
HOST_LINKS = "chitram.host_links"
# JSON changes under its URL (titles, visibility, deletion), has no validators, and some of it is
# shown once (delete tokens, API tokens): no cache keeps it.
API_CACHE_CONTROL = CacheControlHeader(no_store=True)


def base_url(request: Request[Any, Any, Any]) -> str:
    settings: Settings = request.app.state.settings
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    request.scope[HOST_LINKS] = True  # type: ignore[literal-required]
    return str(request.base_url).rstrip("/")


async def mark_host_links(message: Message, scope: Scope) -> None:
    """A before_send hook: a response whose links follow the Host header (development without
    PUBLIC_URL) must never be served from a cache to a request that named another host."""
    if message["type"] != "http.response.start" or not scope.get(HOST_LINKS):
        return
    headers = MutableScopeHeaders.from_message(message)
    headers["cache-control"] = "no-store"
    vary = headers.get("vary")
    headers["vary"] = f"{vary}, Host" if vary else "Host"


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


def image_page(request: Request[Any, Any, Any], images: list[CachedImage], next_cursor: str | None) -> ImagePage:
    base = base_url(request)
    return ImagePage(items=[to_read(image, base) for image in images], next_cursor=next_cursor)


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
    viewer: Viewer | None,
    *,
    check_form: Callable[[UploadForm], None] | None = None,
) -> UploadResult:
    """Stream the multipart body to disk and store the image; shared by the API and the upload page.

    Limits are checked before the body is read; the anonymous byte budget once its size is known.
    Every upload's outcome (stored, or why not) is counted.
    """
    try:
        result = await _receive_upload(request, image_service, viewer, check_form=check_form)
    except Exception as exc:
        await record_outcome(image_service.session, classify(exc))
        raise
    await record_outcome(image_service.session, UploadOutcome.STORED)
    return result


async def _receive_upload(
    request: Request[Any, Any, Any],
    image_service: ImageService,
    viewer: Viewer | None,
    *,
    check_form: Callable[[UploadForm], None] | None,
) -> UploadResult:
    settings: Settings = request.app.state.settings
    gate: UploadGate = request.app.state.upload_gate
    address = limit_key(request)
    try:
        await gate.admit(viewer, address)
    except ChitramError:
        await drain_body(request)
        raise
    async with read_upload_form(
        request, max_file_bytes=settings.upload.max_upload_bytes, tmp_dir=settings.data_dir / "tmp"
    ) as form:
        if check_form is not None:
            check_form(form)
        if form.file is None or form.file.size == 0:
            raise InvalidRequestError("no image received; choose a file (multipart field 'file') and send it again")
        async with gate.budget(viewer, address, form.file.size), watch_client(request) as client_gone:
            return await image_service.upload_image(
                source=form.file.path,
                filename=form.file.filename,
                title=clean_title(form.fields.get("title")),
                visibility=parse_visibility(form.fields.get("visibility")),
                owner_id=viewer.id if viewer else None,
                quota_bytes=gate.policy.quota_bytes,
                size=form.file.size,
                deadline=UploadDeadline.starting_now(settings.upload.upload_deadline_seconds, client_gone),
            )


@contextlib.asynccontextmanager
async def watch_client(request: Request[Any, Any, Any]) -> AsyncIterator[Callable[[], bool]]:
    """Once the body is read, the next ASGI message can only say the client went away: listen for
    it while the upload is stored, so nothing is committed for a client that gave up."""
    gone = anyio.Event()

    async def listen() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    try:
        async with anyio.create_task_group() as watcher:
            watcher.start_soon(listen)
            try:
                yield gone.is_set
            finally:
                watcher.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The listener only ever ends cancelled: what failed is the upload, raised as itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def drain_body(request: Request[Any, Any, Any]) -> None:
    """Read and drop a body we refuse before reading it. Answering with the body unread makes the
    server reset the connection, and the client would see a network error instead of our 429."""
    with contextlib.suppress(Exception):  # too large, client gone: nothing more to save
        async for _chunk in request.stream():
            pass


@dataclass
class UploadOperation(Operation):
    """OpenAPI for the upload: the body is streamed by hand, so describe it here."""

    def __post_init__(self) -> None:
        properties: dict[str, Any] = {
            "file": Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.BINARY,
                min_length=1,
                description="JPEG, PNG, GIF, WebP or AVIF.",
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


BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]
# Anonymous use works too; a token makes the request act for its account.
OPTIONAL_BEARER: list[dict[str, list[str]]] = [{}, {"BearerToken": []}]


class ImageController(Controller):
    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads it as a class attribute
    cache_control = API_CACHE_CONTROL

    @post(
        "/",
        operation_class=UploadOperation,
        status_code=201,
        opt=UPLOAD_ROUTE,
        summary="Upload an image",
        description=(
            "Multipart field `file`; optional `title` and `visibility` (`private` needs a token). "
            "The delete_token is returned once."
        ),
        security=OPTIONAL_BEARER,
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
    ) -> ImageCreated:
        result = await receive_upload(request, image_service, viewer)
        base = base_url(request)
        read = to_read(result.image, base)
        return ImageCreated(
            **msgspec.structs.asdict(read),
            delete_token=result.delete_token,
            delete_url=f"{base}/i/{result.image.public_id}/delete#token={result.delete_token}",
        )

    @get("/", summary="List public images, newest first", responses=problems(400))
    async def list_images(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        limit: PageLimit = 24,
        cursor: PageCursor = None,
    ) -> ImagePage:
        images, next_cursor = await image_service.list_public(limit=limit, cursor=cursor)
        return image_page(request, images, next_cursor)

    @get("/{image_id:str}", summary="Describe one image", security=OPTIONAL_BEARER, responses=problems(400, 401, 404))
    async def get_image(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        image_id: ImageIdPath,
    ) -> ImageRead:
        return to_read(await image_service.get_image_for(image_id, viewer), base_url(request))

    @patch(
        "/{image_id:str}",
        summary="Change title or visibility (the owner's token, or X-Delete-Token)",
        security=OPTIONAL_BEARER,
        responses=problems(400, 401, 403, 404),
    )
    async def update_image(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        image_id: ImageIdPath,
        data: JSONBody[ImageUpdate],
        delete_token: DeleteToken = None,
    ) -> ImageRead:
        image = await image_service.update_image(
            public_id=image_id, delete_token=delete_token, viewer=viewer, title=data.title, visibility=data.visibility
        )
        return to_read(image, base_url(request))

    @delete(
        "/{image_id:str}",
        status_code=204,
        summary="Delete an image (the owner's token, or X-Delete-Token)",
        security=OPTIONAL_BEARER,
        responses=problems(400, 401, 403, 404),
    )
    async def delete_image(
        self,
        image_service: NamedDependency[ImageService],
        viewer: NamedDependency[Viewer | None],
        image_id: ImageIdPath,
        delete_token: DeleteToken = None,
    ) -> None:
        await image_service.delete_image(public_id=image_id, delete_token=delete_token, viewer=viewer)

    @post(
        "/{image_id:str}/signed-url",
        status_code=201,
        summary="Make links to a private image that work without a token until they expire",
        security=BEARER,
        responses=problems(400, 401, 403, 404),
    )
    async def signed_url(
        self,
        request: Request[Any, Any, Any],
        image_service: NamedDependency[ImageService],
        image_id: ImageIdPath,
        data: JSONBody[SignedUrlRequest],
    ) -> SignedUrls:
        viewer = await require_viewer(request)  # the API's 401, with its Bearer challenge
        image = await image_service.get_managed_image(image_id, viewer)
        return signed_urls(request, image, data.expires_in)


def signed_urls(request: Request[Any, Any, Any], image: CachedImage, expires_in: int) -> SignedUrls:
    if not MIN_LINK_SECONDS <= expires_in <= MAX_LINK_SECONDS:
        raise InvalidRequestError(
            f"expires_in must be between {MIN_LINK_SECONDS} seconds and {MAX_LINK_SECONDS // 86400} days"
        )
    signer: LinkSigner = request.app.state.signer
    link = signer.sign(image.public_id, expires_in)
    links = image_links(image, base_url(request))
    return SignedUrls(
        url=f"{links['url']}?{link.query}",
        thumbnail_url=f"{links['thumbnail_url']}?{link.query}",
        preview_url=f"{links['preview_url']}?{link.query}",
        expires_at=datetime.fromtimestamp(link.expires, UTC),
    )
