"""A batch with ``stop_at_failure`` (``batch_connections``) starts no target or schema group
after one of its targets failed; those come back deferred, untouched."""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from common.migrations.loader import parse_files
from tests.activities.test_grouped import Group, group

__all__ = ["group"]

BOTH = {"V1__a.sql": "CREATE TABLE a ();", "V2__b.sql": "CREATE TABLE b ();"}


async def test_a_failure_defers_the_schema_group_not_yet_started(group: Group) -> None:
    await group.sets.register(group.set_name, parse_files(BOTH))
    # Its own credentials keep "locked" out of the group: it runs alone, first, and fails.
    await group.add("locked", password="wrong")
    await group.add("s1", "s2")
    batch = group.batch().model_copy(update={"connections": 1, "stop_at_failure": True})
    results = await ActivityEnvironment().run(group.activities.run_target_batch, batch)
    by_schema = {s: r for r in results for s, i in group.ids.items() if i == r.database_id}

    locked = by_schema["locked"]
    assert locked.failure is not None and not locked.deferred
    assert "password authentication failed" in locked.failure.message
    for schema in ("s1", "s2"):  # one group, deferred as a whole before its connection
        result = by_schema[schema]
        assert (result.deferred, result.failure, result.applied) == (True, None, [])
    assert (
        await group.fetch("SELECT nspname FROM pg_namespace WHERE nspname IN ('s1', 's2')") == []
    )  # never created: the group never connected

    # The same batch without the flag runs the group after the failure.
    batch = batch.model_copy(update={"stop_at_failure": False})
    results = await ActivityEnvironment().run(group.activities.run_target_batch, batch)
    assert sorted(r.deferred for r in results) == [False, False, False]
    for schema in ("s1", "s2"):
        assert await group.ledger(schema) == ["1", "2"]
