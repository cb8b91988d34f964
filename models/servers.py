"""PostgreSQL servers tenantflow may create roles, databases and schemas on."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field, SecretStr, model_validator

from models.databases import Host, Labels, Name, SslMode
from models.identifiers import Identifier

__all__ = ["Server", "ServerCreate", "ServerPage", "ServerUpdate", "SslMode"]


class ServerCreate(BaseModel):
    """Register a server. The admin password is write-only: stored encrypted, never returned."""

    name: Name = Field(description="Unique name of the server, e.g. pg-eu-1.")
    host: Host
    port: int = Field(default=5432, ge=1, le=65535)
    admin_user: Identifier = Field(description="A role allowed to CREATE ROLE and CREATE DATABASE.")
    admin_password: SecretStr = Field(
        min_length=1, max_length=1024, json_schema_extra={"writeOnly": True}
    )
    sslmode: SslMode = "prefer"
    maintenance_database: Identifier = Field(
        default="postgres", description="Where the admin connects to run CREATE DATABASE."
    )
    max_connections: int = Field(
        default=20, gt=0, le=100_000, description="tenantflow's connection budget on this server."
    )
    labels: Labels = Field(default_factory=dict)


class ServerUpdate(BaseModel):
    """A partial update: only the fields present change; a new password is re-encrypted."""

    name: Name | None = None
    host: Host | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    admin_user: Identifier | None = None
    admin_password: SecretStr | None = Field(
        default=None, min_length=1, max_length=1024, json_schema_extra={"writeOnly": True}
    )
    sslmode: SslMode | None = None
    maintenance_database: Identifier | None = None
    max_connections: int | None = Field(default=None, gt=0, le=100_000)
    labels: Labels | None = Field(default=None, description="Replaces the labels as a whole.")

    model_config = {"extra": "forbid"}

    @model_validator(mode="after")
    def _no_nulls(self) -> ServerUpdate:
        # Every field of a server is required: a PATCH may change it, never clear it.
        cleared = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


class Server(BaseModel):
    """A registered server, without its admin password."""

    id: uuid.UUID
    name: str
    host: str
    port: int
    admin_user: str
    sslmode: SslMode
    maintenance_database: str
    max_connections: int
    labels: dict[str, str]
    created_at: datetime
    updated_at: datetime
    target_count: int | None = Field(
        default=None, description="How many registered targets live on this server."
    )


class ServerPage(BaseModel):
    """One page of servers; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[Server]
    next_cursor: str | None = None
