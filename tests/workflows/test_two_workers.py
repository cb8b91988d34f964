"""Two worker processes share one fleet run; one is SIGKILLed mid-run and nothing applies twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import (
    EventType,
    PendingActivityState,
    TaskQueueKind,
    TaskQueueType,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle

from common.settings import Settings
from tests.conftest import TargetDatabase, TargetFactory, Tokens
from tests.gateway.routers.test_fleet import _fleet, _ledger, _start_run, _until, own_gateway
from tests.workflows.test_migrations import _start_worker

TARGETS = 12

# V2 sleeps inside its transaction so that batches are in flight when a worker dies; its insert
# counts how often it committed on each target.
FILES = {
    "V1__applied.sql": "CREATE TABLE applied (version text NOT NULL);",
    "V2__slow.sql": "INSERT INTO applied VALUES ('2');\nSELECT pg_sleep(2.0);",
    "V3__after.sql": "INSERT INTO applied VALUES ('3');",
}


async def _batch_holders(handle: WorkflowHandle[object, object]) -> tuple[set[str], set[str]]:
    """Which worker identities ran a target batch so far, and which hold one that started less
    than 1.2 s ago (so it is still inside V2's 2 s sleep when the worker is killed)."""
    ran: set[str] = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            ran.add(event.activity_task_started_event_attributes.identity)
    pending = [
        activity
        for activity in (await handle.describe()).raw_description.pending_activities
        if activity.activity_type.name == "run_target_batch"
        and activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    ]
    now = datetime.now(UTC)
    holding = {
        activity.last_worker_identity
        for activity in pending
        if now - activity.last_started_time.ToDatetime(UTC) < timedelta(seconds=1.2)
    }
    return ran | {activity.last_worker_identity for activity in pending}, holding


async def _retried_batches(handle: WorkflowHandle[object, object]) -> int:
    """Batches that started more than once (their first worker died under them)."""
    attempts = [
        event.activity_task_started_event_attributes.attempt
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return sum(1 for attempt in attempts if attempt > 1)


async def _activity_pollers(temporal: Client, task_queue: str) -> set[str]:
    """The identities polling ``task_queue`` for activity tasks."""
    response = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ),
        retry=True,
    )
    return {poller.identity for poller in response.pollers}


async def _applied(target: TargetDatabase) -> list[str]:
    conn = await target.connect()
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM applied ORDER BY 1")]
    finally:
        await conn.close()


async def test_two_workers_share_a_run_and_one_killed_mid_run_applies_nothing_twice(
    settings: Settings,
    tokens: Tokens,
    make_target: TargetFactory,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    # A gateway and two worker processes of its own, on a task queue no other worker serves.
    own, queue, server, port = own_gateway(settings, "two-workers")
    # Eager activities (the default) keep a run's batches on the worker running it while it has
    # a free slot; three slots each against the run's six batches send the rest through the
    # queue, to either worker: a second worker takes what the first cannot.
    workers = {
        name: _start_worker(
            own,
            queue,
            tmp_path / f"{name}.log",
            TENANTFLOW_WORKER__MAX_CONCURRENT_ACTIVITIES="3",
            TENANTFLOW_WORKER__EAGER_ACTIVITIES="true",
        )
        for name in ("w1", "w2")
    }
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            # Client identities are "pid@host": each worker process is known by its pid.
            by_pid = {str(process.pid): name for name, process in workers.items()}

            def names(identities: set[str]) -> set[str]:
                return {by_pid[i.split("@")[0]] for i in identities if i.split("@")[0] in by_pid}

            # Both workers poll before the run starts, or the first one up may take every batch.
            deadline = time.monotonic() + 60
            while names(await _activity_pollers(temporal_client, queue)) != set(workers):
                assert time.monotonic() < deadline, "the workers never polled the task queue"
                await asyncio.sleep(0.2)
            label, set_name, targets = await _fleet(http, tokens, make_target, TARGETS, files=FILES)
            operator = tokens.headers("infra-operator")
            run = await _start_run(
                http,
                operator,
                set_name,
                label,
                concurrency=6,
                batch_size=1,
                heartbeat_timeout_seconds=3,
            )
            handle: WorkflowHandle[object, object] = temporal_client.get_workflow_handle(
                run["workflow_id"]
            )
            victim = None
            ran: set[str] = set()
            holding: set[str] = set()
            deadline = time.monotonic() + 60
            while victim is None and time.monotonic() < deadline:
                ran, holding = await _batch_holders(handle)
                if names(ran) == set(workers) and names(holding):
                    victim = sorted(names(holding))[0]
                else:
                    await asyncio.sleep(0.1)
            assert victim is not None, f"not both workers ran batches: {ran=} {holding=}"
            workers[victim].kill()  # SIGKILL: no goodbye, its batch is abandoned mid-migration
            await asyncio.to_thread(workers[victim].wait, 10)

            await asyncio.wait_for(handle.result(), timeout=120)
            final = await _until(
                http, run["status_url"], operator, lambda p: p["status"] == "completed", 100
            )
            assert final["status"] == "completed"
            assert final["counts"]["succeeded"] == TARGETS
            assert await _retried_batches(handle) >= 1  # the killed worker's batch, elsewhere
            for target in targets:
                assert sorted(await _ledger(target)) == ["1", "2", "3"]  # each version once
                assert await _applied(target) == ["2", "3"]  # and its effect committed once
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.terminate()
                await asyncio.to_thread(process.wait, 45)
        server.stop()
