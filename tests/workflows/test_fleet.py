"""MigrateFleetWorkflow on a real Temporal server, worker and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.migrations import LEDGER_TABLE
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import (
    FailureBudget,
    FleetProgress,
    FleetRunInput,
    FleetRunResult,
    FleetSelector,
    FleetStatus,
)
from tests.activities.test_migrations import migration
from tests.conftest import TargetDatabase, TargetFactory
from worker.registry import WORKFLOWS
from workflows.fleet import MigrateFleetWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")

STEPS = [
    migration("1", "CREATE TABLE a (id int);\nSELECT pg_sleep(0.2);", "DROP TABLE a;"),
    migration("2", "CREATE TABLE b (id int);", "DROP TABLE b;"),
]


class Fleet:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: Client) -> None:
        self.pool = pool
        self.settings = settings
        self.client = client
        self.label = uuid.uuid4().hex[:10]
        self.set_name = f"fleet-{self.label}"
        self.targets: list[TargetDatabase] = []
        self.repository = DatabaseRepository(
            pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
        )

    async def add(
        self, target: TargetDatabase, password: str | None = None, *, first: bool = False
    ) -> None:
        # The selector resolves targets by name: "0-..." sorts before every "f-...".
        name = f"{'0' if first else 'f'}-{uuid.uuid4().hex[:8]}"
        body = target.create_body(name=name, labels={"fleet": self.label})
        if password is not None:
            body["password"] = password
        await self.repository.create(DatabaseCreate.model_validate(body))
        self.targets.append(target)

    async def start(
        self, run_id: str | None = None, **options: object
    ) -> WorkflowHandle[MigrateFleetWorkflow, FleetRunResult]:
        run_id = run_id or self.label
        if run_id == self.label:
            await MigrationSetRepository(self.pool).register(self.set_name, STEPS)
        params = FleetRunInput.model_validate(
            {
                "run_id": run_id,
                "set_name": self.set_name,
                "selector": FleetSelector(labels={"fleet": self.label}),
                **options,
            }
        )
        return await self.client.start_workflow(
            MigrateFleetWorkflow.run,
            params,
            id=f"migrate-fleet-{run_id}",
            task_queue=self.settings.temporal.task_queue,
        )


async def progress(handle: WorkflowHandle[MigrateFleetWorkflow, FleetRunResult]) -> FleetProgress:
    return await handle.query(MigrateFleetWorkflow.progress)


async def until(
    handle: WorkflowHandle[MigrateFleetWorkflow, FleetRunResult],
    condition: Callable[[FleetProgress], bool],
    within: float = 30,
) -> FleetProgress:
    """Poll the progress query until ``condition`` holds."""
    for _ in range(int(within / 0.05)):
        state = await progress(handle)
        if condition(state):
            return state
        await asyncio.sleep(0.05)
    pytest.fail(f"condition not reached: {state}")


async def ledger_times(target: TargetDatabase) -> list[float]:
    conn = await target.connect()
    try:
        rows = await conn.fetch(
            f"SELECT extract(epoch FROM applied_at) AS t FROM {LEDGER_TABLE} ORDER BY version"
        )
    finally:
        await conn.close()
    return [float(r["t"]) for r in rows]


async def replay_and_record(
    handle: WorkflowHandle[MigrateFleetWorkflow, FleetRunResult], name: str
) -> None:
    """The run's history replays; with TENANTFLOW_RECORD_HISTORIES=1 it is saved for
    tests/workflows/test_system.py::test_committed_histories_replay."""
    history = await handle.fetch_history()
    await Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (Path(__file__).parent / "histories" / name).write_text(history.to_json())


@pytest.fixture
async def fleet(catalog_pool: asyncpg.Pool, settings: Settings, temporal_client: Client) -> Fleet:
    return Fleet(catalog_pool, settings, temporal_client)


async def test_every_target_reaches_the_latest_version_once(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    for _ in range(8):
        await fleet.add(await make_target())
    handle = await fleet.start(concurrency=4, batch_size=2)
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    assert (result.counts.succeeded, result.counts.failed) == (8, 0)
    final = await progress(handle)
    assert final.total == 8 and final.total_known
    assert all(t.to_version == "2" for t in final.targets.values())
    for target in fleet.targets:
        assert len(await ledger_times(target)) == 2  # one row per version
    await replay_and_record(handle, "migrate_fleet.json")


async def test_pause_starts_nothing_new_and_resume_finishes(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    for _ in range(8):
        await fleet.add(await make_target())
    handle = await fleet.start(concurrency=1, batch_size=1)
    await until(handle, lambda p: p.counts.succeeded >= 2)
    await handle.signal(MigrateFleetWorkflow.pause)
    paused = await until(handle, lambda p: not p.counts.running)
    assert paused.status is FleetStatus.PAUSED
    done_while_paused = paused.counts.succeeded
    paused_at = asyncio.get_running_loop().time()
    await asyncio.sleep(1.0)
    assert (await progress(handle)).counts.succeeded == done_while_paused
    await handle.signal(MigrateFleetWorkflow.resume)
    result = await handle.result()
    assert result.counts.succeeded == 8
    assert asyncio.get_running_loop().time() - paused_at >= 1.0
    # From the ledgers: the applied_at times fall into two groups with a >= 1 s gap between.
    times: list[float] = []
    for target in fleet.targets:
        times += await ledger_times(target)
    times.sort()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.9
    await replay_and_record(handle, "migrate_fleet_paused_resumed.json")


async def test_a_failing_target_under_the_budget_is_reported_and_the_run_completes(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    broken = await make_target()
    conn = await broken.connect()
    try:
        await conn.execute("CREATE TABLE b (id int)")  # version 2 will collide with it
    finally:
        await conn.close()
    await fleet.add(broken, first=True)
    for _ in range(3):
        await fleet.add(await make_target())
    handle = await fleet.start(
        concurrency=2, batch_size=1, failure_budget=FailureBudget(max_failed=1)
    )
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    assert (result.counts.succeeded, result.counts.failed) == (3, 1)
    [(_, failed)] = result.failed.items()
    assert (failed.from_version, failed.to_version) == (None, "1")
    assert failed.error is not None and failed.error.startswith("sql_error at version 2")
    assert 'relation "b" already exists' in failed.error
    # Version 1 stayed, version 2 left nothing behind: the ledger says exactly that.
    assert len(await ledger_times(broken)) == 1


async def test_failure_budget_pauses_the_run_and_cancel_ends_it(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    await fleet.add(await make_target(), password="wrong", first=True)
    for _ in range(4):
        await fleet.add(await make_target())
    handle = await fleet.start(
        concurrency=1, batch_size=1, failure_budget=FailureBudget(max_failed=0)
    )
    state = await until(handle, lambda p: p.status is FleetStatus.PAUSED and not p.counts.running)
    assert state.status is FleetStatus.PAUSED
    assert state.paused_reason is not None and "failure budget exceeded" in state.paused_reason
    failed = [t for t in state.targets.values() if t.state.value == "failed"]
    assert len(failed) == 1
    assert "password authentication failed" in str(failed[0].error)
    await handle.signal(MigrateFleetWorkflow.cancel)
    result = await handle.result()
    assert result.status is FleetStatus.CANCELLED
    assert result.counts.failed == 1
    assert result.counts.pending + result.counts.succeeded == 4
    await replay_and_record(handle, "migrate_fleet_budget_paused_cancelled.json")


async def test_concurrency_update_is_validated(fleet: Fleet, make_target: TargetFactory) -> None:
    for _ in range(3):
        await fleet.add(await make_target())
    handle = await fleet.start(concurrency=1, batch_size=1)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(MigrateFleetWorkflow.set_concurrency, 0)
    assert await handle.execute_update(MigrateFleetWorkflow.set_concurrency, 3) == 3
    assert (await progress(handle)).concurrency == 3
    assert (await handle.result()).counts.succeeded == 3


async def test_cancel_while_a_page_of_targets_loads_starts_nothing(
    fleet: Fleet, make_target: TargetFactory, catalog_pool: asyncpg.Pool
) -> None:
    """Issue 9, point 9: a cancel that arrives during page resolution is honoured at once."""
    for _ in range(4):
        await fleet.add(await make_target())
    async with catalog_pool.acquire() as conn, conn.transaction():
        # The catalog holds resolve_targets on its first page (real PostgreSQL, a real lock).
        await conn.execute("LOCK TABLE databases IN ACCESS EXCLUSIVE MODE")
        handle = await fleet.start(concurrency=4, batch_size=1)
        for _ in range(600):
            waiting = await catalog_pool.fetchval(
                "SELECT count(*) FROM pg_locks "
                "WHERE NOT granted AND relation = 'databases'::regclass"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting
        await handle.signal(MigrateFleetWorkflow.cancel)
        await until(handle, lambda p: p.status is FleetStatus.CANCELLING)
    result = await handle.result()
    assert result.status is FleetStatus.CANCELLED
    assert (result.counts.succeeded, result.counts.running, result.counts.failed) == (0, 0, 0)
    for target in fleet.targets:
        target_conn = await target.connect()
        try:
            assert not await target_conn.fetchval(
                f"SELECT to_regclass('{LEDGER_TABLE}') IS NOT NULL"
            )
        finally:
            await target_conn.close()


async def test_resume_after_a_budget_pause_allows_the_budget_again(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    """Issue 9, point 11: resume means "go on until the budget's worth of new failures"."""
    await fleet.add(await make_target(), password="wrong", first=True)
    for _ in range(4):
        await fleet.add(await make_target())
    handle = await fleet.start(
        concurrency=1, batch_size=1, failure_budget=FailureBudget(max_failed=0)
    )
    await until(handle, lambda p: p.status is FleetStatus.PAUSED and not p.counts.running)
    await handle.signal(MigrateFleetWorkflow.resume)
    state = await until(
        handle,
        lambda p: (
            p.status is FleetStatus.COMPLETED
            or (p.status is FleetStatus.PAUSED and p.counts.pending < 4)
        ),
    )
    assert state.status is FleetStatus.COMPLETED, state.paused_reason
    assert (state.counts.failed, state.counts.succeeded) == (1, 4)


def test_a_budget_percentage_waits_for_the_runs_total() -> None:
    """Issue 9, point 11: 1 failure of 2 resolved so far is not 50 % of a fleet still paging."""
    budget = FailureBudget(max_failed_percent=10)
    assert not budget.exceeded(1, 2, total_known=False)
    assert not budget.exceeded(1, 20, total_known=True)
    assert budget.exceeded(3, 20, total_known=True)
