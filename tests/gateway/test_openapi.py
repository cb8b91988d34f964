"""The OpenAPI document: described, tagged, and documenting the error envelope."""

from __future__ import annotations

from typing import Any

import httpx


async def _schema(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


async def test_docs_page_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200
    assert "swagger-ui" in response.text.lower()
    assert "cdn.jsdelivr.net" in response.headers["content-security-policy"]


async def test_schema_has_description_and_tags(api: httpx.AsyncClient) -> None:
    schema = await _schema(api)
    assert "tenantflow" in schema["info"]["description"]
    assert {t["name"] for t in schema["tags"]} >= {"health", "system"}
    for path, item in schema["paths"].items():
        for operation in item.values():
            assert operation.get("tags"), f"{path} has no tag"


async def test_every_operation_documents_the_error_envelope(api: httpx.AsyncClient) -> None:
    schema = await _schema(api)
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for item in schema["paths"].values():
        for operation in item.values():
            default = operation["responses"]["default"]
            assert default["content"]["application/json"]["schema"] == ref
            if "422" in operation["responses"]:
                assert operation["responses"]["422"]["content"]["application/json"]["schema"] == ref
