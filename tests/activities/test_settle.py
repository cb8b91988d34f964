"""Settle-only batches (``TargetBatchInput.settle_only``): each target's ledger is read and
nothing runs; an up-to-date target is settled, one with work left is deferred."""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from common.migrations.loader import parse_files
from models.migrations import TargetRunResult
from tests.activities.test_grouped import Group, group
from tests.activities.test_migrations import Engine, engine

__all__ = ["engine", "group"]

BOTH = {"V1__a.sql": "CREATE TABLE a ();", "V2__b.sql": "CREATE TABLE b ();"}


async def settle(group: Group, connections: int = 2) -> dict[str, TargetRunResult]:
    batch = group.batch().model_copy(update={"settle_only": True, "connections": connections})
    results = await ActivityEnvironment().run(group.activities.run_target_batch, batch)
    by_id = {r.database_id: r for r in results}
    return {schema: by_id[i] for schema, i in group.ids.items()}


async def test_a_group_settles_its_up_to_date_schemas_and_defers_the_rest(group: Group) -> None:
    await group.sets.register(group.set_name, parse_files(BOTH))
    schemas = [f"s{i}" for i in range(6)]
    await group.add(*schemas)
    await group.run(target_version="1")
    behind = schemas[:2]
    # The others reach the latest version; two stay at version 1.
    every = group.ids
    group.ids = {s: every[s] for s in schemas[2:]}
    await group.run()
    group.ids = every

    results = await settle(group)
    assert {s: r.deferred for s, r in results.items()} == {s: s in behind for s in schemas}
    for schema in schemas[2:]:
        result = results[schema]
        assert (result.failure, result.applied, result.to_version) == (None, [], "2")
    for schema in behind:
        assert await group.ledger(schema) == ["1"]  # nothing ran


async def test_a_single_target_is_settled_or_deferred_from_one_ledger_read(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, parse_files(BOTH))
    await engine.register_target()
    assert (await engine.run(target_version="1")).failure is None

    deferred = await engine.run(settle_only=True)
    assert deferred.deferred and deferred.applied == [] and deferred.from_version == "1"
    conn = await engine.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('b')") is None  # version 2 never ran
    finally:
        await conn.close()

    assert (await engine.run()).failure is None
    settled = await engine.run(settle_only=True)
    assert not settled.deferred and settled.failure is None and settled.to_version == "2"
