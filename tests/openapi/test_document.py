"""The OpenAPI document against what the app does, without a fuzzer: errors as problem+json,
unknown fields declared forbidden, and OPTIONS listing every method of a path."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from chitram.settings import Settings


@pytest.fixture
def document(embedded_settings: Settings) -> dict[str, Any]:
    from chitram.app import create_app

    with TestClient(create_app(embedded_settings)) as client:
        response = client.get("/schema/openapi.json")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


def test_every_error_response_is_a_problem(document: dict[str, Any]) -> None:
    errors = [
        (path, method, status, content)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("4")
        for content in response.get("content", {"(none)": None})
    ]
    assert errors, "no operation documents an error"
    assert {content for *_, content in errors} == {"application/problem+json"}, errors


def test_operations_document_their_refusals(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(document["paths"][path][method]["responses"])

    assert {"201", "400", "401", "413", "415", "422", "429"} <= statuses("/api/v1/images", "post")
    assert {"200", "401", "404"} <= statuses("/api/v1/images/{image_id}", "get")
    assert {"204", "401", "403", "404"} <= statuses("/api/v1/images/{image_id}", "delete")
    assert {"200", "503"} <= statuses("/health/ready", "get")


def test_bodies_that_refuse_unknown_fields_say_so(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("ImageUpdate", "TokenCreate", "SignedUrlRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    # Responses may grow fields; clients must not be told otherwise.
    assert "additionalProperties" not in schemas["ImageRead"]


def test_signed_link_lifetime_bounds_are_in_the_schema(document: dict[str, Any]) -> None:
    expires_in = document["components"]["schemas"]["SignedUrlRequest"]["properties"]["expires_in"]
    assert (expires_in["minimum"], expires_in["maximum"]) == (60, 7 * 24 * 3600)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/images/anything", "DELETE, GET, OPTIONS, PATCH"),
        ("/api/v1/images", "GET, OPTIONS, POST"),
        ("/api/v1/tokens/1", "DELETE, OPTIONS"),
    ],
)
def test_options_lists_every_method_of_the_path(app: Litestar, path: str, allowed: str) -> None:
    with TestClient(app) as client:
        response = client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allowed
