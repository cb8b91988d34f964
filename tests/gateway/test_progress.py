"""The progress cache: one query for many viewers, none waited for while a run is watched."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime

import pytest

from gateway.progress import ProgressCache, accepted_progress, event_id
from models.adoption import AdoptSource
from models.fleet import FleetCounts, FleetProgress, FleetRunInput, FleetSelector, FleetStatus
from models.migrations import TargetRunKind


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Run:
    """A fake ``progress`` query: counts its calls, can be slow or fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = FleetStatus.RUNNING
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.started = datetime.now(UTC)

    async def fetch(self) -> FleetProgress:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("Temporal is down")
        now = datetime.now(UTC)
        return FleetProgress(
            run_id="r1",
            set_name="core",
            status=self.status,
            paused_reason=None,
            total=1,
            total_known=True,
            counts=FleetCounts(running=1),
            concurrency=1,
            targets={},
            started_at=self.started,
            updated_at=now,
            throughput_per_minute=float(self.calls),
            eta_seconds=None,
        )


async def test_viewers_within_max_age_share_one_query_and_its_json() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, clock=clock)
    first = await cache.get("r1", run.fetch)
    clock.now += 0.4
    again = await cache.get("r1", run.fetch)
    assert run.calls == 1
    assert again is first
    assert FleetProgress.model_validate_json(first.body) == first.progress


async def test_concurrent_viewers_of_a_cold_run_wait_for_a_single_query() -> None:
    run = Run()
    run.gate = asyncio.Event()
    cache = ProgressCache()
    waiting = [asyncio.create_task(cache.get("r1", run.fetch)) for _ in range(20)]
    await asyncio.sleep(0.01)
    run.gate.set()
    snapshots = await asyncio.gather(*waiting)
    assert run.calls == 1
    assert len({id(s) for s in snapshots}) == 1


async def test_a_stale_snapshot_is_served_at_once_and_refreshed_behind() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, max_stale=5.0, clock=clock)
    first = await cache.get("r1", run.fetch)
    run.gate = asyncio.Event()  # the next query hangs until released
    clock.now += 1.0
    served = await asyncio.wait_for(cache.get("r1", run.fetch), timeout=1)
    assert served is first  # no viewer waits for the slow query
    await asyncio.sleep(0.01)
    assert run.calls == 2  # exactly one background refresh, however many viewers
    await cache.get("r1", run.fetch)
    assert run.calls == 2
    run.gate.set()
    await asyncio.sleep(0.01)
    newer = await cache.get("r1", run.fetch)
    assert newer is not first
    assert newer.progress.throughput_per_minute == 2


async def test_too_stale_waits_and_a_failed_refresh_surfaces_to_the_next_viewer() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, max_stale=5.0, max_outage=30.0, clock=clock)
    await cache.get("r1", run.fetch)
    run.fail = True
    clock.now += 1.0
    await cache.get("r1", run.fetch)  # stale: served, background refresh fails quietly
    await asyncio.sleep(0.01)
    clock.now += 40  # past max_outage: the next viewer waits for a query and sees it fail
    with pytest.raises(RuntimeError, match="Temporal is down"):
        await cache.get("r1", run.fetch)


async def test_through_an_outage_the_last_snapshot_is_served_and_retried_once_a_max_age() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, max_stale=5.0, max_outage=30.0, clock=clock)
    first = await cache.get("r1", run.fetch)
    run.fail = True  # the worker was killed, or Temporal restarts
    for _ in range(40):  # 20 s of viewers polling every 0.5 s, none waits or fails
        clock.now += 0.5
        assert await asyncio.wait_for(cache.get("r1", run.fetch), timeout=1) is first
        await asyncio.sleep(0)
    assert cache.age(first) == 20.0
    assert 20 <= run.calls <= 42  # one query at a time, at most one a max_age
    calls = run.calls
    for _ in range(5):  # many viewers within one max_age: no query of their own
        assert await cache.get("r1", run.fetch) is first
    assert run.calls == calls
    run.fail = False  # back: the next refresh replaces it
    clock.now += 1
    assert await cache.get("r1", run.fetch) is first
    await asyncio.sleep(0.01)
    fresh = await cache.get("r1", run.fetch)
    assert fresh is not first and cache.age(fresh) == 0.0


