"""Per-target workflows on a real Temporal server: concurrency, a killed worker, replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.migrations import LEDGER_TABLE
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import DatabaseCreate
from models.migrations import Migration, TargetRunInput
from tests.activities.test_migrations import BASE, migration
from tests.conftest import TargetDatabase
from worker.registry import WORKFLOWS
from workflows.migrations import MigrateTargetWorkflow, RollbackTargetWorkflow

HISTORIES = Path(__file__).parent / "histories"
ROOT = Path(__file__).resolve().parents[2]


async def _register(
    pool: asyncpg.Pool, settings: Settings, target: TargetDatabase, migrations: list[Migration]
) -> tuple[str, uuid.UUID]:
    set_name = f"s-{uuid.uuid4().hex[:8]}"
    await MigrationSetRepository(pool).register(set_name, migrations)
    repository = DatabaseRepository(pool, CredentialCipher(KeyRing.from_settings(settings.crypto)))
    body = target.create_body(name=f"t-{uuid.uuid4().hex[:8]}")
    database = await repository.create(DatabaseCreate.model_validate(body))
    return set_name, database.id


async def _ledger(target: TargetDatabase) -> list[tuple[str, str]]:
    conn = await target.connect()
    try:
        rows = await conn.fetch(f"SELECT version, run_id FROM {LEDGER_TABLE} ORDER BY version")
    finally:
        await conn.close()
    return [(r["version"], r["run_id"]) for r in rows]


@pytest.mark.usefixtures("running_worker")
async def test_two_workflows_on_one_target_apply_each_version_once(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    target_database: TargetDatabase,
) -> None:
    slow = [
        migration("1", "CREATE TABLE a (id int); SELECT pg_sleep(0.2);", "DROP TABLE a;"),
        migration("2", "CREATE TABLE b (id int); SELECT pg_sleep(0.2);", "DROP TABLE b;"),
        migration("3", "CREATE TABLE c (id int);", "DROP TABLE c;"),
    ]
    set_name, database_id = await _register(catalog_pool, settings, target_database, slow)
    handles = [
        await temporal_client.start_workflow(
            MigrateTargetWorkflow.run,
            TargetRunInput(run_id=run_id, database_id=database_id, set_name=set_name),
            id=f"target-run-{database_id}-{run_id}",
            task_queue=settings.temporal.task_queue,
        )
        for run_id in ("run-a", "run-b")
    ]
    results = await asyncio.gather(*(h.result() for h in handles))
    assert sorted(a.version for r in results for a in r.applied) == ["1", "2", "3"]
    ledger = await _ledger(target_database)
    assert [v for v, _ in ledger] == ["1", "2", "3"]
    history = await handles[0].fetch_history()
    await Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / "migrate_target.json").write_text(history.to_json())


def _start_worker(
    settings: Settings, task_queue: str, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """A worker process; `extra` adds environment variables (settings of its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env.update(
        {
            "TENANTFLOW_CATALOG__DSN": settings.catalog.dsn.get_secret_value(),
            "TENANTFLOW_TEMPORAL__ADDRESS": settings.temporal.address,
            "TENANTFLOW_TEMPORAL__TASK_QUEUE": task_queue,
            "TENANTFLOW_LOG__FORMAT": "console",
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait_for_query(target: TargetDatabase, run_id: str, within: float = 30) -> None:
    """Until the run's connection is inside the slow migration."""
    conn = await target.connect()
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND query LIKE '%pg_sleep%' AND state = 'active'",
                f"tenantflow:{run_id}",
            )
            if busy:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    pytest.fail("the slow migration never started")


async def test_killed_worker_mid_migration_a_new_worker_finishes_each_version_once(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    target_database: TargetDatabase,
    tmp_path: Path,
) -> None:
    steps = [
        BASE[0],
        migration(
            "2", "CREATE TABLE slow_one (id int);\nSELECT pg_sleep(3);", "DROP TABLE slow_one;"
        ),
        migration("3", "CREATE TABLE after_slow (id int);", "DROP TABLE after_slow;"),
    ]
    set_name, database_id = await _register(catalog_pool, settings, target_database, steps)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    first = _start_worker(settings, task_queue, tmp_path / "worker1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await temporal_client.start_workflow(
            MigrateTargetWorkflow.run,
            TargetRunInput(
                run_id="killrun",
                database_id=database_id,
                set_name=set_name,
                heartbeat_timeout_seconds=3,
                lock_timeout_ms=1000,
            ),
            id=f"target-run-{database_id}-killrun",
            task_queue=task_queue,
        )
        await _wait_for_query(target_database, "killrun")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = _start_worker(settings, task_queue, tmp_path / "worker2.log")
        result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(45)
    assert result.failure is None
    assert result.to_version == "3"
    ledger = await _ledger(target_database)
    assert [v for v, _ in ledger] == ["1", "2", "3"]  # one row per version: none applied twice
    description = await handle.describe()
    assert description.status is not None


@pytest.mark.usefixtures("running_worker")
async def test_lock_timeout_is_retried_with_backoff_until_the_target_is_free(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    target_database: TargetDatabase,
) -> None:
    set_name, database_id = await _register(catalog_pool, settings, target_database, BASE[:1])
    blocker = await target_database.connect()
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:public', 0))"
        )
        handle = await temporal_client.start_workflow(
            MigrateTargetWorkflow.run,
            TargetRunInput(
                run_id="locked", database_id=database_id, set_name=set_name, lock_timeout_ms=100
            ),
            id=f"target-run-{database_id}-locked",
            task_queue=settings.temporal.task_queue,
        )
        await asyncio.sleep(2.5)  # at least two attempts time out meanwhile
        await transaction.rollback()
    finally:
        await blocker.close()
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.failure is None
    assert [a.version for a in result.applied] == ["1"]
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the lock timeouts were retried, not reported as failures


@pytest.mark.usefixtures("running_worker")
async def test_rollback_workflow_undoes_in_reverse_and_its_history_replays(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    target_database: TargetDatabase,
) -> None:
    set_name, database_id = await _register(catalog_pool, settings, target_database, BASE)
    params = TargetRunInput(run_id="rb-up", database_id=database_id, set_name=set_name)
    applied = await temporal_client.execute_workflow(
        MigrateTargetWorkflow.run,
        params,
        id=f"target-run-{database_id}-rb-up",
        task_queue=settings.temporal.task_queue,
    )
    assert applied.failure is None, applied.failure
    handle = await temporal_client.start_workflow(
        RollbackTargetWorkflow.run,
        params.model_copy(update={"run_id": "rb-down", "target_version": "1"}),
        id=f"target-run-{database_id}-rb-down",
        task_queue=settings.temporal.task_queue,
    )
    result = await handle.result()
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["10", "2"]
    assert [v for v, _ in await _ledger(target_database)] == ["1"]
    history = await handle.fetch_history()
    await Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / "rollback_target.json").write_text(history.to_json())
