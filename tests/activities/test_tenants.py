"""Provisioning activities meeting objects tenantflow did not make (activities.tenants), on the
real embedded server: a role, a database or a schema of the tenant's name that someone else owns
is refused (non-retryable ForeignObject) and left exactly as it was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.tenants import TenantActivities
from cli.stack import EmbeddedPostgres
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.servers import ServerRepository
from common.catalog.tenants import TenantRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.tenants import Tenant, TenantCreate, TenantJob
from tests.conftest import server_spec


class Provisioner:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, postgres: EmbeddedPostgres) -> None:
        cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        self.postgres = postgres
        self.servers = ServerRepository(pool, cipher)
        self.tenants = TenantRepository(pool, cipher)
        self.activities = TenantActivities(
            self.tenants, self.servers, DatabaseRepository(pool, cipher), AssignmentRepository(pool)
        )
        self.made: list[str] = []

    async def claim(self, mode: str = "database") -> tuple[Tenant, TenantJob]:
        server = await self.servers.create(server_spec(self.postgres))
        tenant_id = f"f{uuid.uuid4().hex[:10]}"
        spec = TenantCreate.model_validate(
            {"tenant_id": tenant_id, "mode": mode, "shared_database": f"sh_{tenant_id}"}
        )
        job = TenantJob(tenant_id=tenant_id, run_id=f"provision-{tenant_id}")
        tenant, _ = await self.tenants.claim(spec, server.id, job.run_id)
        return tenant, job

    async def admin(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.postgres.dsn(database))


@pytest.fixture
async def provisioner(
    catalog_pool: asyncpg.Pool, settings: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[Provisioner]:
    made = Provisioner(catalog_pool, settings, postgres)
    yield made
    admin = await made.admin()
    try:
        for statement in made.made:
            await admin.execute(statement)
    finally:
        await admin.close()


async def _refused(
    activity: Callable[[TenantJob], Awaitable[None]], job: TenantJob, message: str
) -> None:
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activity, job)
    assert raised.value.type == "ForeignObject"
    assert raised.value.non_retryable
    assert message in str(raised.value)


async def test_a_role_of_the_tenants_name_made_by_someone_else_is_left_alone(
    provisioner: Provisioner,
) -> None:
    tenant, job = await provisioner.claim()
    admin = await provisioner.admin()
    try:
        await admin.execute(f'CREATE ROLE "{tenant.role}" NOLOGIN')
        provisioner.made.append(f'DROP ROLE IF EXISTS "{tenant.role}"')
        await _refused(provisioner.activities.create_role, job, "was not made by tenantflow")
        row = await admin.fetchrow(
            "SELECT rolcanlogin, rolpassword IS NULL AS no_password, "
            "shobj_description(oid, 'pg_authid') AS note FROM pg_authid WHERE rolname = $1",
            tenant.role,
        )
        assert row is not None
        assert (row["rolcanlogin"], row["no_password"], row["note"]) == (False, True, None)
    finally:
        await admin.close()


async def test_a_database_of_the_tenants_name_with_another_owner_is_left_alone(
    provisioner: Provisioner,
) -> None:
    tenant, job = await provisioner.claim()
    admin = await provisioner.admin()
    try:
        await admin.execute(f'CREATE DATABASE "{tenant.database}"')  # owned by the admin
        provisioner.made.append(f'DROP DATABASE IF EXISTS "{tenant.database}" WITH (FORCE)')
        await _refused(provisioner.activities.create_storage, job, "exists with another owner")
        owner = await admin.fetchval(
            "SELECT datdba::regrole::text FROM pg_database WHERE datname = $1", tenant.database
        )
        assert owner == provisioner.postgres.user
    finally:
        await admin.close()


async def test_a_schema_of_the_tenants_name_with_another_owner_is_left_alone(
    provisioner: Provisioner,
) -> None:
    tenant, job = await provisioner.claim("schema")
    assert tenant.schema_name is not None
    run = ActivityEnvironment().run
    await run(provisioner.activities.create_role, job)
    provisioner.made.append(f'DROP ROLE IF EXISTS "{tenant.role}"')
    admin = await provisioner.admin()
    try:
        await admin.execute(f'CREATE DATABASE "{tenant.database}"')
        provisioner.made.insert(0, f'DROP DATABASE IF EXISTS "{tenant.database}" WITH (FORCE)')
        shared = await provisioner.admin(tenant.database)
        try:
            await shared.execute(f'CREATE SCHEMA "{tenant.schema_name}"')  # the admin's
            await _refused(
                provisioner.activities.create_storage,
                job,
                f"schema {tenant.schema_name} exists with another owner",
            )
            owner = await shared.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                tenant.schema_name,
            )
            assert owner == provisioner.postgres.user
        finally:
            await shared.close()
        # The shared database let the tenant's role in before the schema was refused.
        assert await admin.fetchval(
            "SELECT has_database_privilege($1, $2, 'CONNECT')", tenant.role, tenant.database
        )
    finally:
        await admin.close()


async def test_compensation_leaves_a_database_and_a_role_someone_else_made(
    provisioner: Provisioner,
) -> None:
    tenant, job = await provisioner.claim()
    admin = await provisioner.admin()
    try:
        await admin.execute(f'CREATE ROLE "{tenant.role}" NOLOGIN')
        provisioner.made.append(f'DROP ROLE IF EXISTS "{tenant.role}"')
        await admin.execute(f'CREATE DATABASE "{tenant.database}"')
        provisioner.made.insert(0, f'DROP DATABASE IF EXISTS "{tenant.database}" WITH (FORCE)')
        run = ActivityEnvironment().run
        await run(provisioner.activities.drop_storage, job)
        await run(provisioner.activities.drop_role, job)
        assert await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", tenant.database
        )
        assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", tenant.role)
    finally:
        await admin.close()


async def test_compensating_a_schema_tenant_whose_shared_database_never_came_is_a_no_op(
    provisioner: Provisioner,
) -> None:
    tenant, job = await provisioner.claim("schema")
    await ActivityEnvironment().run(provisioner.activities.drop_storage, job)
    admin = await provisioner.admin()
    try:
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", tenant.database
        )
    finally:
        await admin.close()


async def test_a_tenant_still_provisioning_gets_no_new_password(provisioner: Provisioner) -> None:
    _, job = await provisioner.claim()
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provisioner.activities.rotate_password, job)
    assert (raised.value.type, raised.value.non_retryable) == ("Conflict", True)
    assert "is provisioning" in str(raised.value)


async def test_a_target_is_not_registered_without_the_roles_generated_password(
    provisioner: Provisioner, catalog_pool: asyncpg.Pool
) -> None:
    tenant, job = await provisioner.claim()
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provisioner.activities.register_target, job)
    assert (raised.value.type, raised.value.non_retryable) == ("NotFound", True)
    assert "role step did not run" in str(raised.value)
    assert (await provisioner.tenants.get(tenant.tenant_id)).database_id is None
    assert not await catalog_pool.fetchval(
        "SELECT count(*) FROM databases WHERE tenant_id = $1", tenant.tenant_id
    )
