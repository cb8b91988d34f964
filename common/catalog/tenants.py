"""Catalog access for tenants: the provisioning claim (idempotent by tenant id), status changes,
and the generated password on its way to the tenant's target row."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from common.catalog.databases import decode_cursor, encode_cursor
from common.catalog.databases import password_context as target_password_context
from common.crypto import CredentialCipher
from common.errors import Conflict, NotFound
from models.tenants import (
    SetRequest,
    Tenant,
    TenantCreate,
    TenantMode,
    TenantPage,
    TenantStatus,
    object_name,
)

_COLUMNS = (
    "t.tenant_id, t.status, t.mode, t.server_id, s.name AS server_name, t.database_id, "
    "t.role_name, t.database_name, t.schema_name, t.sets, t.labels, t.versions, t.run_id, "
    "t.error, t.template, t.created_at, t.updated_at"
)
_FROM = "tenants t LEFT JOIN servers s ON s.id = t.server_id"
# A tenant in one of these states may be provisioned again (a new run, a clean slate).
_REUSABLE = (TenantStatus.FAILED.value, TenantStatus.DEPROVISIONED.value)


def password_context(tenant_id: str) -> str:
    """AES-GCM associated data: the ciphertext only decrypts for this tenant's row."""
    return f"tenant:{tenant_id}:password"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _row_to_model(row: asyncpg.Record) -> Tenant:
    sets = _json(row["sets"])
    return Tenant(
        tenant_id=row["tenant_id"],
        status=TenantStatus(row["status"]),
        mode=TenantMode(row["mode"]),
        server=row["server_name"],
        server_id=row["server_id"],
        database_id=row["database_id"],
        database=row["database_name"],
        schema_name=row["schema_name"],
        role=row["role_name"],
        sets=[SetRequest.model_validate(s) for s in sets] if sets is not None else None,
        labels=dict(_json(row["labels"])),
        versions=dict(_json(row["versions"])),
        run_id=row["run_id"],
        error=row["error"],
        template=row["template"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class TenantRepository:
    """The ``tenants`` table."""

    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def claim(
        self, spec: TenantCreate, server_id: uuid.UUID, run_id: str
    ) -> tuple[Tenant, bool]:
        """Record a provisioning request. Returns the tenant and whether this call created the
        run: the same request again returns the existing tenant and run; another request for a
        live tenant is a 409; a failed or deprovisioned tenant starts afresh."""
        name = object_name(spec.tenant_id)
        digest = spec.request_hash()
        sets = json.dumps([s.model_dump() for s in spec.sets]) if spec.sets is not None else None
        async with self.pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchrow(
                "SELECT status, request_hash FROM tenants WHERE tenant_id = $1 FOR UPDATE",
                spec.tenant_id,
            )
            if existing is not None and existing["status"] not in _REUSABLE:
                if existing["request_hash"] == digest:
                    return await self.get(spec.tenant_id, conn=conn), False
                raise Conflict(
                    f"tenant {spec.tenant_id!r} exists with another request "
                    f"(status {existing['status']})",
                    details={"tenant_id": spec.tenant_id, "status": existing["status"]},
                )
            await conn.execute(
                "INSERT INTO tenants (tenant_id, status, mode, server_id, role_name, "
                "database_name, schema_name, sets, labels, request_hash, run_id) "
                "VALUES ($1, 'provisioning', $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10) "
                "ON CONFLICT (tenant_id) DO UPDATE SET status = 'provisioning', "
                "mode = EXCLUDED.mode, server_id = EXCLUDED.server_id, "
                "role_name = EXCLUDED.role_name, database_name = EXCLUDED.database_name, "
                "schema_name = EXCLUDED.schema_name, sets = EXCLUDED.sets, "
                "labels = EXCLUDED.labels, request_hash = EXCLUDED.request_hash, "
                "run_id = EXCLUDED.run_id, error = NULL, versions = '{}'::jsonb, "
                "database_id = NULL, template = NULL, password_encrypted = NULL, "
                "password_key_id = NULL, "
                "updated_at = now()",
                spec.tenant_id,
                spec.mode.value,
                server_id,
                name,
                name if spec.mode is TenantMode.DATABASE else spec.shared_database,
                name if spec.mode is TenantMode.SCHEMA else None,
                sets,
                json.dumps(spec.labels),
                digest,
                run_id,
            )
            return await self.get(spec.tenant_id, conn=conn), True

    async def get(self, tenant_id: str, *, conn: Any = None) -> Tenant:
        """One tenant (404 when unknown)."""
        query = f"SELECT {_COLUMNS} FROM {_FROM} WHERE t.tenant_id = $1"  # noqa: S608 - constants
        row = await (conn or self.pool).fetchrow(query, tenant_id)
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
        return _row_to_model(row)

    async def list(
        self, *, status: TenantStatus | None = None, limit: int = 100, cursor: str | None = None
    ) -> TenantPage:
        """Tenants by id, keyset-paginated, optionally of one status."""
        after = decode_cursor(cursor) if cursor else None
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM {_FROM} "  # noqa: S608 - constants
            "WHERE ($1::text IS NULL OR t.status = $1) AND ($2::text IS NULL OR t.tenant_id > $2) "
            "ORDER BY t.tenant_id LIMIT $3",
            status.value if status else None,
            after,
            limit + 1,
        )
        items = [_row_to_model(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].tenant_id) if len(rows) > limit else None
        return TenantPage(items=items, next_cursor=next_cursor)

    async def start_job(
        self, tenant_id: str, status: TenantStatus, run_id: str, *, allowed: tuple[str, ...]
    ) -> tuple[Tenant, bool]:
        """Move a tenant to ``status`` under a new run (deprovisioning); the same job again
        returns the running one; a tenant in another state is a 409."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT status FROM tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id
            )
            if current is None:
                raise NotFound(f"no tenant {tenant_id!r}", details={"tenant_id": tenant_id})
            if current == status.value:
                return await self.get(tenant_id, conn=conn), False
            if current not in allowed:
                raise Conflict(
                    f"tenant {tenant_id!r} is {current}",
                    details={"tenant_id": tenant_id, "status": current},
                )
            await conn.execute(
                "UPDATE tenants SET status = $2, run_id = $3, error = NULL, updated_at = now() "
                "WHERE tenant_id = $1",
                tenant_id,
                status.value,
                run_id,
            )
            return await self.get(tenant_id, conn=conn), True

    async def finish(
        self,
        tenant_id: str,
        status: TenantStatus,
        *,
        run_id: str,
        error: str | None = None,
        versions: dict[str, str | None] | None = None,
    ) -> None:
        """Record how the run ``run_id`` ended (a later run's record is left alone)."""
        await self.pool.execute(
            "UPDATE tenants SET status = $3, error = $4, "
            "versions = coalesce($5::jsonb, versions), password_encrypted = NULL, "
            "password_key_id = NULL, updated_at = now() WHERE tenant_id = $1 AND run_id = $2",
            tenant_id,
            run_id,
            status.value,
            error,
            json.dumps(versions) if versions is not None else None,
        )

    async def set_template(self, tenant_id: str, template: str | None) -> None:
        """Record the template the tenant's database is (to be) copied from; None: empty."""
        await self.pool.execute(
            "UPDATE tenants SET template = $2, updated_at = now() WHERE tenant_id = $1",
            tenant_id,
            template,
        )

    async def set_database_id(self, tenant_id: str, database_id: uuid.UUID | None) -> None:
        """Link (or unlink) the tenant's registered target."""
        await self.pool.execute(
            "UPDATE tenants SET database_id = $2, updated_at = now() WHERE tenant_id = $1",
            tenant_id,
            database_id,
        )

    async def pending_password(self, tenant_id: str, generate: Any) -> str:
        """The password on its way to the role and the target: the one already stored (a retry
        after a crash must not make a second one), else ``generate()`` stored encrypted."""
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchval(
                "SELECT password_encrypted FROM tenants WHERE tenant_id = $1 FOR UPDATE",
                tenant_id,
            )
            if stored is not None:
                return self.cipher.decrypt(stored, context=password_context(tenant_id))
            password = str(generate())
            encrypted = self.cipher.encrypt(password, context=password_context(tenant_id))
            await conn.execute(
                "UPDATE tenants SET password_encrypted = $2, password_key_id = $3 "
                "WHERE tenant_id = $1",
                tenant_id,
                encrypted,
                self.cipher.key_id_of(encrypted),
            )
            return password

    async def clear_pending_password(self, tenant_id: str) -> None:
        """The password reached the target row: no second copy stays here."""
        await self.pool.execute(
            "UPDATE tenants SET password_encrypted = NULL, password_key_id = NULL "
            "WHERE tenant_id = $1",
            tenant_id,
        )

    async def move_password_to_target(
        self, tenant_id: str, database_id: uuid.UUID, password: str
    ) -> None:
        """A rotated password into the tenant's target row, and out of the tenant's row, in
        one transaction."""
        encrypted = self.cipher.encrypt(password, context=target_password_context(database_id))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE databases SET password_encrypted = $2, password_key_id = $3, "
                "updated_at = now() WHERE id = $1",
                database_id,
                encrypted,
                self.cipher.key_id_of(encrypted),
            )
            await conn.execute(
                "UPDATE tenants SET password_encrypted = NULL, password_key_id = NULL "
                "WHERE tenant_id = $1",
                tenant_id,
            )

    async def count_live_on(self, server_id: uuid.UUID) -> int:
        """Tenants on a server that are not deprovisioned or failed."""
        found: int = await self.pool.fetchval(
            "SELECT count(*) FROM tenants WHERE server_id = $1 AND status <> ALL($2::text[])",
            server_id,
            list(_REUSABLE),
        )
        return found