async def test_finished_runs_are_kept_and_fresh_forces_a_query() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, clock=clock)
    await cache.get("r1", run.fetch)
    run.status = FleetStatus.COMPLETED
    final = await cache.get("r1", run.fetch, fresh=True)
    assert final.final
    clock.now += 3600
    assert await cache.get("r1", run.fetch) is final
    assert run.calls == 2


async def test_least_recently_used_runs_are_evicted() -> None:
    run = Run()
    cache = ProgressCache(max_runs=2)
    for run_id in ("a", "b", "a", "c"):
        await cache.get(run_id, run.fetch)
    assert run.calls == 3
    await cache.get("a", run.fetch)  # kept: used after b
    assert run.calls == 3
    await cache.get("b", run.fetch)  # evicted
    assert run.calls == 4


async def test_a_snapshot_carries_gzipped_and_summary_bodies() -> None:
    run = Run()
    snapshot = await ProgressCache().get("r1", run.fetch)
    assert gzip.decompress(snapshot.gzipped) == snapshot.body
    summary = FleetProgress.model_validate_json(snapshot.summary)
    assert summary.targets == {}
    assert summary.counts == snapshot.progress.counts


async def test_a_seeded_run_answers_without_a_query_until_it_ages() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=1.0, clock=clock)
    cache.seed("r1", await run.fetch())
    run.calls = 0
    seeded = await cache.get("r1", run.fetch)
    assert run.calls == 0
    cache.seed("r1", await run.fetch())  # never replaces what is there
    assert await cache.get("r1", run.fetch) is seeded
    clock.now += 2
    await cache.get("r1", run.fetch)
    await asyncio.sleep(0.01)
    assert (await cache.get("r1", run.fetch)) is not seeded


async def test_a_slow_refresh_keeps_the_old_snapshot_in_service_past_max_stale() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, max_stale=5.0, clock=clock)
    first = await cache.get("r1", run.fetch)
    run.gate = asyncio.Event()
    clock.now += 1
    assert await cache.get("r1", run.fetch) is first  # starts the (slow) refresh
    await asyncio.sleep(0.01)
    clock.now += 30  # way past max_stale, but the query is still on its way
    assert await asyncio.wait_for(cache.get("r1", run.fetch), timeout=1) is first
    assert run.calls == 2
    run.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get("r1", run.fetch) is not first


async def test_the_event_id_orders_states_and_ignores_the_clock() -> None:
    clock, run = Clock(), Run()
    cache = ProgressCache(max_age=0.5, clock=clock)
    first = await cache.get("r1", run.fetch)
    clock.now += 1
    again = await cache.get("r1", run.fetch, fresh=True)
    # Another query, another rate and time: the same state, the same id.
    assert again.progress.throughput_per_minute != first.progress.throughput_per_minute
    assert again.event_id == first.event_id
    assert first.event_id.startswith("0-")
    done = first.progress.model_copy(
        update={"counts": FleetCounts(succeeded=1), "status": FleetStatus.COMPLETED}
    )
    assert event_id(done).startswith("1-") and event_id(done) != first.event_id


def test_a_just_accepted_run_answers_as_its_workflow_will() -> None:
    """The progress served before the run's first query is the workflow's answer over its
    empty compact state: a dry run says so, an adopt run names its tool, the map is partial."""
    params = FleetRunInput(
        run_id="r1",
        set_name="core",
        selector=FleetSelector(all=True),
        concurrency=7,
        dry_run=True,
        kind=TargetRunKind.ADOPT,
        adopt_from=AdoptSource.DBMATE,
    )
    accepted = accepted_progress(params)
    assert (accepted.run_id, accepted.set_name, accepted.status) == (
        "r1",
        "core",
        FleetStatus.RUNNING,
    )
    assert (accepted.dry_run, accepted.kind, accepted.adopt_from) == (
        True,
        TargetRunKind.ADOPT,
        AdoptSource.DBMATE,
    )
    assert (accepted.total, accepted.total_known, accepted.concurrency) == (0, False, 7)
    assert accepted.counts == FleetCounts() and accepted.targets == {}
    assert not accepted.targets_complete and accepted.queued == []
    assert (accepted.throughput_per_minute, accepted.eta_seconds) == (0.0, None)
