"""Choosing and building template databases (activities.templates) where the fast path cannot
be taken, on the real catalog and embedded server: a tenant whose sets name no usable version,
or none at all, is provisioned the slow way and claims no template; a template role someone else
made stops a build before any database is created."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.migrations import MigrationActivities
from activities.templates import TEMPLATE_ROLE_MARKER, TemplateActivities
from activities.tenants import TEMPLATE_ROLE
from cli.stack import EmbeddedPostgres
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.catalog.templates import TemplateRepository
from common.catalog.tenants import TenantRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.templates import TemplateBuild, TemplateChoice, TemplateSet
from models.tenants import TenantCreate, TenantJob
from tests.activities.test_migrations import migration
from tests.conftest import server_spec


class Templates:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, postgres: EmbeddedPostgres) -> None:
        cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        self.pool = pool
        self.postgres = postgres
        self.servers = ServerRepository(pool, cipher)
        self.tenants = TenantRepository(pool, cipher)
        self.sets = MigrationSetRepository(pool)
        databases = DatabaseRepository(pool, cipher)
        self.activities = TemplateActivities(
            TemplateRepository(pool),
            self.tenants,
            self.servers,
            self.sets,
            AssignmentRepository(pool),
            MigrationActivities(databases, self.sets),
        )

    async def server(self) -> uuid.UUID:
        spec = server_spec(self.postgres)
        return (await self.servers.create(spec)).id

    async def choose(self, server_id: uuid.UUID, **request: Any) -> TemplateChoice:
        tenant_id = f"t{uuid.uuid4().hex[:10]}"
        spec = TenantCreate.model_validate({"tenant_id": tenant_id, **request})
        job = TenantJob(tenant_id=tenant_id, run_id=f"provision-{tenant_id}")
        await self.tenants.claim(spec, server_id, job.run_id)
        choice = await ActivityEnvironment().run(self.activities.choose, job)
        assert (await self.tenants.get(tenant_id)).template is None
        return choice


@pytest.fixture
async def templates(
    catalog_pool: asyncpg.Pool, settings: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[Templates]:
    yield Templates(catalog_pool, settings, postgres)


async def test_sets_without_a_usable_version_take_the_slow_path_and_claim_no_template(
    templates: Templates,
) -> None:
    set_name = f"tpl-{uuid.uuid4().hex[:8]}"
    await templates.sets.register(set_name, [migration("1", "CREATE TABLE a (id int);")])
    server_id = await templates.server()
    requests: list[dict[str, Any]] = [
        {"sets": [{"name": set_name, "version": "first"}]},  # no version number
        {"sets": [{"name": set_name, "version": "9"}]},  # not in the set
        {"sets": []},  # nothing to apply
        {"labels": {"tpl": uuid.uuid4().hex}},  # no assignment matches
    ]
    for request in requests:
        assert await templates.choose(server_id, **request) == TemplateChoice(), request
    claimed = await templates.pool.fetchval(
        "SELECT count(*) FROM tenant_templates WHERE server_id = $1", server_id
    )
    assert claimed == 0


async def test_a_template_role_someone_else_made_stops_the_build_before_any_database(
    templates: Templates,
) -> None:
    admin = await asyncpg.connect(templates.postgres.dsn("postgres"))
    existed = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", TEMPLATE_ROLE)
    if existed:
        await admin.execute(f"COMMENT ON ROLE {TEMPLATE_ROLE} IS 'made by hand'")
    else:
        await admin.execute(f"CREATE ROLE {TEMPLATE_ROLE} NOLOGIN")
    build = TemplateBuild(
        key=uuid.uuid4().hex,
        server_id=await templates.server(),
        database_name=f"tpl_{uuid.uuid4().hex[:10]}",
        sets=[TemplateSet(name="any", version="1")],
    )
    try:
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(templates.activities.build, build)
        assert (raised.value.type, raised.value.non_retryable) == ("ForeignObject", True)
        assert "was not made by tenantflow" in str(raised.value)
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", build.database_name
        )
    finally:
        if existed:
            await admin.execute(f"COMMENT ON ROLE {TEMPLATE_ROLE} IS $${TEMPLATE_ROLE_MARKER}$$")
        else:
            await admin.execute(f"DROP ROLE {TEMPLATE_ROLE}")
        await admin.close()
