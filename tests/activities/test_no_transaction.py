"""Issue 9, point 4: versions marked no-transaction run statement by statement, roll back
statement by statement, and a retry after a crash or a failed concurrent build converges.
Real PostgreSQL; the activity is run directly."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from activities.migrations import LEDGER_TABLE, LockTimeout
from models.migrations import Migration, TargetRunKind
from tests.activities.test_migrations import BASE, Engine, _ledger, engine, migration

__all__ = ["engine"]  # the fixture, shared with the engine tests

MARK = "-- tenantflow:no-transaction\n"

TWO_INDEXES = migration(
    "2",
    MARK + "CREATE INDEX CONCURRENTLY customers_name ON customers (name);\n"
    "CREATE INDEX CONCURRENTLY customers_id_name ON customers (id, name);\n",
    MARK + "DROP INDEX CONCURRENTLY customers_id_name;\nDROP INDEX CONCURRENTLY customers_name;\n",
    no_transaction=True,
)


async def _valid_indexes(conn: asyncpg.Connection) -> dict[str, bool]:
    rows = await conn.fetch(
        "SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND NOT x.indisprimary"
    )
    return {r["relname"]: r["indisvalid"] for r in rows}


async def _rows(conn: asyncpg.Connection) -> dict[str, bool]:
    rows = await conn.fetch(f"SELECT version, success FROM {LEDGER_TABLE}")
    return {r["version"]: r["success"] for r in rows}


async def test_two_concurrent_index_builds_in_one_file_both_apply(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, [BASE[0], TWO_INDEXES])
    result = await engine.run()
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["1", "2"]
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {"customers_name": True, "customers_id_name": True}
        assert await _rows(conn) == {"1": True, "2": True}
    finally:
        await conn.close()
    assert (await engine.run()).applied == []


async def test_rollback_of_a_no_transaction_version_runs_outside_a_transaction(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, [BASE[0], TWO_INDEXES])
    assert (await engine.run()).failure is None
    plan = await engine.run(TargetRunKind.ROLLBACK, target_version="1", dry_run=True)
    assert [(p.version, p.no_transaction) for p in plan.planned] == [("2", True)]
    result = await engine.run(TargetRunKind.ROLLBACK, target_version="1")
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["2"]
    assert result.to_version == "1"
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {}
        assert await _ledger(conn) == ["1"]
    finally:
        await conn.close()


async def test_a_missing_down_of_a_no_transaction_version_is_still_refused(
    engine: Engine,
) -> None:
    up_only = migration(
        "2",
        MARK + "CREATE INDEX CONCURRENTLY customers_name ON customers (name);",
        None,
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], up_only])
    assert (await engine.run()).failure is None
    result = await engine.run(TargetRunKind.ROLLBACK, target_version="1")
    assert result.failure is not None
    assert (result.failure.reason, result.failure.version) == ("missing_down", "2")
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {"customers_name": True}
    finally:
        await conn.close()


# The worker's connection dies between two statements of the version (the backend is
# terminated, as when the worker is SIGKILLed): the first index is built, the version is not
# finished. The switch table makes only the first attempt die.
CRASHING = migration(
    "2",
    MARK + "CREATE INDEX CONCURRENTLY customers_name ON customers (name);\n"
    "SELECT pg_terminate_backend(pg_backend_pid()) FROM pg_class WHERE relname = 'crash_switch';\n"
    "CREATE INDEX CONCURRENTLY customers_id_name ON customers (id, name);\n",
    MARK + "DROP INDEX CONCURRENTLY customers_id_name;\nDROP INDEX CONCURRENTLY customers_name;\n",
    no_transaction=True,
)


async def _crash_once(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, [BASE[0], CRASHING])
    conn = await engine.connect()
    try:
        await conn.execute("CREATE TABLE crash_switch ()")
        with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresError, OSError)):
            await engine.run()
        await conn.execute("DROP TABLE crash_switch")
        # The change is half made and the ledger says so: version 2 is not applied.
        assert await _valid_indexes(conn) == {"customers_name": True}
        assert await _rows(conn) == {"1": True, "2": False}
    finally:
        await conn.close()


async def test_a_retry_after_a_crash_mid_version_converges(engine: Engine) -> None:
    await _crash_once(engine)
    status = await engine.run(dry_run=True)
    assert [p.version for p in status.planned] == ["2"]  # not applied until it finished
    result = await engine.run()
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["2"]
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {"customers_name": True, "customers_id_name": True}
        assert await _rows(conn) == {"1": True, "2": True}
    finally:
        await conn.close()


async def test_a_crash_before_the_progress_was_recorded_still_converges(engine: Engine) -> None:
    await _crash_once(engine)
    conn = await engine.connect()
    try:
        # As if the worker died after the index was built but before it recorded that.
        await conn.execute(f"UPDATE {LEDGER_TABLE} SET statements_done = 0 WHERE version = '2'")
    finally:
        await conn.close()
    result = await engine.run()
    assert result.failure is None, result.failure
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {"customers_name": True, "customers_id_name": True}
        assert await _rows(conn) == {"1": True, "2": True}
    finally:
        await conn.close()


async def test_a_half_applied_version_can_be_rolled_back(engine: Engine) -> None:
    await _crash_once(engine)
    result = await engine.run(TargetRunKind.ROLLBACK, target_version="1")
    assert result.failure is None, result.failure
    assert [a.version for a in result.applied] == ["2"]
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {}  # the missing second index is no error
        assert await _rows(conn) == {"1": True}
    finally:
        await conn.close()


async def test_an_invalid_index_from_a_failed_concurrent_build_is_rebuilt(engine: Engine) -> None:
    unique = migration(
        "2",
        MARK + "CREATE UNIQUE INDEX CONCURRENTLY customers_name_key ON customers (name);",
        MARK + "DROP INDEX CONCURRENTLY customers_name_key;",
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], unique])
    assert (await engine.run(target_version="1")).failure is None
    conn = await engine.connect()
    try:
        await conn.execute("INSERT INTO customers VALUES (1, 'ada'), (2, 'ada')")
        failed = await engine.run()
        assert failed.failure is not None
        assert (failed.failure.version, failed.failure.sqlstate) == ("2", "23505")
        assert failed.failure.position is None or int(failed.failure.position) >= 1
        assert failed.to_version == "1"
        # PostgreSQL leaves the failed concurrent build behind as an INVALID index.
        assert await _valid_indexes(conn) == {"customers_name_key": False}
        await conn.execute("UPDATE customers SET name = 'grace' WHERE id = 2")
        result = await engine.run()
        assert result.failure is None, result.failure
        assert [a.version for a in result.applied] == ["2"]
        assert await _valid_indexes(conn) == {"customers_name_key": True}
        assert await _rows(conn) == {"1": True, "2": True}
    finally:
        await conn.close()


async def test_a_fixed_file_after_a_failure_reapplies_what_is_not_there_yet(
    engine: Engine,
) -> None:
    broken = migration(
        "2",
        MARK + "CREATE INDEX CONCURRENTLY customers_name ON customers (name);\n"
        "CREATE INDEX CONCURRENTLY customers_id_name ON customers (id, lower(nme));\n",
        MARK
        + "DROP INDEX CONCURRENTLY customers_id_name;\nDROP INDEX CONCURRENTLY customers_name;\n",
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], broken])
    failed = await engine.run()
    assert failed.failure is not None
    assert failed.failure.sqlstate == "42703"  # undefined column, in the second statement
    assert failed.failure.position is not None
    assert broken.up_sql[int(failed.failure.position) - 1 :].startswith("nme")
    # The author fixes the file (a failed version's checksum may change) and runs again.
    await _replace_version(engine, TWO_INDEXES)
    result = await engine.run()
    assert result.failure is None, result.failure
    conn = await engine.connect()
    try:
        assert await _valid_indexes(conn) == {"customers_name": True, "customers_id_name": True}
        row = await conn.fetchrow(
            f"SELECT checksum, success FROM {LEDGER_TABLE} WHERE version = '2'"
        )
        assert row is not None
        assert (row["checksum"], row["success"]) == (TWO_INDEXES.checksum, True)
    finally:
        await conn.close()


async def _replace_version(engine: Engine, fixed: Migration) -> None:
    """Registers the fixed file under a new set name (a registered version's text is fixed)."""
    engine.set_name = engine.set_name + "b"
    await engine.sets.register(engine.set_name, [BASE[0], fixed])


async def test_a_failure_inside_the_versions_own_transaction_leaves_nothing_of_it(
    engine: Engine,
) -> None:
    """golang-migrate style: the file's own BEGIN ... COMMIT; a failure inside it rolls back
    all of it, the connection stays usable, and the fixed file applies from its BEGIN."""
    failing = migration(
        "2",
        MARK + "BEGIN;\nCREATE TABLE tags (id int);\nINSERT INTO tags VALUES (1 / 0);\nCOMMIT;\n",
        "DROP TABLE tags;",
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], failing])
    failed = await engine.run()
    assert failed.failure is not None
    assert (failed.failure.version, failed.failure.sqlstate) == ("2", "22012")
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('tags')") is None
        assert await _rows(conn) == {"1": True, "2": False}
        await _replace_version(
            engine,
            migration(
                "2",
                MARK
                + "BEGIN;\nCREATE TABLE tags (id int);\nINSERT INTO tags VALUES (1);\nCOMMIT;\n",
                "DROP TABLE tags;",
                no_transaction=True,
            ),
        )
        result = await engine.run()
        assert result.failure is None, result.failure
        assert await conn.fetchval("SELECT count(*) FROM tags") == 1
        assert await _rows(conn) == {"1": True, "2": True}
    finally:
        await conn.close()


