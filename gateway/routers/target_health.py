"""Fleet health over HTTP: a target's latest snapshot, drift per set, and a sweep on demand."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from gateway.auth.deps import MigrationsExecute, MonitoringRead
from gateway.deps import SettingsDep, TemporalDep
from gateway.routers.databases import parse_label_filters
from models.errors import ErrorResponse
from models.fleet import FleetSelector
from models.health import DriftSummary, FleetHealthInput, SweepStarted, TargetHealth
from models.migrations import SetName
from workflows.health import FleetHealthWorkflow

router = APIRouter(prefix="/api/v1", tags=["health"])


async def get_health(request: Request) -> HealthRepository:
    """Health snapshots, read from the catalog pool opened in the lifespan."""
    return HealthRepository(request.app.state.catalog)


HealthDep = Annotated[HealthRepository, Depends(get_health)]


@router.get(
    "/databases/{database_id}/health",
    summary="A target's latest health snapshot",
    responses={404: {"model": ErrorResponse, "description": "No such target, or not checked."}},
)
async def get_target_health(
    database_id: uuid.UUID, health: HealthDep, principal: MonitoringRead
) -> TargetHealth:
    """Reachability, latency, server version, ledger version per assigned set, behind sets,
    schema fingerprint and drift (differing objects named) from the latest sweep."""
    del principal
    return await health.latest(database_id)


@router.get(
    "/drift",
    summary="Drift of one set's targets, grouped by version",
    responses={404: {"model": ErrorResponse, "description": "No such migration set."}},
)
async def get_drift(
    request: Request,
    health: HealthDep,
    principal: MonitoringRead,
    set_name: Annotated[SetName, Query(alias="set", description="The migration set.")],
) -> DriftSummary:
    """Checked targets carrying the set (by assignment), per ledger version, with the drifted
    ones and their differing objects."""
    del principal
    sets: MigrationSetRepository = request.app.state.migration_sets
    await sets.info(set_name)  # 404 for an unknown set
    return await health.drift_summary(set_name)


@router.post("/health/sweep", status_code=202, summary="Run a fleet health sweep now")
async def start_sweep(
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: MigrationsExecute,
    label: Annotated[
        list[str] | None,
        Query(description="Only targets with these labels (key=value, repeatable)."),
    ] = None,
) -> SweepStarted:
    """Start ``FleetHealthWorkflow`` over every target (or those with the given labels) and
    answer its run id at once; the snapshots appear as it goes
    (``GET /api/v1/databases/{id}/health``)."""
    labels = parse_label_filters(label or [])
    selector = FleetSelector(labels=labels) if labels else FleetSelector(all=True)
    run_id = uuid.uuid4().hex[:16]
    workflow_id = f"fleet-health-manual-{run_id}"
    await temporal.start_workflow(
        FleetHealthWorkflow.run,
        FleetHealthInput(
            run_id=run_id,
            requester=principal.subject,
            selector=selector,
            concurrency=settings.health.concurrency,
            batch_size=settings.health.batch_size,
            connect_timeout_seconds=settings.health.connect_timeout_seconds,
        ),
        id=workflow_id,
        task_queue=settings.temporal.task_queue,
    )
    return SweepStarted(run_id=run_id, workflow_id=workflow_id)
