"""A server's connection budget holds for a fleet run whatever its concurrency (issue 10):
slots are session advisory locks in the catalog, shared by every worker and run."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from temporalio.client import Client

from activities.server_slots import Budget, slot_session
from cli.stack import EmbeddedPostgres
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import FleetRunInput, FleetSelector
from models.servers import ServerCreate
from tests.activities.test_migrations import migration
from tests.conftest import TargetFactory
from workflows.fleet import MigrateFleetWorkflow

STEPS = [
    migration("1", "CREATE TABLE a (id int);\nSELECT pg_sleep(0.3);", "DROP TABLE a;"),
    migration("2", "CREATE TABLE b (id int);", "DROP TABLE b;"),
]


async def test_a_slot_is_taken_once_across_sessions_and_freed_on_release(
    catalog_pool: asyncpg.Pool,
) -> None:
    budget = Budget(uuid.uuid4(), 1)
    order: list[str] = []
    async with (
        slot_session(catalog_pool, True) as first,
        slot_session(catalog_pool, True) as second,
    ):
        assert first is not None and second is not None

        async def hold(session: object, name: str, seconds: float) -> None:
            async with session.slot(budget):  # type: ignore[attr-defined]
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
                order.append(f"{name} out")

        await asyncio.gather(hold(first, "a", 0.3), hold(second, "b", 0), hold(first, "c", 0))
    # One at a time, whichever session holds it; the same session does not re-enter its slot.
    assert [o.split()[1] for o in order] == ["in", "out"] * 3
    async with slot_session(catalog_pool, False) as nothing:
        assert nothing is None


@pytest.mark.usefixtures("running_worker")
async def test_a_fleet_run_never_holds_more_connections_to_a_server_than_its_budget(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    postgres: EmbeddedPostgres,
    make_target: TargetFactory,
) -> None:
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    server = await ServerRepository(catalog_pool, cipher).create(
        ServerCreate.model_validate(
            {
                "name": f"pg-{uuid.uuid4().hex[:8]}",
                "host": postgres.host,
                "port": postgres.port,
                "admin_user": postgres.user,
                "admin_password": postgres.password,
                "max_connections": 2,
            }
        )
    )
    label = uuid.uuid4().hex[:10]
    databases = DatabaseRepository(catalog_pool, cipher)
    for _ in range(8):
        target = await make_target()
        body = target.create_body(name=f"f-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
        await databases.create(DatabaseCreate.model_validate(body), server_id=server.id)
    set_name = f"slots-{label}"
    await MigrationSetRepository(catalog_pool).register(set_name, STEPS)
    params = FleetRunInput(
        run_id=label,
        set_name=set_name,
        selector=FleetSelector(labels={"fleet": label}),
        concurrency=8,
        batch_size=2,
    )
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    peak = 0
    try:
        handle = await temporal_client.start_workflow(
            MigrateFleetWorkflow.run,
            params,
            id=f"migrate-fleet-{label}",
            task_queue=settings.temporal.task_queue,
        )
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            open_now = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                f"tenantflow:{label}",
            )
            peak = max(peak, int(open_now))
            await asyncio.sleep(0.02)
        result = await result_task
    finally:
        await admin.close()
    assert result.counts.succeeded == 8, result
    assert 1 <= peak <= 2, peak


async def test_a_session_frees_the_slots_it_still_holds_and_a_target_without_budget_waits_for_none(
    catalog_pool: asyncpg.Pool,
) -> None:
    budget = Budget(uuid.uuid4(), 1)
    async with slot_session(catalog_pool, True) as session:
        assert session is not None
        # A slot taken and never given back (its holder gone without its own release).
        assert await session._take(budget) == 0
        assert session.held == {(budget.server_id, 0)}
        async with session.slot(None):  # no budget: straight through, nothing taken
            assert session.held == {(budget.server_id, 0)}
    # The session's end released it: another session takes it at once.
    async with slot_session(catalog_pool, True) as other:
        assert other is not None
        async with asyncio.timeout(2), other.slot(budget):
            assert other.held == {(budget.server_id, 0)}
