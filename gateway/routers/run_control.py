"""``/api/v1/migrations/{run_id}/...``: a fleet run's controls. Pause, resume and cancel are
signals (also sent by ``temporal workflow signal``), concurrency an update, and a rollback a new
fleet run over the targets the run changed (a compact run's: over its selector, each target
rolled back only when its ledger holds rows of the run)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from common.errors import Conflict, DependencyUnavailable, InvalidInput
from gateway.auth.deps import MigrationsExecute, MigrationsRollback
from gateway.deps import SettingsDep, TemporalDep
from gateway.routers.migrations import (
    RUN_ERRORS,
    CacheDep,
    FleetHandle,
    _handle,
    _progress,
    _start,
    _version,
)
from gateway.routers.run_targets import query_spec
from models.fleet import (
    ConcurrencyChange,
    FleetProgress,
    FleetRollbackRequest,
    FleetRunAccepted,
    FleetRunInput,
    FleetSelector,
    TargetState,
)
from models.migrations import TargetRunKind
from workflows.fleet import MigrateFleetWorkflow

router = APIRouter(prefix="/api/v1/migrations", tags=["migrations"])


def _closed_meanwhile(exc: RPCError, run_id: str) -> Exception:
    """The error for a signal or update Temporal refused: the run (found running a moment
    before) has closed in between (409), or Temporal did not answer (503)."""
    if exc.status is RPCStatusCode.NOT_FOUND:
        return Conflict(f"run {run_id} has finished", details={"run_id": run_id})
    return DependencyUnavailable(
        "Temporal did not answer", details={"dependency": "temporal", "cause": exc.message[:300]}
    )


async def _signal(temporal: TemporalDep, run_id: str, signal: str) -> JSONResponse:
    handle, running = await _handle(temporal, run_id)
    if not running:
        raise Conflict(
            f"run {run_id} has finished; it cannot be {signal}d", details={"run_id": run_id}
        )
    method = {
        "pause": MigrateFleetWorkflow.pause,
        "resume": MigrateFleetWorkflow.resume,
        "cancel": MigrateFleetWorkflow.cancel,
    }[signal]
    try:
        await handle.signal(method)
    except RPCError as exc:
        raise _closed_meanwhile(exc, run_id) from None
    return JSONResponse(status_code=202, content={"run_id": run_id, "signal": signal})


@router.post(
    "/{run_id}/pause", status_code=202, summary="Pause: no new target starts", responses=RUN_ERRORS
)
async def pause_run(
    run_id: str, principal: MigrationsExecute, temporal: TemporalDep
) -> JSONResponse:
    """In-flight targets finish; nothing new starts until ``resume``."""
    del principal
    return await _signal(temporal, run_id, "pause")


@router.post(
    "/{run_id}/resume", status_code=202, summary="Resume a paused run", responses=RUN_ERRORS
)
async def resume_run(
    run_id: str, principal: MigrationsExecute, temporal: TemporalDep
) -> JSONResponse:
    """Continue after a pause by an operator, the canary or the failure budget."""
    del principal
    return await _signal(temporal, run_id, "resume")


@router.post(
    "/{run_id}/cancel", status_code=202, summary="Cancel: nothing new starts", responses=RUN_ERRORS
)
async def cancel_run(
    run_id: str, principal: MigrationsExecute, temporal: TemporalDep
) -> JSONResponse:
    """In-flight targets finish (no version is ever half-applied); the run then ends."""
    del principal
    return await _signal(temporal, run_id, "cancel")


@router.patch("/{run_id}", summary="Change a run's concurrency", responses=RUN_ERRORS)
async def change_run(
    run_id: str, body: ConcurrencyChange, principal: MigrationsExecute, temporal: TemporalDep
) -> dict[str, int]:
    """Takes effect at once: more targets start, or fewer as in-flight ones finish."""
    del principal
    handle, running = await _handle(temporal, run_id)
    if not running:
        raise Conflict(f"run {run_id} has finished", details={"run_id": run_id})
    try:
        value = await handle.execute_update(MigrateFleetWorkflow.set_concurrency, body.concurrency)
    except WorkflowUpdateFailedError as exc:
        raise InvalidInput(str(exc.cause or exc)) from None
    except RPCError as exc:
        raise _closed_meanwhile(exc, run_id) from None
    return {"concurrency": value}


@router.post(
    "/{run_id}/rollback",
    status_code=202,
    summary="Roll back the targets a run touched",
    responses=RUN_ERRORS,
)
async def rollback_run(
    run_id: str,
    body: FleetRollbackRequest,
    principal: MigrationsRollback,
    temporal: TemporalDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> FleetRunAccepted:
    """A new fleet run (same controls) that rolls every target the run touched back: the
    targets its progress lists as changed, or, for a compact run (which keeps no such list),
    those of its selector whose ledger holds rows of the run (the others are left as they are,
    ``up_to_date``)."""
    handle, running = await _handle(temporal, run_id)
    if running:
        raise Conflict(
            f"run {run_id} is still running; cancel it first", details={"run_id": run_id}
        )
    progress = await _progress(handle, run_id)
    if progress.dry_run:
        raise Conflict(
            f"run {run_id} was a dry run: it changed nothing", details={"run_id": run_id}
        )
    if progress.kind in (TargetRunKind.ADOPT, TargetRunKind.BASELINE):
        # It recorded versions another tool (or a person) applied: rolling it back would run
        # down scripts of versions no tenantflow run applied. Roll back with a run of its own.
        raise Conflict(
            f"run {run_id} was a {progress.kind.value} run: it ran no migration to undo; "
            "start a rollback run of the set over these targets instead",
            details={"run_id": run_id, "kind": progress.kind.value},
        )
    if progress.targets_complete:
        selector, rollback_of = touched_targets(progress), None
    else:
        selector, rollback_of = await _compact_scope(handle, run_id, progress)
    version = _version(body.to_version)
    params = FleetRunInput(
        run_id=uuid.uuid4().hex[:12],
        set_name=progress.set_name,
        kind=TargetRunKind.ROLLBACK,
        target_version=version,
        selector=selector,
        rollback_of=rollback_of,
        concurrency=body.concurrency,
        batch_size=body.batch_size,
        failure_budget=body.failure_budget,
        requester=principal.subject,
    )
    return await _start(temporal, settings, cache, params, version=version)


def touched_targets(progress: FleetProgress) -> FleetSelector:
    """A run from before compact state (every target in its progress): only what it changed.
    An up-to-date target was left as it was, and a failed one may have committed versions
    before its failure (each version commits with its ledger row); 409 when it changed none."""
    touched = [
        uuid.UUID(key)
        for key, target in progress.targets.items()
        if target.state in (TargetState.SUCCEEDED, TargetState.FAILED)
    ]
    if not touched:
        raise Conflict(
            f"run {progress.run_id} changed no target", details={"run_id": progress.run_id}
        )
    return FleetSelector(database_ids=touched)


async def _compact_scope(
    handle: FleetHandle, run_id: str, progress: FleetProgress
) -> tuple[FleetSelector, str]:
    """A compact run's rollback: its own selector, each target rolled back only when its ledger
    holds rows of the run (the run keeps no list of the targets it changed; their ledgers do).
    """
    if progress.counts.succeeded + progress.counts.failed == 0:
        raise Conflict(f"run {run_id} changed no target", details={"run_id": run_id})
    if progress.kind is TargetRunKind.ROLLBACK:
        # A rollback deletes ledger rows and writes none: no target holds rows of it to find.
        raise Conflict(
            f"run {run_id} was a rollback: it left no ledger rows to find its targets by; "
            "roll back the run it undid to the lower version instead",
            details={"run_id": run_id, "kind": progress.kind.value},
        )
    return (await query_spec(handle)).selector, run_id
