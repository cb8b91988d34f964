"""Tenants: provisioning requests, the tenant record, workflow inputs and handed-out credentials.

A tenant is a login role plus either a database of its own or a schema of its own in a shared
database, registered as a migration target. Workflow inputs carry ids, never secrets.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, model_validator

from models.databases import Labels, Name
from models.identifiers import Identifier

_TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,38}[a-z0-9])?$")
# Every role, database and schema tenantflow creates for a tenant carries this prefix, and the
# role a comment naming the tenant: compensation drops only what is provably its own.
OBJECT_PREFIX = "tenant_"


def _check_tenant_id(value: str) -> str:
    if not _TENANT_ID.fullmatch(value):
        raise ValueError(
            "must be 1-40 lowercase letters, digits, '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


TenantId = Annotated[str, AfterValidator(_check_tenant_id)]


def object_name(tenant_id: str) -> str:
    """The role, database and schema name of a tenant (at most 47 characters)."""
    return f"{OBJECT_PREFIX}{tenant_id}"


class TenantMode(StrEnum):
    """Where a tenant's data lives."""

    DATABASE = "database"
    SCHEMA = "schema"


class TenantStatus(StrEnum):
    """A tenant's lifecycle."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"


class SetRequest(BaseModel):
    """A migration set a tenant is brought to, up to ``version`` (``latest`` when omitted)."""

    name: str = Field(min_length=1, max_length=128)
    version: str = Field(default="latest", min_length=1, max_length=64)


class TenantCreate(BaseModel):
    """Provision a tenant: ``POST /api/v1/tenants`` and the ``tenant.created`` event's data."""

    tenant_id: TenantId
    server: Name | None = Field(default=None, description="A server by name.")
    server_selector: Labels | None = Field(
        default=None, description="Or: the least-loaded server whose labels match."
    )
    mode: TenantMode = TenantMode.DATABASE
    shared_database: Identifier = Field(
        default="tenants", description="schema mode: the shared database on the server."
    )
    sets: list[SetRequest] | None = Field(
        default=None, description="Sets to apply; the set assignments matching labels if omitted."
    )
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_server_choice(self) -> TenantCreate:
        if self.server is not None and self.server_selector is not None:
            raise ValueError("give either server or server_selector, not both")
        if self.sets is not None and len({s.name for s in self.sets}) != len(self.sets):
            raise ValueError("a set appears twice in sets")
        return self

    def request_hash(self) -> str:
        """Identifies the request: the same request again is the same tenant."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class Tenant(BaseModel):
    """A tenant as the API shows it (never its password)."""

    tenant_id: str
    status: TenantStatus
    mode: TenantMode
    server: str | None = None
    server_id: uuid.UUID | None = None
    database_id: uuid.UUID | None = Field(default=None, description="Its migration target.")
    database: str
    schema_name: str | None = None
    role: str
    sets: list[SetRequest] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str | None] = Field(
        default_factory=dict, description="Per set, the version reached."
    )
    run_id: str = Field(description="The workflow id of the tenant's latest job.")
    error: str | None = None
    template: str | None = Field(
        default=None,
        description="database mode: the template database it was copied from (the fast path); "
        "null when it was created empty and migrated.",
    )
    created_at: datetime
    updated_at: datetime


class TenantAccepted(BaseModel):
    """The answer to a provisioning or deprovisioning request."""

    tenant_id: str
    status: TenantStatus
    run_id: str
    created: bool = Field(description="False when the same request had already been accepted.")


class TenantPage(BaseModel):
    """One page of tenants."""

    items: list[Tenant]
    next_cursor: str | None = None


class TenantCredentials(BaseModel):
    """What the tenant's application connects with (``GET .../credentials`` only)."""

    tenant_id: str
    host: str
    port: int
    database: str
    schema_name: str | None
    user: str
    password: str
    sslmode: str | None
    url: str = Field(description="A libpq connection URI.")


class TenantJob(BaseModel):
    """Input of the tenant workflows: ids only."""

    tenant_id: str
    run_id: str


class SetPlan(BaseModel):
    """One set a provisioning run applies, resolved from the request or the assignments."""

    set_name: str
    target_version: str | None = None


class TenantTarget(BaseModel):
    """A registered tenant target and the sets to bring it to."""

    database_id: uuid.UUID
    sets: list[SetPlan]


class TenantOutcome(BaseModel):
    """How a provisioning run ended: the versions reached, or the cause of the failure."""

    tenant_id: str
    status: TenantStatus
    versions: dict[str, str | None] = Field(default_factory=dict)
    error: str | None = None
