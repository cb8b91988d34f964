"""One exception hierarchy for the whole project.

Every error carries an HTTP status and a machine-readable ``type``; the gateway renders them all the
same way: ``{"error": {"type", "message", "details"}, "request_id"}``. Messages must never contain
secrets: build them from identifiers, never from DSNs or passwords.
"""

from __future__ import annotations

from typing import Any


class TenantflowError(Exception):
    """Base of every error tenantflow raises on purpose."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the response envelope."""
        return {"type": self.error_type, "message": self.message, "details": self.details}


class InvalidInput(TenantflowError):
    """The request is well-formed but its values cannot be accepted."""

    status_code = 400
    error_type = "invalid_input"


class RequestValidationFailed(TenantflowError):
    """The request does not match the declared schema (bad JSON, wrong types, missing fields)."""

    status_code = 422
    error_type = "validation_error"


class AuthenticationRequired(TenantflowError):
    """No valid credentials were presented."""

    status_code = 401
    error_type = "unauthenticated"


class PermissionDenied(TenantflowError):
    """The caller is known but lacks a permission."""

    status_code = 403
    error_type = "forbidden"


class NotFound(TenantflowError):
    """The addressed resource or route does not exist."""

    status_code = 404
    error_type = "not_found"


class MethodNotAllowed(TenantflowError):
    """The route exists but not with this HTTP method."""

    status_code = 405
    error_type = "method_not_allowed"


class Conflict(TenantflowError):
    """The request conflicts with the current state (duplicate, finished run, ...)."""

    status_code = 409
    error_type = "conflict"


class PayloadTooLarge(TenantflowError):
    """The request body is larger than accepted."""

    status_code = 413
    error_type = "payload_too_large"


class RateLimited(TenantflowError):
    """Too many requests; ``details.retry_after_seconds`` says when to try again."""

    status_code = 429
    error_type = "rate_limited"


class DependencyUnavailable(TenantflowError):
    """A service tenantflow needs (Temporal, the catalog, Keycloak) does not answer."""

    status_code = 503
    error_type = "dependency_unavailable"


class ConfigurationError(TenantflowError):
    """Settings are missing or unsafe; raised at start-up, never during a request."""

    status_code = 500
    error_type = "configuration_error"


class PortInUse(ConfigurationError):
    """A port the dev stack wants is already taken by another process."""

    error_type = "port_in_use"


_BY_STATUS: dict[int, type[TenantflowError]] = {
    400: InvalidInput,
    401: AuthenticationRequired,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: RequestValidationFailed,
    429: RateLimited,
    503: DependencyUnavailable,
}


def error_for_status(status_code: int, message: str) -> TenantflowError:
    """The tenantflow error matching a bare HTTP status (used for framework-raised errors)."""
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        err = TenantflowError(message)
        err.status_code = status_code
        err.error_type = "http_error"
        return err
    return cls(message)
