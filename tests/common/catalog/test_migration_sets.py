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
