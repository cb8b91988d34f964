"""Webhook activities: one signed HTTP attempt per call, and publishing an event to every
subscribed endpoint. The signing secret is read and decrypted here, by endpoint id, so it never
travels through workflow inputs, results or history."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks import Webhook as Signer
from temporalio import activity
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from common.catalog.webhooks import WebhookRepository
from common.settings import WebhookSettings
from common.telemetry import recording
from models.webhooks import (
    DeliverWebhookInput,
    DeliveryAttemptInput,
    DeliveryAttemptResult,
    DeliveryOutcome,
    EventOut,
    PublishResult,
    delivery_workflow_id,
)

log = logging.getLogger(__name__)

EVENT_SOURCE = "/tenantflow"
ENDPOINT_KEY = SearchAttributeKey.for_keyword("TenantflowWebhookEndpoint")
EVENT_TYPE_KEY = SearchAttributeKey.for_keyword("TenantflowEventType")
STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")


def build_request(event: EventOut, secret: str, sent_at: datetime) -> tuple[bytes, dict[str, str]]:
    """The structured CloudEvent body and its Standard Webhooks headers for one attempt."""
    cloud_event = CloudEvent(
        attributes={
            "id": event.id,
            "source": EVENT_SOURCE,
            "type": event.type.value,
            "subject": event.subject,
            "time": event.time,
            "datacontenttype": "application/json",
        },
        data=event.data,
    )
    message = to_structured_event(cloud_event)
    signature = Signer(secret).sign(event.id, sent_at, message.body.decode())
    headers = {
        **message.headers,
        "webhook-id": event.id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "user-agent": "tenantflow-webhooks",
    }
    return message.body, headers


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _describe(exc: Exception, url: str) -> str:
    """A connection error without the URL (it may carry credentials or tokens)."""
    text = str(exc)
    parts = urlsplit(url)
    sensitive = [url, parts.query, parts.password or "", parts.username or ""]
    if not text or any(s and s in text for s in sensitive):
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class WebhookActivities:
    """Holds the webhook repository and, for publishing, a Temporal client."""

    def __init__(
        self,
        webhooks: WebhookRepository,
        *,
        temporal: Client | None = None,
        settings: WebhookSettings | None = None,
        task_queue: str = "tenantflow",
    ) -> None:
        self._webhooks = webhooks
        self._temporal = temporal
        self._settings = settings or WebhookSettings()
        self._task_queue = task_queue

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, params: DeliveryAttemptInput) -> DeliveryAttemptResult:
        """POST the event once. Any HTTP answer or connection error is a result; a 410 disables
        the endpoint. Nothing is sent to a disabled or deleted endpoint."""
        result = await self._deliver(params)
        recording.webhook_delivery(recording.delivery_outcome(result))
        return result

    async def _deliver(self, params: DeliveryAttemptInput) -> DeliveryAttemptResult:
        target = await self._webhooks.delivery_target(params.endpoint_id)
        if target is None:
            return DeliveryAttemptResult(endpoint_state="deleted", error="endpoint deleted")
        if not target.endpoint.enabled:
            return DeliveryAttemptResult(endpoint_state="disabled", error="endpoint disabled")
        url = target.endpoint.url
        body, headers = build_request(params.event, target.secret, datetime.now(UTC))
        try:
            async with httpx.AsyncClient(
                timeout=params.timeout_seconds, follow_redirects=False
            ) as http:
                response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return DeliveryAttemptResult(endpoint_state="enabled", error=_describe(exc, url))
        if response.status_code == 410:
            reason = (
                f"the receiver answered 410 Gone at {datetime.now(UTC).isoformat()} "
                f"(event {params.event.id}, attempt {params.attempt})"
            )
            await self._webhooks.disable(params.endpoint_id, reason)
            log.warning(
                "webhook endpoint disabled: 410 Gone",
                extra={"endpoint_id": str(params.endpoint_id), "event_id": params.event.id},
            )
        return DeliveryAttemptResult(
            endpoint_state="enabled",
            status_code=response.status_code,
            retry_after_seconds=parse_retry_after(
                response.headers.get("retry-after"), datetime.now(UTC)
            ),
        )

    @activity.defn(name="publish_event")
    async def publish_event(self, event: EventOut) -> PublishResult:
        """Start one ``DeliverWebhookWorkflow`` per enabled endpoint subscribed to the event's
        type; a delivery already started for the same event and endpoint is left alone."""
        # Imported here: the workflow module imports this one for its activity stubs.
        from workflows.webhooks import DeliverWebhookWorkflow

        if self._temporal is None:
            raise RuntimeError("publish_event needs a Temporal client")
        started: list[str] = []
        for endpoint_id in await self._webhooks.subscribed(event.type):
            workflow_id = delivery_workflow_id(endpoint_id, event.id)
            # A retried publish finds that delivery started already: nothing to do.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await self._temporal.start_workflow(
                    DeliverWebhookWorkflow.run,
                    self.delivery_input(endpoint_id, event),
                    id=workflow_id,
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=delivery_search_attributes(endpoint_id, event),
                )
            started.append(workflow_id)
        return PublishResult(workflow_ids=started)

    def delivery_input(self, endpoint_id: uuid.UUID, event: EventOut) -> DeliverWebhookInput:
        """The workflow input for one endpoint, with the configured schedule."""
        return DeliverWebhookInput(
            endpoint_id=endpoint_id,
            event=event,
            retry_schedule_seconds=list(self._settings.retry_schedule_seconds),
            attempt_timeout_seconds=self._settings.attempt_timeout_seconds,
        )


def delivery_search_attributes(endpoint_id: uuid.UUID, event: EventOut) -> TypedSearchAttributes:
    """What makes deliveries listable per endpoint in Temporal visibility."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(ENDPOINT_KEY, str(endpoint_id)),
            SearchAttributePair(EVENT_TYPE_KEY, event.type.value),
            SearchAttributePair(STATUS_KEY, DeliveryOutcome.PENDING.value),
        ]
    )
