"""RequestContextMiddleware: request ids, security headers, the crash guard and the access log."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from common.errors import NotFound
from common.logging import request_id_var
from gateway.errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware, _BodyTooLarge

HEX32 = re.compile(r"^[0-9a-f]{32}$")
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def build_app(
    *, access_log_enabled: bool = True, https: bool = False, max_body_bytes: int | None = None
) -> FastAPI:
    """A throwaway app wired like the gateway: error handlers plus the middleware outermost."""
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = FastAPI(lifespan=lifespan)
    app.state.started = started
    install_error_handlers(app)

    @app.get("/api/v1/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/v1/context")
    async def context(request: Request) -> dict[str, str | None]:
        return {"var": request_id_var.get(), "state": request.state.request_id}

    @app.get("/api/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        raise NotFound(f"no thing {name!r}", details={"name": name})

    @app.get("/api/v1/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret-db-password")

    @app.get("/api/v1/boom-sync")
    def boom_sync() -> dict[str, str]:
        raise RuntimeError("secret-db-password")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_middleware(
        RequestContextMiddleware,
        access_log_enabled=access_log_enabled,
        https=https,
        max_body_bytes=max_body_bytes,
    )
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A client for the throwaway app; any exception escaping the middleware fails the test."""
    with TestClient(build_app(), raise_server_exceptions=True) as test_client:
        yield test_client


def _access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tenantflow.access"]


# --- request id -----------------------------------------------------------------------------------


