"""Every route answers malformed requests with the error envelope, never a stack trace."""

from __future__ import annotations

import httpx
import pytest

from common.settings import Settings
from gateway.app import create_app
from tests.conftest import Tokens

MALFORMED_BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"[1, 2", "application/json"),
    (b"<xml/>", "application/xml"),
]


def _routes(settings: Settings) -> list[tuple[str, str]]:
    # Every operation the OpenAPI document declares: the public surface of the gateway.
    paths = create_app(settings).openapi()["paths"]
    return sorted((method.upper(), path) for path, item in paths.items() for method in item)


def _assert_envelope_or_success(response: httpx.Response) -> None:
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "request_id"}
        assert set(body["error"]) == {"type", "message", "details"}
        assert body["request_id"] == response.headers["x-request-id"]


async def test_every_route_survives_malformed_requests(
    api: httpx.AsyncClient, settings: Settings, tokens: Tokens
) -> None:
    routes = _routes(settings)
    assert routes, "the app has no routes?"
    for method, path in routes:
        for body, content_type in MALFORMED_BODIES:
            response = await api.request(
                method,
                path + "?limit=-1&page=%ZZ&%00=1",
                content=body,
                headers={
                    "content-type": content_type,
                    "x-request-id": "bad id with spaces",
                    **tokens.headers("infra-admin"),
                },
            )
            _assert_envelope_or_success(response)
            assert response.status_code < 500 or path == "/health/ready", (method, path)


@pytest.mark.parametrize(
    ("method", "path", "status", "error_type"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("PATCH", "/api/v1/system/check", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods_use_the_envelope(
    api: httpx.AsyncClient, method: str, path: str, status: int, error_type: str
) -> None:
    response = await api.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    _assert_envelope_or_success(response)
