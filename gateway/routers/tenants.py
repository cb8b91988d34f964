"""``/api/v1/tenants``: provision, list, show, hand out credentials, rotate, deprovision.

Provisioning is ``ProvisionTenantWorkflow`` (a saga); the catalog row is claimed before the run
starts, so the same request again finds the same tenant and run, and a crash between the two is
healed by the next identical request (the start is idempotent by workflow id).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from common.audit import record_audit
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.tenants import TenantRepository
from common.errors import InvalidInput, NotFound
from common.network_policy import check_registered_host
from common.settings import Settings
from common.telemetry.workflow_metrics import MODE_MEMO
from gateway.auth.deps import DatabasesRead, TenantsCredentials, TenantsProvision
from gateway.deps import SettingsDep, TemporalDep
from gateway.event_types import event_start_options, register_event_type, validate_event_data
from gateway.routers.databases import RepositoryDep
from gateway.runs import run_and_wait
from models.errors import ErrorResponse
from models.migrations import normalise_version
from models.tenants import (
    Tenant,
    TenantAccepted,
    TenantCreate,
    TenantCredentials,
    TenantId,
    TenantJob,
    TenantPage,
    TenantStatus,
)
from workflows.tenants import (
    DeprovisionTenantWorkflow,
    ProvisionTenantWorkflow,
    RotateTenantPasswordWorkflow,
)

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such tenant, server or set."},
    409: {"model": ErrorResponse, "description": "The tenant exists with another request."},
    422: {
        "model": ErrorResponse,
        "description": "Invalid input, or the server is on a network TENANTFLOW_NETWORK__* "
        "refuses (type network_refused).",
    },
}


async def get_tenants(request: Request) -> TenantRepository:
    """The tenants repository built in the lifespan."""
    repository: TenantRepository = request.app.state.tenants
    return repository


TenantsDep = Annotated[TenantRepository, Depends(get_tenants)]


async def _check_sets(state: Any, spec: TenantCreate) -> None:
    """Every named set (and pinned version) exists, and no two of the tenant's sets keep their
    ledgers in one table (each would read the other's versions), before anything is created."""
    sets: MigrationSetRepository = state.migration_sets
    names = (
        [s.name for s in spec.sets]
        if spec.sets is not None
        else [a.set_name for a in await state.assignments.for_labels(spec.labels)]
    )
    for wanted in spec.sets or []:
        migrations = await sets.migrations(wanted.name)  # NotFound: 404
        if wanted.version == "latest":
            continue
        try:
            version = normalise_version(wanted.version)
        except ValueError as exc:
            raise InvalidInput(str(exc), details={"set": wanted.name}) from None
        if version not in {m.version for m in migrations}:
            raise InvalidInput(
                f"version {wanted.version} is not in set {wanted.name!r}",
                details={"set": wanted.name, "version": wanted.version},
            )
    await sets.check_separate_ledgers(names)


async def start_provisioning(
    temporal: Client, settings: Settings, tenant: Tenant, options: dict[str, Any] | None = None
) -> None:
    """Start the tenant's provisioning run; a run already started under its id is kept."""
    start: dict[str, Any] = dict(options or {}) or {
        "id": tenant.run_id,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
    }
    # The run's input carries ids only; its metrics' mode label comes from the memo.
    start["memo"] = {**start.get("memo", {}), MODE_MEMO: tenant.mode.value}
    # A run that already ran (and ended) under this id is not started again.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await temporal.start_workflow(
            ProvisionTenantWorkflow.run,
            TenantJob(tenant_id=tenant.tenant_id, run_id=tenant.run_id),
            task_queue=settings.temporal.task_queue,
            **start,
        )


