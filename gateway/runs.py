"""Start a short workflow and wait for its result, with one mapping of what can go wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from common.errors import DependencyUnavailable

ResultT = TypeVar("ResultT")


async def run_and_wait(
    temporal: Client,
    workflow: Callable[[Any, Any], Awaitable[ResultT]],
    arg: Any,
    *,
    workflow_id: str,
    task_queue: str,
    wait_seconds: float,
    what: str,
) -> ResultT:
    """Run ``workflow`` and return its result within ``wait_seconds``, or raise
    ``DependencyUnavailable`` saying whether no worker answered, the run failed or Temporal
    refused it. The workflow times itself out after twice the wait, so nothing lingers."""
    try:
        handle = await temporal.start_workflow(
            workflow,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=wait_seconds * 2),
        )
        async with asyncio.timeout(wait_seconds):
            return await handle.result()
    except TimeoutError:
        raise DependencyUnavailable(
            f"no worker completed the {what} in time; is `tenantflow worker` running?",
            details={"workflow_id": workflow_id, "task_queue": task_queue},
        ) from None
    except WorkflowFailureError as exc:
        raise DependencyUnavailable(
            f"the {what} failed on the worker",
            details={"workflow_id": workflow_id, "cause": str(exc.cause)},
        ) from None
    except (RPCError, RuntimeError) as exc:
        raise DependencyUnavailable(
            f"Temporal did not accept the {what}",
            details={"dependency": "temporal", "cause": type(exc).__name__},
        ) from None
