"""The webhook side of the alert rules: what ``evaluate_alerts`` measures and what
``WatchAlertsWorkflow`` remembers between evaluations (which alerts fire, since when)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from models.webhooks import WebhookEventType


class AlertName(StrEnum):
    """The fleet-wide conditions the watcher evaluates (the per-run and per-target ones are
    sent by the runs and the health sweep themselves)."""

    FAILURE_RATE = "failure_rate"
    NO_WORKER = "no_worker"
    GATEWAY_ERRORS = "gateway_errors"
    GATEWAY_LATENCY = "gateway_latency"


ALERT_EVENT_TYPES: dict[AlertName, WebhookEventType] = {
    AlertName.FAILURE_RATE: WebhookEventType.ALERT_FAILURE_RATE,
    AlertName.NO_WORKER: WebhookEventType.ALERT_NO_WORKER,
    AlertName.GATEWAY_ERRORS: WebhookEventType.ALERT_GATEWAY_ERRORS,
    AlertName.GATEWAY_LATENCY: WebhookEventType.ALERT_GATEWAY_LATENCY,
}


# The rule in deploy/prometheus/alerts.yml that states the same condition (and names the
# runbook in docs/runbooks.md).
PROMETHEUS_ALERTS: dict[AlertName, str] = {
    AlertName.FAILURE_RATE: "TenantflowRunFailureRate",
    AlertName.NO_WORKER: "TenantflowNoWorkerPolling",
    AlertName.GATEWAY_ERRORS: "TenantflowGatewayErrors",
    AlertName.GATEWAY_LATENCY: "TenantflowGatewayLatency",
}


class AlertStatus(StrEnum):
    """``data.status`` of an ``alert.*`` event."""

    FIRING = "firing"
    RESOLVED = "resolved"


class AlertCondition(BaseModel):
    """One condition as measured now. Conditions with too little data to judge are left out of
    the evaluation (what fires stays firing until the data says otherwise)."""

    name: AlertName
    firing: bool
    value: float
    threshold: float
    details: dict[str, Any] = Field(default_factory=dict)


class GatewaySample(BaseModel):
    """The gateways' request counters as last read (summed over ``gateway_metrics_urls``):
    requests, 5xx answers and the duration histogram's cumulative buckets (``le`` -> count),
    Server-Sent Event streams left out."""

    requests: float = 0
    errors: float = 0
    buckets: dict[str, float] = Field(default_factory=dict)


class EvaluateAlertsInput(BaseModel):
    """Input of ``evaluate_alerts``: the previous gateway sample, to take rates from."""

    previous_gateway: GatewaySample | None = None


class AlertEvaluation(BaseModel):
    """What ``evaluate_alerts`` measured, and the settings the watcher should follow now (so a
    changed setting applies without restarting the watcher)."""

    conditions: list[AlertCondition]
    gateway: GatewaySample | None = None
    interval_seconds: int = Field(ge=0)
    no_worker_seconds: int = Field(ge=1)


class AlertWatchState(BaseModel):
    """What survives continue-as-new: the firing alerts (with their start), the last gateway
    sample and when the next evaluation was due."""

    firing: dict[AlertName, datetime] = Field(default_factory=dict)
    gateway: GatewaySample | None = None
    next_due: datetime | None = None
    no_worker_seconds: int = 120
    interval_seconds: int = 60
    evaluations: int = 0
    events: int = 0


class WatchAlertsInput(BaseModel):
    """Input of ``WatchAlertsWorkflow`` (``max_evaluations`` is for tests: unset, it runs until
    ``TENANTFLOW_ALERTS__INTERVAL_SECONDS`` is 0)."""

    state: AlertWatchState | None = None
    max_evaluations: int | None = Field(default=None, ge=1)
    continue_after_evaluations: int = Field(default=200, ge=1)


class WatchAlertsResult(BaseModel):
    """How a watcher ended: its evaluations, the events it sent, what still fires."""

    evaluations: int
    events: int
    firing: list[AlertName]


def watch_alerts_workflow_id(task_queue: str) -> str:
    """One watcher per task queue (so per deployment)."""
    return f"watch-alerts-{task_queue}"
