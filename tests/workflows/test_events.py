"""RegisterDatabaseWorkflow on a real Temporal server, worker and PostgreSQL, plus replay of its
committed history.

To re-record the committed history after an intended change, run
``TENANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows/test_events.py`` and commit the file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from common.catalog.assignments import AssignmentRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.migrations.loader import parse_files
from common.settings import Settings
from gateway.event_types import CURRENT_EVENT, EventIdentity
from gateway.routers.events import start_register_database
from models.assignments import AssignmentSpec
from models.events import RegisterDatabaseResult
from tests.conftest import TargetFactory
from worker.registry import WORKFLOWS
from workflows.events import RegisterDatabaseWorkflow

HISTORIES = Path(__file__).parent / "histories"
HISTORY = HISTORIES / "register_database.json"


@pytest.mark.usefixtures("running_worker")
async def test_register_database_runs_each_assigned_set_and_its_history_replays(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    make_target: TargetFactory,
) -> None:
    target = await make_target()
    cohort = f"c{uuid.uuid4().hex[:8]}"
    good, bad = f"wf-a-{uuid.uuid4().hex[:6]}", f"wf-b-{uuid.uuid4().hex[:6]}"
    sets = MigrationSetRepository(catalog_pool)
    await sets.register(good, parse_files({"V1__a.sql": "CREATE TABLE a (id int);"}))
    # A ledger table of its own (one shared with ``good`` is refused before either runs).
    await sets.register(
        bad, parse_files({"V7__broken.sql": "CREATE TABLE a (id int);"}), "wf_b_history"
    )
    assignments = AssignmentRepository(catalog_pool)
    await assignments.put(good, AssignmentSpec(selector={"cohort": cohort}))
    await assignments.put(bad, AssignmentSpec(selector={"cohort": cohort}))
    identity = EventIdentity(id=uuid.uuid4().hex, source="/tests", type="database.created")
    token = CURRENT_EVENT.set(identity)
    try:
        await start_register_database(
            temporal_client,
            settings,
            identity.workflow_id,
            target.create_body(labels={"cohort": cohort}),
        )
        handle: WorkflowHandle[RegisterDatabaseWorkflow, RegisterDatabaseResult] = (
            temporal_client.get_workflow_handle_for(
                RegisterDatabaseWorkflow.run, identity.workflow_id
            )
        )
        result = await handle.result()
    finally:
        CURRENT_EVENT.reset(token)
        await catalog_pool.execute(
            "DELETE FROM set_assignments WHERE set_name = ANY($1)", [good, bad]
        )
    assert result.created
    by_set = {s.set_name: s for s in result.sets}
    assert list(by_set) == [good, bad]  # by set name
    assert (by_set[good].ok, by_set[good].version_reached) == (True, "1")
    # The second set's SQL fails on what the first created: its failure is reported in the
    # result, not raised, and the first set's outcome stands.
    assert by_set[bad].ok is False and by_set[bad].failure
    assert 'relation "a" already exists' in str(by_set[bad].failure)
    history = await handle.fetch_history()
    assert target.password not in history.to_json()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        HISTORY.write_text(history.to_json())


@pytest.mark.usefixtures("running_worker")
async def test_register_database_refuses_sets_that_share_a_ledger_table(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    make_target: TargetFactory,
) -> None:
    target = await make_target()
    cohort = f"c{uuid.uuid4().hex[:8]}"
    first, second = f"wf-s-{uuid.uuid4().hex[:6]}", f"wf-t-{uuid.uuid4().hex[:6]}"
    sets = MigrationSetRepository(catalog_pool)
    # Neither names a ledger table: both would record versions in tenantflow_schema_history.
    await sets.register(first, parse_files({"V1__a.sql": "CREATE TABLE a (id int);"}))
    await sets.register(second, parse_files({"V1__b.sql": "CREATE TABLE b (id int);"}))
    assignments = AssignmentRepository(catalog_pool)
    for name in (first, second):
        await assignments.put(name, AssignmentSpec(selector={"cohort": cohort}))
    identity = EventIdentity(id=uuid.uuid4().hex, source="/tests", type="database.created")
    token = CURRENT_EVENT.set(identity)
    try:
        await start_register_database(
            temporal_client,
            settings,
            identity.workflow_id,
            target.create_body(labels={"cohort": cohort}),
        )
        handle = temporal_client.get_workflow_handle(identity.workflow_id)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    finally:
        CURRENT_EVENT.reset(token)
        await catalog_pool.execute(
            "DELETE FROM set_assignments WHERE set_name = ANY($1)", [first, second]
        )
    cause = failed.value.cause
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert f"sets {first!r} and {second!r} both keep their ledger in table" in str(cause)
    # Refused before any set ran: the target is registered, nothing applied.
    conn = await target.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('tenantflow_schema_history')") is None
        assert await conn.fetchval("SELECT to_regclass('a')") is None
    finally:
        await conn.close()


async def test_the_committed_history_replays() -> None:
    history = WorkflowHistory.from_json(HISTORY.stem, HISTORY.read_text())
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