async def test_a_version_that_begins_a_transaction_and_never_commits_it_fails_leaving_nothing(
    engine: Engine,
) -> None:
    """psql would end the session and lose the open transaction: so does the engine, naming
    the version, and the connection is left usable (its lock released)."""
    unfinished = migration(
        "2",
        MARK + "BEGIN;\nCREATE TABLE drafts (id int);\n",
        "DROP TABLE drafts;",
        no_transaction=True,
    )
    await engine.sets.register(engine.set_name, [BASE[0], unfinished])
    result = await engine.run()
    assert result.failure is not None
    assert (result.failure.version, result.failure.sqlstate) == ("2", "25000")
    assert "a BEGIN without its COMMIT" in result.failure.message
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('drafts')") is None
        assert await _rows(conn) == {"1": True, "2": False}
        # The target's session lock went with the failed version: another session takes it.
        assert await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended('tenantflow:public', 0))"
        )
    finally:
        await conn.close()


async def test_a_no_transaction_version_whose_predecessor_left_the_ledger_plans_again(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, BASE[:1])
    assert (await engine.run()).failure is None
    await engine.sets.register(engine.set_name, [TWO_INDEXES])
    holder = await engine.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended('tenantflow:public', 0))")
        run = asyncio.create_task(engine.run(lock_timeout_ms=20_000))
        for _ in range(500):
            if await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                break
            await asyncio.sleep(0.02)
        # A rollback (by hand) takes version 1 away while version 2 waits for the lock.
        await holder.execute(f"DELETE FROM {LEDGER_TABLE} WHERE version = '1'")
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended('tenantflow:public', 0))")
        with pytest.raises(LockTimeout, match="left the ledger"):
            await run
        assert await _rows(holder) == {}
        assert await _valid_indexes(holder) == {}
    finally:
        await holder.close()


