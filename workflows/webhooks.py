"""``DeliverWebhookWorkflow``: one event to one endpoint, retried on the Standard Webhooks
schedule; and ``emit``, the helper other workflows call to publish an event.

The workflow id is ``webhook-{endpoint_id}-{event_id}``, so publishing the same event twice
starts nothing new. Every attempt is one ``deliver_webhook`` activity (one HTTP POST); the waits
between attempts are durable timers, so a delivery survives worker restarts for its whole ~28 h.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from models.webhooks import (
        DeliverWebhookInput,
        DeliveryAttempt,
        DeliveryAttemptInput,
        DeliveryAttemptResult,
        DeliveryOutcome,
        DeliveryResult,
        EventOut,
    )

STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")
# A Retry-After longer than the scheduled delay is honoured up to this many times that delay
# (the same order of magnitude), so a receiver cannot park a delivery for days.
RETRY_AFTER_MAX_FACTOR = 10
# Infrastructure failures of one attempt (catalog down, worker lost) are retried by Temporal;
# the receiver's own answers are results, judged by the workflow.
ATTEMPT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=["CredentialDecryptionError"],
)
PUBLISH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
)


def next_delay(scheduled: float, retry_after: float | None) -> float:
    """The wait before the next attempt: the schedule's, or a longer ``Retry-After`` bounded by
    ``RETRY_AFTER_MAX_FACTOR`` times the scheduled delay (at least 1 s as the base)."""
    if retry_after is None or retry_after <= scheduled:
        return scheduled
    return min(retry_after, max(scheduled, 1.0) * RETRY_AFTER_MAX_FACTOR)


@workflow.defn(name="DeliverWebhookWorkflow")
class DeliverWebhookWorkflow:
    """Delivers one event to one endpoint; the ``attempts`` query shows every try."""

    def __init__(self) -> None:
        self._attempts: list[DeliveryAttempt] = []

    @workflow.query
    def attempts(self) -> list[DeliveryAttempt]:
        """Every attempt so far: when, the status or error, and when the next one is due."""
        return list(self._attempts)

    @workflow.run
    async def run(self, params: DeliverWebhookInput) -> DeliveryResult:
        """Attempt on the schedule until a 2xx, a 410, a disabled or deleted endpoint, or the
        schedule's end."""
        schedule = params.retry_schedule_seconds
        wait = schedule[0]
        outcome = DeliveryOutcome.FAILED
        for index in range(len(schedule)):
            if wait > 0:
                await workflow.sleep(timedelta(seconds=wait))
            attempt = DeliveryAttempt(attempt=index + 1, at=workflow.now())
            result = await self._attempt(params, index + 1)
            attempt.status_code = result.status_code
            attempt.error = result.error
            attempt.retry_after_seconds = result.retry_after_seconds
            self._attempts.append(attempt)
            if result.endpoint_state != "enabled":
                outcome = DeliveryOutcome.STOPPED
                break
            if result.delivered:
                outcome = DeliveryOutcome.DELIVERED
                break
            if result.status_code == 410:
                outcome = DeliveryOutcome.GONE
                break
            if index + 1 < len(schedule):
                wait = next_delay(schedule[index + 1], result.retry_after_seconds)
                attempt.next_attempt_at = workflow.now() + timedelta(seconds=wait)
                self._set_status(DeliveryOutcome.RETRYING)
        self._set_status(outcome)
        return DeliveryResult(
            endpoint_id=params.endpoint_id,
            event_id=params.event.id,
            outcome=outcome,
            attempts=list(self._attempts),
        )

    async def _attempt(self, params: DeliverWebhookInput, number: int) -> DeliveryAttemptResult:
        try:
            return await workflow.execute_activity_method(
                WebhookActivities.deliver_webhook,
                DeliveryAttemptInput(
                    endpoint_id=params.endpoint_id,
                    event=params.event,
                    attempt=number,
                    timeout_seconds=params.attempt_timeout_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=params.attempt_timeout_seconds + 15),
                retry_policy=ATTEMPT_RETRY,
            )
        except ActivityError as exc:
            # Our side failed (catalog, decryption): an attempt that sent nothing, on schedule.
            cause = type(exc.cause).__name__ if exc.cause is not None else "ActivityError"
            return DeliveryAttemptResult(endpoint_state="enabled", error=f"not sent: {cause}")

    def _set_status(self, outcome: DeliveryOutcome) -> None:
        if workflow.info().typed_search_attributes.get(STATUS_KEY) != outcome.value:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(outcome.value)])


async def emit(event: EventOut) -> None:
    """Publish ``event`` from a workflow: one delivery per subscribed endpoint. The event's id
    must be deterministic (derived from the run), so a replayed or retried emit dedupes."""
    await workflow.execute_activity_method(
        WebhookActivities.publish_event,
        event,
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=PUBLISH_RETRY,
    )
