"""Exception handlers: every error leaves the gateway as the same envelope, without secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from common.errors import DependencyUnavailable, NotFound, RateLimited
from gateway.errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware

SUBMITTED_PASSWORD = "hunter2-Very-Secret!"


class Login(BaseModel):
    username: str = Field(min_length=1)
    password: str
    remember_days: int = 0


def build_app() -> FastAPI:
    """A throwaway app with the handlers installed and the request-id middleware outermost."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        raise NotFound(f"no thing {name!r}", details={"name": name})

    @app.post("/api/v1/login")
    async def login(body: Login) -> dict[str, str]:
        return {"user": body.username}

    @app.get("/api/v1/limited")
    async def limited() -> dict[str, str]:
        raise RateLimited("too many requests", details={"retry_after_seconds": 7})

    @app.get("/api/v1/limited-fraction")
    async def limited_fraction() -> dict[str, str]:
        raise RateLimited("too many requests", details={"retry_after_seconds": 0.4})

    @app.get("/api/v1/unavailable")
    async def unavailable() -> dict[str, str]:
        raise DependencyUnavailable("temporal does not answer", details={"service": "temporal"})

    @app.get("/api/v1/teapot")
    async def teapot() -> dict[str, str]:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/api/v1/items")
    async def items(limit: int = 10) -> dict[str, int]:
        return {"limit": limit}

    app.add_middleware(RequestContextMiddleware)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A client for the throwaway app."""
    with TestClient(build_app()) as test_client:
        yield test_client


def _assert_envelope(response: Any, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- tenantflow errors ----------------------------------------------------------------------------


def test_not_found_error_renders_envelope(client: TestClient) -> None:
    response = client.get("/api/v1/things/acme", headers={"X-Request-ID": "nf-1"})
    body = _assert_envelope(response, 404, "not_found")
    assert body == {
        "error": {"type": "not_found", "message": "no thing 'acme'", "details": {"name": "acme"}},
        "request_id": "nf-1",
    }


def test_server_side_tenantflow_error_is_rendered_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tenantflow.gateway")
    response = client.get("/api/v1/unavailable")
    body = _assert_envelope(response, 503, "dependency_unavailable")
    assert body["error"]["message"] == "temporal does not answer"
    assert body["error"]["details"] == {"service": "temporal"}
    (record,) = [r for r in caplog.records if r.name == "tenantflow.gateway"]
    assert record.levelno == logging.WARNING
    assert vars(record)["error_type"] == "dependency_unavailable"


def test_client_side_tenantflow_error_is_not_logged_as_warning(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tenantflow.gateway")
    client.get("/api/v1/things/acme")
    assert [r for r in caplog.records if r.name == "tenantflow.gateway"] == []


def test_rate_limited_sets_retry_after(client: TestClient) -> None:
    response = client.get("/api/v1/limited")
    body = _assert_envelope(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "7"
    assert body["error"]["details"] == {"retry_after_seconds": 7}


def test_fractional_retry_after_is_rounded_up(client: TestClient) -> None:
    response = client.get("/api/v1/limited-fraction")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


# --- framework errors -----------------------------------------------------------------------------


def test_unknown_route_is_not_found_naming_the_path(client: TestClient) -> None:
    response = client.get("/api/v1/no-such-thing")
    body = _assert_envelope(response, 404, "not_found")
    assert body["error"]["message"] == "no route GET /api/v1/no-such-thing"
    assert body["error"]["details"] == {}


def test_wrong_method_is_method_not_allowed(client: TestClient) -> None:
    response = client.delete("/api/v1/things/acme")
    body = _assert_envelope(response, 405, "method_not_allowed")
    assert body["error"]["message"] == "method DELETE is not allowed on /api/v1/things/acme"
    assert response.headers["allow"] == "GET"


def test_other_http_exceptions_keep_status_and_detail(client: TestClient) -> None:
    response = client.get("/api/v1/teapot")
    body = _assert_envelope(response, 418, "http_error")
    assert body["error"]["message"] == "short and stout"


# --- validation errors ----------------------------------------------------------------------------


def _assert_validation_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = body["error"]["details"]["errors"]
    assert errors
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}, "input and ctx must never be echoed"
        assert all(isinstance(part, str) for part in error["loc"])
        assert isinstance(error["msg"], str)
        assert isinstance(error["type"], str)
    return errors


def test_malformed_json_is_a_validation_error(client: TestClient) -> None:
    response = client.post(
        "/api/v1/login",
        content=b'{"username": "ann", "password": ',
        headers={"content-type": "application/json"},
    )
    body = _assert_envelope(response, 422, "validation_error")
    errors = _assert_validation_errors(body)
    assert errors[0]["type"] == "json_invalid"
    assert errors[0]["loc"][0] == "body"
    assert errors[0]["msg"]


def test_schema_mismatch_lists_each_error(client: TestClient) -> None:
    response = client.post("/api/v1/login", json={"username": "", "remember_days": "forever"})
    body = _assert_envelope(response, 422, "validation_error")
    errors = _assert_validation_errors(body)
    by_loc = {tuple(error["loc"]): error["type"] for error in errors}
    assert by_loc == {
        ("body", "username"): "string_too_short",
        ("body", "password"): "missing",
        ("body", "remember_days"): "int_parsing",
    }


def test_query_validation_error(client: TestClient) -> None:
    response = client.get("/api/v1/items", params={"limit": "lots"})
    body = _assert_envelope(response, 422, "validation_error")
    (error,) = _assert_validation_errors(body)
    assert error["loc"] == ["query", "limit"]
    assert error["type"] == "int_parsing"


@pytest.mark.parametrize(
    ("payload", "raw"),
    [
        # Another field is wrong; the valid password must not come back.
        ({"username": "ann", "password": SUBMITTED_PASSWORD, "remember_days": "x"}, None),
        # The password itself is of the wrong type.
        ({"username": "ann", "password": [SUBMITTED_PASSWORD]}, None),
        ({"username": "ann", "password": {"value": SUBMITTED_PASSWORD}}, None),
        # The whole body is a string instead of an object.
        (SUBMITTED_PASSWORD, None),
        # Broken JSON that contains the password.
        (None, f'{{"username": "ann", "password": "{SUBMITTED_PASSWORD}", }}'),
    ],
)
def test_validation_error_never_echoes_the_password(
    client: TestClient, payload: object, raw: str | None
) -> None:
    if raw is None:
        response = client.post("/api/v1/login", json=payload)
    else:
        response = client.post(
            "/api/v1/login", content=raw.encode(), headers={"content-type": "application/json"}
        )
    body = _assert_envelope(response, 422, "validation_error")
    _assert_validation_errors(body)
    assert SUBMITTED_PASSWORD not in response.text
    assert "hunter2" not in response.text
    for name, value in response.headers.items():
        assert "hunter2" not in name
        assert "hunter2" not in value


def test_valid_body_passes(client: TestClient) -> None:
    response = client.post("/api/v1/login", json={"username": "ann", "password": "pw"})
    assert response.status_code == 200
    assert response.json() == {"user": "ann"}


# --- the catalog away -----------------------------------------------------------------------------

DSN_SECRET = "postgresql://tenantflow:s3cret-Pw@catalog.internal:5432/tenantflow"

LOST_CATALOG: dict[str, Exception] = {
    "refused": ConnectionRefusedError(111, f"Connect call failed {DSN_SECRET}"),
    "acquire-timeout": TimeoutError(),
    "dropped": asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "closed": asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    "pool-closing": asyncpg.InterfaceError("pool is closing"),
    "starting": asyncpg.CannotConnectNowError("the database system is starting up"),
    "shutdown": asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    "full": asyncpg.TooManyConnectionsError("sorry, too many clients already"),
}


def catalog_app() -> FastAPI:
    """Routes that fail the way a lost catalog makes repositories fail."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/v1/lost/{kind}")
    async def lost(kind: str) -> dict[str, str]:
        raise LOST_CATALOG[kind]

    @app.get("/api/v1/misuse")
    async def misuse() -> dict[str, str]:
        raise asyncpg.InterfaceError("the server expects 1 argument, 2 were passed")

    app.add_middleware(RequestContextMiddleware)
    return app


@pytest.mark.parametrize("kind", sorted(LOST_CATALOG))
def test_a_lost_catalog_is_a_503_with_retry_after_never_a_500(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tenantflow.gateway")
    with TestClient(catalog_app()) as test_client:
        response = test_client.get(f"/api/v1/lost/{kind}")
    body = _assert_envelope(response, 503, "catalog_unavailable")
    assert body["error"]["details"] == {
        "dependency": "catalog",
        "cause": type(LOST_CATALOG[kind]).__name__,
    }
    assert response.headers["retry-after"] == "5"
    # Only the exception's class leaves: its text may carry a host, a user or a DSN.
    assert "s3cret" not in response.text and "catalog.internal" not in response.text
    assert all("s3cret" not in r.getMessage() for r in caplog.records)


def test_an_interface_error_that_is_not_a_lost_connection_stays_a_500() -> None:
    with TestClient(catalog_app(), raise_server_exceptions=False) as test_client:
        response = test_client.get("/api/v1/misuse")
    _assert_envelope(response, 500, "internal_error")


def test_every_503_says_when_to_retry(client: TestClient) -> None:
    response = client.get("/api/v1/unavailable")
    assert response.headers["retry-after"] == "5"
