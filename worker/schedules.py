"""What a worker keeps in place at start-up: the fleet health sweep's Temporal Schedule and the
alert watcher (one long-running workflow per task queue)."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from common.settings import AlertSettings, HealthSettings
from models.alerts import WatchAlertsInput, watch_alerts_workflow_id
from models.health import FleetHealthInput
from workflows.alerts import WatchAlertsWorkflow
from workflows.health import FleetHealthWorkflow

log = logging.getLogger(__name__)


def health_schedule_id(task_queue: str) -> str:
    """The schedule's id: one per task queue (so per deployment)."""
    return f"fleet-health-{task_queue}"


def health_schedule(settings: HealthSettings, task_queue: str) -> Schedule:
    """A sweep every ``interval_seconds``; a sweep still running makes the next one skip."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            FleetHealthWorkflow.run,
            FleetHealthInput(
                requester="schedule",
                concurrency=settings.concurrency,
                batch_size=settings.batch_size,
                connect_timeout_seconds=settings.connect_timeout_seconds,
            ),
            id=health_schedule_id(task_queue),
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_health_schedule(client: Client, settings: HealthSettings, task_queue: str) -> None:
    """Create or update the sweep's schedule; with ``interval_seconds`` 0, delete it."""
    schedule_id = health_schedule_id(task_queue)
    handle = client.get_schedule_handle(schedule_id)
    if settings.interval_seconds == 0:
        try:
            await handle.delete()
            log.info("health schedule deleted", extra={"schedule_id": schedule_id})
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        return
    wanted = health_schedule(settings, task_queue)
    try:
        await client.create_schedule(schedule_id, wanted)
        log.info("health schedule created", extra={"schedule_id": schedule_id})
    except ScheduleAlreadyRunningError:

        def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
            del current
            return ScheduleUpdate(schedule=wanted)

        await handle.update(replace)
        log.info("health schedule updated", extra={"schedule_id": schedule_id})


async def ensure_alert_watch(client: Client, settings: AlertSettings, task_queue: str) -> None:
    """Start the task queue's alert watcher unless it runs already (every worker calls this; the
    first start wins, the others join it). With ``interval_seconds`` 0 nothing is started, and
    a running watcher ends at its next evaluation on a worker with that setting.

    A long-running workflow rather than a Schedule: the watcher must remember which alerts fire
    between evaluations (to announce changes only), and a wake-up far later than due is how it
    learns that no worker ran in between."""
    if settings.interval_seconds == 0:
        return
    workflow_id = watch_alerts_workflow_id(task_queue)
    await client.start_workflow(
        WatchAlertsWorkflow.run,
        WatchAlertsInput(),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    log.info("alert watcher running", extra={"workflow_id": workflow_id})
