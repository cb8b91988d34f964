"""The migration engine on real PostgreSQL: ledger, locking, idempotence, failures, rollback."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import migrations as migrations_module
from activities import reconnect
from activities.migrations import LEDGER_TABLE, MigrationActivities
from cli.stack import free_port
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import TargetBatchInput
from models.migrations import Migration, TargetRunInput, TargetRunKind, TargetRunResult
from tests.conftest import TargetDatabase


def migration(version: str, up: str, down: str | None = None, **extra: object) -> Migration:
    return Migration.model_validate(
        {
            "version": version,
            "description": f"step {version}",
            "up_sql": up,
            "down_sql": down,
            "checksum": hashlib.sha256(up.encode()).hexdigest(),
            **extra,
        }
    )


BASE = [
    migration(
        "1",
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);",
        "DROP TABLE customers;",
    ),
    migration(
        "2",
        "CREATE TABLE orders (id bigint PRIMARY KEY, "
        "customer_id bigint REFERENCES customers (id));",
        "DROP TABLE orders;",
    ),
    migration(
        "10", "CREATE INDEX orders_customer ON orders (customer_id);", "DROP INDEX orders_customer;"
    ),
]


class Harness:
    """The catalog repositories and the migration activities, bound to a test's target
    server, with a set name of its own."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, target: TargetDatabase) -> None:
        cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        self.databases = DatabaseRepository(pool, cipher)
        self.sets = MigrationSetRepository(pool)
        self.activities = MigrationActivities(self.databases, self.sets)
        self.target = target
        self.set_name = f"s-{uuid.uuid4().hex[:8]}"


