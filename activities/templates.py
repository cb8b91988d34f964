"""The provisioning fast path: a template database per server and set versions, from which a
tenant's database is copied with ``CREATE DATABASE ... TEMPLATE`` instead of created empty and
migrated.

A template is built by ``BuildTenantTemplateWorkflow`` (started by the first provisioning run
that finds none; that run and those racing it take the slow path meanwhile): a database owned by
the server's admin, migrated by the engine as it migrates a tenant, with every object owned by
the NOLOGIN role ``tenantflow_template``. Once built it accepts no connections (a connection
would make copies fail) and is marked ready. A copy then hands the objects to the tenant's role
with ``REASSIGN OWNED``, and the provisioning run's migrate step verifies the copied ledger
against the set (checksums, nothing pending) before the tenant is activated.

The template's key hashes the server and every set's versions and checksums: a new version, a
withdrawn one or a changed assignment gives a new key, hence a new template; the one it
replaces is dropped once the new one is ready.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.migrations import MigrationActivities, heartbeating
from activities.tenants import TEMPLATE_ROLE, tenant_plans
from common import network_policy
from common.catalog.assignments import AssignmentRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.catalog.templates import TemplateRepository
from common.catalog.tenants import TenantRepository
from common.sql import quote_ident, quote_literal
from models.migrations import Migration, TargetRunInput, normalise_version, version_key
from models.templates import (
    Template,
    TemplateBuild,
    TemplateChoice,
    TemplateDiscard,
    TemplateSet,
    TemplateStatus,
    template_database,
    template_run_id,
)
from models.tenants import TenantJob, TenantMode

TEMPLATE_ROLE_MARKER = "tenantflow: owns the objects of template databases"


def template_key(
    server_id: uuid.UUID, sets: dict[str, list[Migration]], versions: dict[str, str]
) -> str:
    """Hash of the server and, per set, every version up to the resolved one with its checksum
    and withdrawal: anything that would change what a tenant gets changes the key."""
    chain = {
        name: [
            [m.version, m.checksum, m.withdrawn]
            for m in sorted(migrations, key=lambda m: version_key(m.version))
            if version_key(m.version) <= version_key(versions[name])
        ]
        for name, migrations in sorted(sets.items())
    }
    canonical = json.dumps({"server": str(server_id), "sets": chain}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TemplateActivities:
    """Chooses, builds and retires template databases."""

    def __init__(
        self,
        templates: TemplateRepository,
        tenants: TenantRepository,
        servers: ServerRepository,
        sets: MigrationSetRepository,
        assignments: AssignmentRepository,
        migrations: MigrationActivities,
        *,
        enabled: bool = True,
    ) -> None:
        self.templates = templates
        self.tenants = tenants
        self.servers = servers
        self.sets = sets
        self.assignments = assignments
        self.migrations = migrations
        self.enabled = enabled

    @activity.defn(name="choose_tenant_template")
    async def choose(self, job: TenantJob) -> TemplateChoice:
        """The template to copy the tenant's database from (recorded on the tenant), or none:
        schema mode, no sets, fast path off, or no ready template (the first run to find none
        is asked to start its build)."""
        tenant = await self.tenants.get(job.tenant_id)
        await self.tenants.set_template(job.tenant_id, None)
        if not self.enabled or tenant.mode is not TenantMode.DATABASE or tenant.server_id is None:
            return TemplateChoice()
        plans = await tenant_plans(tenant, self.assignments)
        if not plans:
            return TemplateChoice()
        sets: dict[str, list[Migration]] = {}
        versions: dict[str, str] = {}
        for plan in plans:
            migrations = await self.sets.migrations(plan.set_name)
            known = {m.version for m in migrations}
            wanted = plan.target_version
            if wanted is not None:
                try:
                    wanted = normalise_version(wanted)
                except ValueError:
                    return TemplateChoice()  # the migrate step names the error
            live = [m.version for m in migrations if not m.withdrawn]
            if not live or (wanted is not None and wanted not in known):
                return TemplateChoice()
            sets[plan.set_name] = migrations
            versions[plan.set_name] = wanted or max(live, key=version_key)
        key = template_key(tenant.server_id, sets, versions)
        template, claimed = await self.templates.claim(
            key,
            tenant.server_id,
            template_database(key),
            [TemplateSet(name=name, version=version) for name, version in versions.items()],
            template_run_id(key),
        )
        if template.status is TemplateStatus.READY and not await self._exists(template):
            # Dropped behind tenantflow's back: build it again (this tenant goes the slow way).
            await self.templates.mark(key, TemplateStatus.RETIRED, "its database is gone")
            template, claimed = await self.templates.claim(
                key, tenant.server_id, template.database_name, template.sets, template.run_id
            )
        if template.status is TemplateStatus.READY:
            await self.tenants.set_template(job.tenant_id, template.database_name)
            return TemplateChoice(template=template.database_name)
        if claimed:
            return TemplateChoice(
                build=TemplateBuild(
                    key=key,
                    server_id=tenant.server_id,
                    database_name=template.database_name,
                    sets=template.sets,
                )
            )
        return TemplateChoice()

    async def _admin(self, server_id: uuid.UUID, database: str | None = None) -> asyncpg.Connection:
        params = await self.servers.admin_connection_params(server_id, database)
        return await network_policy.connect(params, timeout=30)

    async def _exists(self, template: Template) -> bool:
        conn = await self._admin(template.server_id)
        try:
            found = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", template.database_name
            )
        finally:
            await conn.close()
        return found is not None

    @activity.defn(name="build_tenant_template")
    async def build(self, build: TemplateBuild) -> None:
        """Make the template from scratch (a retry starts over: nothing copies it before it is
        ready), migrate it set by set as its role, verify, close it to connections."""
        name = quote_ident(build.database_name)
        conn = await self._admin(build.server_id)
        try:
            await _ensure_template_role(conn)
            await _drop(conn, build.database_name)
            await conn.execute(f"CREATE DATABASE {name}")
            await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC")
            await conn.execute(f"GRANT CREATE ON DATABASE {name} TO {TEMPLATE_ROLE}")
            params = await self.servers.admin_connection_params(
                build.server_id, build.database_name
            )
            async with heartbeating():
                inner = await network_policy.connect(params, timeout=30)
                try:
                    await inner.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {TEMPLATE_ROLE}")
                finally:
                    await inner.close()
                for wanted in build.sets:
                    await self._migrate(build, wanted, params)
            await conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        finally:
            await conn.close()
        await self.templates.mark(build.key, TemplateStatus.READY)

    async def _migrate(
        self, build: TemplateBuild, wanted: TemplateSet, params: dict[str, object]
    ) -> None:
        result = await self.migrations.run_one(
            TargetRunInput(
                run_id=template_run_id(build.key),
                database_id=uuid.uuid5(uuid.NAMESPACE_URL, f"tenantflow-template:{build.key}"),
                set_name=wanted.name,
                target_version=wanted.version,
            ),
            await self.sets.migrations(wanted.name),
            {**params, "schema": "public"},
            role=TEMPLATE_ROLE,
        )
        if result.failure is not None:
            raise ApplicationError(
                f"set {wanted.name}, version {result.failure.version}: {result.failure.message}",
                type="MigrationFailed",
                non_retryable=True,
            )
        if result.to_version != wanted.version:
            raise ApplicationError(
                f"set {wanted.name} reached {result.to_version}, not {wanted.version}",
                type="MigrationFailed",
                non_retryable=True,
            )

    @activity.defn(name="retire_tenant_templates")
    async def retire(self, build: TemplateBuild) -> list[str]:
        """Drop the templates this one replaces (same server and sets, other versions); a copy
        in progress finishes first (DROP DATABASE waits for it)."""
        dropped = []
        for old in await self.templates.superseded(build.key):
            conn = await self._admin(old.server_id)
            try:
                await _drop(conn, old.database_name)
            finally:
                await conn.close()
            await self.templates.mark(old.key, TemplateStatus.RETIRED)
            dropped.append(old.database_name)
        return dropped

    @activity.defn(name="discard_tenant_template")
    async def discard(self, failed: TemplateDiscard) -> None:
        """Compensation of a failed build: the half-built database goes, the row says failed
        with its cause (tried again by a later provisioning run, after a pause)."""
        conn = await self._admin(failed.build.server_id)
        try:
            await _drop(conn, failed.build.database_name)
        finally:
            await conn.close()
        await self.templates.mark(failed.build.key, TemplateStatus.FAILED, failed.error[:1000])


async def _ensure_template_role(conn: asyncpg.Connection) -> None:
    note = await conn.fetchrow(
        "SELECT shobj_description(oid, 'pg_authid') AS note FROM pg_roles WHERE rolname = $1",
        TEMPLATE_ROLE,
    )
    if note is None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenantflow:template-role'))")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", TEMPLATE_ROLE)
            if exists is None:
                await conn.execute(f"CREATE ROLE {TEMPLATE_ROLE} NOLOGIN")
                await conn.execute(
                    f"COMMENT ON ROLE {TEMPLATE_ROLE} IS {quote_literal(TEMPLATE_ROLE_MARKER)}"
                )
    elif note["note"] != TEMPLATE_ROLE_MARKER:
        raise ApplicationError(
            f"role {TEMPLATE_ROLE} exists and was not made by tenantflow",
            type="ForeignObject",
            non_retryable=True,
        )
    if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        # A non-superuser admin acts as the template role through membership.
        await conn.execute(f"GRANT {TEMPLATE_ROLE} TO CURRENT_USER")


async def _drop(conn: asyncpg.Connection, database: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
    if exists is not None:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
