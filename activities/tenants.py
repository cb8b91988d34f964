"""Tenant provisioning steps, each idempotent (safe to run again after a crash) and each with
its compensation. Activities exchange tenant ids, never secrets: a generated password goes from
the catalog (encrypted) to the server and the tenant's target row inside these activities.

Compensations drop only what is provably tenantflow's: the role carries a comment naming its
tenant, and a database or schema is dropped only when that role owns it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from common import network_policy
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.servers import ServerRepository
from common.catalog.tenants import TenantRepository
from common.errors import Conflict, NotFound
from common.sql import quote_ident, quote_literal
from models.databases import DatabaseCreate
from models.tenants import (
    SetPlan,
    Tenant,
    TenantJob,
    TenantMode,
    TenantOutcome,
    TenantStatus,
    TenantTarget,
)

log = logging.getLogger(__name__)

SCRAM_ITERATIONS = 4096
# The NOLOGIN role owning a template database's objects until a copy hands them to a tenant.
TEMPLATE_ROLE = "tenantflow_template"


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 7677), computed
    here so the plain password is never sent to the server, nor in any statement it logs."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def role_marker(tenant_id: str) -> str:
    """The comment on a tenant's role: the proof that tenantflow made it."""
    return f"tenantflow tenant {tenant_id}"


def target_name(tenant_id: str) -> str:
    """The name of a tenant's migration target in the catalog."""
    return f"tenant-{tenant_id}"


async def tenant_plans(tenant: Tenant, assignments: AssignmentRepository) -> list[SetPlan]:
    """The sets to bring a tenant's target to: the request's, else the assignments'."""
    if tenant.sets is not None:
        return [
            SetPlan(set_name=s.name, target_version=None if s.version == "latest" else s.version)
            for s in tenant.sets
        ]
    return [
        SetPlan(set_name=a.set_name, target_version=a.version)
        for a in await assignments.for_labels(tenant.labels)
    ]


def _not_ours(message: str) -> ApplicationError:
    # Retrying cannot help; compensation must leave the foreign object alone.
    return ApplicationError(message, type="ForeignObject", non_retryable=True)