def test_request_id_is_generated_when_absent(client: TestClient) -> None:
    first = client.get("/api/v1/ok")
    second = client.get("/api/v1/ok")
    assert first.status_code == 200
    assert HEX32.match(first.headers["x-request-id"])
    assert HEX32.match(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "request_id",
    ["abc-123", "client.req_42:retry-1", "A" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"],
)
def test_valid_request_id_is_echoed(client: TestClient, request_id: str) -> None:
    response = client.get("/api/v1/ok", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["has spaces in it", "x" * 200, "A" * 129, "semi;colon", "<script>", 'quote"d', ""],
)
def test_invalid_request_id_is_replaced(client: TestClient, request_id: str) -> None:
    response = client.get("/api/v1/ok", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    returned = response.headers["x-request-id"]
    assert returned != request_id
    assert HEX32.match(returned)


def test_response_carries_exactly_one_request_id(client: TestClient) -> None:
    response = client.get("/api/v1/ok", headers={"X-Request-ID": "abc"})
    assert response.headers.get_list("x-request-id") == ["abc"]


def test_request_id_is_visible_to_handlers(client: TestClient) -> None:
    response = client.get("/api/v1/context", headers={"X-Request-ID": "ctx-1"})
    assert response.json() == {"var": "ctx-1", "state": "ctx-1"}
    generated = client.get("/api/v1/context")
    body = generated.json()
    assert body["var"] == body["state"] == generated.headers["x-request-id"]


def test_request_id_is_in_error_envelope(client: TestClient) -> None:
    response = client.get("/api/v1/things/acme", headers={"X-Request-ID": "err-7"})
    assert response.status_code == 404
    assert response.json()["request_id"] == "err-7"
    assert response.headers["x-request-id"] == "err-7"


# --- security headers -----------------------------------------------------------------------------


def _assert_common_security_headers(headers: Any) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cross-origin-opener-policy"] == "same-origin"


def test_security_headers_on_api_paths(client: TestClient) -> None:
    response = client.get("/api/v1/ok")
    _assert_common_security_headers(response.headers)
    assert response.headers["content-security-policy"] == API_CSP
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers


def test_security_headers_on_error_responses(client: TestClient) -> None:
    for path in ("/api/v1/things/x", "/api/v1/no-such-route", "/api/v1/boom"):
        response = client.get(path)
        assert response.status_code >= 400
        _assert_common_security_headers(response.headers)
        assert response.headers["content-security-policy"] == API_CSP
        assert response.headers["cache-control"] == "no-store"


def test_non_api_paths_are_not_marked_no_store(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    _assert_common_security_headers(response.headers)
    assert response.headers["content-security-policy"] == API_CSP
    assert "cache-control" not in response.headers


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_get_the_docs_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert csp != API_CSP
    assert "https://cdn.jsdelivr.net" in csp
    assert "script-src" in csp
    assert "frame-ancestors 'none'" in csp
    _assert_common_security_headers(response.headers)
    assert "cache-control" not in response.headers


def test_openapi_schema_is_strict_csp(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == API_CSP


def test_hsts_only_when_https() -> None:
    with TestClient(build_app(https=True)) as https_client:
        response = https_client.get("/api/v1/ok")
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


# --- crash guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/boom", "/api/v1/boom-sync"])
def test_unhandled_error_becomes_internal_error_envelope(
    client: TestClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    response = client.get(path)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["type"] == "internal_error"
    assert body["error"]["details"] == {}
    assert "request id" in body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert HEX32.match(body["request_id"])
    assert "secret-db-password" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text

    # The traceback goes to the log instead, tagged with the path.
    (logged,) = [r for r in caplog.records if r.name == "tenantflow.gateway"]
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None
    assert vars(logged)["path"] == path


def test_unhandled_error_keeps_a_client_request_id(client: TestClient) -> None:
    response = client.get("/api/v1/boom", headers={"X-Request-ID": "crash-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "crash-1"
    assert response.json()["request_id"] == "crash-1"


# --- access log -----------------------------------------------------------------------------------


def test_access_log_record(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenantflow.access")
    client.get("/api/v1/ok?x=1")
    (record,) = _access_records(caplog)
    fields = vars(record)
    assert record.levelno == logging.INFO
    assert fields["method"] == "GET"
    assert fields["path"] == "/api/v1/ok"
    assert fields["status"] == 200
    assert isinstance(fields["duration_ms"], float)
    assert fields["duration_ms"] >= 0
    assert fields["client"] == "testclient"
    assert record.getMessage() == "GET /api/v1/ok 200"


def test_access_log_records_error_statuses(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tenantflow.access")
    client.get("/api/v1/things/x")
    client.post("/api/v1/ok")
    client.get("/api/v1/boom")
    statuses = [
        (vars(r)["method"], vars(r)["path"], vars(r)["status"]) for r in _access_records(caplog)
    ]
    assert statuses == [
        ("GET", "/api/v1/things/x", 404),
        ("POST", "/api/v1/ok", 405),
        ("GET", "/api/v1/boom", 500),
    ]


def test_access_log_carries_the_request_id_context(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str | None]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.name, request_id_var.get()))

    spy = Spy()
    access = logging.getLogger("tenantflow.access")
    access.addHandler(spy)
    caplog.set_level(logging.INFO, logger="tenantflow.access")
    try:
        client.get("/api/v1/ok", headers={"X-Request-ID": "logged-1"})
    finally:
        access.removeHandler(spy)
    assert seen == [("tenantflow.access", "logged-1")]


def test_access_log_can_be_disabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenantflow.access")
    with TestClient(build_app(access_log_enabled=False)) as quiet:
        response = quiet.get("/api/v1/ok")
    assert response.status_code == 200
    assert "x-request-id" in response.headers
    assert _access_records(caplog) == []


# --- non-HTTP scopes ------------------------------------------------------------------------------


def test_lifespan_passes_through_the_middleware() -> None:
    app = build_app()
    with TestClient(app) as lifespan_client:
        assert lifespan_client.get("/api/v1/ok").status_code == 200
    assert app.state.started == [True]


# --- body size limit ------------------------------------------------------------------------------


def test_bodies_up_to_the_limit_pass_larger_ones_get_413() -> None:
    with TestClient(build_app(max_body_bytes=1024), raise_server_exceptions=True) as limited:
        assert limited.post("/api/v1/echo", content=b"x" * 1024).json() == {"size": 1024}
        response = limited.post("/api/v1/echo", content=b"x" * 1025)
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["type"] == "payload_too_large"
    assert body["request_id"] == response.headers["x-request-id"]


def test_streamed_bodies_without_content_length_are_counted() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"y" * 400

    with TestClient(build_app(max_body_bytes=1024), raise_server_exceptions=True) as limited:
        response = limited.post("/api/v1/echo", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


# --- raw ASGI: what a test client cannot send -----------------------------------------------------


async def _call(
    app: Any,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    sent: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``app`` called as a server would, ``body`` in two chunks; the messages it sent (also
    into ``sent`` as they go, for a call that raises)."""
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("gateway", 80),
    }
    await app(scope, receive, send)
    return sent


async def test_an_unreadable_content_length_leaves_counting_to_the_body() -> None:
    app = build_app(max_body_bytes=10)
    small = await _call(app, "/api/v1/echo", b"x" * 10, [(b"content-length", b"ten")])
    assert small[0]["status"] == 200
    assert small[-1]["body"] == b'{"size":10}'
    large = await _call(app, "/api/v1/echo", b"x" * 11, [(b"content-length", b"ten")])
    assert large[0]["status"] == 413
    assert b"payload_too_large" in large[-1]["body"]


def _streaming_app(max_body_bytes: int | None = None) -> Any:
    """An app whose route starts its response, then reads the body (or fails)."""
    app = FastAPI()

    @app.post("/api/v1/late-read")
    async def late_read(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"started"
            async for part in request.stream():
                yield part

        return StreamingResponse(chunks())

    @app.post("/api/v1/late-crash")
    async def late_crash() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"started"
            raise RuntimeError("mid-stream")

        return StreamingResponse(chunks())

    return RequestContextMiddleware(app, max_body_bytes=max_body_bytes)


async def test_a_body_over_the_limit_after_the_response_started_aborts_it() -> None:
    sent: list[dict[str, Any]] = []
    app = _streaming_app(max_body_bytes=4)
    with pytest.raises(ExceptionGroup) as caught:  # raised inside the response's task group
        await _call(app, "/api/v1/late-read", b"x" * 10, [], sent)
    assert caught.value.subgroup(_BodyTooLarge) is not None
    # The status line is gone: no 413 can follow it, the connection is dropped instead.
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]


async def test_an_error_after_the_response_started_is_not_answered_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    sent: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="mid-stream"):
        await _call(_streaming_app(), "/api/v1/late-crash", b"", [], sent)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    assert b"internal_error" not in b"".join(m.get("body", b"") for m in sent)
    (logged,) = [r for r in caplog.records if r.name == "tenantflow.gateway"]
    assert vars(logged)["path"] == "/api/v1/late-crash"
