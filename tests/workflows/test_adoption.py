"""MigrateFleetWorkflow with kind adopt on a real Temporal server, worker and PostgreSQL: the run
carries ``adopt_from`` to every batch, and its history replays (recorded as
``histories/migrate_fleet_adopt.json`` with ``TENANTFLOW_RECORD_HISTORIES=1``)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from temporalio.client import Client

from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.adoption import AdoptSource
from models.databases import DatabaseCreate
from models.fleet import FleetRunInput, FleetSelector, FleetStatus
from models.migrations import TargetRunKind
from tests.activities.test_adoption import CORE, migrate_as
from tests.conftest import TargetFactory
from tests.workflows.test_fleet import replay_and_record
from workflows.fleet import MigrateFleetWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")


async def test_an_adopt_run_reaches_every_target_and_replays(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    label = uuid.uuid4().hex[:10]
    set_name = f"adopt-{label}"
    await MigrationSetRepository(catalog_pool).register(set_name, CORE)
    databases = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    for _ in range(3):
        target = await make_target()
        conn = await target.connect()
        try:
            await migrate_as(conn, AdoptSource.GOLANG_MIGRATE, CORE[:3])
        finally:
            await conn.close()
        body = target.create_body(name=f"f-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
        await databases.create(DatabaseCreate.model_validate(body))
    params = FleetRunInput(
        run_id=label,
        set_name=set_name,
        kind=TargetRunKind.ADOPT,
        adopt_from=AdoptSource.GOLANG_MIGRATE,
        selector=FleetSelector(labels={"fleet": label}),
        batch_size=2,
    )
    handle = await temporal_client.start_workflow(
        MigrateFleetWorkflow.run,
        params,
        id=f"migrate-fleet-{label}",
        task_queue=settings.temporal.task_queue,
    )
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    assert result.counts.succeeded == 3 and not result.failed
    state = await handle.query(MigrateFleetWorkflow.progress)
    assert {(t.from_version, t.to_version) for t in state.targets.values()} == {(None, "3")}
    await replay_and_record(handle, "migrate_fleet_adopt.json")
