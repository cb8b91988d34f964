"""``WatchAlertsWorkflow``: the fleet-wide alert rules of deploy/prometheus/alerts.yml as webhook
events, for teams without Prometheus.

One watcher per task queue (``watch-alerts-{task_queue}``), started by every worker at start-up
(a second start joins the running one). Every ``interval_seconds`` it runs ``evaluate_alerts``
and compares each condition with what it remembers: a condition that starts sends one
``alert.*`` event with ``status: firing``, one that ends sends ``status: resolved``, and an
unchanged one sends nothing, however many evaluations it lasts. The memory (firing alerts and
their start) is the workflow's state, carried over continue-as-new: no table.

A watcher cannot run while no worker does, so it cannot say "no worker" as it happens (nor could
a delivery go out). What it can see afterwards: its timer fired much later than due. A worker
that runs the late task sends one ``alert.no_worker`` ``resolved`` event with the outage's start
and end. While some workers remain, ``evaluate_alerts`` counts them against ``min_workers``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.alerts import AlertActivities
    from models.alerts import (
        ALERT_EVENT_TYPES,
        PROMETHEUS_ALERTS,
        AlertCondition,
        AlertEvaluation,
        AlertName,
        AlertStatus,
        AlertWatchState,
        EvaluateAlertsInput,
        WatchAlertsInput,
        WatchAlertsResult,
    )
    from models.webhooks import EventOut
    from workflows.webhooks import emit

EVALUATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


@workflow.defn(name="WatchAlertsWorkflow")
class WatchAlertsWorkflow:
    """See the module docstring; the ``firing`` query lists the alerts firing now."""

    @workflow.init
    def __init__(self, params: WatchAlertsInput) -> None:
        self._state = params.state or AlertWatchState()

    @workflow.query
    def firing(self) -> list[AlertName]:
        """The alerts firing now, by name."""
        return sorted(self._state.firing)

    @workflow.run
    async def run(self, params: WatchAlertsInput) -> WatchAlertsResult:
        """Evaluate, announce changes, sleep; until the interval setting is 0."""
        state = self._state
        while True:
            await self._announce_late_worker()
            evaluation = await self._evaluate()
            if evaluation is not None:
                state.gateway = evaluation.gateway
                state.no_worker_seconds = evaluation.no_worker_seconds
                state.interval_seconds = evaluation.interval_seconds
                for condition in evaluation.conditions:
                    await self._transition(condition)
            state.evaluations += 1
            done = params.max_evaluations is not None and (
                state.evaluations >= params.max_evaluations
            )
            if state.interval_seconds == 0 or done:
                return WatchAlertsResult(
                    evaluations=state.evaluations, events=state.events, firing=self.firing()
                )
            state.next_due = workflow.now() + timedelta(seconds=state.interval_seconds)
            await workflow.sleep(timedelta(seconds=state.interval_seconds))
            if (
                state.evaluations % params.continue_after_evaluations == 0
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(params.model_copy(update={"state": state}))

    async def _evaluate(self) -> AlertEvaluation | None:
        """The conditions now; None when they could not be measured (Temporal visibility down):
        nothing changes and the next evaluation tries again."""
        try:
            return await workflow.execute_activity_method(
                AlertActivities.evaluate_alerts,
                EvaluateAlertsInput(previous_gateway=self._state.gateway),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=EVALUATE_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("alert evaluation failed; trying again at the next interval")
            return None

    async def _announce_late_worker(self) -> None:
        """A wake-up much later than due means no worker ran this workflow in between."""
        state = self._state
        due = state.next_due
        if due is None or AlertName.NO_WORKER in state.firing:
            return
        now = workflow.now()
        late = (now - due).total_seconds()
        if late <= state.no_worker_seconds:
            return
        await self._send(
            AlertName.NO_WORKER,
            AlertStatus.RESOLVED,
            since=due,
            data={
                "value": None,
                "threshold": state.no_worker_seconds,
                "details": {"observed": "the alert watcher ran late", "late_seconds": late},
            },
        )

    async def _transition(self, condition: AlertCondition) -> None:
        firing = self._state.firing
        if condition.firing == (condition.name in firing):
            return
        if condition.firing:
            since = workflow.now()
            firing[condition.name] = since
            status = AlertStatus.FIRING
        else:
            since = firing.pop(condition.name)
            status = AlertStatus.RESOLVED
        await self._send(
            condition.name,
            status,
            since=since,
            data={
                "value": condition.value,
                "threshold": condition.threshold,
                "details": condition.details,
            },
        )

    async def _send(
        self, name: AlertName, status: AlertStatus, *, since: datetime, data: dict[str, Any]
    ) -> None:
        now = workflow.now()
        # Derived from the alert, its state and when it started: a replayed or retried publish
        # repeats the id, so receivers get each change once.
        event_id = f"alert-{name.value}-{status.value}-{since.strftime('%Y%m%dT%H%M%S.%f')}"
        await emit(
            EventOut(
                id=event_id,
                type=ALERT_EVENT_TYPES[name],
                subject=f"alert/{name.value}",
                data={
                    "alert": name.value,
                    "status": status.value,
                    "firing_since": since.isoformat(),
                    "resolved_at": now.isoformat() if status is AlertStatus.RESOLVED else None,
                    "prometheus_alert": PROMETHEUS_ALERTS[name],
                    "runbook": f"docs/runbooks.md#{PROMETHEUS_ALERTS[name].lower()}",
                    **data,
                },
                time=now,
            )
        )
        self._state.events += 1
