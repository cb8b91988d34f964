"""Pure ASGI middleware: request id, access log, security headers and a last-resort error guard.

Written as raw ASGI (not ``BaseHTTPMiddleware``) so streaming responses (SSE) pass through
untouched and the per-request cost stays small.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.logging import request_id_var
from gateway.errors import NUL_MESSAGE

access_log = logging.getLogger("tenantflow.access")
error_log = logging.getLogger("tenantflow.gateway")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI and ReDoc load their bundles from jsDelivr.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
_DOCS_PATHS = ("/docs", "/redoc")


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _security_headers(path: str, https: bool) -> list[tuple[bytes, bytes]]:
    csp = _DOCS_CSP if path.startswith(_DOCS_PATHS) else _API_CSP
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", csp.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if path.startswith("/api/"):
        headers.append((b"cache-control", b"no-store"))
    if https:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a request body passes the limit.

    An HTTP exception, so that FastAPI's body parsing (JSON or multipart) lets it through as 413
    instead of turning it into 400 "error parsing the body"; the error handlers render it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


def _carries_nul(scope: Scope) -> bool:
    """NUL in the (decoded) path, the query string (raw or percent-encoded) or a header value.

    PostgreSQL text cannot hold NUL; refusing it here keeps it out of every route at once."""
    if "\x00" in scope.get("path", ""):
        return True
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return True
    return any(b"\x00" in value for _, value in scope.get("headers", []))


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def error_body(request_id: str, error_type: str, message: str) -> bytes:
    """An error envelope rendered by the middleware itself (before any route runs)."""
    return json.dumps(
        {
            "error": {"type": error_type, "message": message, "details": {}},
            "request_id": request_id,
        }
    ).encode()


def internal_error_body(request_id: str) -> bytes:
    """The envelope of an unexpected failure: no exception text, only the id to quote."""
    return error_body(
        request_id, "internal_error", "internal error; quote the request id when reporting it"
    )


class RequestContextMiddleware:
    """Assigns the request id, adds security headers, logs access and guards against crashes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log_enabled: bool = True,
        https: bool = False,
        max_body_bytes: int | None = None,
    ):
        self.app = app
        self.access_log_enabled = access_log_enabled
        self.https = https
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        path: str = scope.get("path", "")

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                # A response that brings its own policy (the dashboard's CSP) keeps it.
                present = {name.lower() for name, _ in headers}
                added = _security_headers(path, self.https)
                headers.extend(h for h in added if h[0] not in present)
                message["headers"] = headers
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            # Counts streamed (chunked) bodies too, where Content-Length is absent.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and self.max_body_bytes is not None:
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        try:
            if self.max_body_bytes is not None and _declared_length(scope) > self.max_body_bytes:
                raise _BodyTooLarge(self.max_body_bytes)
            if _carries_nul(scope):
                status = 400
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": error_body(request_id, "invalid_input", NUL_MESSAGE),
                    }
                )
                return
            await self.app(scope, receive_limited, send_wrapper)
        except _BodyTooLarge:
            if response_started:
                raise
            status = 413
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": error_body(
                        request_id,
                        "payload_too_large",
                        f"request bodies are limited to {self.max_body_bytes} bytes",
                    ),
                }
            )
        except Exception:
            error_log.exception("unhandled error", extra={"path": path})
            if response_started:
                raise
            status = 500
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": internal_error_body(request_id)})
        finally:
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %s",
                    scope.get("method"),
                    path,
                    status,
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": (scope.get("client") or ("-",))[0],
                    },
                )
            request_id_var.reset(token)
