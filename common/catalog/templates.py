"""Catalog access for template databases: who builds one (a claim, once per key), which is
ready, and which a newer one superseded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from models.templates import Template, TemplateSet, TemplateStatus

_COLUMNS = "key, server_id, database_name, sets, status, run_id, error"
# A failed build is tried again by a later provisioning run, not by every one.
RETRY_FAILED_AFTER_SECONDS = 600


def _row_to_model(row: asyncpg.Record) -> Template:
    sets = row["sets"]
    return Template(
        key=row["key"],
        server_id=row["server_id"],
        database_name=row["database_name"],
        sets=[
            TemplateSet.model_validate(s)
            for s in (json.loads(sets) if isinstance(sets, str) else sets)
        ],
        status=TemplateStatus(row["status"]),
        run_id=row["run_id"],
        error=row["error"],
    )


class TemplateRepository:
    """The ``tenant_templates`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self,
        key: str,
        server_id: uuid.UUID,
        database_name: str,
        sets: list[TemplateSet],
        run_id: str,
    ) -> tuple[Template, bool]:
        """The template for ``key``, and whether the caller must build it: true for the first
        caller, and for one that finds it failed a while ago or retired."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO tenant_templates (key, server_id, database_name, sets, status, "  # noqa: S608
                "run_id) VALUES ($1, $2, $3, $4::jsonb, 'building', $5) ON CONFLICT (key) "
                f"DO NOTHING RETURNING {_COLUMNS}",
                key,
                server_id,
                database_name,
                json.dumps([s.model_dump() for s in sets]),
                run_id,
            )
            if row is not None:
                return _row_to_model(row), True
            row = await conn.fetchrow(
                "UPDATE tenant_templates SET status = 'building', error = NULL, "  # noqa: S608
                "updated_at = now() WHERE key = $1 AND (status = 'retired' OR (status = "
                "'failed' AND updated_at < now() - make_interval(secs => $2))) "
                f"RETURNING {_COLUMNS}",
                key,
                RETRY_FAILED_AFTER_SECONDS,
            )
            if row is not None:
                return _row_to_model(row), True
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM tenant_templates WHERE key = $1",  # noqa: S608
                key,
            )
            assert row is not None
            return _row_to_model(row), False

    async def get(self, key: str) -> Template | None:
        """One template, or None."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM tenant_templates WHERE key = $1",  # noqa: S608
            key,
        )
        return _row_to_model(row) if row is not None else None

    async def mark(self, key: str, status: TemplateStatus, error: str | None = None) -> None:
        """Record a build's outcome (or a retirement)."""
        await self.pool.execute(
            "UPDATE tenant_templates SET status = $2, error = $3, updated_at = now() "
            "WHERE key = $1",
            key,
            status.value,
            error,
        )

    async def superseded(self, key: str) -> list[Template]:
        """Ready templates on the same server holding the same sets as ``key`` (at other
        versions): a newer template replaces them."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM tenant_templates o WHERE o.key <> $1 "  # noqa: S608
            "AND o.status IN ('ready', 'failed') AND EXISTS (SELECT FROM tenant_templates n "
            "WHERE n.key = $1 AND n.server_id = o.server_id AND (SELECT array_agg(e->>'name' "
            "ORDER BY e->>'name') FROM jsonb_array_elements(n.sets) e) IS NOT DISTINCT FROM "
            "(SELECT array_agg(e->>'name' ORDER BY e->>'name') "
            "FROM jsonb_array_elements(o.sets) e))",
            key,
        )
        return [_row_to_model(r) for r in rows]

    async def list(self, server_id: uuid.UUID | None = None) -> list[Template]:
        """Every template (of one server)."""
        args: list[Any] = []
        where = ""
        if server_id is not None:
            where, args = " WHERE server_id = $1", [server_id]
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM tenant_templates{where} ORDER BY created_at",  # noqa: S608
            *args,
        )
        return [_row_to_model(r) for r in rows]
