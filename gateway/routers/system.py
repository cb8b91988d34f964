"""``/api/v1/system/check``: a real round trip gateway → Temporal → worker → catalog."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from gateway.auth.deps import MonitoringRead
from gateway.deps import SettingsDep, TemporalDep
from gateway.runs import run_and_wait
from models.errors import ErrorResponse
from models.system import SystemCheckInput, SystemCheckResult
from workflows.system import SystemCheckWorkflow

router = APIRouter(prefix="/api/v1/system", tags=["system"])


@router.post(
    "/check",
    summary="Run a system check through a worker",
    responses={503: {"model": ErrorResponse, "description": "No worker or dependency answered."}},
)
async def system_check(
    settings: SettingsDep, temporal: TemporalDep, principal: MonitoringRead
) -> SystemCheckResult:
    """Start ``SystemCheckWorkflow`` and wait for it: proves a worker polls the task queue and
    reaches the catalog. ``/health/ready`` checks only that the services answer."""
    return await run_and_wait(
        temporal,
        SystemCheckWorkflow.run,
        SystemCheckInput(requested_by=principal.subject),
        workflow_id=f"system-check-{uuid.uuid4().hex}",
        task_queue=settings.temporal.task_queue,
        wait_seconds=settings.gateway.system_check_timeout_seconds,
        what="system check",
    )
