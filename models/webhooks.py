"""Outgoing webhooks: endpoints as the API sees them, events other workflows publish, and the
inputs, results and attempts of ``DeliverWebhookWorkflow``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, HttpUrl

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class WebhookEventType(StrEnum):
    """The events tenantflow sends to webhook endpoints."""

    TENANT_PROVISIONED = "tenant.provisioned"
    TENANT_PROVISIONING_FAILED = "tenant.provisioning_failed"
    TENANT_DEPROVISIONED = "tenant.deprovisioned"
    MIGRATION_COMPLETED = "migration.completed"
    MIGRATION_FAILED = "migration.failed"
    MIGRATION_PAUSED = "migration.paused"
    DATABASE_UNHEALTHY = "database.unhealthy"
    DATABASE_RECOVERED = "database.recovered"
    DATABASE_DRIFTED = "database.drifted"
    # Fleet-wide conditions, the same as deploy/prometheus/alerts.yml: sent once when one
    # starts (data.status "firing") and once when it ends ("resolved"), by WatchAlertsWorkflow.
    ALERT_FAILURE_RATE = "alert.failure_rate"
    ALERT_NO_WORKER = "alert.no_worker"
    ALERT_GATEWAY_ERRORS = "alert.gateway_errors"
    ALERT_GATEWAY_LATENCY = "alert.gateway_latency"


class DeliveryOutcome(StrEnum):
    """Where one delivery stands (also the ``TenantflowStatus`` search attribute)."""

    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"  # the receiver answered 410: the endpoint is now disabled
    STOPPED = "stopped"  # the endpoint was disabled or deleted while the delivery waited


def _unique_types(values: list[WebhookEventType]) -> list[WebhookEventType]:
    if len(set(values)) != len(values):
        raise ValueError("event types must not repeat")
    return values


EventTypes = Annotated[
    list[WebhookEventType], Field(min_length=1, max_length=32), AfterValidator(_unique_types)
]
WebhookUrl = Annotated[HttpUrl, Field(description="http or https URL the events are POSTed to.")]


class WebhookCreate(BaseModel):
    """``POST /api/v1/webhooks``."""

    url: WebhookUrl
    event_types: EventTypes
    description: str = Field(default="", max_length=500)

    model_config = {"extra": "forbid"}


class WebhookUpdate(BaseModel):
    """``PATCH /api/v1/webhooks/{id}``: only the fields given change."""

    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint and clears its reason."
    )

    model_config = {"extra": "forbid"}


class Webhook(BaseModel):
    """A webhook endpoint, without its secret."""

    id: uuid.UUID
    url: str
    description: str
    event_types: list[WebhookEventType]
    enabled: bool
    disabled_reason: str | None = Field(
        default=None, description="Why tenantflow disabled it (for example a 410 answer)."
    )
    secret_key_id: str = Field(description="Id of the key the stored secret is encrypted with.")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(Webhook):
    """The answer to a create: the only time the signing secret is shown."""

    secret: str = Field(
        description="Standard Webhooks signing secret (whsec_...). Store it now: it is never "
        "shown again."
    )


class WebhookList(BaseModel):
    """Every webhook endpoint, newest first."""

    items: list[Webhook]


class EventOut(BaseModel):
    """An event a workflow publishes to the subscribed endpoints.

    ``id`` is chosen by the caller, deterministically (for example ``{run}-completed``), so that a
    retried publish starts no second delivery."""

    id: str = Field(pattern=EVENT_ID_PATTERN)
    type: WebhookEventType
    subject: str = Field(max_length=255, description="What the event is about (a run, a tenant).")
    data: dict[str, Any] = Field(default_factory=dict)
    time: datetime


class PublishResult(BaseModel):
    """What ``publish_event`` started: one delivery workflow id per subscribed endpoint."""

    workflow_ids: list[str]


class DeliverWebhookInput(BaseModel):
    """Input of ``DeliverWebhookWorkflow``: ids and the event, never the secret."""

    endpoint_id: uuid.UUID
    event: EventOut
    retry_schedule_seconds: list[float] = Field(min_length=1)
    attempt_timeout_seconds: float = Field(default=15.0, gt=0)


class DeliveryAttemptInput(BaseModel):
    """Input of ``deliver_webhook``: one HTTP attempt."""

    endpoint_id: uuid.UUID
    event: EventOut
    attempt: int = Field(ge=1)
    timeout_seconds: float = Field(default=15.0, gt=0)


class DeliveryAttemptResult(BaseModel):
    """What one attempt saw. ``endpoint_state`` other than ``enabled`` means nothing was sent."""

    endpoint_state: str = Field(description="enabled, disabled or deleted")
    status_code: int | None = None
    error: str | None = Field(default=None, description="Connection error; never a secret.")
    retry_after_seconds: float | None = None

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


class DeliveryAttempt(BaseModel):
    """One attempt as the workflow records it (the ``attempts`` query)."""

    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    retry_after_seconds: float | None = None
    next_attempt_at: datetime | None = None


class DeliveryResult(BaseModel):
    """How a delivery ended."""

    endpoint_id: uuid.UUID
    event_id: str
    outcome: DeliveryOutcome
    attempts: list[DeliveryAttempt]


class DeliverySummary(BaseModel):
    """One delivery in ``GET /api/v1/webhooks/{id}/deliveries`` (from Temporal visibility)."""

    event_id: str
    event_type: str | None
    workflow_id: str
    outcome: str
    started_at: datetime | None
    closed_at: datetime | None


class DeliveryPage(BaseModel):
    """One page of deliveries, newest first; pass ``next_page`` back for the next."""

    items: list[DeliverySummary]
    next_page: str | None = None


class DeliveryDetail(BaseModel):
    """One delivery with its attempts (the workflow's ``attempts`` query)."""

    event_id: str
    workflow_id: str
    outcome: str
    attempts: list[DeliveryAttempt]


def delivery_workflow_id(endpoint_id: uuid.UUID, event_id: str) -> str:
    """The business key of a delivery: a repeated publish of the same event is a no-op."""
    return f"webhook-{endpoint_id}-{event_id}"
