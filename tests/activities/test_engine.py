"""The engine's refusals and failure paths on real PostgreSQL (activities.engine): a target
version that is no version, a rollback without a goal or over an edited history, a failing down
script, a rollback that lost its race to another runner, a part-way row replaced by a
transactional version; and the pure judgement of a grouped no-op (``TargetEngine.settled``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import asyncpg
import pytest

from activities.engine import TargetEngine
from activities.ledger import position_in_script
from activities.migrations import LEDGER_TABLE, LockTimeout
from models.migrations import Migration, TargetRunInput, TargetRunKind
from tests.activities.test_migrations import BASE, Engine, _ledger, engine, migration

__all__ = ["engine"]  # the fixture, shared with the engine tests

LOCK = "SELECT pg_advisory_lock(hashtextextended('tenantflow:public', 0))"
UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('tenantflow:public', 0))"


async def _wait_for_a_lock_waiter(conn: asyncpg.Connection) -> None:
    for _ in range(500):
        if await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run never waited for the target's lock")


async def test_a_target_version_that_is_no_version_is_refused_before_any_change(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, BASE)
    result = await engine.run(target_version="not-a-version")
    assert result.failure is not None
    assert (result.failure.reason, result.failure.version) == ("unknown_version", None)
    assert result.applied == []
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass($1)", LEDGER_TABLE) is None
    finally:
        await conn.close()


async def test_a_rollback_needs_a_target_version(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    assert (await engine.run()).failure is None
    result = await engine.run(TargetRunKind.ROLLBACK)
    assert result.failure is not None
    assert result.failure.reason == "unknown_version"
    assert "needs a target version" in result.failure.message
    assert (result.from_version, result.to_version, result.applied) == ("10", "10", [])
    conn = await engine.connect()
    try:
        assert await _ledger(conn) == ["1", "2", "10"]
    finally:
        await conn.close()


async def test_a_rollback_over_an_edited_history_is_a_checksum_mismatch(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE)
    assert (await engine.run()).failure is None
    conn = await engine.connect()
    try:
        await conn.execute(
            f"UPDATE {LEDGER_TABLE} SET checksum = repeat('0', 64) WHERE version = '2'"
        )
        result = await engine.run(TargetRunKind.ROLLBACK, target_version="0")
        assert result.failure is not None
        assert (result.failure.reason, result.failure.version) == ("checksum_mismatch", "2")
        assert result.applied == []
        assert await _ledger(conn) == ["1", "2", "10"]
        assert await conn.fetchval("SELECT to_regclass('orders')::text") == "orders"
    finally:
        await conn.close()


async def test_a_failing_down_script_stops_the_rollback_naming_its_version(
    engine: Engine,
) -> None:
    steps = [
        BASE[0],
        migration("2", "CREATE TABLE notes (id int);", "DROP TABLE no_such_table;"),
        migration("3", "CREATE TABLE later (id int);", "DROP TABLE later;"),
    ]
    await engine.sets.register(engine.set_name, steps)
    assert (await engine.run()).failure is None
    result = await engine.run(TargetRunKind.ROLLBACK, target_version="0")
    assert result.failure is not None
    assert (result.failure.reason, result.failure.version) == ("sql_error", "2")
    assert result.failure.sqlstate == "42P01"  # undefined_table
    # Version 3 was undone before it; 2 and 1 stay, with their objects.
    assert [a.version for a in result.applied] == ["3"]
    assert result.to_version == "2"
    conn = await engine.connect()
    try:
        assert await _ledger(conn) == ["1", "2"]
        assert await conn.fetchval("SELECT to_regclass('notes')::text") == "notes"
        assert await conn.fetchval("SELECT to_regclass('later')") is None
    finally:
        await conn.close()


async def test_a_version_another_runner_rolled_back_meanwhile_is_skipped(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, BASE[:2])
    assert (await engine.run()).failure is None
    holder = await engine.connect()
    try:
        await holder.execute(LOCK)
        # The rollback reads the ledger {1, 2}, plans to undo 2 and waits for the lock ...
        run = asyncio.create_task(
            engine.run(TargetRunKind.ROLLBACK, target_version="1", lock_timeout_ms=20_000)
        )
        await _wait_for_a_lock_waiter(holder)
        # ... while another runner undoes version 2 first.
        await holder.execute(f"DROP TABLE orders; DELETE FROM {LEDGER_TABLE} WHERE version = '2'")
        await holder.execute(UNLOCK)
        result = await run
        assert result.failure is None, result.failure
        assert result.applied == []  # nothing undone twice
        assert (result.from_version, result.to_version) == ("2", "1")
        assert await _ledger(holder) == ["1"]
    finally:
        await holder.close()


async def test_a_busy_target_while_forgetting_repeatables_raises_for_a_retry(
    engine: Engine,
) -> None:
    repeatable = migration(
        "R:ids", "CREATE OR REPLACE VIEW ids AS SELECT 1 AS id;", repeatable=True, description="ids"
    )
    await engine.sets.register(engine.set_name, [*BASE[:2], repeatable])
    assert (await engine.run()).failure is None
    holder = await engine.connect()
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:public', 0))"
            )
            with pytest.raises(LockTimeout, match="target busy"):
                await engine.run(TargetRunKind.ROLLBACK, target_version="1", lock_timeout_ms=100)
        assert set(await _ledger(holder)) == {"1", "2", "R:ids"}
    finally:
        await holder.close()


async def test_repeatables_that_cannot_be_forgotten_stop_the_rollback_before_any_down(
    engine: Engine,
) -> None:
    repeatable = migration(
        "R:ids", "CREATE OR REPLACE VIEW ids AS SELECT 1 AS id;", repeatable=True, description="ids"
    )
    await engine.sets.register(engine.set_name, [*BASE[:2], repeatable])
    assert (await engine.run()).failure is None
    conn = await engine.connect()
    try:
        # A guard in the target refuses to lose rows of its ledger.
        await conn.execute(
            "CREATE FUNCTION keep_rows() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'ledger rows are kept'; END $$;\n"
            f"CREATE TRIGGER keep BEFORE DELETE ON {LEDGER_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION keep_rows();"
        )
        result = await engine.run(TargetRunKind.ROLLBACK, target_version="1")
        assert result.failure is not None
        assert (result.failure.reason, result.failure.version) == ("sql_error", "R:ids")
        assert result.failure.sqlstate == "P0001"
        assert "ledger rows are kept" in result.failure.message
        assert result.applied == []
        assert set(await _ledger(conn)) == {"1", "2", "R:ids"}
        assert await conn.fetchval("SELECT to_regclass('orders')::text") == "orders"
    finally:
        await conn.close()


async def test_a_part_way_row_is_replaced_when_the_version_runs_in_a_transaction(
    engine: Engine,
) -> None:
    """A no-transaction version left part-way (its row says success = false) and since made
    transactional: the next apply clears that row in the version's own message and applies it."""
    await engine.sets.register(engine.set_name, BASE[:1])
    assert (await engine.run()).failure is None
    conn = await engine.connect()
    try:
        step = BASE[1]
        await conn.execute(
            f"INSERT INTO {LEDGER_TABLE} (version, description, checksum, execution_ms, run_id, "
            "success, statements_done) VALUES ('2', 'step 2', $1, 0, 'crashed', false, 0)",
            step.checksum,
        )
        await engine.sets.register(engine.set_name, [step])
        result = await engine.run()
        assert result.failure is None, result.failure
        assert [a.version for a in result.applied] == ["2"]
        rows = await conn.fetch(f"SELECT version, success, run_id FROM {LEDGER_TABLE}")
        assert sorted((r["version"], r["success"]) for r in rows) == [("1", True), ("2", True)]
        assert "crashed" not in {r["run_id"] for r in rows}
    finally:
        await conn.close()


