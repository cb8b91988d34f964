"""Which webhook events a target's new snapshot calls for: one per change of what the events
already sent said (reachable or not, drifted or not), never one per sweep."""

from __future__ import annotations

from typing import Any

from models.health import HealthOutcome, ReportedState, TargetHealth
from models.webhooks import EventOut, WebhookEventType


def health_outcome(health: TargetHealth, previous: ReportedState | None) -> HealthOutcome:
    """The target's state in short and the events its change calls for (none when the events
    already sent say the same)."""
    before = previous or ReportedState(
        database_id=health.database_id, reachable=True, drifted=False, events_sent=0
    )
    # An unreachable target's drift is unknown: what was said about it stands.
    drifted = health.drift.drifted if health.reachable else before.drifted
    kinds: list[WebhookEventType] = []
    if before.reachable and not health.reachable:
        kinds.append(WebhookEventType.DATABASE_UNHEALTHY)
    if not before.reachable and health.reachable:
        kinds.append(WebhookEventType.DATABASE_RECOVERED)
    if drifted and not before.drifted:
        kinds.append(WebhookEventType.DATABASE_DRIFTED)
    events = [
        EventOut(
            # The n-th event of this target: a publish retried before it was recorded repeats
            # the same id, so the receivers get it once.
            id=f"health-{health.database_id}-{before.events_sent + n + 1}",
            type=kind,
            subject=f"database/{health.database_id}",
            data=_event_data(health, kind),
            time=health.checked_at,
        )
        for n, kind in enumerate(kinds)
    ]
    changed = health.reachable != before.reachable or drifted != before.drifted
    return HealthOutcome(
        database_id=health.database_id,
        reachable=health.reachable,
        drifted=drifted,
        behind=bool(health.behind_sets),
        events=events,
        reported=ReportedState(
            database_id=health.database_id,
            reachable=health.reachable,
            drifted=drifted,
            events_sent=before.events_sent + len(events),
        )
        if changed
        else None,
    )


def _event_data(health: TargetHealth, kind: WebhookEventType) -> dict[str, Any]:
    data: dict[str, Any] = {
        "database_id": str(health.database_id),
        "checked_at": health.checked_at.isoformat(),
    }
    if kind is WebhookEventType.DATABASE_UNHEALTHY:
        data["error"] = health.error
    elif kind is WebhookEventType.DATABASE_RECOVERED:
        data["latency_ms"] = health.latency_ms
    else:
        data.update(
            set_name=health.drift.set_name,
            version=health.drift.version,
            differences=health.drift.differences,
            total_differences=health.drift.total_differences,
        )
    return data
