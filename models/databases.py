"""Targets (tenant databases or schemas) as the API and the activities see them."""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, SecretStr, model_validator

from models.identifiers import Identifier

_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:]{2,39}\]?$|^/[^\0]{1,255}$")


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > 32:
        raise ValueError("at most 32 labels")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key[:70]!r} must be lowercase letters, digits, . _ / -")
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key!r}: value must be letters, digits, . _ - (max 63)")
    return labels


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (max 128)")
    return value


def _check_host(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError("must be a host name, an IP address or a socket directory")
    if value.startswith("/"):
        return value
    if ":" in value:
        if value.startswith("[") != value.endswith("]"):
            raise ValueError("must be a valid IPv6 address")
        try:
            ipaddress.IPv6Address(value.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise ValueError("must be a valid IPv6 address") from None
        return value
    # No top-level domain is numeric (RFC 3696): a name ending in digits (or 0x...) is an
    # address, and the resolver reads 2852039166, 0251.0376.0251.0376 or 169.254.43518 as
    # 169.254.169.254. Only the dotted-quad form is accepted, so the allow-list sees it.
    last = value.rstrip(".").rsplit(".", 1)[-1]
    if last.isdigit() or last.lower().startswith("0x"):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError("an IPv4 address must be written as four decimals a.b.c.d") from None
    return value


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
"""libpq's sslmode values; asyncpg takes the same strings as its ``ssl=`` argument."""

Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
Name = Annotated[str, AfterValidator(_check_name)]
Host = Annotated[str, AfterValidator(_check_host)]


class DatabaseCreate(BaseModel):
    """Register a target. The password is write-only: stored encrypted, never returned."""

    name: Name = Field(description="Unique name of the target, e.g. tenant-42.")
    tenant_id: str | None = Field(default=None, max_length=128)
    host: Host
    port: int = Field(default=5432, ge=1, le=65535)
    database: Identifier
    schema_name: Identifier | None = Field(
        default=None,
        alias="schema",
        description="For schema-per-tenant targets: migrations run with search_path set to it.",
    )
    user: Identifier
    password: SecretStr = Field(
        min_length=1, max_length=1024, json_schema_extra={"writeOnly": True}
    )
    labels: Labels = Field(default_factory=dict)
    server: Name | None = Field(
        default=None, description="Name of the registered server the target lives on."
    )
    sslmode: SslMode | None = Field(
        default=None,
        description="How to use TLS when connecting; default: the server's, else prefer.",
    )

    model_config = {"populate_by_name": True}


class DatabaseUpdate(BaseModel):
    """A partial update of a target: only the fields sent change. A new password is
    re-encrypted; ``server`` (a name) moves the target onto a registered server, ``null``
    detaches it; ``sslmode: null`` returns to asyncpg's default."""

    name: Name | None = None
    tenant_id: str | None = Field(default=None, max_length=128)
    host: Host | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    database: Identifier | None = None
    schema_name: Identifier | None = Field(default=None, alias="schema")
    user: Identifier | None = None
    password: SecretStr | None = Field(
        default=None, min_length=1, max_length=1024, json_schema_extra={"writeOnly": True}
    )
    labels: Labels | None = Field(default=None, description="Replaces the labels as a whole.")
    server: Name | None = None
    sslmode: SslMode | None = None

    model_config = {"populate_by_name": True, "extra": "forbid"}

    @model_validator(mode="after")
    def _required_stay_set(self) -> DatabaseUpdate:
        cleared = [
            f
            for f in _REQUIRED_ON_UPDATE
            if f in self.model_fields_set and getattr(self, f) is None
        ]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


# Fields a target always has: a PATCH may change them, never clear them.
_REQUIRED_ON_UPDATE = ("name", "host", "port", "database", "user", "password", "labels")


class Database(BaseModel):
    """A registered target, without its password."""

    id: uuid.UUID
    name: str
    tenant_id: str | None
    host: str
    port: int
    database: str
    schema_name: str | None = Field(alias="schema", serialization_alias="schema")
    user: str
    labels: dict[str, str]
    password_key_id: str = Field(description="Id of the key the stored password is encrypted with.")
    server_id: uuid.UUID | None = Field(default=None, description="The server it lives on.")
    sslmode: SslMode | None = Field(default=None, description="None: asyncpg's default (prefer).")
    created_at: datetime
    updated_at: datetime

    model_config = {"populate_by_name": True}


class DatabasePage(BaseModel):
    """One page of targets; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[Database]
    next_cursor: str | None = None


class ConnectionTestInput(BaseModel):
    """Input of ``TestConnectionWorkflow``: only the id; credentials stay in the catalog."""

    database_id: uuid.UUID
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class ConnectionTestResult(BaseModel):
    """What a worker saw when it connected to the target."""

    database_id: uuid.UUID
    ok: bool
    server_version: str | None = None
    latency_ms: float | None = None
    schema_exists: bool | None = None
    error: str | None = Field(default=None, description="Why it failed; never contains secrets.")
    error_code: str | None = Field(default=None, description="SQLSTATE when PostgreSQL said no.")
    workflow_id: str | None = Field(default=None, description="The run, to look up in Temporal.")
