"""Catalog access for set assignments (desired state: labels -> migration sets)."""

from __future__ import annotations

import builtins
import json

import asyncpg

from common.errors import InvalidInput, NotFound
from models.assignments import LATEST, AssignedSet, Assignment, AssignmentList, AssignmentSpec

_COLUMNS = "set_name, selector, coalesce(version, 'latest') AS version, created_at, updated_at"


def _row_to_model(row: asyncpg.Record) -> Assignment:
    selector = row["selector"]
    return Assignment(
        set_name=row["set_name"],
        selector=json.loads(selector) if isinstance(selector, str) else dict(selector),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class AssignmentRepository:
    """The ``set_assignments`` table; one assignment per set."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def put(self, set_name: str, spec: AssignmentSpec) -> Assignment:
        """Create or replace the assignment of ``set_name``. ``NotFound`` for an unknown set,
        ``InvalidInput`` for a pinned version the set does not have."""
        pinned = None if spec.version == LATEST else spec.version
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock the set row: a concurrent registration cannot interleave with the check.
            exists = await conn.fetchval(
                "SELECT 1 FROM migration_sets WHERE name = $1 FOR SHARE", set_name
            )
            if exists is None:
                raise NotFound(f"no migration set {set_name!r}", details={"set": set_name})
            if pinned is not None:
                known = await conn.fetchval(
                    "SELECT 1 FROM migration_set_versions WHERE set_name = $1 AND version = $2",
                    set_name,
                    pinned,
                )
                if known is None:
                    raise InvalidInput(
                        f"set {set_name!r} has no version {pinned}",
                        details={"set": set_name, "version": pinned},
                    )
            row = await conn.fetchrow(
                "INSERT INTO set_assignments (set_name, selector, version) "  # noqa: S608 - constant
                "VALUES ($1, $2::jsonb, $3) ON CONFLICT (set_name) DO UPDATE "
                "SET selector = EXCLUDED.selector, version = EXCLUDED.version, "
                f"updated_at = now() RETURNING {_COLUMNS}",
                set_name,
                json.dumps(spec.selector),
                pinned,
            )
        assert row is not None
        return _row_to_model(row)

    async def get(self, set_name: str) -> Assignment:
        """The assignment of ``set_name``, or ``NotFound``."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM set_assignments WHERE set_name = $1",  # noqa: S608 - constant
            set_name,
        )
        if row is None:
            raise NotFound(f"set {set_name!r} is not assigned", details={"set": set_name})
        return _row_to_model(row)

    async def list(self) -> AssignmentList:
        """Every assignment, by set name."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM set_assignments ORDER BY set_name"  # noqa: S608 - constant
        )
        return AssignmentList(items=[_row_to_model(r) for r in rows])

    async def delete(self, set_name: str) -> None:
        """Remove the assignment (targets keep what they have; nothing is rolled back)."""
        result = await self.pool.execute(
            "DELETE FROM set_assignments WHERE set_name = $1", set_name
        )
        if result == "DELETE 0":
            raise NotFound(f"set {set_name!r} is not assigned", details={"set": set_name})

    async def for_labels(self, labels: dict[str, str]) -> builtins.list[AssignedSet]:
        """The sets a target with ``labels`` should carry (assignments whose selector is
        contained in the labels), by set name; ``version`` None means latest."""
        rows = await self.pool.fetch(
            "SELECT set_name, version FROM set_assignments WHERE $1::jsonb @> selector "
            "ORDER BY set_name",
            json.dumps(labels),
        )
        return [AssignedSet(set_name=r["set_name"], version=r["version"]) for r in rows]