class TenantActivities:
    """Holds the catalog repositories; connects to servers as their admin."""

    def __init__(
        self,
        tenants: TenantRepository,
        servers: ServerRepository,
        databases: DatabaseRepository,
        assignments: AssignmentRepository,
    ) -> None:
        self.tenants = tenants
        self.servers = servers
        self.databases = databases
        self.assignments = assignments

    @contextlib.asynccontextmanager
    async def _admin(self, tenant: Tenant, database: str | None = None) -> AsyncIterator[Any]:
        if tenant.server_id is None:
            raise ApplicationError(
                f"tenant {tenant.tenant_id} has no server", type="NotFound", non_retryable=True
            )
        params = await self.servers.admin_connection_params(tenant.server_id, database)
        conn = await network_policy.connect(params, timeout=30)
        try:
            yield conn
        finally:
            await conn.close()

    @activity.defn(name="create_tenant_role")
    async def create_role(self, job: TenantJob) -> None:
        """The tenant's login role with a generated password (kept encrypted in the catalog
        until it reaches the target row); a retry sets the same password again, and so does a
        run again once the target is registered (its row holds the password then)."""
        tenant = await self.tenants.get(job.tenant_id)
        password = None
        if tenant.database_id is not None:
            # The pending password moved to the target row and was cleared: a new one here
            # would leave the target unable to log in (InvalidPasswordError at migrate).
            with contextlib.suppress(NotFound):
                params = await self.databases.connection_params(tenant.database_id)
                password = str(params["password"])
        if password is None:
            password = await self.tenants.pending_password(
                job.tenant_id, lambda: secrets.token_urlsafe(32)
            )
        verifier = quote_literal(scram_sha256_verifier(password))
        role = quote_ident(tenant.role)
        async with self._admin(tenant) as conn:
            owner = await self._role_maker(conn, tenant)
            if owner == "someone else":
                raise _not_ours(f"role {tenant.role} exists and was not made by tenantflow")
            if owner == "tenantflow":
                await conn.execute(f"ALTER ROLE {role} WITH LOGIN PASSWORD {verifier}")
                return
            async with conn.transaction():  # the role and its marker, or neither
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD {verifier}")
                await conn.execute(
                    f"COMMENT ON ROLE {role} IS {quote_literal(role_marker(job.tenant_id))}"
                )

    @activity.defn(name="create_tenant_storage")
    async def create_storage(self, job: TenantJob) -> None:
        """The tenant's database (owned by its role, CONNECT revoked from PUBLIC) or its schema
        in the shared database (owned by its role; other tenants' roles get no access)."""
        tenant = await self.tenants.get(job.tenant_id)
        async with self._admin(tenant) as conn:
            owner = await conn.fetchval(
                "SELECT datdba::regrole::text FROM pg_database WHERE datname = $1",
                tenant.database,
            )
            database = quote_ident(tenant.database)
            if tenant.mode is TenantMode.DATABASE:
                if owner is not None and owner.strip('"') != tenant.role:
                    raise _not_ours(f"database {tenant.database} exists with another owner")
                if owner is None:
                    await self._create_database(conn, tenant)
                await self._grant(
                    conn, f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"
                )
                if tenant.template is not None:
                    await self._take_over_copy(tenant)
                return
            if owner is None:
                await self._create_shared_database(conn, tenant.database)
            await self._grant(conn, f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC")
            await self._grant(
                conn, f"GRANT CONNECT ON DATABASE {database} TO {quote_ident(tenant.role)}"
            )
        assert tenant.schema_name is not None
        async with self._admin(tenant, tenant.database) as shared:
            schema_owner = await shared.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                tenant.schema_name,
            )
            if schema_owner is not None and schema_owner.strip('"') != tenant.role:
                raise _not_ours(f"schema {tenant.schema_name} exists with another owner")
            await self._grant(shared, "REVOKE ALL ON SCHEMA public FROM PUBLIC")
            await shared.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quote_ident(tenant.schema_name)} "
                f"AUTHORIZATION {quote_ident(tenant.role)}"
            )

    async def _create_database(self, conn: asyncpg.Connection, tenant: Tenant) -> None:
        """Empty, or a copy of the tenant's template (the fast path); a template dropped since
        it was chosen (a newer one replaced it) means empty, and the migrate step does it all."""
        create = f"CREATE DATABASE {quote_ident(tenant.database)} OWNER {quote_ident(tenant.role)}"
        if tenant.template is None:
            await conn.execute(create)
            return
        try:
            await conn.execute(f"{create} TEMPLATE {quote_ident(tenant.template)}")
        except asyncpg.InvalidCatalogNameError:
            log.info(
                "template %s is gone: tenant %s takes the slow path",
                tenant.template,
                tenant.tenant_id,
            )
            await self.tenants.set_template(tenant.tenant_id, None)
            tenant.template = None
            await conn.execute(create)

    async def _take_over_copy(self, tenant: Tenant) -> None:
        """A copied database's objects belong to the template role: hand them to the tenant's
        role, and take back the template role's rights (safe to repeat)."""
        async with self._admin(tenant, tenant.database) as copy:
            await copy.execute(
                f"REASSIGN OWNED BY {TEMPLATE_ROLE} TO {quote_ident(tenant.role)}; "
                f"REVOKE ALL ON SCHEMA public FROM {TEMPLATE_ROLE}"
            )

    @staticmethod
    async def _create_shared_database(conn: asyncpg.Connection, name: str) -> None:
        # Tenants provisioned at once race to create it: one at a time, checked under the lock.
        key = f"tenantflow:shared-database:{name}"
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if exists is None:
                await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    @staticmethod
    async def _grant(conn: asyncpg.Connection, statement: str) -> None:
        # Concurrent GRANTs on one object fail with "tuple concurrently updated": one at a time.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenantflow:grants'))")
            await conn.execute(statement)

    @activity.defn(name="register_tenant_target")
    async def register_target(self, job: TenantJob) -> TenantTarget:
        """The tenant's migration target, its password encrypted (then removed from the
        tenant's row), and the sets to bring it to: the request's, else the assignments'."""
        tenant = await self.tenants.get(job.tenant_id)
        database_id = tenant.database_id
        if database_id is None:
            database_id = await self._create_target(tenant)
            await self.tenants.set_database_id(job.tenant_id, database_id)
        await self.tenants.clear_pending_password(job.tenant_id)
        return TenantTarget(
            database_id=database_id, sets=await tenant_plans(tenant, self.assignments)
        )

    async def _create_target(self, tenant: Tenant) -> uuid.UUID:
        assert tenant.server_id is not None
        server = await self.servers.get(tenant.server_id)
        password = await self.tenants.pending_password(tenant.tenant_id, _no_new_password)
        spec = DatabaseCreate.model_validate(
            {
                "name": target_name(tenant.tenant_id),
                "tenant_id": tenant.tenant_id,
                "host": server.host,
                "port": server.port,
                "database": tenant.database,
                "schema_name": tenant.schema_name,
                "user": tenant.role,
                "password": password,
                "labels": tenant.labels,
                "sslmode": server.sslmode,
            }
        )
        try:
            return (await self.databases.create(spec, server_id=server.id)).id
        except Conflict:
            # Created before a crash, not yet linked: the row of the same name and tenant.
            page = await self.databases.list(tenant_id=tenant.tenant_id, limit=100)
            for row in page.items:
                if row.name == spec.name:
                    return row.id
            raise _not_ours(f"a target named {spec.name} exists for another tenant") from None

    @activity.defn(name="activate_tenant")
    async def activate(self, outcome: TenantOutcome) -> None:
        """Mark the tenant active with the versions it reached."""
        tenant = await self.tenants.get(outcome.tenant_id)
        await self.tenants.finish(
            outcome.tenant_id,
            TenantStatus.ACTIVE,
            run_id=tenant.run_id,
            versions=outcome.versions,
        )

    @activity.defn(name="remove_tenant_target")
    async def remove_target(self, job: TenantJob) -> None:
        """Compensation: the tenant's target row (by link, else by name and tenant)."""
        tenant = await self.tenants.get(job.tenant_id)
        ids = {tenant.database_id} if tenant.database_id else set()
        page = await self.databases.list(tenant_id=job.tenant_id, limit=100)
        ids |= {row.id for row in page.items if row.name == target_name(job.tenant_id)}
        await self.tenants.set_database_id(job.tenant_id, None)
        for database_id in ids:
            with contextlib.suppress(NotFound):
                await self.databases.delete(database_id)

    @activity.defn(name="drop_tenant_storage")
    async def drop_storage(self, job: TenantJob) -> None:
        """Compensation: the tenant's database, or its schema and its CONNECT grant on the
        shared database; only when the tenant's role owns them."""
        tenant = await self.tenants.get(job.tenant_id)
        async with self._admin(tenant) as conn:
            owner = await conn.fetchval(
                "SELECT datdba::regrole::text FROM pg_database WHERE datname = $1",
                tenant.database,
            )
            role_exists = await conn.fetchval(
                "SELECT true FROM pg_roles WHERE rolname = $1", tenant.role
            )
            database = quote_ident(tenant.database)
            if tenant.mode is TenantMode.DATABASE:
                if owner is not None and owner.strip('"') == tenant.role:
                    await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                return
            if owner is None:
                return
            if role_exists:
                await self._grant(
                    conn, f"REVOKE ALL ON DATABASE {database} FROM {quote_ident(tenant.role)}"
                )
        assert tenant.schema_name is not None
        async with self._admin(tenant, tenant.database) as shared:
            schema_owner = await shared.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                tenant.schema_name,
            )
            if schema_owner is not None and schema_owner.strip('"') == tenant.role:
                await shared.execute(f"DROP SCHEMA {quote_ident(tenant.schema_name)} CASCADE")
            if await self._role_maker(shared, tenant) == "tenantflow":
                # Whatever else its migrations left in the shared database (grants, objects
                # outside its schema): otherwise DROP ROLE refuses, and retries forever.
                await shared.execute(f"DROP OWNED BY {quote_ident(tenant.role)}")

    @staticmethod
    async def _role_maker(
        conn: asyncpg.Connection, tenant: Tenant
    ) -> Literal["tenantflow", "someone else"] | None:
        """Who made the tenant's role: ``tenantflow`` (it carries the tenant's marker),
        ``someone else``, or None when there is no such role."""
        found = await conn.fetchrow(
            "SELECT shobj_description(oid, 'pg_authid') AS note FROM pg_roles WHERE rolname = $1",
            tenant.role,
        )
        if found is None:
            return None
        return "tenantflow" if found["note"] == role_marker(tenant.tenant_id) else "someone else"

    @activity.defn(name="drop_tenant_role")
    async def drop_role(self, job: TenantJob) -> None:
        """Compensation: the tenant's role, if tenantflow made it."""
        tenant = await self.tenants.get(job.tenant_id)
        async with self._admin(tenant) as conn:
            if await self._role_maker(conn, tenant) != "tenantflow":
                return
            # DROP ROLE leaves open sessions running: the application must stop here too.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                tenant.role,
            )
            await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(tenant.role)}")

    @activity.defn(name="finish_tenant_job")
    async def finish(self, outcome: TenantOutcome) -> None:
        """Record how the tenant's current job ended: failed (with the cause) or
        deprovisioned."""
        tenant = await self.tenants.get(outcome.tenant_id)
        await self.tenants.finish(
            outcome.tenant_id, outcome.status, run_id=tenant.run_id, error=outcome.error
        )

    @activity.defn(name="rotate_tenant_password")
    async def rotate_password(self, job: TenantJob) -> None:
        """A new password: stored encrypted first (so a retry uses the same one), set on the
        role, then re-encrypted into the target row."""
        tenant = await self.tenants.get(job.tenant_id)
        if tenant.status is not TenantStatus.ACTIVE or tenant.database_id is None:
            raise ApplicationError(
                f"tenant {job.tenant_id} is {tenant.status.value}",
                type="Conflict",
                non_retryable=True,
            )
        password = await self.tenants.pending_password(
            job.tenant_id, lambda: secrets.token_urlsafe(32)
        )
        async with self._admin(tenant) as conn:
            await conn.execute(
                f"ALTER ROLE {quote_ident(tenant.role)} WITH PASSWORD "
                f"{quote_literal(scram_sha256_verifier(password))}"
            )
        await self.tenants.move_password_to_target(job.tenant_id, tenant.database_id, password)


def _no_new_password() -> str:
    raise ApplicationError(
        "the tenant's generated password is missing (its role step did not run)",
        type="NotFound",
        non_retryable=True,
    )
