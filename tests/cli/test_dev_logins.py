"""The dev issuer's pending device logins (RFC 8628): approval, polling errors and expiry."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import HTTPException

import cli.dev_logins
from cli.dev_logins import DeviceLogins


def _error(caught: pytest.ExceptionInfo[HTTPException]) -> tuple[int, str]:
    detail: Any = caught.value.detail  # Keycloak's error document, a dict
    return caught.value.status_code, detail["error"]


def test_a_device_login_is_redeemed_once_after_approval() -> None:
    logins = DeviceLogins()
    device_code, user_code = logins.start("tenantflow-cli")
    with pytest.raises(HTTPException) as pending:
        logins.redeem(device_code, "tenantflow-cli")
    assert _error(pending) == (400, "authorization_pending")
    logins.approve(f" {user_code.lower()} ", "operator")  # typed loosely, still found
    with pytest.raises(HTTPException) as other_client:
        logins.redeem(device_code, "another-client")
    assert _error(other_client) == (400, "invalid_grant")
    assert logins.redeem(device_code, "tenantflow-cli") == "operator"
    with pytest.raises(HTTPException) as again:
        logins.redeem(device_code, "tenantflow-cli")
    assert _error(again) == (400, "invalid_grant")


def test_an_expired_device_code_is_refused_then_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logins = DeviceLogins()
    device_code, user_code = logins.start("tenantflow-cli")
    later = time.time() + DeviceLogins.lifetime_seconds + 1
    monkeypatch.setattr(cli.dev_logins, "time", SimpleNamespace(time=lambda: later))
    with pytest.raises(HTTPException) as approving:
        logins.approve(user_code, "operator")
    assert _error(approving) == (400, "invalid_grant")
    with pytest.raises(HTTPException) as expired:
        logins.redeem(device_code, "tenantflow-cli")
    assert _error(expired) == (400, "expired_token")
    assert cast(Any, expired.value.detail) == {
        "error": "expired_token",
        "error_description": "Device code expired",
    }
    with pytest.raises(HTTPException) as forgotten:
        logins.redeem(device_code, "tenantflow-cli")
    assert _error(forgotten) == (400, "invalid_grant")
