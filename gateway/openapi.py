"""OpenAPI customisation: describe the service and document the error envelope everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from models.errors import ErrorResponse

DESCRIPTION = """\
tenantflow keeps the catalog of tenant PostgreSQL databases, rolls versioned schema migrations out
across the fleet as durable Temporal workflows, rolls them back and provisions new tenants.

**Errors.** Every error, whatever its status, has the same body:
`{"error": {"type", "message", "details"}, "request_id"}`. Quote the `request_id` (also in the
`X-Request-ID` response header) when reporting a problem.
"""

TAGS: list[dict[str, str]] = [
    {"name": "health", "description": "Liveness and readiness probes; no authentication."},
    {"name": "auth", "description": "Tokens (proxied to Keycloak) and the caller's identity."},
    {"name": "databases", "description": "The catalog of targets: tenant databases or schemas."},
    {"name": "migration-sets", "description": "Named, versioned, immutable migration sets."},
    {"name": "migrations", "description": "Apply or roll back a set on one target."},
    {"name": "system", "description": "End-to-end checks through Temporal and a worker."},
    {"name": "codec", "description": "Payload encode/decode for the Temporal Web UI."},
]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# One Server-Sent Event as clients (and schemathesis) parse it: ``data`` is JSON text.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "progress, then end."},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
# Successful answers that are not JSON, whatever response class their route declares:
# (method, path) -> media type of the 200 body.
STREAMS: dict[tuple[str, str], str] = {
    ("get", "/api/v1/migrations/{run_id}/stream"): "text/event-stream",
}


def install_openapi(app: FastAPI) -> None:
    """Replace FastAPI's validation-error schema with our envelope, add a default error and
    declare the media type of streamed answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=DESCRIPTION,
            routes=app.routes,
            tags=TAGS,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(
            ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").pop(
                "$defs", {}
            )
        )
        components["ErrorResponse"] = ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components["ErrorResponse"].pop("$defs", None)
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for path, path_item in schema.get("paths", {}).items():
            for method, operation in path_item.items():
                responses = operation.setdefault("responses", {})
                media_type = STREAMS.get((method, path))
                if media_type is not None and "200" in responses:
                    responses["200"]["content"] = {media_type: {"schema": _SSE_EVENT}}
                if "422" in responses:
                    responses["422"] = {
                        "description": "The request does not match the schema.",
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    }
                responses.setdefault(
                    "default",
                    {
                        "description": "Any error, in the standard envelope.",
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
