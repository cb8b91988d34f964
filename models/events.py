"""Events in: CloudEvents received by ``POST /api/v1/events`` and the runs they start."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from models.assignments import AssignedSet
from models.databases import DatabaseCreate, SslMode


class EventType(StrEnum):
    """The event types tenantflow knows; others are refused with 422 ``unsupported_event``."""

    DATABASE_CREATED = "database.created"
    TENANT_CREATED = "tenant.created"
    TENANT_DELETED = "tenant.deleted"


class EventAccepted(BaseModel):
    """The answer to an event: the run it started. A redelivered event (same ``source`` and
    ``id``) gets the same answer and starts nothing."""

    id: str = Field(description="The event's id.")
    source: str = Field(description="The event's source.")
    type: str = Field(description="The event's type.")
    workflow_id: str = Field(description="Derived from source and id: the idempotency key.")
    run_id: str = Field(description="The Temporal run the event started.")


class ReceivedEvent(BaseModel):
    """One received event, from Temporal visibility."""

    id: str | None
    source: str | None
    type: str | None
    received_at: datetime | None
    workflow_id: str
    run_id: str
    outcome: str = Field(
        description="running, succeeded, sets_failed, completed, failed, cancelled, terminated, "
        "timed_out"
    )
    closed_at: datetime | None = None


class ReceivedEventPage(BaseModel):
    """A page of received events, newest first; pass ``next_page`` back for the next."""

    items: list[ReceivedEvent]
    next_page: str | None = None


class DatabaseRegistration(BaseModel):
    """A ``database.created`` event's data without the password (workflow input)."""

    name: str
    tenant_id: str | None = None
    host: str
    port: int
    database: str
    schema_name: str | None = None
    user: str
    labels: dict[str, str] = Field(default_factory=dict)
    server: str | None = None
    sslmode: SslMode | None = None

    @classmethod
    def of(cls, spec: DatabaseCreate) -> DatabaseRegistration:
        """Everything of ``spec`` except the password."""
        return cls.model_validate(spec.model_dump(exclude={"password"}))


class RegisterDatabaseInput(BaseModel):
    """Input of ``RegisterDatabaseWorkflow``. The password travels only encrypted under the
    catalog's credential key, bound to ``password_context``; the activity decrypts it."""

    run_id: str = Field(description="The workflow id; children and ledger rows carry it.")
    event_id: str
    event_source: str
    database: DatabaseRegistration
    password_encrypted: str = Field(repr=False)
    password_context: str


class RegisteredTarget(BaseModel):
    """What registering did: the catalog row (new or the identical existing one)."""

    database_id: uuid.UUID
    name: str
    created: bool
    labels: dict[str, str]


class AssignedSetsInput(BaseModel):
    """Input of the ``assigned_sets`` activity."""

    labels: dict[str, str]


class AssignedSets(BaseModel):
    """The sets a target's labels select, by set name."""

    items: list[AssignedSet]


class SetOutcome(BaseModel):
    """How one assigned set went on the registered target."""

    set_name: str
    requested_version: str | None = Field(description="Pinned version; null: latest.")
    ok: bool
    from_version: str | None = None
    version_reached: str | None = None
    failure: str | None = Field(default=None, description="Why the set stopped, if it did.")


class RegisterDatabaseResult(BaseModel):
    """Result of ``RegisterDatabaseWorkflow``: the target and each assigned set's outcome."""

    database_id: uuid.UUID
    name: str
    created: bool
    sets: list[SetOutcome]

    @property
    def ok(self) -> bool:
        """Whether every assigned set reached its version."""
        return all(outcome.ok for outcome in self.sets)