async def test_a_no_transaction_version_another_runner_rolled_back_meanwhile_is_skipped(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, [BASE[0], TWO_INDEXES])
    assert (await engine.run()).failure is None
    holder = await engine.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended('tenantflow:public', 0))")
        # The rollback plans to undo version 2 and waits for the target's lock ...
        run = asyncio.create_task(
            engine.run(TargetRunKind.ROLLBACK, target_version="1", lock_timeout_ms=20_000)
        )
        for _ in range(500):
            if await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                break
            await asyncio.sleep(0.02)
        # ... while another runner undoes it first.
        await holder.execute(
            "DROP INDEX customers_id_name; DROP INDEX customers_name; "
            f"DELETE FROM {LEDGER_TABLE} WHERE version = '2'"
        )
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended('tenantflow:public', 0))")
        result = await run
        assert result.failure is None, result.failure
        assert result.applied == []  # nothing undone twice
        assert result.to_version == "1"
        assert await _rows(holder) == {"1": True}
    finally:
        await holder.close()


async def test_a_no_transaction_repeatable_another_runner_applied_meanwhile_is_not_run_again(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, BASE[:1])
    assert (await engine.run()).failure is None
    repeatable = migration(
        "R:names",
        MARK + "CREATE INDEX CONCURRENTLY IF NOT EXISTS customers_name ON customers (name);\n",
        repeatable=True,
        no_transaction=True,
        description="names",
    )
    await engine.sets.register(engine.set_name, [repeatable])
    holder = await engine.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended('tenantflow:public', 0))")
        run = asyncio.create_task(engine.run(lock_timeout_ms=20_000))
        for _ in range(500):
            if await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                break
            await asyncio.sleep(0.02)
        # Another runner applies this very content first.
        await holder.execute(
            f"INSERT INTO {LEDGER_TABLE} (version, description, checksum, execution_ms, run_id) "
            "VALUES ('R:names', 'names', $1, 1, 'other-runner')",
            repeatable.checksum,
        )
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended('tenantflow:public', 0))")
        result = await run
        assert result.failure is None, result.failure
        assert result.applied == []
        assert (
            await holder.fetchval(f"SELECT run_id FROM {LEDGER_TABLE} WHERE version = 'R:names'")
            == "other-runner"
        )
        assert await _valid_indexes(holder) == {}  # its SQL never ran here
    finally:
        await holder.close()
