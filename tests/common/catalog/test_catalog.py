"""The catalog's own schema: applied at start-up, idempotent, locked, checksum-verified."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from common.catalog import (
    CatalogMigration,
    CatalogSchemaError,
    apply_catalog_schema,
    load_catalog_migrations,
    open_catalog,
    ping_catalog,
)
from common.errors import DependencyUnavailable
from common.settings import CatalogSettings


def test_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in load_catalog_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_checksum_ignores_trailing_blanks_and_line_endings() -> None:
    a = CatalogMigration(1, "x", "CREATE TABLE a (id int);  \r\n")
    b = CatalogMigration(1, "x", "CREATE TABLE a (id int);\n")
    c = CatalogMigration(1, "x", "CREATE TABLE b (id int);\n")
    assert a.checksum == b.checksum
    assert a.checksum != c.checksum


async def test_apply_creates_tables_and_is_idempotent(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        first = await apply_catalog_schema(conn)
        second = await apply_catalog_schema(conn)
        rows = await conn.fetch("SELECT version FROM tenantflow_catalog_schema ORDER BY 1")
        audit = await conn.fetchval("SELECT to_regclass('audit_events')::text")
    finally:
        await conn.close()
    assert first == [m.version for m in load_catalog_migrations()]
    assert second == []
    assert [r["version"] for r in rows] == first
    assert audit == "audit_events"


async def test_concurrent_appliers_apply_each_version_once(fresh_database: str) -> None:
    conns = [await asyncpg.connect(fresh_database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_catalog_schema(c) for c in conns))
        count = await conns[0].fetchval("SELECT count(*) FROM tenantflow_catalog_schema")
    finally:
        for c in conns:
            await c.close()
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in load_catalog_migrations()]
    assert count == len(load_catalog_migrations())


async def test_changed_applied_migration_is_refused(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await apply_catalog_schema(conn, [CatalogMigration(1, "one", "CREATE TABLE one (id int);")])
        with pytest.raises(CatalogSchemaError, match="changed after it was applied") as info:
            await apply_catalog_schema(
                conn, [CatalogMigration(1, "one", "CREATE TABLE one (id bigint);")]
            )
        assert info.value.details["version"] == 1
        # The lock was released despite the error: a later apply still works.
        applied = await apply_catalog_schema(
            conn,
            [
                CatalogMigration(1, "one", "CREATE TABLE one (id int);"),
                CatalogMigration(2, "two", "CREATE TABLE two (id int);"),
            ],
        )
    finally:
        await conn.close()
    assert applied == [2]


async def test_failing_migration_leaves_nothing_half_applied(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        broken = CatalogMigration(1, "broken", "CREATE TABLE a (id int); SELECT no_such_fn();")
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_catalog_schema(conn, [broken])
        table = await conn.fetchval("SELECT to_regclass('a')::text")
        recorded = await conn.fetchval("SELECT count(*) FROM tenantflow_catalog_schema")
    finally:
        await conn.close()
    assert table is None
    assert recorded == 0


async def test_open_catalog_gives_up_with_a_clear_error_and_no_password() -> None:
    settings = CatalogSettings(
        dsn="postgresql://postgres:hunter2@127.0.0.1:1/tenantflow",
        startup_retry_seconds=0.3,
        connect_timeout_seconds=0.5,
    )
    with pytest.raises(DependencyUnavailable) as info:
        await open_catalog(settings)
    assert info.value.details["dependency"] == "catalog"
    assert "hunter2" not in repr(info.value.to_dict())
    assert info.value.__cause__ is None


async def test_ping_reports_a_closed_pool_as_down(fresh_database: str) -> None:
    pool = await open_catalog(CatalogSettings(dsn=fresh_database))
    await ping_catalog(pool, 2)
    await pool.close()
    with pytest.raises(DependencyUnavailable, match="does not answer"):
        await ping_catalog(pool, 2)


async def test_open_catalog_closes_its_pool_when_the_schema_is_refused(fresh_database: str) -> None:
    pool = await open_catalog(CatalogSettings(dsn=fresh_database))
    await pool.close()
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(
            "UPDATE tenantflow_catalog_schema SET checksum = 'edited' WHERE version = 1"
        )
        with pytest.raises(CatalogSchemaError, match="changed after it was applied"):
            await open_catalog(CatalogSettings(dsn=fresh_database))
        # Nothing of the refused pool stays connected: only this connection is left.
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert others == 0
