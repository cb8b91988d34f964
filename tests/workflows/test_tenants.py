"""Tenant workflows on a real Temporal server and PostgreSQL: a cancel mid-saga undoes every
step, a worker SIGKILLed mid-saga is replaced and the tenant ends active with each version
once, and the recorded histories replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.migrations import LEDGER_TABLE
from cli.stack import EmbeddedPostgres
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.catalog.tenants import TenantRepository
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.migrations import Migration
from models.tenants import TenantCreate, TenantJob, TenantOutcome, TenantStatus
from models.webhooks import WebhookEventType
from tests.activities.test_migrations import BASE, migration
from tests.conftest import server_spec
from tests.workflows.test_migrations import _start_worker
from tests.workflows.test_webhooks import (
    Receiver,
    _endpoint,
    _received,
    receivers,
    repository,
    webhook_settings,
)
from worker.registry import WORKFLOWS
from workflows.tenants import (
    DeprovisionTenantWorkflow,
    ProvisionTenantWorkflow,
    RotateTenantPasswordWorkflow,
)

__all__ = ["receivers", "repository", "webhook_settings"]  # fixtures of the webhook tests

HISTORIES = Path(__file__).parent / "histories"
SLOW = [
    BASE[0],
    migration("2", "CREATE TABLE slow_one (id int);\nSELECT pg_sleep(3);", "DROP TABLE slow_one;"),
    migration("3", "CREATE TABLE after_slow (id int);", "DROP TABLE after_slow;"),
]


class Saga:
    """A server, a set and the catalog repositories, to run tenant workflows directly."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, postgres: EmbeddedPostgres, client: Client
    ) -> None:
        cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        self.tenants = TenantRepository(pool, cipher)
        self.servers = ServerRepository(pool, cipher)
        self.sets = MigrationSetRepository(pool)
        self.postgres = postgres
        self.client = client
        self.settings = settings

    async def server(self) -> uuid.UUID:
        spec = server_spec(self.postgres)
        return (await self.servers.create(spec)).id

    async def start(
        self, mode: str, migrations: list[Migration], task_queue: str | None = None
    ) -> tuple[TenantJob, WorkflowHandle[Any, TenantOutcome]]:
        set_name = f"s-{uuid.uuid4().hex[:8]}"
        await self.sets.register(set_name, migrations)
        tenant_id = f"w{uuid.uuid4().hex[:10]}"
        spec = TenantCreate.model_validate(
            {"tenant_id": tenant_id, "mode": mode, "sets": [{"name": set_name}]}
        )
        job = TenantJob(tenant_id=tenant_id, run_id=f"provision-{tenant_id}-t")
        await self.tenants.claim(spec, await self.server(), job.run_id)
        handle = await self.client.start_workflow(
            ProvisionTenantWorkflow.run,
            job,
            id=job.run_id,
            task_queue=task_queue or self.settings.temporal.task_queue,
        )
        return job, handle

    async def leftovers(self, tenant_id: str) -> list[str]:
        name = f"tenant_{tenant_id}"
        admin = await asyncpg.connect(self.postgres.dsn("postgres"))
        try:
            found = []
            if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                found.append("role")
            if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                found.append("database")
        finally:
            await admin.close()
        if (await self.tenants.get(tenant_id)).database_id is not None:
            found.append("target")
        return found


@pytest.fixture
def saga(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    postgres: EmbeddedPostgres,
    temporal_client: Client,
) -> Saga:
    return Saga(catalog_pool, settings, postgres, temporal_client)


async def _replay(handle: WorkflowHandle[Any, Any], name: str) -> None:
    history = await handle.fetch_history()
    await Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / name).write_text(history.to_json())


async def _until_step(handle: WorkflowHandle[Any, TenantOutcome], prefix: str) -> None:
    for _ in range(300):
        if (await handle.query(ProvisionTenantWorkflow.step)).startswith(prefix):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the run never reached the step {prefix!r}")


@pytest.mark.usefixtures("running_worker")
async def test_provision_rotate_deprovision_and_their_histories_replay(saga: Saga) -> None:
    job, handle = await saga.start("database", list(BASE))
    outcome = await handle.result()
    assert outcome.status is TenantStatus.ACTIVE
    await _replay(handle, "provision_tenant.json")
    rotate = await saga.client.start_workflow(
        RotateTenantPasswordWorkflow.run,
        TenantJob(tenant_id=job.tenant_id, run_id=f"rotate-{job.tenant_id}"),
        id=f"rotate-{job.tenant_id}",
        task_queue=saga.settings.temporal.task_queue,
    )
    await rotate.result()
    await _replay(rotate, "rotate_tenant_password.json")
    run_id = f"deprovision-{job.tenant_id}"
    await saga.tenants.start_job(
        job.tenant_id, TenantStatus.DEPROVISIONING, run_id, allowed=("active",)
    )
    gone = await saga.client.start_workflow(
        DeprovisionTenantWorkflow.run,
        TenantJob(tenant_id=job.tenant_id, run_id=run_id),
        id=run_id,
        task_queue=saga.settings.temporal.task_queue,
    )
    assert (await gone.result()).status is TenantStatus.DEPROVISIONED
    await _replay(gone, "deprovision_tenant.json")
    assert await saga.leftovers(job.tenant_id) == []
    assert (await saga.tenants.get(job.tenant_id)).status is TenantStatus.DEPROVISIONED


