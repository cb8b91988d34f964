"""Reading a fleet run's outcomes from its targets' ledgers, on real PostgreSQL after real fleet
runs (Temporal, a worker): grouped schemas cost one statement per database, a database target
one connection, and a target that cannot be read is None."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities import outcomes as outcomes_module
from activities.outcomes import OutcomeActivities
from cli.stack import EmbeddedPostgres, free_port
from common import network_policy
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import NetworkSettings, Settings
from models.databases import DatabaseCreate
from models.fleet import FleetRunInput, FleetSelector, FleetStatus
from models.outcomes import RunOutcomesRequest
from models.run_state import TargetState
from tests.activities.test_migrations import migration
from tests.conftest import TargetDatabase, TargetFactory
from workflows.fleet import MigrateFleetWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")

STEPS = [
    migration("1", "CREATE TABLE a (id int);", "DROP TABLE a;"),
    migration("2", "CREATE TABLE b (id int);", "DROP TABLE b;"),
]


class Fleet:
    """Targets registered in the catalog, a set of their own (with its own ledger table, as a
    set may name one), and fleet runs over chosen targets."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.databases = DatabaseRepository(
            pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
        )
        self.sets = MigrationSetRepository(pool)
        self.set_name = f"o-{uuid.uuid4().hex[:8]}"
        self.activities = OutcomeActivities(self.databases, self.sets)

    async def add(
        self, target: TargetDatabase, schema: str | None = None, **body: object
    ) -> uuid.UUID:
        fields = target.create_body(name=f"o-{uuid.uuid4().hex[:8]}", schema=schema)
        fields.update(body)
        return (await self.databases.create(DatabaseCreate.model_validate(fields))).id

    async def run(self, database_ids: Sequence[uuid.UUID]) -> str:
        """A real fleet run over ``database_ids``; its business id."""
        run_id = uuid.uuid4().hex[:12]
        handle = await self.client.start_workflow(
            MigrateFleetWorkflow.run,
            FleetRunInput(
                run_id=run_id,
                set_name=self.set_name,
                selector=FleetSelector(database_ids=list(database_ids)),
            ),
            id=f"migrate-fleet-{run_id}",
            task_queue=self.settings.temporal.task_queue,
        )
        result = await handle.result()
        assert result.status is FleetStatus.COMPLETED
        assert result.counts.failed == 0
        return run_id

    async def outcomes(
        self, run_id: str, database_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, TargetState | None]:
        request = RunOutcomesRequest(
            run_id=run_id, set_name=self.set_name, database_ids=list(database_ids)
        )
        answer = await ActivityEnvironment().run(self.activities.read_run_outcomes, request)
        return answer.outcomes


@pytest.fixture
async def fleet(
    catalog_pool: asyncpg.Pool, settings: Settings, temporal_client: Client
) -> AsyncIterator[Fleet]:
    made = Fleet(catalog_pool, settings, temporal_client)
    await made.sets.register(made.set_name, STEPS, ledger_table="o_ledger")
    yield made


async def test_outcomes_of_a_run_read_from_the_ledgers_one_statement_per_database(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    shared = await make_target()
    schemas = {s: await fleet.add(shared, s) for s in ("o_a", "o_b", "o_c")}
    own = [await fleet.add(await make_target()) for _ in range(2)]
    everything = [*schemas.values(), *own]
    # Already at the latest version before the run: one schema and one database.
    first = await fleet.run([schemas["o_c"], own[1]])
    run_id = await fleet.run(everything)

    found = await fleet.outcomes(run_id, everything)
    assert found == {
        schemas["o_a"]: TargetState.SUCCEEDED,
        schemas["o_b"]: TargetState.SUCCEEDED,
        schemas["o_c"]: TargetState.UP_TO_DATE,
        own[0]: TargetState.SUCCEEDED,
        own[1]: TargetState.UP_TO_DATE,
    }
    # The three schemas in one statement, each database target in one of its own.
    assert fleet.activities.statements == 3

    # The first run, read the same way: the targets it changed still hold its rows.
    fleet.activities.statements = 0
    assert await fleet.outcomes(first, everything) == {
        schemas["o_a"]: TargetState.UP_TO_DATE,
        schemas["o_b"]: TargetState.UP_TO_DATE,
        schemas["o_c"]: TargetState.SUCCEEDED,
        own[0]: TargetState.UP_TO_DATE,
        own[1]: TargetState.SUCCEEDED,
    }
    assert fleet.activities.statements == 3
    # The set's own ledger table is what was read: no default ledger exists anywhere.
    conn = await shared.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('o_a.tenantflow_schema_history')") is None
    finally:
        await conn.close()


async def test_a_target_without_a_ledger_is_up_to_date_and_an_unreadable_one_none(
    fleet: Fleet, make_target: TargetFactory
) -> None:
    shared = await make_target()
    ran = await fleet.add(shared, "o_ran")
    never = await fleet.add(shared, "o_never")  # in the database, never reached by the set
    alone = await fleet.add(await make_target())
    run_id = await fleet.run([ran, alone])
    dead = await fleet.add(shared, "o_dead", port=free_port())  # nothing listens there
    missing = uuid.uuid4()  # not in the catalog

    found = await fleet.outcomes(run_id, [ran, never, alone, dead, missing])
    assert found == {
        ran: TargetState.SUCCEEDED,
        never: TargetState.UP_TO_DATE,
        alone: TargetState.SUCCEEDED,
        dead: None,
        missing: None,
    }
    # The group's read failed on the missing ledger, asked which exist, read those.
    assert fleet.activities.statements == 3 + 1

    # Another run's id: nothing holds rows of it.
    fleet.activities.statements = 0
    other = await fleet.outcomes("no-such-run", [ran, alone])
    assert other == {ran: TargetState.UP_TO_DATE, alone: TargetState.UP_TO_DATE}
    assert fleet.activities.statements == 2


async def test_a_database_the_set_never_reached_is_up_to_date_and_a_silent_one_is_not_waited_for(
    fleet: Fleet, make_target: TargetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ledger at all: nothing of the run there. A host that accepts the connection and
    never answers is left unread (None) once the read's deadline passes."""
    monkeypatch.setattr(outcomes_module, "READ_DEADLINE_SECONDS", 1.0)
    stalled: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        untouched = await fleet.add(await make_target())
        mute = await fleet.add(await make_target(), port=port)
        began = time.monotonic()
        found = await fleet.outcomes("any-run", [untouched, mute])
        assert time.monotonic() - began < 4.0  # the deadline, not the connect timeout
    finally:
        for writer in stalled:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert found == {untouched: TargetState.UP_TO_DATE, mute: None}


async def test_a_ledger_the_target_may_not_read_and_a_refused_address_are_unread(
    fleet: Fleet, make_target: TargetFactory, postgres: EmbeddedPostgres
) -> None:
    locked_out = await make_target()
    admin = await asyncpg.connect(postgres.dsn(locked_out.database))
    try:
        # The set's ledger exists but belongs to someone else: permission denied, not absent.
        await admin.execute("CREATE TABLE public.o_ledger (version text, run_id text)")
    finally:
        await admin.close()
    unreadable = await fleet.add(locked_out)
    refused = await fleet.add(await make_target(), host="localhost")
    try:
        network_policy.configure(
            NetworkSettings.model_validate({"denied_networks": ["127.0.0.0/8", "::1/128"]})
        )
        found = await fleet.outcomes("any-run", [unreadable, refused])
    finally:
        network_policy.configure(None)
    assert found == {unreadable: None, refused: None}
