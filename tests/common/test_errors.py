"""The error hierarchy: every error carries an HTTP status, a type and a renderable envelope."""

from __future__ import annotations

import pytest

from common.errors import (
    AuthenticationRequired,
    ConfigurationError,
    Conflict,
    DependencyUnavailable,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PortInUse,
    RateLimited,
    RequestValidationFailed,
    TenantflowError,
    error_for_status,
)


@pytest.mark.parametrize(
    ("cls", "status", "error_type"),
    [
        (TenantflowError, 500, "internal_error"),
        (InvalidInput, 400, "invalid_input"),
        (RequestValidationFailed, 422, "validation_error"),
        (AuthenticationRequired, 401, "unauthenticated"),
        (PermissionDenied, 403, "forbidden"),
        (NotFound, 404, "not_found"),
        (MethodNotAllowed, 405, "method_not_allowed"),
        (Conflict, 409, "conflict"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (RateLimited, 429, "rate_limited"),
        (DependencyUnavailable, 503, "dependency_unavailable"),
        (ConfigurationError, 500, "configuration_error"),
        (PortInUse, 500, "port_in_use"),
    ],
)
def test_each_error_has_its_status_and_type(
    cls: type[TenantflowError], status: int, error_type: str
) -> None:
    err = cls("something happened")
    assert isinstance(err, TenantflowError)
    assert isinstance(err, Exception)
    assert err.status_code == status
    assert err.error_type == error_type
    assert err.message == "something happened"
    assert str(err) == "something happened"


def test_port_in_use_is_a_configuration_error() -> None:
    assert issubclass(PortInUse, ConfigurationError)
    with pytest.raises(ConfigurationError):
        raise PortInUse("port 8000 is taken")


def test_to_dict_is_the_error_object_of_the_envelope() -> None:
    err = NotFound("no target 'acme'", details={"target": "acme"})
    assert err.to_dict() == {
        "type": "not_found",
        "message": "no target 'acme'",
        "details": {"target": "acme"},
    }


def test_details_default_to_a_fresh_empty_dict() -> None:
    first = Conflict("duplicate")
    second = Conflict("duplicate again")
    assert first.details == {}
    assert first.to_dict()["details"] == {}
    first.details["key"] = "value"
    assert second.details == {}, "details must not be shared between instances"


@pytest.mark.parametrize(
    ("status", "cls", "error_type"),
    [
        (400, InvalidInput, "invalid_input"),
        (401, AuthenticationRequired, "unauthenticated"),
        (403, PermissionDenied, "forbidden"),
        (404, NotFound, "not_found"),
        (405, MethodNotAllowed, "method_not_allowed"),
        (409, Conflict, "conflict"),
        (413, PayloadTooLarge, "payload_too_large"),
        (422, RequestValidationFailed, "validation_error"),
        (429, RateLimited, "rate_limited"),
        (503, DependencyUnavailable, "dependency_unavailable"),
    ],
)
def test_error_for_known_status(status: int, cls: type[TenantflowError], error_type: str) -> None:
    err = error_for_status(status, "framework said no")
    assert type(err) is cls
    assert err.status_code == status
    assert err.error_type == error_type
    assert err.message == "framework said no"
    assert err.details == {}


def test_error_for_unknown_status_is_a_generic_http_error() -> None:
    err = error_for_status(418, "I'm a teapot")
    assert type(err) is TenantflowError
    assert err.status_code == 418
    assert err.error_type == "http_error"
    assert err.to_dict() == {"type": "http_error", "message": "I'm a teapot", "details": {}}
    # The override is per instance: the base class keeps its defaults.
    assert TenantflowError.status_code == 500
    assert TenantflowError.error_type == "internal_error"
    assert TenantflowError("x").status_code == 500
