"""Adopt and baseline (``activities.adoption``) on real PostgreSQL: targets brought to version 4
of ``examples/core`` the way Flyway, golang-migrate and dbmate leave them (each tool's
documented history table, in the schema it uses), adopted, then finished by a normal apply."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.adoption import HISTORY_TABLES, flyway_checksum
from activities.migrations import LEDGER_TABLE, LockTimeout
from common.catalog.migration_sets import MigrationSetRepository
from common.migrations.loader import load_directory, parse_files
from common.settings import Settings
from models.adoption import AdoptSource
from models.migrations import LedgerRequest, Migration, TargetRunKind, TargetRunResult
from tests.activities.test_equivalence import schema_dump
from tests.activities.test_set_ledgers import Runner, _runner
from tests.conftest import TargetDatabase, TargetFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "core"
CORE = load_directory(EXAMPLE)
# What Flyway recorded for the adopted versions, in the server's local time (its column is a
# timestamp without time zone filled by now()).
FLYWAY_TIME = "2024-03-01 12:00:00"
VIEW = "CREATE OR REPLACE VIEW customer_emails AS SELECT id, email FROM customers;"

# Flyway's own history table for PostgreSQL (its createMetaDataTable.sql).
FLYWAY_DDL = """
CREATE TABLE flyway_schema_history (
    installed_rank integer NOT NULL,
    version varchar(50),
    description varchar(200) NOT NULL,
    type varchar(20) NOT NULL,
    script varchar(1000) NOT NULL,
    checksum integer,
    installed_by varchar(100) NOT NULL,
    installed_on timestamp NOT NULL DEFAULT now(),
    execution_time integer NOT NULL,
    success boolean NOT NULL,
    CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank)
);
CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success);
"""
# golang-migrate's postgres driver: one row, the current version and whether it is dirty.
GOLANG_MIGRATE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, "
    "dirty boolean NOT NULL)"
)
# dbmate's postgres driver: a row per applied version.
DBMATE_DDL = "CREATE TABLE IF NOT EXISTS schema_migrations (version varchar(128) PRIMARY KEY)"


def test_flyway_checksums_match_values_flyway_computed() -> None:
    # A file of ebean's migration test suite whose index records Flyway's CRC32 for it.
    assert flyway_checksum("2b\n") == 253052666
    # Line terminators and a BOM do not count (Java's readLine); the value is signed.
    assert flyway_checksum("\ufeff2b\r\n") == 253052666
    assert flyway_checksum("2\nb") == flyway_checksum("2b")
    assert flyway_checksum("") == 0
    assert all(-(2**31) <= flyway_checksum(m.up_sql) < 2**31 for m in CORE)


async def migrate_as(
    conn: asyncpg.Connection,
    tool: AdoptSource,
    migrations: list[Migration],
    schema: str = "public",
) -> None:
    """Run ``migrations`` on ``conn`` and record them as ``tool`` does, in ``schema`` (what
    the tool's search path makes its default)."""
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"; SET search_path TO "{schema}"')
    if tool is AdoptSource.FLYWAY:
        await conn.execute(FLYWAY_DDL)
    else:
        await conn.execute(GOLANG_MIGRATE_DDL if tool is AdoptSource.GOLANG_MIGRATE else DBMATE_DDL)
    for rank, migration in enumerate(migrations, start=1):
        async with conn.transaction():
            await conn.execute(migration.up_sql)
            if tool is AdoptSource.FLYWAY:
                await conn.execute(
                    "INSERT INTO flyway_schema_history VALUES "
                    "($1, $2, $3, 'SQL', $4, $5, 'app', $6::text::timestamp, 12, true)",
                    rank,
                    migration.version,
                    migration.description,
                    migration.source,
                    flyway_checksum(migration.up_sql),
                    FLYWAY_TIME,
                )
            elif tool is AdoptSource.GOLANG_MIGRATE:
                await conn.execute("TRUNCATE schema_migrations")
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, false)", int(migration.version)
                )
            else:
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
                )
    await conn.execute("RESET search_path")


async def history_rows(conn: asyncpg.Connection, tool: AdoptSource, schema: str) -> list[Any]:
    """The other tool's table as it stands (to show adoption leaves it as it was)."""
    table = f'"{schema}"."{HISTORY_TABLES[tool]}"'
    return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]


async def ledger_rows(conn: asyncpg.Connection, schema: str = "public") -> list[Any]:
    table = f'"{schema}"."{LEDGER_TABLE}"'
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return []
    return list(
        await conn.fetch(
            f"SELECT *, to_jsonb(l) ->> 'adopted_from' AS source FROM {table} l ORDER BY version"
        )
    )


