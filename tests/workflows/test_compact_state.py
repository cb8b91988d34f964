"""A compact fleet run on a real Temporal server, worker and PostgreSQL: counts and bounded
sets, nothing per finished target (models.run_state)."""

from __future__ import annotations

import pytest

from models.fleet import FleetStatus, TargetState
from tests.conftest import TargetFactory
from tests.workflows.test_fleet import Fleet, fleet, ledger_times, progress, replay_and_record

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
