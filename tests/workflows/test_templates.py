"""The template build on a real Temporal server and PostgreSQL: the first provisioning run of a
set starts the build and takes the slow path, the next copies the template; a failed build is
undone; every history replays (``TENANTFLOW_RECORD_HISTORIES=1`` records them)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowHandle

from common.catalog.templates import TemplateRepository
from models.templates import TemplateStatus, template_run_id
from models.tenants import TenantCreate, TenantJob, TenantStatus
from tests.activities.test_migrations import BASE, migration
from tests.workflows.test_tenants import Saga, _replay, saga
from workflows.tenants import ProvisionTenantWorkflow

__all__ = ["saga"]  # the fixture, shared with the tenant workflow tests

pytestmark = pytest.mark.usefixtures("running_worker")


async def _build_handle(saga: Saga, pool: asyncpg.Pool, set_name: str) -> WorkflowHandle[Any, Any]:
    for _ in range(100):
        key = await pool.fetchval(
            "SELECT key FROM tenant_templates WHERE sets @> $1::jsonb",
            f'[{{"name": "{set_name}"}}]',
        )
        if key is not None:
            return saga.client.get_workflow_handle(template_run_id(key))
        await asyncio.sleep(0.1)
    raise AssertionError(f"no template build for {set_name}")


async def test_the_first_run_starts_the_build_and_the_next_copies_it(
    saga: Saga, catalog_pool: asyncpg.Pool
) -> None:
    job, handle = await saga.start("database", list(BASE))
    assert (await handle.result()).status is TenantStatus.ACTIVE
    await _replay(handle, "provision_tenant_template_build.json")
    tenant = await saga.tenants.get(job.tenant_id)
    assert tenant.template is None
    set_name = (tenant.sets or [])[0].name
    build = await _build_handle(saga, catalog_pool, set_name)
    assert await build.result() == TemplateStatus.READY
    await _replay(build, "build_tenant_template.json")

    # A second tenant of the same set on the same server: a copy.
    # Never the first tenant's id (``w2`` + its tail was, when that id began with w2).
    second = f"w{uuid.uuid4().hex[:10]}"
    spec_job = TenantJob(tenant_id=second, run_id=f"provision-{second}-t")
    await saga.tenants.claim(
        TenantCreate.model_validate(
            {"tenant_id": second, "mode": "database", "sets": [{"name": set_name}]}
        ),
        tenant.server_id,  # type: ignore[arg-type]
        spec_job.run_id,
    )
    copy = await saga.client.start_workflow(
        ProvisionTenantWorkflow.run,
        spec_job,
        id=spec_job.run_id,
        task_queue=saga.settings.temporal.task_queue,
    )
    outcome = await copy.result()
    assert outcome.status is TenantStatus.ACTIVE
    assert outcome.versions == {set_name: "10"}
    assert (await saga.tenants.get(second)).template is not None
    await _replay(copy, "provision_tenant_template.json")


async def test_a_failed_build_is_discarded_and_its_history_replays(
    saga: Saga, catalog_pool: asyncpg.Pool
) -> None:
    broken = [BASE[0], migration("2", "CREATE TABLE customers (id int);")]
    job, handle = await saga.start("database", broken)
    assert (await handle.result()).status is TenantStatus.FAILED
    tenant = await saga.tenants.get(job.tenant_id)
    build = await _build_handle(saga, catalog_pool, (tenant.sets or [])[0].name)
    assert await build.result() == TemplateStatus.FAILED
    await _replay(build, "build_tenant_template_failed.json")
    templates = [
        t
        for t in await TemplateRepository(catalog_pool).list(tenant.server_id)
        if t.run_id == build.id
    ]
    assert [t.status for t in templates] == [TemplateStatus.FAILED]
    assert 'relation "customers" already exists' in (templates[0].error or "")