async def _set(pool: asyncpg.Pool, migrations: list[Migration] = CORE) -> str:
    name = f"adopt-{uuid.uuid4().hex[:8]}"
    await MigrationSetRepository(pool).register(name, migrations)
    return name


async def _run(
    runner: Runner, set_name: str, kind: TargetRunKind, **options: Any
) -> TargetRunResult:
    return await runner.run(set_name, kind, **options)


@pytest.mark.parametrize("schema", [None, "tenant_adopted"])
@pytest.mark.parametrize("tool", list(AdoptSource), ids=lambda t: t.value)
async def test_adopted_targets_continue_from_version_4_to_the_same_schema_as_a_fresh_apply(
    tool: AdoptSource,
    schema: str | None,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    set_name = await _set(catalog_pool)
    adopted, fresh = await make_target(), await make_target()
    where = schema or "public"
    conn = await adopted.connect()
    try:
        await migrate_as(conn, tool, CORE[:4], where)
        before = await history_rows(conn, tool, where)
        runner = await _runner(catalog_pool, settings, adopted, schema)

        plan = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=tool, dry_run=True)
        assert plan.failure is None and [p.version for p in plan.planned] == ["1", "2", "3", "4"]
        assert await ledger_rows(conn, where) == []

        result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=tool)
        assert result.failure is None, result.failure
        assert (result.from_version, result.to_version) == (None, "4")
        assert [a.version for a in result.applied] == ["1", "2", "3", "4"]
        assert all(a.execution_ms == 0 for a in result.applied)
        rows = await ledger_rows(conn, where)
        assert [(r["version"], r["checksum"], r["source"], r["execution_ms"]) for r in rows] == [
            (m.version, m.checksum, tool.value, 0) for m in CORE[:4]
        ]
        assert {r["run_id"] for r in rows} == {result.run_id}
        if tool is AdoptSource.FLYWAY:  # Flyway's own time; the others keep none
            original = await conn.fetchval("SELECT $1::text::timestamp::timestamptz", FLYWAY_TIME)
            assert {r["applied_at"] for r in rows} == {original}
        else:
            assert all(r["applied_at"] > datetime(2025, 1, 1, tzinfo=UTC) for r in rows)
        assert await history_rows(conn, tool, where) == before  # only read

        again = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=tool)
        assert again.failure is None and again.applied == [] and again.to_version == "4"

        shown = await ActivityEnvironment().run(
            runner.activities.read_ledger,
            LedgerRequest(database_id=runner.database_id, set_name=set_name),
        )
        assert [(e.version, e.adopted_from) for e in shown.entries] == [
            (m.version, tool.value) for m in CORE[:4]
        ]

        applied = await runner.run(set_name)
        assert applied.failure is None, applied.failure
        assert applied.from_version == "4" and [a.version for a in applied.applied] == ["5", "6"]
        assert [r["source"] for r in await ledger_rows(conn, where)] == [tool.value] * 4 + [
            None
        ] * 2
        await conn.execute(f'DROP TABLE "{where}"."{HISTORY_TABLES[tool]}"')
    finally:
        await conn.close()
    reference = await _runner(catalog_pool, settings, fresh, schema)
    assert (await reference.run(set_name)).failure is None
    assert await app_schema(adopted, where) == await app_schema(fresh, where)


async def app_schema(target: TargetDatabase, schema: str = "public") -> str:
    """The target's schema without tenantflow's ledger (which differs in ``adopted_from``)."""
    conn = await target.connect()
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{LEDGER_TABLE}"')
    finally:
        await conn.close()
    return await schema_dump(target)


async def _refused(
    runner: Runner, conn: asyncpg.Connection, set_name: str, tool: AdoptSource
) -> TargetRunResult:
    """Adopt, expecting a refusal that changes nothing: neither ledger nor history table."""
    before = await history_rows(conn, tool, "public")
    result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=tool)
    assert result.failure is not None and result.applied == []
    assert await ledger_rows(conn) == []
    assert await history_rows(conn, tool, "public") == before
    return result


@pytest.fixture
async def adopting(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> Any:
    conn = await target_database.connect()
    runner = await _runner(catalog_pool, settings, target_database, None)
    yield runner, conn, await _set(catalog_pool)
    await conn.close()


async def test_a_dirty_golang_migrate_database_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.GOLANG_MIGRATE, CORE[:3])
    await conn.execute("UPDATE schema_migrations SET dirty = true")
    failure = (await _refused(runner, conn, set_name, AdoptSource.GOLANG_MIGRATE)).failure
    assert failure is not None and (failure.reason, failure.version) == ("dirty", "3")
    assert "version 3 dirty" in failure.message


