"""Schema fingerprints and references on real PostgreSQL databases (never mocked)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from activities.fingerprint import differences, schema_fingerprint
from activities.health import HealthActivities, _outcome, chain_of
from activities.ledger import ledger_ddl
from cli.stack import EmbeddedPostgres
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.health import DriftReport, ReportedState, TargetHealth
from models.webhooks import WebhookEventType
from tests.activities.test_migrations import migration

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
    health_activities: HealthActivities, catalog_pool: asyncpg.Pool
) -> None:
    name = f"ref-{uuid.uuid4().hex[:8]}"
    steps = [
        migration("1", "CREATE TABLE orders (id int PRIMARY KEY);"),
        migration("2", "ALTER TABLE orders ADD COLUMN note text;"),
    ]
    await MigrationSetRepository(catalog_pool).register(name, steps)
    at_one = await health_activities.reference(name, "1", steps)
    at_two = await health_activities.reference(name, "2", steps)
    assert at_one.error is None and at_two.error is None
    assert "table orders: column id" in at_one.objects
    assert "table orders: column note" not in at_one.objects
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
    first = _outcome(_health(reachable=True), None)
    assert first.events == [] and first.reported is None
    down = _outcome(_health(reachable=False), None)
    assert [e.type for e in down.events] == [WebhookEventType.DATABASE_UNHEALTHY]
    assert down.events[0].id == f"health-{uuid.UUID(int=7)}-1"
    assert down.reported == ReportedState(
        database_id=uuid.UUID(int=7), reachable=False, drifted=False, events_sent=1
    )
    still_down = _outcome(_health(reachable=False), down.reported)
    assert still_down.events == [] and still_down.reported is None
    back = _outcome(_health(reachable=True, drifted=True), down.reported)
    assert [e.type for e in back.events] == [
        WebhookEventType.DATABASE_RECOVERED,
        WebhookEventType.DATABASE_DRIFTED,
    ]
    assert [e.id for e in back.events] == [
        f"health-{uuid.UUID(int=7)}-2",
        f"health-{uuid.UUID(int=7)}-3",
    ]
    assert back.events[1].data["differences"] == ["table t added"]
    assert _outcome(_health(reachable=True, drifted=True), back.reported).events == []
