"""What activities record, through ``activity.metric_meter()`` (see ``common.telemetry.metrics``).

The meter belongs to the worker running the activity, so its runtime's buffer (and endpoint)
gets the update. Outside an activity (a bench or a unit test calling the code directly) nothing
is recorded. Labels are bounded: a set's name, a server's name, an outcome; never a target's id.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from temporalio import activity
from temporalio.common import MetricMeter

from common.telemetry.metrics import (
    LOCK_TIMEOUT_RETRIES,
    SERVER_CONNECTIONS_IN_USE,
    TARGET_MIGRATION_DURATION,
    TARGETS_FAILED,
    TARGETS_MIGRATED,
    VERSIONS_APPLIED,
    WEBHOOK_DELIVERIES,
)
from models.migrations import TargetRunKind, TargetRunResult
from models.webhooks import DeliveryAttemptResult

# Migration connections open in this process, per server; the gauge shows this count.
_IN_USE: Counter[str] = Counter()
UNREGISTERED_SERVER = "unregistered"


def _meter() -> MetricMeter | None:
    return activity.metric_meter() if activity.in_activity() else None


def target_finished(set_name: str, result: TargetRunResult, seconds: float) -> None:
    """One target of a run is done (dry runs change nothing and count nothing): failed, or
    migrated when it applied (or rolled back) at least one version; its time either way."""
    meter = _meter()
    if meter is None or result.dry_run:
        return
    labels = {"set": set_name}
    if result.failure is not None:
        meter.create_counter(TARGETS_FAILED, "Targets whose run failed, by set.").add(1, labels)
    elif result.applied:
        meter.create_counter(TARGETS_MIGRATED, "Targets migrated, by set.").add(1, labels)
    if result.kind is TargetRunKind.APPLY and result.applied:
        meter.create_counter(VERSIONS_APPLIED, "Versions applied, by set.").add(
            len(result.applied), labels
        )
    meter.create_histogram_float(
        TARGET_MIGRATION_DURATION, "Time to run one target, by set.", "s"
    ).record(seconds, labels)


def lock_timeout_retry() -> None:
    """A busy target (lock or statement timeout) is tried again after a backoff."""
    meter = _meter()
    if meter is not None:
        meter.create_counter(LOCK_TIMEOUT_RETRIES, "Lock-timeout retries.").add(1)


def webhook_delivery(outcome: str) -> None:
    """One delivery attempt's outcome: delivered, failed, disabled, deleted, gone."""
    meter = _meter()
    if meter is not None:
        meter.create_counter(WEBHOOK_DELIVERIES, "Webhook delivery attempts, by outcome.").add(
            1, {"outcome": outcome}
        )


def delivery_outcome(result: DeliveryAttemptResult) -> str:
    """delivered (2xx), disabled (the endpoint is disabled, deleted, or answered 410 Gone, which
    disables it), or failed (another answer or a connection error: retried on schedule)."""
    if result.endpoint_state != "enabled" or result.status_code == 410:
        return "disabled"
    return "delivered" if result.delivered else "failed"


@contextlib.contextmanager
def server_connection(server: str | None) -> Iterator[None]:
    """Counts a migration connection to a target on ``server`` while the block runs."""
    meter = _meter()
    if meter is None:
        yield
        return
    name = server or UNREGISTERED_SERVER
    gauge = meter.create_gauge(SERVER_CONNECTIONS_IN_USE, "Migration connections in use.")
    _IN_USE[name] += 1
    gauge.set(_IN_USE[name], {"server": name})
    try:
        yield
    finally:
        _IN_USE[name] -= 1
        gauge.set(_IN_USE[name], {"server": name})