@pytest.mark.usefixtures("running_worker")
@pytest.mark.parametrize("mode", ["database", "schema"])
async def test_a_cancel_mid_saga_undoes_every_step(saga: Saga, mode: str) -> None:
    job, handle = await saga.start(mode, SLOW)
    await _until_step(handle, "migrate")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    tenant = await saga.tenants.get(job.tenant_id)
    assert tenant.status is TenantStatus.FAILED
    assert tenant.error == "cancelled"
    assert await saga.leftovers(job.tenant_id) == []
    if mode == "schema":
        conn = await asyncpg.connect(saga.postgres.dsn(tenant.database))
        try:
            schema = await conn.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1", tenant.schema_name
            )
        finally:
            await conn.close()
        assert schema is None
    else:
        await _replay(handle, "provision_tenant_cancelled.json")


async def test_a_worker_killed_mid_saga_is_replaced_and_the_tenant_ends_active(
    saga: Saga, tmp_path: Path
) -> None:
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    first = _start_worker(saga.settings, task_queue, tmp_path / "worker1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        job, handle = await saga.start("database", SLOW, task_queue=task_queue)
        await _until_step(handle, "migrate")
        await asyncio.sleep(0.5)  # inside the slow version
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = _start_worker(saga.settings, task_queue, tmp_path / "worker2.log")
        outcome = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(45)
    assert outcome.status is TenantStatus.ACTIVE
    tenant = await saga.tenants.get(job.tenant_id)
    assert tenant.status is TenantStatus.ACTIVE
    conn = await asyncpg.connect(saga.postgres.dsn(tenant.database))
    try:
        rows = await conn.fetch(f"SELECT version FROM {LEDGER_TABLE} ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == ["1", "2", "3"]  # each version once


async def test_tenant_events_reach_a_webhook_receiver_signed(
    saga: Saga,
    repository: WebhookRepository,
    receivers: list[Receiver],
    webhook_settings: Settings,
) -> None:
    _, receiver = await _endpoint(
        repository,
        receivers,
        [(200, {})],
        [WebhookEventType.TENANT_PROVISIONED, WebhookEventType.TENANT_PROVISIONING_FAILED],
    )
    queue = webhook_settings.temporal.task_queue
    job, handle = await saga.start("database", list(BASE), task_queue=queue)
    assert (await handle.result()).status is TenantStatus.ACTIVE
    broken = [BASE[0], BASE[1].model_copy(update={"up_sql": "CREATE TABLE nope (;"})]
    failed_job, failed = await saga.start("schema", broken, task_queue=queue)
    assert (await failed.result()).status is TenantStatus.FAILED
    provisioned, provisioning_failed = await _received(receiver, 2)
    assert provisioned["type"] == "tenant.provisioned"
    assert provisioned["subject"] == f"tenant/{job.tenant_id}"
    assert provisioned["data"] == {
        "tenant_id": job.tenant_id,
        "status": "active",
        "versions": {**provisioned["data"]["versions"]},  # type: ignore[index]
        "error": None,
    }
    assert provisioning_failed["type"] == "tenant.provisioning_failed"
    data = provisioning_failed["data"]
    assert isinstance(data, dict)
    assert data["tenant_id"] == failed_job.tenant_id
    assert "syntax error" in str(data["error"])
    assert all(r.verified for r in receiver.received)


@pytest.mark.usefixtures("running_worker")
async def test_deprovisioning_a_schema_tenant_drops_what_its_migrations_granted(
    saga: Saga,
) -> None:
    granting = [
        migration("1", "CREATE TABLE notes (id int);", "DROP TABLE notes;"),
        # A default privilege for the whole shared database, owned by the tenant's role: left
        # in place, it makes DROP ROLE refuse.
        migration("2", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;", ""),
    ]
    job, handle = await saga.start("schema", granting)
    assert (await handle.result()).status is TenantStatus.ACTIVE
    run_id = f"deprovision-{job.tenant_id}"
    await saga.tenants.start_job(
        job.tenant_id, TenantStatus.DEPROVISIONING, run_id, allowed=("active",)
    )
    gone = await saga.client.start_workflow(
        DeprovisionTenantWorkflow.run,
        TenantJob(tenant_id=job.tenant_id, run_id=run_id),
        id=run_id,
        task_queue=saga.settings.temporal.task_queue,
    )
    outcome = await asyncio.wait_for(gone.result(), timeout=60)
    assert outcome.status is TenantStatus.DEPROVISIONED
    assert await saga.leftovers(job.tenant_id) == []


@pytest.mark.usefixtures("running_worker")
async def test_provisioning_an_active_tenant_again_keeps_its_role_and_target_password_alike(
    saga: Saga, catalog_pool: asyncpg.Pool
) -> None:
    """The same provisioning job run again after it finished (a workflow reset, or a second
    start of the same job: the template test once made its second tenant's id equal to the
    first's, 1 time in 16) must not give the role a new password: the target row keeps the one
    it was given, and the migrate step failed with InvalidPasswordError, undoing the tenant."""
    job, handle = await saga.start("database", list(BASE))
    assert (await handle.result()).status is TenantStatus.ACTIVE
    again = await saga.client.start_workflow(
        ProvisionTenantWorkflow.run,
        job,
        id=f"{job.run_id}-again",
        task_queue=saga.settings.temporal.task_queue,
    )
    outcome = await asyncio.wait_for(again.result(), timeout=90)
    assert outcome.status is TenantStatus.ACTIVE, outcome.error
    tenant = await saga.tenants.get(job.tenant_id)
    assert tenant.database_id is not None
    cipher = CredentialCipher(KeyRing.from_settings(saga.settings.crypto))
    params = await DatabaseRepository(catalog_pool, cipher).connection_params(tenant.database_id)
    conn = await asyncpg.connect(  # the target's password opens the role
        **{key: params[key] for key in ("host", "port", "database", "user", "password")}
    )
    try:
        assert await conn.fetchval("SELECT current_user") == tenant.role
    finally:
        await conn.close()
