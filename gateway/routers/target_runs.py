"""Per-target runs: ``POST /api/v1/databases/{id}/migrate|rollback`` and their state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from common.errors import DependencyUnavailable, InvalidInput, NotFound
from gateway.auth.deps import MigrationsExecute, MigrationsRead, MigrationsRollback
from gateway.deps import SettingsDep, TemporalDep, temporal_unreachable
from gateway.routers.databases import RepositoryDep
from gateway.routers.migration_sets import SetsDep
from gateway.runs import run_and_wait
from models.errors import ErrorResponse
from models.migrations import (
    Ledger,
    LedgerRequest,
    TargetRunInput,
    TargetRunKind,
    TargetRunRequest,
    TargetRunResult,
    TargetRunState,
    TargetRunStatus,
    normalise_version,
)
from workflows.migrations import MigrateTargetWorkflow, ReadLedgerWorkflow, RollbackTargetWorkflow

router = APIRouter(prefix="/api/v1/databases", tags=["migrations"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": TargetRunState, "description": "Started; poll the run (wait=false)."},
    404: {"model": ErrorResponse, "description": "No such database or migration set."},
}
# How long a waiting request holds the connection before answering 202 with the run id.
WAIT_SECONDS = 60.0


def workflow_id_for(database_id: uuid.UUID, run_id: str) -> str:
    """Business key of a per-target run."""
    return f"target-run-{database_id}-{run_id}"


async def _start(
    kind: TargetRunKind,
    database_id: uuid.UUID,
    request: TargetRunRequest,
    *,
    requester: str,
    settings: SettingsDep,
    temporal: TemporalDep,
    databases: RepositoryDep,
    sets: SetsDep,
) -> JSONResponse:
    await databases.get(database_id)
    await sets.info(request.set)
    if request.to_version is not None:
        try:
            normalise_version(request.to_version)
        except ValueError as exc:
            raise InvalidInput(str(exc), details={"to_version": request.to_version}) from None
    elif kind is TargetRunKind.ROLLBACK:
        raise InvalidInput("a rollback needs to_version (0 rolls everything back)")
    run_id = uuid.uuid4().hex[:12]
    params = TargetRunInput(
        run_id=run_id,
        database_id=database_id,
        set_name=request.set,
        kind=kind,
        target_version=request.to_version,
        dry_run=request.dry_run,
        lock_timeout_ms=request.lock_timeout_ms,
        statement_timeout_ms=request.statement_timeout_ms,
    )
    workflow_type = MigrateTargetWorkflow if kind is TargetRunKind.APPLY else RollbackTargetWorkflow
    workflow_id = workflow_id_for(database_id, run_id)
    try:
        handle: WorkflowHandle[Any, TargetRunResult] = await temporal.start_workflow(
            workflow_type.run,
            params,
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"requester": requester},
        )
    except (RPCError, RuntimeError) as exc:
        raise DependencyUnavailable(
            "Temporal did not accept the run",
            details={"dependency": "temporal", "cause": type(exc).__name__},
        ) from None
    accepted = TargetRunState(
        run_id=run_id, workflow_id=workflow_id, status=TargetRunStatus.RUNNING
    )
    if not request.wait:
        return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            result = await handle.result()
    except TimeoutError:
        return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"))
    except WorkflowFailureError as exc:
        failed = accepted.model_copy(
            update={"status": TargetRunStatus.FAILED, "error": str(exc.cause)}
        )
        return JSONResponse(status_code=200, content=failed.model_dump(mode="json"))
    done = accepted.model_copy(update={"status": TargetRunStatus.COMPLETED, "result": result})
    return JSONResponse(status_code=200, content=done.model_dump(mode="json"))


@router.post(
    "/{database_id}/migrate",
    summary="Apply a migration set to one target (or plan it)",
    response_model=TargetRunState,
    responses=RESPONSES,
)
async def migrate(
    database_id: uuid.UUID,
    request: TargetRunRequest,
    principal: MigrationsExecute,
    settings: SettingsDep,
    temporal: TemporalDep,
    databases: RepositoryDep,
    sets: SetsDep,
) -> JSONResponse:
    """Start ``MigrateTargetWorkflow``; with ``wait`` (default) answer with its result."""
    return await _start(
        TargetRunKind.APPLY,
        database_id,
        request,
        requester=principal.subject,
        settings=settings,
        temporal=temporal,
        databases=databases,
        sets=sets,
    )


@router.post(
    "/{database_id}/rollback",
    summary="Roll one target back to a version",
    response_model=TargetRunState,
    responses=RESPONSES,
)
async def rollback(
    database_id: uuid.UUID,
    request: TargetRunRequest,
    principal: MigrationsRollback,
    settings: SettingsDep,
    temporal: TemporalDep,
    databases: RepositoryDep,
    sets: SetsDep,
) -> JSONResponse:
    """Start ``RollbackTargetWorkflow`` down to ``to_version``."""
    return await _start(
        TargetRunKind.ROLLBACK,
        database_id,
        request,
        requester=principal.subject,
        settings=settings,
        temporal=temporal,
        databases=databases,
        sets=sets,
    )


@router.get(
    "/{database_id}/runs/{run_id}",
    summary="State and result of a per-target run",
    responses={404: {"model": ErrorResponse, "description": "No such run."}},
)
async def get_run(
    database_id: uuid.UUID, run_id: str, principal: MigrationsRead, temporal: TemporalDep
) -> TargetRunState:
    """Running, completed (with the result) or failed, from Temporal."""
    del principal
    workflow_id = workflow_id_for(database_id, run_id)
    handle: WorkflowHandle[Any, TargetRunResult] = temporal.get_workflow_handle(
        workflow_id, result_type=TargetRunResult
    )
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no run {run_id} on database {database_id}") from None
        raise DependencyUnavailable(
            "Temporal did not answer", details={"cause": exc.message}
        ) from None
    except RuntimeError as exc:
        raise temporal_unreachable(exc) from None
    state = TargetRunState(run_id=run_id, workflow_id=workflow_id, status=TargetRunStatus.RUNNING)
    if description.status is WorkflowExecutionStatus.COMPLETED:
        return state.model_copy(
            update={"status": TargetRunStatus.COMPLETED, "result": await handle.result()}
        )
    if description.status is not WorkflowExecutionStatus.RUNNING:
        status_name = description.status.name if description.status else "unknown"
        return state.model_copy(
            update={"status": TargetRunStatus.FAILED, "error": status_name.lower()}
        )
    return state


@router.get(
    "/{database_id}/history",
    summary="The target's ledger (the set's ledger table; tenantflow_schema_history by default)",
    responses={404: {"model": ErrorResponse, "description": "No such database or set."}},
)
async def history(
    database_id: uuid.UUID,
    principal: MigrationsRead,
    settings: SettingsDep,
    temporal: TemporalDep,
    databases: RepositoryDep,
    sets: SetsDep,
    set_name: Annotated[
        str | None,
        Query(alias="set", max_length=64, description="Read this set's ledger table."),
    ] = None,
) -> Ledger:
    """Every applied version with checksum, time, duration and run id, read by a worker from
    the ledger table of ``?set=`` (the default table without it)."""
    del principal
    await databases.get(database_id)
    if set_name is not None and set_name not in await sets.ledger_tables([set_name]):
        raise NotFound(f"no migration set {set_name!r}", details={"set": set_name})
    return await run_and_wait(
        temporal,
        ReadLedgerWorkflow.run,
        LedgerRequest(database_id=database_id, set_name=set_name),
        workflow_id=f"read-ledger-{database_id}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.task_queue,
        wait_seconds=settings.gateway.system_check_timeout_seconds,
        what="ledger read",
    )
