"""``/api/v1/system/check``: a real round trip gateway → Temporal → worker → catalog."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from fastapi import APIRouter
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from common.errors import DependencyUnavailable
from gateway.auth.deps import MonitoringRead
from gateway.deps import SettingsDep, TemporalDep
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
    workflow_id = f"system-check-{uuid.uuid4().hex}"
    wait_seconds = settings.gateway.system_check_timeout_seconds
    try:
        handle = await temporal.start_workflow(
            SystemCheckWorkflow.run,
            SystemCheckInput(requested_by=principal.subject),
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            execution_timeout=timedelta(seconds=wait_seconds * 2),
        )
        async with asyncio.timeout(wait_seconds):
            return await handle.result()
    except TimeoutError:
        raise DependencyUnavailable(
            "no worker completed the system check in time; is `tenantflow worker` running?",
            details={"workflow_id": workflow_id, "task_queue": settings.temporal.task_queue},
        ) from None
    except WorkflowFailureError as exc:
        raise DependencyUnavailable(
            "the system check failed on the worker",
            details={"workflow_id": workflow_id, "cause": str(exc.cause)},
        ) from None
    except (RPCError, RuntimeError) as exc:
        raise DependencyUnavailable(
            "Temporal did not accept the system check",
            details={"dependency": "temporal", "cause": type(exc).__name__},
        ) from None