class Engine(Harness):
    """Registers sets and targets in the catalog and runs the activity directly."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, target: TargetDatabase) -> None:
        super().__init__(pool, settings, target)
        self.database_id: uuid.UUID | None = None

    async def register_target(self, schema: str | None = None) -> uuid.UUID:
        body = self.target.create_body(name=f"t-{uuid.uuid4().hex[:8]}", schema=schema)
        self.database_id = (await self.databases.create(DatabaseCreate.model_validate(body))).id
        return self.database_id

    async def run(
        self, kind: TargetRunKind = TargetRunKind.APPLY, **options: object
    ) -> TargetRunResult:
        assert self.database_id is not None
        params = TargetRunInput(
            run_id=uuid.uuid4().hex[:8],
            database_id=self.database_id,
            set_name=self.set_name,
            kind=kind,
            **options,
        )
        return await ActivityEnvironment().run(self.activities.run_target, params)

    async def connect(self) -> asyncpg.Connection:
        return await self.target.connect()


@pytest.fixture
async def engine(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> AsyncIterator[Engine]:
    engine = Engine(catalog_pool, settings, target_database)
    await engine.register_target()
    yield engine


async def _ledger(conn: asyncpg.Connection, schema: str = "public") -> list[str]:
    rows = await conn.fetch(f'SELECT version FROM "{schema}".{LEDGER_TABLE} ORDER BY applied_at')
    return [r["version"] for r in rows]


async def test_apply_all_then_again_is_a_no_op(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    first = await engine.run()
    assert first.failure is None
    assert first.from_version is None
    assert first.to_version == "10"
    assert [a.version for a in first.applied] == ["1", "2", "10"]  # numeric order
    second = await engine.run()
    assert second.applied == []
    assert second.from_version == second.to_version == "10"
    conn = await engine.connect()
    try:
        assert await _ledger(conn) == ["1", "2", "10"]
        row = await conn.fetchrow(f"SELECT * FROM {LEDGER_TABLE} WHERE version = '2'")
        assert row is not None
        assert row["checksum"] == BASE[1].checksum
        assert row["success"] is True
        assert row["execution_ms"] >= 0
    finally:
        await conn.close()


async def test_apply_up_to_a_version_and_dry_run(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    plan = await engine.run(dry_run=True)
    assert [p.version for p in plan.planned] == ["1", "2", "10"]
    assert plan.planned[0].sql.startswith("CREATE TABLE customers")
    conn = await engine.connect()
    try:
        assert await conn.fetchval(f"SELECT to_regclass('{LEDGER_TABLE}')") is None
        partial = await engine.run(target_version="2")
        assert [a.version for a in partial.applied] == ["1", "2"]
        assert await _ledger(conn) == ["1", "2"]
    finally:
        await conn.close()
    unknown = await engine.run(target_version="7")
    assert unknown.failure is not None
    assert unknown.failure.reason == "unknown_version"


async def test_two_runs_at_once_apply_each_version_exactly_once(engine: Engine) -> None:
    slow = [
        migration("1", "CREATE TABLE a (id int); SELECT pg_sleep(0.3);", "DROP TABLE a;"),
        migration("2", "CREATE TABLE b (id int); SELECT pg_sleep(0.3);", "DROP TABLE b;"),
        migration("3", "CREATE TABLE c (id int);", "DROP TABLE c;"),
    ]
    await engine.sets.register(engine.set_name, slow)
    results = await asyncio.gather(*(engine.run() for _ in range(3)))
    applied = sorted(a.version for r in results for a in r.applied)
    assert applied == ["1", "2", "3"]
    assert all(r.failure is None and r.to_version == "3" for r in results)
    conn = await engine.connect()
    try:
        assert sorted(await _ledger(conn)) == ["1", "2", "3"]
    finally:
        await conn.close()


async def test_failure_midway_leaves_previous_version_and_no_partial_ddl(engine: Engine) -> None:
    broken = migration("2", "CREATE TABLE half_done (id int);\nSELECT 1/0;")
    await engine.sets.register(engine.set_name, [BASE[0], broken])
    result = await engine.run()
    assert [a.version for a in result.applied] == ["1"]
    assert result.to_version == "1"
    assert result.failure is not None
    assert result.failure.version == "2"
    assert result.failure.reason == "sql_error"
    assert result.failure.sqlstate == "22012"  # division_by_zero
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await _ledger(conn) == ["1"]
        # The fix: a corrected new version, the broken one withdrawn; the run continues.
        fixed = migration("3", "CREATE TABLE half_done (id int);", "DROP TABLE half_done;")
        await engine.sets.register(engine.set_name, [fixed])
        await engine.sets.withdraw(engine.set_name, "2")
        again = await engine.run()
        assert [a.version for a in again.applied] == ["3"]
        assert again.failure is None
        assert await _ledger(conn) == ["1", "3"]
        assert await conn.fetchval("SELECT to_regclass('half_done')::text") == "half_done"
    finally:
        await conn.close()


async def test_edited_applied_migration_is_a_checksum_mismatch_and_nothing_changes(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, BASE[:2])
    assert (await engine.run()).failure is None
    conn = await engine.connect()
    try:
        # Someone edits history in the target (or a set was re-created under the same name).
        await conn.execute(
            f"UPDATE {LEDGER_TABLE} SET checksum = repeat('0', 64) WHERE version = '1'"
        )
        await engine.sets.register(engine.set_name, [BASE[2]])
        result = await engine.run()
        assert result.failure is not None
        assert result.failure.reason == "checksum_mismatch"
        assert result.failure.message == "checksum mismatch at version 1"
        assert result.applied == []
        assert await conn.fetchval("SELECT to_regclass('orders_customer')") is None
        assert await _ledger(conn) == ["1", "2"]
    finally:
        await conn.close()


async def test_rollback_runs_downs_in_reverse_and_refuses_missing_downs(engine: Engine) -> None:
    no_down = migration("11", "CREATE TABLE irreversible (id int);")
    await engine.sets.register(engine.set_name, [*BASE, no_down])
    assert (await engine.run()).to_version == "11"
    refused = await engine.run(kind=TargetRunKind.ROLLBACK, target_version="1")
    assert refused.failure is not None
    assert refused.failure.reason == "missing_down"
    assert "11" in refused.failure.message
    assert refused.applied == []
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('irreversible')::text") == "irreversible"
        # Roll back only what has downs: first drop the irreversible one by hand is not our job;
        # instead roll back within the reversible range on a second target.
    finally:
        await conn.close()


async def test_rollback_to_zero_leaves_no_objects(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    await engine.run()
    plan = await engine.run(kind=TargetRunKind.ROLLBACK, target_version="0", dry_run=True)
    assert [p.version for p in plan.planned] == ["10", "2", "1"]
    result = await engine.run(kind=TargetRunKind.ROLLBACK, target_version="0")
    assert result.failure is None
    assert [a.version for a in result.applied] == ["10", "2", "1"]
    assert result.to_version is None
    conn = await engine.connect()
    try:
        tables = await conn.fetch(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relname <> $1 AND relkind <> 'S'",
            LEDGER_TABLE,
        )
        assert [t["relname"] for t in tables if not t["relname"].startswith(LEDGER_TABLE)] == []
        assert await _ledger(conn) == []
    finally:
        await conn.close()


async def test_schema_targets_get_their_own_schema_and_ledger(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    await engine.register_target(schema="tenant_a")
    result = await engine.run()
    assert [a.version for a in result.applied] == ["1", "2", "10"]
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('tenant_a.customers')::text") == (
            "tenant_a.customers"
        )
        assert await conn.fetchval("SELECT to_regclass('public.customers')") is None
        assert await _ledger(conn, "tenant_a") == ["1", "2", "10"]
    finally:
        await conn.close()


async def test_lock_timeout_is_raised_for_a_retry(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE[:1])
    conn = await engine.connect()
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:public', 0))"
            )
            with pytest.raises(Exception, match="target busy"):
                await engine.run(lock_timeout_ms=200)
        assert (await engine.run()).applied[0].version == "1"
    finally:
        await conn.close()


async def test_sql_errors_carry_code_message_and_position(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, [BASE[0], migration("2", "SELEC 1;")])
    result = await engine.run()
    assert result.failure is not None
    assert (result.failure.version, result.failure.sqlstate) == ("2", "42601")  # syntax_error
    assert "syntax error" in result.failure.message
    assert result.failure.position == "1"


async def test_no_transaction_migration_runs_outside_a_transaction(engine: Engine) -> None:
    concurrently = migration(
        "2",
        "-- tenantflow:no-transaction\n"
        "CREATE INDEX CONCURRENTLY customers_name ON customers (name);",
        "DROP INDEX CONCURRENTLY customers_name;",
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], concurrently])
    result = await engine.run()
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["1", "2"]
    conn = await engine.connect()
    try:
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'customers_name'::regclass"
        )
        assert valid is True
        assert await _ledger(conn) == ["1", "2"]
        # Running again does not try to build it twice.
        assert (await engine.run()).applied == []
    finally:
        await conn.close()


async def test_each_version_is_one_message_with_exact_ledger_values(engine: Engine) -> None:
    odd = migration(
        "1",
        "CREATE TABLE notes (id int);\nSELECT pg_sleep(0.05);\n-- ends in a comment, no newline",
        "DROP TABLE notes;",
        description="it's a \\ test; -- ünïcode '",
    )
    await engine.sets.register(engine.set_name, [odd])
    result = await engine.run()
    assert result.failure is None, result.failure
    conn = await engine.connect()
    try:
        row = await conn.fetchrow(f"SELECT * FROM {LEDGER_TABLE}")
        assert row is not None
        assert row["description"] == "it's a \\ test; -- ünïcode '"
        assert row["checksum"] == odd.checksum
        assert row["run_id"] == result.run_id
        # Timed by the server around the version's own SQL.
        assert 50 <= row["execution_ms"] < 5000
        assert result.applied[0].execution_ms >= row["execution_ms"]
    finally:
        await conn.close()


async def test_error_positions_are_relative_to_the_version_sql(engine: Engine) -> None:
    script = "SELECT 1;\nSELECT * FROM no_such_table;"
    await engine.sets.register(engine.set_name, [migration("1", script)])
    result = await engine.run()
    assert result.failure is not None
    assert result.failure.sqlstate == "42P01"  # undefined_table
    assert result.failure.position == str(script.index("no_such_table") + 1)


async def test_a_unique_violation_of_the_migration_itself_is_a_failure(engine: Engine) -> None:
    duplicate = migration(
        "1", "CREATE TABLE u (id int PRIMARY KEY);\nINSERT INTO u VALUES (1), (1);"
    )
    await engine.sets.register(engine.set_name, [duplicate])
    result = await engine.run()
    assert result.failure is not None
    assert (result.failure.reason, result.failure.sqlstate) == ("sql_error", "23505")
    assert result.applied == []
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('u')") is None
        assert await conn.fetchval(f"SELECT to_regclass('{LEDGER_TABLE}')") is None
    finally:
        await conn.close()


def _batch(engine: Engine, *database_ids: uuid.UUID, **options: object) -> TargetBatchInput:
    return TargetBatchInput(
        run_id=uuid.uuid4().hex[:8],
        set_name=engine.set_name,
        kind=TargetRunKind.APPLY,
        target_version=None,
        database_ids=list(database_ids),
        dry_run=False,
        lock_timeout_ms=int(str(options.pop("lock_timeout_ms", 5000))),
        statement_timeout_ms=60000,
    )


async def test_a_batch_target_busy_through_every_attempt_fails_with_lock_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations_module, "BATCH_LOCK_ATTEMPTS", 2)  # one pause, not three
    await engine.sets.register(engine.set_name, BASE[:1])
    assert engine.database_id is not None
    conn = await engine.connect()
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:public', 0))"
            )
            results = await ActivityEnvironment().run(
                engine.activities.run_target_batch,
                _batch(engine, engine.database_id, lock_timeout_ms=100),
            )
        [result] = results
        assert result.failure is not None
        assert result.failure.reason == "lock_timeout"
        assert "target busy (55P03)" in result.failure.message
        assert await conn.fetchval("SELECT to_regclass($1)", LEDGER_TABLE) is None
    finally:
        await conn.close()


async def test_a_batch_target_refusing_connections_is_tried_again_then_unreachable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on its port (a server restarting, for all the worker knows): connected
    again with growing pauses for RECONNECT_SECONDS, then unreachable; the others finish."""
    monkeypatch.setattr(reconnect, "RECONNECT_SECONDS", 1.0)
    await engine.sets.register(engine.set_name, BASE[:1])
    good = engine.database_id
    assert good is not None
    body = engine.target.create_body(name=f"t-{uuid.uuid4().hex[:8]}", port=free_port())
    refusing = (await engine.databases.create(DatabaseCreate.model_validate(body))).id
    began = time.monotonic()
    results = await ActivityEnvironment().run(
        engine.activities.run_target_batch, _batch(engine, refusing, good)
    )
    assert time.monotonic() - began >= 1.0
    by_id = {r.database_id: r for r in results}
    assert by_id[good].failure is None and by_id[good].to_version == "1"
    failure = by_id[refusing].failure
    assert failure is not None and failure.reason == "unreachable"
    assert engine.target.password not in failure.message


async def test_a_batch_names_a_target_missing_from_the_catalog(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE[:1])
    missing = uuid.uuid4()
    [result] = await ActivityEnvironment().run(
        engine.activities.run_target_batch, _batch(engine, missing)
    )
    assert result.failure is not None
    assert (result.failure.reason, result.failure.message) == (
        "not_found",
        f"no database {missing}",
    )