async def provision(
    state: Any,
    temporal: Client,
    settings: Settings,
    spec: TenantCreate,
    *,
    event_id: str | None = None,
) -> TenantAccepted:
    """Claim the tenant and start its run (the route, and the ``tenant.created`` event whose
    workflow id is the event's, so a redelivery starts nothing new)."""
    tenants: TenantRepository = state.tenants
    servers = state.servers
    await _check_sets(state, spec)
    if spec.server is not None:
        server = await servers.get_by_name(spec.server)
    else:
        server = await servers.choose(spec.server_selector or {})
    # The allow-list may have changed since the server was registered.
    check_registered_host(server.host, settings.network)
    run_id = event_id or f"provision-{spec.tenant_id}-{uuid.uuid4().hex[:8]}"
    tenant, created = await tenants.claim(spec, server.id, run_id)
    if tenant.status is TenantStatus.PROVISIONING:
        own_event = event_id is not None and tenant.run_id == event_id
        options = event_start_options(event_id) if own_event and event_id else None
        await start_provisioning(temporal, settings, tenant, options)
    return TenantAccepted(
        tenant_id=tenant.tenant_id, status=tenant.status, run_id=tenant.run_id, created=created
    )


@router.post("", status_code=202, summary="Provision a tenant", responses=ERRORS)
async def create_tenant(
    body: TenantCreate,
    request: Request,
    principal: TenantsProvision,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> TenantAccepted:
    """Role, database (or schema), target, migrations to the requested or assigned sets, then
    active; undone entirely on failure. The same request again returns the same run."""
    del principal
    return await provision(request.app.state, temporal, settings, body)


@router.get("", summary="List tenants")
async def list_tenants(
    principal: DatabasesRead,
    tenants: TenantsDep,
    status: TenantStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TenantPage:
    """Tenants by id, optionally of one status."""
    del principal
    return await tenants.list(status=status, limit=limit, cursor=cursor)


@router.get("/{tenant_id}", summary="Show a tenant", responses=ERRORS)
async def get_tenant(tenant_id: str, principal: DatabasesRead, tenants: TenantsDep) -> Tenant:
    """Status, server, target, versions reached, the latest run and its error."""
    del principal
    return await tenants.get(tenant_id)


@router.get(
    "/{tenant_id}/credentials",
    summary="The tenant's connection string (audited, never cached)",
    responses=ERRORS,
)
async def get_credentials(
    tenant_id: str,
    request: Request,
    principal: TenantsCredentials,
    tenants: TenantsDep,
    databases: RepositoryDep,
) -> TenantCredentials:
    """The one endpoint that hands out a tenant's password."""
    tenant = await tenants.get(tenant_id)
    if tenant.status is not TenantStatus.ACTIVE or tenant.database_id is None:
        raise NotFound(
            f"tenant {tenant_id!r} has no credentials ({tenant.status.value})",
            details={"tenant_id": tenant_id, "status": tenant.status.value},
        )
    params = await databases.connection_params(tenant.database_id)
    await record_audit(
        request.app.state.catalog,
        subject=principal.subject,
        action="GET /api/v1/tenants/{tenant_id}/credentials",
        resource=f"/api/v1/tenants/{tenant_id}/credentials",
        outcome="success",
        request_id=getattr(request.state, "request_id", None),
    )
    user, password = params["user"], params["password"]
    url = (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{params['host']}:"
        f"{params['port']}/{quote(params['database'], safe='')}"
    )
    query = []
    if params.get("ssl"):
        query.append(f"sslmode={params['ssl']}")
    if tenant.schema_name:
        query.append(f"options=-csearch_path%3D{quote(tenant.schema_name, safe='')}")
    return TenantCredentials(
        tenant_id=tenant_id,
        host=params["host"],
        port=params["port"],
        database=params["database"],
        schema_name=tenant.schema_name,
        user=user,
        password=password,
        sslmode=params.get("ssl"),
        url=url + ("?" + "&".join(query) if query else ""),
    )


@router.post(
    "/{tenant_id}/credentials/rotate",
    summary="Give the tenant a new password",
    responses=ERRORS,
)
async def rotate_credentials(
    tenant_id: str,
    principal: TenantsCredentials,
    tenants: TenantsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> dict[str, str]:
    """``ALTER ROLE`` with a new password, then re-encrypted in the catalog (a workflow, safe
    to retry); the old password stops working. Read the new one from ``credentials``."""
    del principal
    tenant = await tenants.get(tenant_id)
    if tenant.status is not TenantStatus.ACTIVE:
        raise InvalidInput(
            f"tenant {tenant_id!r} is {tenant.status.value}; only an active tenant rotates",
            details={"tenant_id": tenant_id},
        )
    run_id = f"rotate-{tenant_id}-{uuid.uuid4().hex[:8]}"
    await run_and_wait(
        temporal,
        RotateTenantPasswordWorkflow.run,
        TenantJob(tenant_id=tenant_id, run_id=run_id),
        workflow_id=run_id,
        task_queue=settings.temporal.task_queue,
        wait_seconds=60,
        what="password rotation",
    )
    return {"tenant_id": tenant_id, "run_id": run_id, "status": "rotated"}


@router.delete("/{tenant_id}", status_code=202, summary="Deprovision a tenant", responses=ERRORS)
async def delete_tenant(
    tenant_id: str,
    principal: TenantsProvision,
    tenants: TenantsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    confirm: Annotated[str | None, Query(max_length=64)] = None,
) -> TenantAccepted:
    """Drops the tenant's database (or schema) and role; the record stays, ``deprovisioned``.
    ``?confirm=`` must repeat the tenant id."""
    del principal
    if confirm != tenant_id:
        raise InvalidInput(
            "deprovisioning drops the tenant's data: repeat its id as ?confirm=",
            details={"tenant_id": tenant_id},
        )
    return await deprovision(tenants, temporal, settings, tenant_id)


async def deprovision(
    tenants: TenantRepository,
    temporal: Client,
    settings: Settings,
    tenant_id: str,
    *,
    event_id: str | None = None,
) -> TenantAccepted:
    """Mark the tenant deprovisioning and start its run (the route and ``tenant.deleted``)."""
    run_id = event_id or f"deprovision-{tenant_id}-{uuid.uuid4().hex[:8]}"
    tenant, created = await tenants.start_job(
        tenant_id,
        TenantStatus.DEPROVISIONING,
        run_id,
        allowed=(TenantStatus.ACTIVE.value, TenantStatus.FAILED.value),
    )
    own_event = event_id is not None and tenant.run_id == event_id
    options: dict[str, Any] = (
        event_start_options(event_id)
        if own_event and event_id
        else {"id": tenant.run_id, "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING}
    )
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await temporal.start_workflow(
            DeprovisionTenantWorkflow.run,
            TenantJob(tenant_id=tenant_id, run_id=tenant.run_id),
            task_queue=settings.temporal.task_queue,
            **options,
        )
    return TenantAccepted(
        tenant_id=tenant_id, status=tenant.status, run_id=tenant.run_id, created=created
    )


class TenantDeleted(BaseModel):
    """The data of a ``tenant.deleted`` event."""

    tenant_id: TenantId


def register_tenant_events(state: Any) -> None:
    """``tenant.created`` (data as ``POST /api/v1/tenants``) provisions and ``tenant.deleted``
    deprovisions; called by the gateway's lifespan with the repositories it built."""

    async def run_of(temporal: Client, workflow_id: str) -> str:
        return (await temporal.get_workflow_handle(workflow_id).describe()).run_id

    async def created(
        temporal: Client, settings: Settings, event_id: str, data: dict[str, Any]
    ) -> str:
        spec = validate_event_data(TenantCreate, data)
        accepted = await provision(state, temporal, settings, spec, event_id=event_id)
        return await run_of(temporal, accepted.run_id)

    async def deleted(
        temporal: Client, settings: Settings, event_id: str, data: dict[str, Any]
    ) -> str:
        gone = validate_event_data(TenantDeleted, data)
        accepted = await deprovision(
            state.tenants, temporal, settings, gone.tenant_id, event_id=event_id
        )
        return await run_of(temporal, accepted.run_id)

    register_event_type("tenant.created", created)
    register_event_type("tenant.deleted", deleted)