# --- settled(): the no-op judgement of a grouped apply, from rows read elsewhere -------------


def _settler(migrations: list[Migration], **options: Any) -> TargetEngine:
    params = TargetRunInput(
        run_id="r1",
        database_id=uuid.uuid4(),
        set_name="s",
        kind=options.pop("kind", TargetRunKind.APPLY),
        **options,
    )
    # settled() reads only the rows it is given: the engine never touches its connection.
    return TargetEngine(cast(asyncpg.Connection, None), "public", params, migrations)


def _rows(*versions: str) -> list[tuple[str, str, bool]]:
    by_version = {m.version: m.checksum for m in BASE}
    return [(v, by_version[v], True) for v in versions]


def test_an_up_to_date_ledger_is_settled_without_a_round_trip() -> None:
    settled = _settler(BASE).settled(_rows("1", "2", "10"))
    assert settled is not None
    assert (settled.from_version, settled.to_version, settled.applied) == ("10", "10", [])


@pytest.mark.parametrize(
    ("options", "rows"),
    [
        ({"kind": TargetRunKind.ROLLBACK, "target_version": "1"}, _rows("1", "2", "10")),
        ({"dry_run": True}, _rows("1", "2", "10")),
        ({}, [*_rows("1", "2"), ("10", BASE[2].checksum, False)]),  # a part-way row
        ({}, [("1", "0" * 64, True), *_rows("2", "10")]),  # a checksum mismatch
        ({"target_version": "7"}, _rows("1", "2", "10")),  # a version not in the set
        ({}, _rows("1", "2")),  # version 10 pending
    ],
    ids=["rollback", "dry-run", "part-way", "mismatch", "unknown-goal", "pending"],
)
def test_anything_for_the_engine_to_do_or_report_is_not_settled(
    options: dict[str, Any], rows: list[tuple[str, str, bool]]
) -> None:
    assert _settler(BASE, **options).settled(rows) is None


def test_error_positions_outside_the_versions_sql_are_dropped() -> None:
    assert position_in_script("120", 100) == 20
    assert position_in_script("50", 100) is None  # in the engine's own statements
    assert position_in_script(None, 0) is None
    assert position_in_script("near the end", 0) is None
