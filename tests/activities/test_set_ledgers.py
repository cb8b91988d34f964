"""Each migration set keeps its ledger in a table of its own (``ledger_table``): several sets on one
target, with overlapping version numbers, on real PostgreSQL (never mocked)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment

from activities.events import EventActivities
from activities.health import HealthActivities
from activities.migrations import LEDGER_TABLE, MigrationActivities
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import Conflict, InvalidInput
from common.settings import Settings
from models.assignments import AssignmentSpec
from models.databases import DatabaseCreate
from models.events import AssignedSetsInput
from models.health import HealthBatchInput
from models.migrations import (
    DEFAULT_LEDGER_TABLE,
    LedgerRequest,
    Migration,
    MigrationSetUpload,
    TargetRunInput,
    TargetRunKind,
    TargetRunResult,
    check_ledger_table,
)
from tests.activities.test_migrations import migration
from tests.conftest import TargetDatabase, TargetFactory

MARK = "-- tenantflow:no-transaction\n"
# Two sets whose versions are both "1" and "2": one ledger table would mix them up.
BILLING = [
    migration("1", "CREATE TABLE invoices (id int PRIMARY KEY);", "DROP TABLE invoices;"),
    migration(
        "2",
        "ALTER TABLE invoices ADD COLUMN total numeric;",
        "ALTER TABLE invoices DROP COLUMN total;",
    ),
]
SEARCH = [
    migration(
        "1", "CREATE TABLE documents (id int PRIMARY KEY, body text);", "DROP TABLE documents;"
    ),
    migration(
        "2",
        MARK + "CREATE INDEX CONCURRENTLY documents_body ON documents (body);",
        "DROP INDEX CONCURRENTLY IF EXISTS documents_body;",
        no_transaction=True,
    ),
]


@pytest.mark.parametrize(
    "name", ["tenantflow_schema_history", "billing_history", "_h", "a" * 63, "s2_ledger"]
)
def test_safe_lowercase_identifiers_name_a_ledger_table(name: str) -> None:
    assert check_ledger_table(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Billing", "2ledger", "a" * 64, "billing-history", 'x"; DROP TABLE t; --', "a.b", "pg_x"],
)
def test_anything_else_is_refused_as_a_ledger_table(name: str) -> None:
    with pytest.raises(ValueError, match=r"must be|reserved"):
        check_ledger_table(name)
    with pytest.raises(ValidationError):
        MigrationSetUpload.model_validate(
            {"name": "s", "files": {"V1__a.sql": "SELECT 1;"}, "ledger_table": name}
        )


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _table(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_a_set_keeps_the_ledger_table_it_was_created_with(catalog_pool: asyncpg.Pool) -> None:
    sets = MigrationSetRepository(catalog_pool)
    name, table = _name("kept"), _table("kept")
    created = await sets.register(name, BILLING[:1], table)
    assert created.ledger_table == table and created.added == ["1"]
    # More versions later, naming the table again or not at all: the same set.
    assert (await sets.register(name, BILLING, table)).added == ["2"]
    assert (await sets.register(name, BILLING)).ledger_table == table
    assert (await sets.info(name)).ledger_table == table
    assert (await sets.content(name)).ledger_table == table
    listed = {s.name: s.ledger_table for s in (await sets.list()).items}
    assert listed[name] == table
    with pytest.raises(Conflict) as refused:
        await sets.register(name, [*BILLING, migration("3", "SELECT 3;")], "elsewhere")
    assert refused.value.details == {"set": name, "ledger_table": table, "requested": "elsewhere"}
    assert [m.version for m in await sets.migrations(name)] == ["1", "2"]  # nothing written
    # Without one, the table every target already has.
    plain = _name("plain")
    assert (await sets.register(plain, BILLING)).ledger_table == DEFAULT_LEDGER_TABLE
    # The catalog refuses an unsafe name even from a caller that skipped the model.
    with pytest.raises(asyncpg.CheckViolationError):
        await catalog_pool.execute(
            "INSERT INTO migration_sets (name, ledger_table) VALUES ($1, $2)", _name("x"), "Bad"
        )


@dataclass
class Runner:
    """Runs sets on one registered target through the activity, as a worker would."""

    activities: MigrationActivities
    target: TargetDatabase
    database_id: uuid.UUID
    schema: str

    async def run(
        self, set_name: str, kind: TargetRunKind = TargetRunKind.APPLY, **options: object
    ) -> TargetRunResult:
        params = TargetRunInput(
            run_id=uuid.uuid4().hex[:8],
            database_id=self.database_id,
            set_name=set_name,
            kind=kind,
            **options,
        )
        return await ActivityEnvironment().run(self.activities.run_target, params)

    async def ledger(self, table: str) -> list[tuple[str, str, bool]]:
        conn = await self.target.connect()
        try:
            rows = await conn.fetch(
                f'SELECT version, checksum, success FROM "{self.schema}"."{table}" ORDER BY version'
            )
        finally:
            await conn.close()
        return [(r["version"], r["checksum"], r["success"]) for r in rows]


async def _runner(
    pool: asyncpg.Pool,
    settings: Settings,
    target: TargetDatabase,
    schema: str | None,
    labels: dict[str, str] | None = None,
) -> Runner:
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    databases = DatabaseRepository(pool, cipher)
    body = target.create_body(name=_name("t"), schema=schema, labels=labels or {})
    database_id = (await databases.create(DatabaseCreate.model_validate(body))).id
    activities = MigrationActivities(databases, MigrationSetRepository(pool))
    return Runner(activities, target, database_id, schema or "public")


def _ledger_of(steps: list[Migration]) -> list[tuple[str, str, bool]]:
    return [(m.version, m.checksum, True) for m in steps]


@pytest.mark.parametrize("schema", [None, "tenant_sets"])
async def test_two_sets_with_the_same_versions_share_a_target(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    target_database: TargetDatabase,
    schema: str | None,
) -> None:
    sets = MigrationSetRepository(catalog_pool)
    billing, search = _name("billing"), _name("search")
    billing_table, search_table = _table("billing"), _table("search")
    await sets.register(billing, BILLING, billing_table)
    await sets.register(search, SEARCH, search_table)
    runner = await _runner(catalog_pool, settings, target_database, schema)

    # Each dry run plans its own set from its own (empty) ledger, and changes nothing.
    for name, steps in ((billing, BILLING), (search, SEARCH)):
        plan = await runner.run(name, dry_run=True)
        assert plan.failure is None
        assert [p.version for p in plan.planned] == ["1", "2"]
        assert [p.sql for p in plan.planned] == [m.up_sql for m in steps]

    first = await runner.run(billing)
    assert first.failure is None and [a.version for a in first.applied] == ["1", "2"]
    # The other set's "1" and "2" are not mistaken for its own: planned, then applied.
    plan = await runner.run(search, dry_run=True)
    assert plan.from_version is None and [p.version for p in plan.planned] == ["1", "2"]
    second = await runner.run(search)
    assert second.failure is None, second.failure
    assert second.from_version is None and second.to_version == "2"
    assert [a.version for a in second.applied] == ["1", "2"]
    assert await runner.ledger(billing_table) == _ledger_of(BILLING)
    assert await runner.ledger(search_table) == _ledger_of(SEARCH)
    assert (await runner.run(billing, dry_run=True)).planned == []
    assert (await runner.run(search)).applied == []

    # Rolling one set back leaves the other's ledger and objects alone.
    undone = await runner.run(search, TargetRunKind.ROLLBACK, target_version="0")
    assert undone.failure is None and [a.version for a in undone.applied] == ["2", "1"]
    assert await runner.ledger(search_table) == []
    assert await runner.ledger(billing_table) == _ledger_of(BILLING)
    conn = await target_database.connect()
    try:
        where = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname",
            runner.schema,
        )
        assert [r["relname"] for r in where] == sorted([billing_table, "invoices", search_table])
        assert (
            await conn.fetchval("SELECT to_regclass($1)", f"{runner.schema}.{LEDGER_TABLE}") is None
        )
    finally:
        await conn.close()
    plan = await runner.run(billing, TargetRunKind.ROLLBACK, target_version="1", dry_run=True)
    assert [p.version for p in plan.planned] == ["2"]

    # The worker reads either ledger on request; the default table is what it reads without.
    ledger = await ActivityEnvironment().run(
        runner.activities.read_ledger,
        LedgerRequest(database_id=runner.database_id, set_name=billing),
    )
    assert ledger.ledger_table == billing_table
    assert [e.version for e in ledger.entries] == ["1", "2"]
    default = await ActivityEnvironment().run(
        runner.activities.read_ledger, LedgerRequest(database_id=runner.database_id)
    )
    assert default.ledger_table == DEFAULT_LEDGER_TABLE and default.entries == []


async def test_a_set_without_a_ledger_table_still_uses_the_existing_one(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> None:
    sets = MigrationSetRepository(catalog_pool)
    legacy, added = _name("legacy"), _name("added")
    await sets.register(legacy, BILLING)
    await sets.register(added, SEARCH, _table("added"))
    runner = await _runner(catalog_pool, settings, target_database, None)
    assert (await runner.run(legacy)).failure is None
    # An existing fleet's ledger is where it always was; a second set joins beside it.
    assert await runner.ledger(LEDGER_TABLE) == _ledger_of(BILLING)
    assert (await runner.run(added)).failure is None
    assert await runner.ledger(LEDGER_TABLE) == _ledger_of(BILLING)
    # A set in the same table as the legacy one (run by hand, past the refusals) stops before
    # any change, naming the table the two share.
    sharing = _name("sharing")
    await sets.register(sharing, [migration("3", "CREATE TABLE third (id int);")])
    stopped = await runner.run(sharing)
    assert stopped.failure is not None and stopped.failure.reason == "unknown_version"
    assert stopped.failure.message == (
        f"version 1 is applied but not in set {sharing!r} (ledger table {LEDGER_TABLE})"
    )
    assert await runner.ledger(LEDGER_TABLE) == _ledger_of(BILLING)


def _health(pool: asyncpg.Pool, settings: Settings, dsn: str | None) -> HealthActivities:
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    return HealthActivities(
        DatabaseRepository(pool, cipher),
        MigrationSetRepository(pool),
        AssignmentRepository(pool),
        HealthRepository(pool),
        dsn,
    )


async def test_health_reads_each_sets_ledger_and_other_ledgers_are_not_drift(
    catalog_pool: asyncpg.Pool, settings: Settings, make_target: TargetFactory
) -> None:
    sets = MigrationSetRepository(catalog_pool)
    assignments = AssignmentRepository(catalog_pool)
    billing, search = _name("billing"), _name("search")
    await sets.register(billing, BILLING, _table("billing"))
    # No objects of its own: only its ledger table appears in the schema.
    await sets.register(
        search, [migration("1", "SELECT 1;"), migration("2", "SELECT 2;")], _table("search")
    )
    label = uuid.uuid4().hex[:8]
    await assignments.put(billing, AssignmentSpec(selector={"sets": label}))
    await assignments.put(search, AssignmentSpec(selector={"sets": label, "both": "yes"}))
    both = await _runner(
        catalog_pool, settings, await make_target(), None, {"sets": label, "both": "yes"}
    )
    one = await _runner(catalog_pool, settings, await make_target(), None, {"sets": label})
    for runner in (both, one):
        assert (await runner.run(billing)).failure is None
        assert (await runner.run(search, target_version="1")).failure is None

    health = _health(catalog_pool, settings, settings.catalog.dsn.get_secret_value())
    try:
        await health.check_health_batch(
            HealthBatchInput(run_id="set-ledgers", database_ids=[both.database_id, one.database_id])
        )
        latest = HealthRepository(catalog_pool)
        seen = await latest.latest(both.database_id)
        assert seen.reachable, seen.error
        assert {s.set_name: (s.version, s.expected, s.behind) for s in seen.sets} == {
            billing: ("2", "2", False),
            search: ("1", "2", True),
        }
        assert seen.behind_sets == [search]
        assert seen.ledger_version is None  # two ledgers: each set's version is in sets
        assert not seen.drift.drifted
        # Assigned only the billing set, and carrying the search set's ledger besides: judged
        # against the billing set's reference, which that ledger is no part of.
        alone = await latest.latest(one.database_id)
        assert [(s.set_name, s.version) for s in alone.sets] == [(billing, "2")]
        assert alone.ledger_version == "2"
        assert alone.drift.source == "reference", alone.drift
        assert not alone.drift.drifted, alone.drift.differences
    finally:
        await assignments.delete(billing)
        await assignments.delete(search)


async def test_an_event_target_whose_sets_share_a_ledger_table_is_refused(
    catalog_pool: asyncpg.Pool, settings: Settings
) -> None:
    sets = MigrationSetRepository(catalog_pool)
    assignments = AssignmentRepository(catalog_pool)
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    events = EventActivities(
        DatabaseRepository(catalog_pool, cipher),
        ServerRepository(catalog_pool, cipher),
        assignments,
        sets,
    )
    label = uuid.uuid4().hex[:8]
    first, second, third = _name("a"), _name("b"), _name("c")
    shared = _table("shared")
    await sets.register(first, BILLING, shared)
    await sets.register(second, SEARCH, shared)
    await sets.register(third, SEARCH, _table("own"))
    for name in (first, third):
        await assignments.put(name, AssignmentSpec(selector={"ev": label}))
    await assignments.put(second, AssignmentSpec(selector={"ev": label, "shared": "yes"}))
    env = ActivityEnvironment()
    try:
        fine = await env.run(events.assigned_sets, AssignedSetsInput(labels={"ev": label}))
        assert sorted(i.set_name for i in fine.items) == sorted([first, third])
        with pytest.raises(InvalidInput) as refused:
            await env.run(
                events.assigned_sets, AssignedSetsInput(labels={"ev": label, "shared": "yes"})
            )
        assert refused.value.details == {"sets": sorted([first, second]), "ledger_table": shared}
        assert "own ledger_table" in refused.value.message
    finally:
        for name in (first, second, third):
            await assignments.delete(name)
