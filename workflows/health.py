"""``FleetHealthWorkflow``: one sweep over every target, run by a Temporal Schedule (or on demand).

Targets are resolved a page at a time (``resolve_targets``, as fleet runs do); each page is
checked in batches (``check_health_batch``) with at most ``concurrency`` batches in flight. The
activity stores every snapshot and says which events a change calls for; the sweep publishes
them with ``emit`` and only then records them as sent, so an event goes out once per change
(a retried publish repeats the event's id and delivers nothing twice). The run continues-as-new
between pages once its history grows.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.fleet import FleetActivities
    from activities.health import HealthActivities
    from models.fleet import TargetPageRequest
    from models.health import (
        FleetHealthInput,
        FleetHealthResult,
        FleetHealthState,
        HealthBatchInput,
        HealthCounts,
        HealthOutcome,
        ReportedState,
    )
    from workflows.webhooks import emit

CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
CATALOG_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)


@workflow.defn(name="FleetHealthWorkflow")
class FleetHealthWorkflow:
    """See the module docstring; the ``counts`` query shows the sweep so far."""

    @workflow.init
    def __init__(self, params: FleetHealthInput) -> None:
        self._state = params.state or FleetHealthState(started_at=workflow.now())

    @workflow.query
    def counts(self) -> HealthCounts:
        """Targets checked so far, how many are unreachable, drifted, behind; events sent."""
        return self._state.counts

    @workflow.run
    async def run(self, params: FleetHealthInput) -> FleetHealthResult:
        """Sweep every page of targets, then return the totals."""
        state = self._state
        run_id = params.run_id or workflow.info().workflow_id
        while True:
            page = await workflow.execute_activity_method(
                FleetActivities.resolve_targets,
                TargetPageRequest(
                    selector=params.selector, after=state.after, limit=params.page_size
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=CATALOG_RETRY,
            )
            ids = page.database_ids
            batches = [
                ids[i : i + params.batch_size] for i in range(0, len(ids), params.batch_size)
            ]
            window = asyncio.Semaphore(params.concurrency)

            async def sweep_batch(
                batch: list[uuid.UUID], window: asyncio.Semaphore = window
            ) -> None:
                async with window:
                    await self._batch(
                        HealthBatchInput(
                            run_id=run_id,
                            database_ids=batch,
                            connect_timeout_seconds=params.connect_timeout_seconds,
                        )
                    )

            await asyncio.gather(*(sweep_batch(b) for b in batches))
            state.after = page.after
            if page.after is None:
                break
            info = workflow.info()
            if (
                info.get_current_history_length() > params.continue_after_events
                or info.is_continue_as_new_suggested()
            ):
                state.continued += 1
                workflow.continue_as_new(
                    params.model_copy(update={"run_id": run_id, "state": state})
                )
        assert state.started_at is not None
        return FleetHealthResult(
            run_id=run_id,
            counts=state.counts,
            started_at=state.started_at,
            finished_at=workflow.now(),
        )

    async def _batch(self, batch: HealthBatchInput) -> None:
        outcomes: list[HealthOutcome] = await workflow.execute_activity_method(
            HealthActivities.check_health_batch,
            batch,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=CHECK_RETRY,
        )
        counts = self._state.counts
        reported: list[ReportedState] = []
        for outcome in outcomes:
            counts.checked += 1
            counts.unreachable += not outcome.reachable
            counts.drifted += outcome.drifted
            counts.behind += outcome.behind
            for event in outcome.events:
                await emit(event)
                counts.events += 1
            if outcome.reported is not None:
                reported.append(outcome.reported)
        if reported:
            await workflow.execute_activity_method(
                HealthActivities.mark_health_reported,
                reported,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=CATALOG_RETRY,
            )
