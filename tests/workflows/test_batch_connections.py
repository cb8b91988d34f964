"""Fleet runs with ``batch_connections``: fewer, longer batch activities that run their
targets a few at a time, on a real Temporal server, worker and PostgreSQL."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.migrations import LEDGER_TABLE
from models.fleet import FailureBudget, FleetRunResult, FleetStatus, TargetBatchInput
from tests.conftest import TargetFactory
from tests.workflows.test_fleet import Fleet, fleet, ledger_times, replay_and_record, until
from workflows.fleet import MigrateFleetWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")
__all__ = ["fleet"]


async def batches(
    handle: WorkflowHandle[MigrateFleetWorkflow, FleetRunResult],
) -> list[TargetBatchInput]:
    """The run's batch activities, in the order they were scheduled, with their inputs."""
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        scheduled = event.activity_task_scheduled_event_attributes
        if scheduled.activity_type.name == "run_target_batch":
            payloads = scheduled.input.payloads
            [batch] = await pydantic_data_converter.decode(payloads, [TargetBatchInput])
            found.append(batch)
    return found


def most_at_once(starts: list[float], seconds: float) -> int:
    """The most intervals ``[start, start + seconds)`` that overlap at any start."""
    return max(sum(1 for s in starts if s <= t < s + seconds) for t in starts)


async def test_batches_run_their_targets_a_few_at_a_time_after_an_exact_canary(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    for _ in range(8):
        await fleet.add(await make_target())
    handle = await fleet.start(
        concurrency=2, batch_size=4, batch_connections=2, canary=1, canary_wait_for_resume=True
    )
    # The canary runs exactly the targets it names, never a batch's worth.
    paused = await until(handle, lambda p: p.status is FleetStatus.PAUSED and not p.counts.running)
    assert (paused.counts.succeeded, paused.counts.pending) == (1, 7)
    await handle.signal(MigrateFleetWorkflow.resume)
    result = await handle.result()
    assert (result.status, result.counts.succeeded, result.counts.failed) == (
        FleetStatus.COMPLETED,
        8,
        0,
    )
    # Three activities instead of five: the canary's one target, then batches of 4 and 3, each
    # on at most 2 connections (the window of 2 holds one such batch).
    scheduled = await batches(handle)
    assert [(len(b.database_ids), b.connections, b.stop_at_failure) for b in scheduled] == [
        (1, None, False),
        (4, 2, True),
        (3, 2, True),
    ]
    # Version 1 sleeps 0.2 s inside its transaction (applied_at is the transaction's start):
    # never more than the window's 2 at once, and every version applied once.
    starts = []
    for target in fleet.targets:
        times = await ledger_times(target)
        assert len(times) == 2
        starts.append(times[0])
    assert most_at_once(starts, 0.2) <= 2
    await replay_and_record(handle, "migrate_fleet_batch_connections.json")


async def test_a_batch_stops_at_a_failure_and_the_budget_pauses_the_run_before_the_rest(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    await fleet.add(await make_target(), password="wrong", first=True)
    for _ in range(5):
        await fleet.add(await make_target())
    handle = await fleet.start(
        concurrency=1,
        batch_size=6,
        batch_connections=1,
        failure_budget=FailureBudget(max_failed=0),
    )
    # The batch of six ran its first target, which failed, and handed the five back unstarted:
    # the budget paused the run with none of them applied.
    state = await until(handle, lambda p: p.status is FleetStatus.PAUSED and not p.counts.running)
    assert state.paused_reason is not None and "failure budget exceeded" in state.paused_reason
    assert (state.counts.failed, state.counts.pending, state.counts.succeeded) == (1, 5, 0)
    for target in fleet.targets[1:]:
        conn = await target.connect()
        try:  # never connected to by the run: no ledger
            assert await conn.fetchval("SELECT to_regclass($1)", LEDGER_TABLE) is None
        finally:
            await conn.close()
    # Resuming runs the five handed back first: one batch of five on one connection.
    await handle.signal(MigrateFleetWorkflow.resume)
    result = await handle.result()
    assert (result.status, result.counts.succeeded, result.counts.failed) == (
        FleetStatus.COMPLETED,
        5,
        1,
    )
    scheduled = await batches(handle)
    assert [(len(b.database_ids), b.connections) for b in scheduled] == [(6, 1), (5, 1)]
    for target in fleet.targets[1:]:
        assert len(await ledger_times(target)) == 2
    await replay_and_record(handle, "migrate_fleet_batch_stopped.json")
