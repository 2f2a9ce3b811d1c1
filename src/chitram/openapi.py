"""Making the OpenAPI document tell the truth: every error an operation can answer, as
problem+json; request bodies that refuse unknown fields say so; OPTIONS lists every method.

Checked by schemathesis over the served document (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response

# Private in Litestar 2 (public plugins cannot extend it otherwise); tests/test_openapi.py fails
# loudly if an upgrade moves it or stops honouring the override.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

from chitram.errors import PROBLEM_JSON, Problem

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition

PROBLEM_MEANINGS = {
    400: "The request is malformed: the detail names the field and what to send instead.",
    401: "No token, or a token that is unknown, revoked or belongs to a disabled account.",
    403: "The token or delete key does not allow this.",
    404: "No such image or token, or one this caller may not see.",
    413: "The upload is larger than the upload limit, or would exceed the account's quota.",
    415: "The file is not an image type Chitram hosts.",
    422: "The image is too large in pixels or frames, or its data is damaged.",
    429: "Too many requests from this client or account; Retry-After says when to try again.",
    503: "A component (database, storage or cache) does not answer; try again shortly.",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of an operation, each an RFC 9457 problem."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=PROBLEM_MEANINGS[status],
            generate_examples=False,
        )
        for status in statuses
    }


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's msgspec schemas, plus `additionalProperties: false` for structs that refuse
    unknown fields, so a client learns from the document that a misspelt field is an error
    (rather than, say, a misspelt `visibility` being silently ignored)."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """A before_request hook answering OPTIONS with every method of the route.

    Litestar 2 builds the OPTIONS handler for the first handler registered on a path and keeps
    it when later handlers join the path, so its Allow listed only some methods (litestar#4169,
    fixed in Litestar 3). OPTIONS is rare: the route table is read on each one, not cached.
    """
    if request.method != "OPTIONS":
        return None
    template = request.scope.get("path_template")
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            return Response(
                content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(route.methods))}
            )
    return None
