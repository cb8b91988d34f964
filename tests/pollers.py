"""Waiting until a worker polls a task queue: a test that starts a run before its worker polls
can meet "no poller seen for task queue recently" (a query) or a run that never gets going."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client


async def wait_for_pollers(
    client: Client,
    task_queue: str,
    *,
    alive: Callable[[], bool],
    why: Callable[[], str],
    within: float = 90.0,
) -> None:
    """Until a worker polls ``task_queue``'s workflow tasks; fails at once (with ``why()``)
    when ``alive()`` says the worker is gone, or after ``within`` seconds."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + within
    while not (await client.workflow_service.describe_task_queue(request)).pollers:
        assert alive(), f"the worker exited:\n{why()}"
        assert time.monotonic() < deadline, f"no worker polls {task_queue}:\n{why()}"
        await asyncio.sleep(0.2)
