"""Schema fingerprints and references on real PostgreSQL databases (never mocked)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from activities.fingerprint import differences, schema_fingerprint
from activities.health import HealthActivities, chain_of, scratch_name
from activities.health_events import health_outcome
from activities.ledger import ledger_ddl
from activities.migrations import MigrationActivities
from cli.stack import EmbeddedPostgres
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.assignments import AssignmentSpec
from models.databases import DatabaseCreate
from models.health import DriftReport, HealthBatchInput, ReportedState, TargetHealth
from models.migrations import TargetRunInput
from models.webhooks import WebhookEventType
from tests.activities.test_migrations import migration
from tests.conftest import TargetFactory

SCHEMA_SQL = """
CREATE TYPE {s}.mood AS ENUM ('sad', 'happy');
CREATE TABLE {s}.customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE {s}.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES {s}.customers (id),
    total numeric(10, 2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    mood {s}.mood
);
CREATE INDEX orders_customer_idx ON {s}.orders (customer_id);
CREATE VIEW {s}.big_orders AS SELECT id, total FROM {s}.orders WHERE total > 100;
CREATE FUNCTION {s}.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON {s}.orders FOR EACH ROW EXECUTE FUNCTION {s}.touch();
"""


@pytest.fixture
async def two_databases(postgres: EmbeddedPostgres) -> AsyncIterator[list[asyncpg.Connection]]:
    """Two fresh databases with the same schema (one also carrying the ledger table)."""
    names = [f"fp_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    conns: list[asyncpg.Connection] = []
    for name in names:
        await postgres.create_database(name)
        conn = await asyncpg.connect(postgres.dsn(name))
        await conn.execute(SCHEMA_SQL.format(s="public"))
        conns.append(conn)
    await conns[1].execute(ledger_ddl("public"))
    yield conns
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        for conn, name in zip(conns, names, strict=True):
            await conn.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_fingerprint_is_stable_across_identical_databases(
    two_databases: list[asyncpg.Connection],
) -> None:
    first, second = [await schema_fingerprint(c, "public") for c in two_databases]
    assert first.hash == second.hash
    assert first.objects == second.objects
    # Every kind of object is in the listing; the ledger table is not.
    keys = set(first.objects)
    for expected in (
        "table orders",
        "table orders: column total",
        "table orders: index orders_customer_idx",
        "table orders: constraint orders_total_check",
        "table orders: trigger orders_touch",
        "view big_orders",
        "function touch()",
        "enum mood",
        "sequence customers_id_seq",
    ):
        assert expected in keys
    assert not any("tenantflow_schema_history" in k for k in keys)
    assert first.objects["enum mood"] == "sad, happy"
    again = await schema_fingerprint(two_databases[0], "public")
    assert again.hash == first.hash


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE orders ADD COLUMN note text", "table orders: column note added"),
        (
            "CREATE INDEX orders_total_idx ON orders (total)",
            "table orders: index orders_total_idx added",
        ),
        ("ALTER TYPE mood ADD VALUE 'meh'", "enum mood changed: 'sad, happy' -> 'sad, happy, meh'"),
        ("ALTER TABLE orders ALTER COLUMN mood TYPE text", "table orders: column mood changed"),
        ("DROP VIEW big_orders", "view big_orders missing"),
    ],
)
async def test_fingerprint_changes_and_names_the_difference(
    two_databases: list[asyncpg.Connection], change: str, named: str
) -> None:
    before = await schema_fingerprint(two_databases[0], "public")
    await two_databases[1].execute(change)
    after = await schema_fingerprint(two_databases[1], "public")
    assert after.hash != before.hash
    found = differences(before.objects, after.objects)
    assert any(line.startswith(named) for line in found), found


async def test_a_tenant_schema_compares_with_public(
    two_databases: list[asyncpg.Connection],
) -> None:
    conn = two_databases[1]
    await conn.execute("CREATE SCHEMA tenant_a")
    await conn.execute(SCHEMA_SQL.format(s="tenant_a"))
    public = await schema_fingerprint(two_databases[0], "public")
    await conn.execute("SET search_path = tenant_a")
    tenant = await schema_fingerprint(conn, "tenant_a")
    assert differences(public.objects, tenant.objects) == []
    assert tenant.hash == public.hash
    missing = await schema_fingerprint(conn, "no_such_schema")
    assert missing.objects == {}


@pytest.fixture
def health_activities(catalog_pool: asyncpg.Pool, settings: Settings) -> HealthActivities:
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    return HealthActivities(
        DatabaseRepository(catalog_pool, cipher),
        MigrationSetRepository(catalog_pool),
        AssignmentRepository(catalog_pool),
        HealthRepository(catalog_pool),
        settings.catalog.dsn.get_secret_value(),
    )


async def _scratch_databases(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tenantflow_ref_%'")
    return [r["datname"] for r in rows]


async def test_a_reference_is_the_set_replayed_by_the_engine_once_and_cached(
    health_activities: HealthActivities, catalog_pool: asyncpg.Pool, postgres: EmbeddedPostgres
) -> None:
    name = f"ref-{uuid.uuid4().hex[:8]}"
    steps = [
        migration("1", "CREATE TABLE orders (id int PRIMARY KEY);"),
        migration("2", "ALTER TABLE orders ADD COLUMN note text;"),
    ]
    await MigrationSetRepository(catalog_pool).register(name, steps)
    # What a worker killed mid-build left behind (with an object of its own) is replaced.
    leftover = scratch_name((name, "1", chain_of(steps, "1")))
    await postgres.create_database(leftover)
    stale = await asyncpg.connect(postgres.dsn(leftover))
    await stale.execute("CREATE TABLE half_built (id int)")
    await stale.close()
    at_one = await health_activities.reference(name, "1", steps)
    at_two = await health_activities.reference(name, "2", steps)
    assert at_one.error is None and at_two.error is None
    assert "table orders: column id" in at_one.objects
    assert "table orders: column note" not in at_one.objects
    assert "table half_built" not in at_one.objects
    assert "table orders: column note" in at_two.objects
    assert at_one.fingerprint != at_two.fingerprint
    # Cached in the catalog under the set's checksums; the scratch databases are gone.
    rows = await catalog_pool.fetch(
        "SELECT version, chain FROM health_references WHERE set_name = $1 ORDER BY version", name
    )
    assert [(r["version"], r["chain"]) for r in rows] == [
        ("1", chain_of(steps, "1")),
        ("2", chain_of(steps, "2")),
    ]
    assert await _scratch_databases(catalog_pool) == []
    cached = await health_activities.reference(name, "2", steps)
    assert cached.fingerprint == at_two.fingerprint
    assert (
        await catalog_pool.fetchval(
            "SELECT count(*) FROM health_references WHERE set_name = $1", name
        )
        == 2
    )


async def test_a_set_that_cannot_replay_has_no_reference(
    health_activities: HealthActivities, catalog_pool: asyncpg.Pool
) -> None:
    name = f"ref-{uuid.uuid4().hex[:8]}"
    steps = [migration("1", "ALTER TABLE not_there ADD COLUMN x int;")]
    await MigrationSetRepository(catalog_pool).register(name, steps)
    found = await health_activities.reference(name, "1", steps)
    assert found.fingerprint is None
    assert found.error is not None and "not_there" in found.error
    assert await _scratch_databases(catalog_pool) == []


def _health(*, reachable: bool, drifted: bool = False) -> TargetHealth:
    return TargetHealth(
        database_id=uuid.UUID(int=7),
        reachable=reachable,
        error=None if reachable else "OSError: refused",
        drift=DriftReport(drifted=drifted, differences=["table t added"] if drifted else []),
        checked_at=datetime(2026, 12, 2, tzinfo=UTC),
    )


def test_events_go_out_once_per_change() -> None:
    first = health_outcome(_health(reachable=True), None)
    assert first.events == [] and first.reported is None
    down = health_outcome(_health(reachable=False), None)
    assert [e.type for e in down.events] == [WebhookEventType.DATABASE_UNHEALTHY]
    assert down.events[0].id == f"health-{uuid.UUID(int=7)}-1"
    assert down.reported == ReportedState(
        database_id=uuid.UUID(int=7), reachable=False, drifted=False, events_sent=1
    )
    still_down = health_outcome(_health(reachable=False), down.reported)
    assert still_down.events == [] and still_down.reported is None
    back = health_outcome(_health(reachable=True, drifted=True), down.reported)
    assert [e.type for e in back.events] == [
        WebhookEventType.DATABASE_RECOVERED,
        WebhookEventType.DATABASE_DRIFTED,
    ]
    assert [e.id for e in back.events] == [
        f"health-{uuid.UUID(int=7)}-2",
        f"health-{uuid.UUID(int=7)}-3",
    ]
    assert back.events[1].data["differences"] == ["table t added"]
    assert health_outcome(_health(reachable=True, drifted=True), back.reported).events == []


async def test_without_a_reference_the_majority_of_peers_decides_and_behind_is_seen(
    catalog_pool: asyncpg.Pool, settings: Settings, make_target: TargetFactory
) -> None:
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    databases = DatabaseRepository(catalog_pool, cipher)
    sets = MigrationSetRepository(catalog_pool)
    # No catalog DSN: no scratch database, so no reference can be built.
    activities = HealthActivities(
        databases, sets, AssignmentRepository(catalog_pool), HealthRepository(catalog_pool), None
    )
    label, name = uuid.uuid4().hex[:8], f"maj-{uuid.uuid4().hex[:8]}"
    steps = [
        migration("1", "CREATE TABLE items (id int PRIMARY KEY);"),
        migration("2", "CREATE INDEX items_id_idx ON items (id);"),
        migration("3", "CREATE TABLE extra (id int);"),
    ]
    await sets.register(name, steps)
    await AssignmentRepository(catalog_pool).put(
        name, AssignmentSpec(selector={"majority": label}, version="2")
    )
    ids: list[uuid.UUID] = []
    targets = [await make_target() for _ in range(5)]
    for target in targets:
        created = await databases.create(
            DatabaseCreate.model_validate(
                target.create_body(name=f"m-{uuid.uuid4().hex[:8]}", labels={"majority": label})
            )
        )
        ids.append(created.id)
    runner = MigrationActivities(databases, sets)
    for database_id, version in zip(ids, ["2", "2", "2", "2", "1"], strict=True):
        params = TargetRunInput(
            run_id="majority", database_id=database_id, set_name=name, target_version=version
        )
        result = await runner.run_one(params, steps)
        assert result.failure is None
    conn = await targets[0].connect()
    try:
        await conn.execute("ALTER TABLE items ADD COLUMN note text")
    finally:
        await conn.close()

    batch = HealthBatchInput(run_id="majority", database_ids=ids)
    await activities.check_health_batch(batch)  # every fingerprint is stored
    outcomes = {o.database_id: o for o in await activities.check_health_batch(batch)}

    health = HealthRepository(catalog_pool)
    altered = await health.latest(ids[0])
    assert altered.drift.drifted and altered.drift.source == "majority"
    assert altered.drift.differences == ["table items: column note added"]
    assert [outcomes[i].drifted for i in ids] == [True, False, False, False, False]
    peer = await health.latest(ids[1])
    assert peer.drift.source == "majority" and not peer.drift.drifted
    # The assignment pins version 2: the target at 1 is behind, the others are not.
    assert [outcomes[i].behind for i in ids] == [False, False, False, False, True]
    late = await health.latest(ids[4])
    assert late.behind_sets == [name]
    assert late.sets[0].version == "1" and late.sets[0].expected == "2"
    # No peer at version 1: no majority, and it says why.
    assert not late.drift.drifted and late.drift.reason is not None
    assert "no majority" in late.drift.reason
    # The environment's failure is not cached: a worker with a DSN builds the reference later.
    assert (
        await catalog_pool.fetchval(
            "SELECT count(*) FROM health_references WHERE set_name = $1", name
        )
        == 0
    )


async def test_a_batch_skips_deleted_targets_and_reports_unreadable_credentials_and_no_version(
    health_activities: HealthActivities, catalog_pool: asyncpg.Pool, make_target: TargetFactory
) -> None:
    databases = health_activities._databases
    label, name = uuid.uuid4().hex[:8], f"nv-{uuid.uuid4().hex[:8]}"
    await MigrationSetRepository(catalog_pool).register(
        name, [migration("1", "CREATE TABLE items (id int);")]
    )
    await AssignmentRepository(catalog_pool).put(name, AssignmentSpec(selector={"nv": label}))
    ids: list[uuid.UUID] = []
    for _ in range(2):
        target = await make_target()
        body = target.create_body(name=f"nv-{uuid.uuid4().hex[:8]}", labels={"nv": label})
        ids.append((await databases.create(DatabaseCreate.model_validate(body))).id)
    fresh, undecryptable = ids
    await catalog_pool.execute(
        "UPDATE databases SET password_encrypted = password_encrypted || 'x' WHERE id = $1",
        undecryptable,
    )
    deleted = uuid.uuid4()  # gone from the catalog since the page was read

    outcomes = await health_activities.check_health_batch(
        HealthBatchInput(run_id="nv", database_ids=[fresh, deleted, undecryptable])
    )
    assert {o.database_id for o in outcomes} == {fresh, undecryptable}
    health = HealthRepository(catalog_pool)
    never_migrated = await health.latest(fresh)
    assert never_migrated.reachable
    assert never_migrated.drift.set_name == name and not never_migrated.drift.drifted
    assert never_migrated.drift.reason == "no version in the ledger yet"
    locked_out = await health.latest(undecryptable)
    assert not locked_out.reachable
    assert locked_out.error is not None and locked_out.error.startswith("credentials: ")


async def test_a_replay_that_loses_its_connection_has_no_reference_and_leaves_no_scratch(
    health_activities: HealthActivities, catalog_pool: asyncpg.Pool
) -> None:
    name = f"ref-{uuid.uuid4().hex[:8]}"
    steps = [migration("1", "SELECT pg_terminate_backend(pg_backend_pid());")]
    await MigrationSetRepository(catalog_pool).register(name, steps)
    found = await health_activities.reference(name, "1", steps)
    assert found.fingerprint is None
    assert found.error is not None and found.error.startswith("replay failed: ")
    assert await _scratch_databases(catalog_pool) == []
