"""A compact fleet run on a real Temporal server, worker and PostgreSQL: counts and bounded
sets, nothing per finished target (models.run_state)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHandle

from models.fleet import FleetRunResult, FleetStatus, TargetState
from tests.conftest import TargetFactory
from tests.workflows.test_fleet import Fleet, fleet, ledger_times, progress, replay_and_record
from workflows.fleet import MigrateFleetWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")
__all__ = ["fleet"]


async def test_a_run_keeps_counts_failures_and_recent_results_only(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    await fleet.add(await make_target(), password="wrong", first=True)
    for _ in range(7):
        await fleet.add(await make_target())
    handle = await fleet.start(concurrency=3, batch_size=2)
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    assert (result.counts.succeeded, result.counts.failed, result.counts.running) == (7, 1, 0)
    [(_, failed)] = result.failed.items()
    assert "password authentication failed" in str(failed.error)
    assert result.failed_not_listed == 0
    final = await progress(handle)
    assert not final.targets_complete
    assert (final.total, final.total_known, final.position, final.queued) == (8, True, None, [])
    # Eight targets fit in the recent ring: each one's last word, nothing in flight.
    states = sorted(t.state.value for t in final.targets.values())
    assert states == ["failed"] + ["succeeded"] * 7
    assert all(
        t.to_version == "2" for t in final.targets.values() if t.state is TargetState.SUCCEEDED
    )
    for target in fleet.targets[1:]:
        assert len(await ledger_times(target)) == 2
    await replay_and_record(handle, "migrate_fleet_compact.json")


async def test_a_rerun_over_an_up_to_date_fleet_counts_it(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    for _ in range(5):
        await fleet.add(await make_target())
    assert (await (await fleet.start(concurrency=5, batch_size=5)).result()).counts.succeeded == 5
    result = await (await fleet.start(f"{fleet.label}-again", concurrency=5)).result()
    assert (result.counts.up_to_date, result.counts.succeeded, result.failed) == (5, 0, {})
    for target in fleet.targets:
        assert len(await ledger_times(target)) == 2  # nothing applied twice


async def test_up_to_date_targets_are_settled_from_their_ledgers_and_the_rest_run(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    """A batch that finds every target up to date turns the run to settle-only batches: one
    activity reads many ledgers (its share of the window's connections at once) and counts the
    up-to-date targets, with up to SETTLE_LANES such batches side by side; those with work left
    run in ordinary batches."""
    await fleet.add(await make_target(), first=True)
    for _ in range(8):
        await fleet.add(await make_target())
    assert (await (await fleet.start(concurrency=9, batch_size=9)).result()).counts.succeeded == 9
    for _ in range(3):  # behind: registered after the first run
        await fleet.add(await make_target())
    handle = await fleet.start(f"{fleet.label}-again", concurrency=2, batch_size=1)
    result = await handle.result()
    assert (result.counts.up_to_date, result.counts.succeeded, result.failed) == (9, 3, {})
    assert result.counts.pending == result.counts.running == 0
    for target in fleet.targets:
        assert len(await ledger_times(target)) == 2  # every version once
    events = (await handle.fetch_history()).events
    batches = {
        event.event_id: event.activity_task_scheduled_event_attributes
        for event in events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "run_target_batch"
    }
    settling = [i for i, b in batches.items() if b'"settle_only":true' in b.input.payloads[0].data]
    assert settling, "no settle-only batch ran"
    # Fewer activities than targets: the up-to-date ones never had a batch of their own.
    assert len(batches) < 12
    # Two settle-only batches side by side: the second was scheduled before the first ended,
    # each with its share (one) of the window's two connections.
    first_done = min(
        e.event_id
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id == settling[0]
    )
    assert len(settling) >= 2 and settling[1] < first_done
    assert all(b'"connections":1' in batches[i].input.payloads[0].data for i in settling)
    await replay_and_record(handle, "migrate_fleet_settle_lanes.json")


async def test_a_run_past_its_history_size_continues_as_new_and_finishes_every_target(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    """With a tiny `continue_after_bytes` the run continues as new after each batch of a run;
    the chain still migrates every target exactly once and ends with the full counts."""
    for _ in range(6):
        await fleet.add(await make_target())
    handle = await fleet.start(concurrency=2, batch_size=2, continue_after_bytes=1)
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    assert (result.counts.succeeded, result.counts.failed, result.counts.pending) == (6, 0, 0)
    for target in fleet.targets:
        assert len(await ledger_times(target)) == 2  # every version once
    runs, run_id = 0, handle.first_execution_run_id
    while run_id:
        runs += 1
        history = await fleet.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    assert runs >= 2, "the run never continued as new"
    final = await progress(handle)
    assert (final.total, final.counts.succeeded) == (6, 6)
    first: WorkflowHandle[MigrateFleetWorkflow, FleetRunResult] = fleet.client.get_workflow_handle(
        handle.id, run_id=handle.first_execution_run_id, result_type=FleetRunResult
    )
    await replay_and_record(first, "migrate_fleet_continued.json")