async def test_a_failed_flyway_row_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.FLYWAY, CORE[:4])
    await conn.execute("UPDATE flyway_schema_history SET success = false WHERE version = '4'")
    failure = (await _refused(runner, conn, set_name, AdoptSource.FLYWAY)).failure
    assert failure is not None and (failure.reason, failure.version) == ("failed_version", "4")


async def test_a_flyway_checksum_mismatch_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.FLYWAY, CORE[:4])
    # The file Flyway ran was not the one registered: its stored CRC32 differs.
    await conn.execute(
        "UPDATE flyway_schema_history SET checksum = checksum + 1 WHERE version = '2'"
    )
    failure = (await _refused(runner, conn, set_name, AdoptSource.FLYWAY)).failure
    assert failure is not None and (failure.reason, failure.version) == ("checksum_mismatch", "2")
    assert "V2__create_orders.sql" in failure.message


@pytest.mark.parametrize("tool", list(AdoptSource), ids=lambda t: t.value)
async def test_a_version_missing_from_the_set_is_refused(
    tool: AdoptSource, adopting: Any, catalog_pool: asyncpg.Pool
) -> None:
    runner, conn, _ = adopting
    # The tool ran versions 1-4; the set registered in tenantflow stops at 3.
    shorter = await _set(catalog_pool, CORE[:3])
    await migrate_as(conn, tool, CORE[:4])
    failure = (await _refused(runner, conn, shorter, tool)).failure
    assert failure is not None and (failure.reason, failure.version) == ("unknown_version", "4")
    assert "version 4" in failure.message


async def test_a_target_without_the_tools_table_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=AdoptSource.FLYWAY)
    assert result.failure is not None and result.failure.reason == "no_history"
    # golang-migrate's table is not dbmate's, and the other way round.
    await migrate_as(conn, AdoptSource.GOLANG_MIGRATE, CORE[:1])
    result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=AdoptSource.DBMATE)
    assert result.failure is not None and result.failure.reason == "no_history"
    assert await ledger_rows(conn) == []


async def test_flyway_baseline_undo_and_repeatable_rows(
    adopting: Any, catalog_pool: asyncpg.Pool
) -> None:
    runner, conn, _ = adopting
    files = {m.source or "": m.up_sql for m in CORE}
    files["R__customer_emails.sql"] = VIEW
    files["R__order_totals.sql"] = "CREATE OR REPLACE VIEW order_totals AS SELECT 1 AS total;"
    with_repeatables = parse_files(files)
    set_name = await _set(catalog_pool, with_repeatables)
    await migrate_as(conn, AdoptSource.FLYWAY, [])
    for migration in CORE[:3]:  # 4 was undone
        await conn.execute(migration.up_sql)
    await conn.execute(VIEW)
    await conn.execute("CREATE VIEW order_totals AS SELECT 0 AS total")  # an older version
    rows = [
        (1, "0", "<< Flyway Schema Creation >>", "SCHEMA", '"public"', None),
        (2, "2", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", None),
        (3, "3", CORE[2].description, "SQL", CORE[2].source, flyway_checksum(CORE[2].up_sql)),
        (4, "4", CORE[3].description, "SQL", CORE[3].source, flyway_checksum(CORE[3].up_sql)),
        (5, None, "customer emails", "SQL", "R__customer_emails.sql", 42),
        (6, None, "order totals", "SQL", "R__order_totals.sql", 7),
        (7, "4", CORE[3].description, "UNDO_SQL", "U4__x.sql", 7),
        # The latest run of a repeatable counts: this one ran the file as registered.
        (8, None, "customer emails", "SQL", "R__customer_emails.sql", flyway_checksum(VIEW)),
    ]
    for rank, version, description, kind, script, checksum in rows:
        await conn.execute(
            "INSERT INTO flyway_schema_history VALUES ($1, $2, $3, $4, $5, $6, 'app', now(), 1, "
            "true)",
            rank,
            version,
            description,
            kind,
            script,
            checksum,
        )
    result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=AdoptSource.FLYWAY)
    assert result.failure is None, result.failure
    # Up to the baseline, version 3, not 4 (undone); the repeatable Flyway ran as registered,
    # not the one it ran in an older version.
    assert [a.version for a in result.applied] == ["1", "2", "3", "R:customer emails"]
    assert result.to_version == "3"
    applied = await runner.run(set_name)
    assert applied.failure is None, applied.failure
    assert [a.version for a in applied.applied] == ["4", "5", "6", "R:order totals"]
    assert await conn.fetchval("SELECT total FROM order_totals") == 1


