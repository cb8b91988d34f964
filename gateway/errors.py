"""Exception handlers: every error leaves the gateway as the same envelope.

``{"error": {"type", "message", "details"}, "request_id"}`` for tenantflow errors, request
validation errors (422), framework HTTP errors (404 unknown route, 405, ...), a lost catalog
(503 ``catalog_unavailable``: a connection refused, dropped or timed out, the server shutting
down) and anything else (500, logged with its traceback, never shown to the client). Every 503
says when to try again (``Retry-After``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import (
    AuthenticationRequired,
    DependencyUnavailable,
    InvalidInput,
    RateLimited,
    RequestValidationFailed,
    TenantflowError,
    error_for_status,
)

log = logging.getLogger("tenantflow.gateway")

# Seconds a client is told to wait after a 503 (a catalog restart or failover takes a few).
RETRY_AFTER_SECONDS = 5


class CatalogUnavailable(DependencyUnavailable):
    """The catalog database cannot be reached right now; nothing was changed by this request
    unless its own transaction committed before the connection went away."""

    error_type = "catalog_unavailable"


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _quotable(text: str) -> str:
    """RFC 6750 error_description: printable ASCII without '"' and '\\'."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')[:200]


def error_response(
    request: Request, error: TenantflowError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Render ``error`` in the envelope with its status."""
    headers = dict(headers or {})
    if isinstance(error, AuthenticationRequired):
        challenge = 'Bearer realm="tenantflow"'
        if error.error_type == "invalid_token":
            description = _quotable(error.message)
            challenge += f', error="invalid_token", error_description="{description}"'
        headers.setdefault("WWW-Authenticate", challenge)
    if isinstance(error, RateLimited) and "retry_after_seconds" in error.details:
        # Round up: "Retry-After: 0" would invite an immediate retry.
        headers.setdefault("Retry-After", str(math.ceil(error.details["retry_after_seconds"])))
    if error.status_code == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse(
        status_code=error.status_code,
        content={"error": error.to_dict(), "request_id": _request_id(request)},
        headers=headers or None,
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Drop ``input`` and ``ctx``: the rejected value may be a password, and ctx may not serialise.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]


async def _tenantflow_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TenantflowError)
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.message, extra={"error_type": exc.error_type})
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = RequestValidationFailed(
        "the request does not match the schema", details={"errors": _validation_details(exc)}
    )
    return error_response(request, error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(request, error_for_status(exc.status_code, message), exc.headers)


NUL_MESSAGE = "text cannot contain NUL characters (U+0000): PostgreSQL cannot store them"


async def _untranslatable_text(request: Request, exc: Exception) -> JSONResponse:
    # 22021/22P05: whatever field carried it (a decoded cursor, a JSON value, a file name), the
    # input held text PostgreSQL cannot represent, in practice a NUL: the caller's fault, not ours.
    assert isinstance(exc, asyncpg.PostgresError)
    return error_response(
        request, InvalidInput(NUL_MESSAGE, details={"sqlstate": exc.sqlstate or ""})
    )


# A catalog that went away: refused or timed-out connects (OSError covers TimeoutError, which
# a pool's acquire timeout raises too), a connection dropped under a query, the server shutting
# down, restarting or out of connection slots.
CATALOG_LOST: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def _lost_connection(exc: Exception) -> bool:
    """Whether ``exc`` says the catalog is away. An ``InterfaceError`` counts only for a closed
    connection or pool: its other kinds (a parameter that does not encode) are our bugs."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "closing" in str(exc)
    return isinstance(exc, CATALOG_LOST)


async def _catalog_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not _lost_connection(exc):
        raise exc  # the request-context guard renders it as a 500 and logs it
    # The class only: a connect error's text can carry the host, user or DSN.
    cause = type(exc).__name__
    log.warning("catalog unavailable", extra={"cause": cause, "path": request.url.path})
    error = CatalogUnavailable(
        "the catalog database is unreachable; try again shortly",
        details={"dependency": "catalog", "cause": cause},
    )
    return error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that render every error as the envelope."""
    app.add_exception_handler(TenantflowError, _tenantflow_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(asyncpg.CharacterNotInRepertoireError, _untranslatable_text)
    app.add_exception_handler(asyncpg.UntranslatableCharacterError, _untranslatable_text)
    for lost in CATALOG_LOST:
        app.add_exception_handler(lost, _catalog_unavailable)
