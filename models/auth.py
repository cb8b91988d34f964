"""Permissions, the authenticated principal and the auth endpoints' schemas."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class Permission(StrEnum):
    """What a caller may do; Keycloak roles map to sets of these."""

    DATABASES_READ = "databases:read"
    DATABASES_WRITE = "databases:write"
    MIGRATIONS_READ = "migrations:read"
    MIGRATIONS_EXECUTE = "migrations:execute"
    MIGRATIONS_ROLLBACK = "migrations:rollback"
    TENANTS_PROVISION = "tenants:provision"
    # Hands out tenants' database passwords: a role of its own, for the tenants' applications.
    TENANTS_CREDENTIALS = "tenants:credentials"
    EVENTS_PUBLISH = "events:publish"
    MONITORING_READ = "monitoring:read"
    WEBHOOKS_MANAGE = "webhooks:manage"
    ADMIN = "admin"


VIEWER_PERMISSIONS = [
    Permission.DATABASES_READ,
    Permission.MIGRATIONS_READ,
    Permission.MONITORING_READ,
]
OPERATOR_PERMISSIONS = [
    *VIEWER_PERMISSIONS,
    Permission.DATABASES_WRITE,
    Permission.MIGRATIONS_EXECUTE,
    Permission.MIGRATIONS_ROLLBACK,
    Permission.TENANTS_PROVISION,
    Permission.EVENTS_PUBLISH,
    Permission.WEBHOOKS_MANAGE,
]
ADMIN_PERMISSIONS = [*OPERATOR_PERMISSIONS, Permission.ADMIN]

DEFAULT_ROLE_PERMISSIONS: dict[str, list[Permission]] = {
    "infra-viewer": VIEWER_PERMISSIONS,
    "infra-operator": OPERATOR_PERMISSIONS,
    "infra-admin": ADMIN_PERMISSIONS,
    "tenant-credentials": [Permission.TENANTS_CREDENTIALS],
}


class Principal(BaseModel):
    """Who is calling, as established from a verified token (or break-glass)."""

    subject: str
    username: str | None = None
    client_id: str | None = None
    roles: list[str] = Field(default_factory=list)
    permissions: list[Permission] = Field(default_factory=list)
    via: Literal["token", "break-glass"] = "token"

    def has(self, permission: Permission) -> bool:
        """Whether the principal holds ``permission`` (``admin`` holds every permission)."""
        return permission in self.permissions or Permission.ADMIN in self.permissions


DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class TokenRequest(BaseModel):
    """``POST /api/v1/auth/token``: a grant proxied to Keycloak."""

    grant_type: Literal[
        "client_credentials",
        "password",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    client_id: str | None = Field(
        default=None, max_length=255, description="Defaults to the configured API client."
    )
    client_secret: SecretStr | None = Field(default=None, max_length=1024)
    username: str | None = Field(default=None, max_length=255)
    password: SecretStr | None = Field(default=None, max_length=1024)
    refresh_token: SecretStr | None = Field(
        default=None, max_length=16384, description="For the refresh_token grant."
    )
    device_code: SecretStr | None = Field(
        default=None,
        max_length=2048,
        description="For the device-code grant: from POST /api/v1/auth/device.",
    )
    scope: str = Field(default="openid", max_length=1024)


class DeviceAuthorizationRequest(BaseModel):
    """``POST /api/v1/auth/device``: start a device login (RFC 8628) at Keycloak."""

    client_id: str | None = Field(
        default=None, max_length=255, description="Defaults to the configured API client."
    )
    client_secret: SecretStr | None = Field(default=None, max_length=1024)
    scope: str = Field(default="openid", max_length=1024)


class DeviceAuthorization(BaseModel):
    """Where the user approves the login, and the code the device polls the token route with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    expires_in: int
    interval: int = 5


class LogoutRequest(BaseModel):
    """``POST /api/v1/auth/logout``: end the Keycloak session a refresh token belongs to."""

    refresh_token: SecretStr = Field(max_length=16384)
    client_id: str | None = Field(
        default=None, max_length=255, description="Defaults to the configured API client."
    )
    client_secret: SecretStr | None = Field(default=None, max_length=1024)


class TokenResponse(BaseModel):
    """What Keycloak issued."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    refresh_token: str | None = None
    refresh_expires_in: int | None = None
    scope: str | None = None


class Me(BaseModel):
    """``GET /api/v1/auth/me``."""

    subject: str
    username: str | None
    client_id: str | None
    roles: list[str]
    permissions: list[Permission]
    via: Literal["token", "break-glass"]