async def test_baseline_marks_an_untracked_database_and_refuses_a_managed_one(
    adopting: Any, catalog_pool: asyncpg.Pool, settings: Settings, make_target: TargetFactory
) -> None:
    runner, conn, set_name = adopting
    for migration in CORE[:4]:  # built by hand, under no tool
        await conn.execute(migration.up_sql)
    unknown = await runner.run(set_name, TargetRunKind.BASELINE, target_version="9")
    assert unknown.failure is not None and unknown.failure.reason == "unknown_version"
    result = await runner.run(set_name, TargetRunKind.BASELINE, target_version="4")
    assert result.failure is None and [a.version for a in result.applied] == ["1", "2", "3", "4"]
    assert {r["source"] for r in await ledger_rows(conn)} == {"baseline"}
    # A retry after the commit changes nothing; a higher baseline over a ledger is refused.
    again = await runner.run(set_name, TargetRunKind.BASELINE, target_version="4")
    assert again.failure is None and again.applied == []
    higher = await runner.run(set_name, TargetRunKind.BASELINE, target_version="5")
    assert higher.failure is not None
    assert (higher.failure.reason, higher.failure.version) == ("already_managed", "5")
    applied = await runner.run(set_name)
    assert applied.failure is None and [a.version for a in applied.applied] == ["5", "6"]
    fresh = await make_target()
    assert (
        await (await _runner(catalog_pool, settings, fresh, None)).run(set_name)
    ).failure is None
    assert await app_schema(runner.target) == await app_schema(fresh)


async def test_adoption_waits_for_the_engines_lock_on_the_target(
    adopting: Any, target_database: TargetDatabase
) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.DBMATE, CORE[:2])
    holder = await target_database.connect()
    try:
        async with holder.transaction():  # as an apply in progress holds it
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "tenantflow:public"
            )
            with pytest.raises(LockTimeout):
                await runner.run(
                    set_name,
                    TargetRunKind.ADOPT,
                    adopt_from=AdoptSource.DBMATE,
                    lock_timeout_ms=100,
                )
    finally:
        await holder.close()
    assert await ledger_rows(conn) == []
    done = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=AdoptSource.DBMATE)
    assert [a.version for a in done.applied] == ["1", "2"]


async def test_a_baseline_at_no_version_number_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    result = await runner.run(set_name, TargetRunKind.BASELINE, target_version="latest")
    assert result.failure is not None
    assert (result.failure.reason, result.failure.version) == ("unknown_version", None)
    assert await ledger_rows(conn) == []


async def test_an_adopt_run_needs_the_tool_it_adopts_from(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.FLYWAY, CORE[:2])
    result = await runner.run(set_name, TargetRunKind.ADOPT)
    assert result.failure is not None and result.failure.reason == "unknown_version"
    assert 'needs "from"' in result.failure.message
    assert await ledger_rows(conn) == []


async def test_a_history_row_that_is_no_version_number_is_refused(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await migrate_as(conn, AdoptSource.FLYWAY, CORE[:2])
    await conn.execute("UPDATE flyway_schema_history SET version = 'two' WHERE version = '2'")
    failure = (await _refused(runner, conn, set_name, AdoptSource.FLYWAY)).failure
    assert failure is not None and failure.reason == "unknown_version"
    assert "records version 'two', not a version number" in failure.message


async def test_a_schema_migrations_table_that_is_not_golang_migrates_is_refused(
    adopting: Any,
) -> None:
    runner, conn, set_name = adopting
    await conn.execute("CREATE TABLE schema_migrations (version bigint)")  # no dirty column
    await conn.execute("INSERT INTO schema_migrations VALUES (2)")
    failure = (await _refused(runner, conn, set_name, AdoptSource.GOLANG_MIGRATE)).failure
    assert failure is not None and failure.reason == "no_history"
    assert "no dirty column" in failure.message
    # golang-migrate's own shape, but with two rows where it keeps exactly one.
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN dirty boolean DEFAULT false")
    await conn.execute("INSERT INTO schema_migrations VALUES (3, false)")
    failure = (await _refused(runner, conn, set_name, AdoptSource.GOLANG_MIGRATE)).failure
    assert failure is not None and failure.reason == "no_history"
    assert "has 2 rows" in failure.message


async def test_an_empty_golang_migrate_table_adopts_nothing(adopting: Any) -> None:
    runner, conn, set_name = adopting
    await conn.execute("CREATE TABLE schema_migrations (version bigint, dirty boolean)")
    result = await runner.run(set_name, TargetRunKind.ADOPT, adopt_from=AdoptSource.GOLANG_MIGRATE)
    assert result.failure is None, result.failure
    assert result.applied == []
    assert [r["version"] for r in await ledger_rows(conn)] == []
    # The next apply runs every version, as on a fresh target.
    applied = await runner.run(set_name)
    assert applied.failure is None
    assert [a.version for a in applied.applied] == [m.version for m in CORE]
