"""Issue 9, engine points: session state per version (1), order under the lock (5) and one
target's failure staying that target's (8); real PostgreSQL, the activity run directly."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from temporalio.testing import ActivityEnvironment

from activities.migrations import LEDGER_TABLE, LockTimeout
from models.fleet import TargetBatchInput
from models.migrations import TargetRunKind
from tests.activities.test_migrations import BASE, Engine, _ledger, engine, migration

__all__ = ["engine"]  # the fixture, shared with the engine tests


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT schemaname || '.' || tablename AS t FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    return {r["t"] for r in rows}


async def test_a_pg_dump_search_path_does_not_leak_into_the_next_version(engine: Engine) -> None:
    dumped = migration(
        "1",
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "CREATE TABLE public.accounts (id int);",
        "DROP TABLE public.accounts;",
    )
    plain = migration("2", "CREATE TABLE notes (id int);", "DROP TABLE notes;")
    role = migration("3", "SET ROLE NONE; SET statement_timeout = 1;", "SELECT 1;")
    after = migration("4", "SELECT pg_sleep(0.01); CREATE TABLE later (id int);")
    await engine.sets.register(engine.set_name, [dumped, plain, role, after])
    result = await engine.run()
    # Before the fix version 2 failed with 3F000 (no schema has been selected) and version
    # 4 with the leaked statement_timeout of 1 ms.
    assert result.failure is None, result.failure
    conn = await engine.connect()
    try:
        assert {"public.accounts", "public.notes", "public.later"} <= await _tables(conn)
        back = await engine.run(TargetRunKind.ROLLBACK, target_version="0")
        assert back.failure is not None  # version 4 has no down; nothing is undone
        assert await _ledger(conn) == ["1", "2", "3", "4"]
    finally:
        await conn.close()


async def test_a_schema_target_keeps_its_schema_after_set_search_path(engine: Engine) -> None:
    schema = f"tenant_{uuid.uuid4().hex[:6]}"
    await engine.register_target(schema=schema)
    await engine.sets.register(
        engine.set_name,
        [
            migration("1", "CREATE TABLE a (id int); SET search_path TO public;"),
            migration("2", "CREATE TABLE b (id int);"),
        ],
    )
    result = await engine.run()
    assert result.failure is None, result.failure
    conn = await engine.connect()
    try:
        tables = await _tables(conn)
        # Before the fix, b landed in public, outside the tenant's schema.
        assert {f"{schema}.a", f"{schema}.b"} <= tables
        assert "public.b" not in tables
    finally:
        await conn.close()


async def test_a_version_applies_only_if_its_predecessor_is_still_in_the_ledger(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, BASE[:2])
    assert (await engine.run()).failure is None  # ledger {1, 2}
    await engine.sets.register(engine.set_name, [migration("3", "CREATE TABLE c3 (id int);")])
    holder = await engine.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended('tenantflow:public', 0))")
        # The run reads the ledger {1, 2}, plans version 3 and waits for the lock ...
        run = asyncio.create_task(engine.run(lock_timeout_ms=20_000))
        for _ in range(500):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the run never waited for the target's lock"
        # ... while a rollback (here by hand) takes version 2 away.
        await holder.execute(f"DROP TABLE orders; DELETE FROM {LEDGER_TABLE} WHERE version = '2'")
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended('tenantflow:public', 0))")
        try:
            await run
        except LockTimeout as exc:  # planned again by Temporal's retry
            assert "left the ledger" in str(exc)
        else:
            raise AssertionError("version 3 was applied on a ledger without version 2")
        assert await _ledger(holder) == ["1"]  # before the fix: 1, 3
        retried = await engine.run()
        assert retried.failure is None, retried.failure
        assert await _ledger(holder) == ["1", "2", "3"]
    finally:
        await holder.close()


async def test_a_dropped_connection_or_a_bad_credential_fails_only_its_own_target(
    engine: Engine,
) -> None:
    good = engine.database_id
    assert good is not None
    dropping = await engine.register_target(schema=f"drop_{uuid.uuid4().hex[:6]}")
    undecryptable = await engine.register_target(schema=f"key_{uuid.uuid4().hex[:6]}")
    await engine.databases.pool.execute(
        "UPDATE databases SET password_encrypted = password_encrypted || 'x' WHERE id = $1",
        undecryptable,
    )
    await engine.sets.register(
        engine.set_name,
        [
            migration("1", "CREATE TABLE t1 (id int);"),
            # Only the dropping target's schema matches: its own backend is terminated.
            migration(
                "2",
                "SELECT pg_terminate_backend(pg_backend_pid()) "
                "WHERE current_schema() LIKE 'drop_%';",
            ),
        ],
    )
    batch = TargetBatchInput(
        run_id="batch-1",
        set_name=engine.set_name,
        kind=TargetRunKind.APPLY,
        target_version=None,
        database_ids=[dropping, undecryptable, good],
        dry_run=False,
        lock_timeout_ms=5_000,
        statement_timeout_ms=0,
    )
    results = await ActivityEnvironment().run(engine.activities.run_target_batch, batch)
    by_id = {r.database_id: r for r in results}
    assert by_id[good].failure is None, by_id[good].failure
    assert by_id[good].to_version == "2"
    assert by_id[dropping].failure is not None
    failure = by_id[undecryptable].failure
    assert failure is not None
    assert failure.reason == "credentials"
