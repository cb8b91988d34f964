"""Registering sets: every part of a version counts (issue 9, point 7), and versions
registered before checksums covered every part still register again unchanged."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from common.catalog.migration_sets import MigrationSetRepository
from common.errors import Conflict
from common.migrations.loader import checksum, parse_files


async def test_a_down_script_added_later_is_a_conflict_not_unchanged(
    catalog_pool: asyncpg.Pool,
) -> None:
    sets, name = MigrationSetRepository(catalog_pool), f"s-{uuid.uuid4().hex[:8]}"
    await sets.register(name, parse_files({"V1__a.sql": "CREATE TABLE a (id int);"}))
    later = parse_files({"V1__a.sql": "CREATE TABLE a (id int);", "U1__a.sql": "DROP TABLE a;"})
    with pytest.raises(Conflict, match="version 1"):
        await sets.register(name, later)  # before the fix: "unchanged", the down discarded
    flagged = parse_files({"1_a.sql": "-- migrate:up transaction:false\nCREATE TABLE a (id int);"})
    with pytest.raises(Conflict):
        await sets.register(name, flagged)
    assert (await sets.migrations(name))[0].down_sql is None


async def test_a_version_registered_with_an_up_only_checksum_registers_again_unchanged(
    catalog_pool: asyncpg.Pool,
) -> None:
    sets, name = MigrationSetRepository(catalog_pool), f"s-{uuid.uuid4().hex[:8]}"
    files = {"V1__a.sql": "CREATE TABLE a (id int);\n", "U1__a.sql": "DROP TABLE a;\n"}
    await sets.register(name, parse_files(files))
    # As an earlier release stored it: the up SQL's checksum alone.
    await catalog_pool.execute(
        "UPDATE migration_set_versions SET checksum = $2 WHERE set_name = $1",
        name,
        checksum("CREATE TABLE a (id int);"),
    )
    again = await sets.register(name, parse_files(files))
    assert (again.added, again.unchanged) == ([], ["1"])
    with pytest.raises(Conflict):
        await sets.register(name, parse_files({**files, "U1__a.sql": "DROP TABLE a CASCADE;"}))


async def test_a_dbmate_version_registered_before_down_flags_registers_again_unchanged(
    catalog_pool: asyncpg.Pool,
) -> None:
    sets, name = MigrationSetRepository(catalog_pool), f"s-{uuid.uuid4().hex[:8]}"
    up, down = "CREATE INDEX CONCURRENTLY i ON t (x);\n", "DROP INDEX i;\n"
    files = {"1_i.sql": f"-- migrate:up transaction:false\n{up}-- migrate:down\n{down}"}
    (migration,) = parse_files(files)
    assert migration.down_no_transaction is False  # dbmate: the down runs in a transaction
    await sets.register(name, [migration])
    # As an earlier release stored it: the up's flag covered the down; no flag of its own.
    await catalog_pool.execute(
        "UPDATE migration_set_versions SET checksum = $2, down_no_transaction = NULL "
        "WHERE set_name = $1",
        name,
        checksum(up, down, no_transaction=True),
    )
    again = await sets.register(name, parse_files(files))
    assert (again.added, again.unchanged) == ([], ["1"])
    (kept,) = await sets.migrations(name)
    assert kept.down_outside_transaction is True  # what its targets recorded, kept
    other_down = {"1_i.sql": f"-- migrate:up transaction:false\n{up}-- migrate:down\nSELECT 1;"}
    with pytest.raises(Conflict):
        await sets.register(name, parse_files(other_down))


async def test_repeatables_are_replaced_while_versions_stay_immutable(
    catalog_pool: asyncpg.Pool,
) -> None:
    sets, name = MigrationSetRepository(catalog_pool), f"s-{uuid.uuid4().hex[:8]}"
    files = {"V1__a.sql": "CREATE TABLE a (id int);", "R__v.sql": "CREATE VIEW v AS SELECT 1;"}
    first = await sets.register(name, parse_files(files))
    assert (first.added, first.latest_version) == (["1", "R:v"], "1")
    changed = {**files, "R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT 2;"}
    second = await sets.register(name, parse_files(changed))
    assert (second.added, second.updated, second.unchanged) == ([], ["R:v"], ["1"])
    content = await sets.content(name)
    assert [(m.version, m.up_sql) for m in content.migrations] == [
        ("1", "CREATE TABLE a (id int);"),
        ("R:v", "CREATE OR REPLACE VIEW v AS SELECT 2;"),
    ]
    assert content.migrations[1].repeatable
    listed = {s.name: s.latest_version for s in (await sets.list()).items}
    assert listed[name] == "1"
    withdrawn = await sets.withdraw(name, "R:v")
    assert withdrawn.repeatable and withdrawn.withdrawn
