"""The worker entry point: registers what exists, runs workflows, stops cleanly."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cli.stack import EmbeddedPostgres, free_port
from common.errors import DependencyUnavailable
from common.settings import Settings
from common.temporal_client import connect_temporal
from models.system import SystemCheckInput
from tests.conftest import make_settings
from worker.main import run_worker
from worker.registry import WORKFLOWS, build_activities
from workflows.system import SystemCheckWorkflow


def test_registry_lists_workflows_and_bound_activities() -> None:
    assert SystemCheckWorkflow in WORKFLOWS
    for cls in WORKFLOWS:
        assert hasattr(cls, "__temporal_workflow_definition")
    activities = build_activities(object(), object())  # type: ignore[arg-type]
    names = {getattr(fn, "__name__", "") for fn in activities}
    assert {"check_catalog", "test_connection"} <= names
    assert all(hasattr(fn, "__temporal_activity_definition") for fn in activities)


async def test_worker_runs_a_workflow_and_stops_on_request(settings: Settings) -> None:
    own = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"task_queue": uuid.uuid4().hex})}
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(own, stop=stop, install_signal_handlers=False))
    client = await connect_temporal(own.temporal, crypto=own.crypto)
    result = await client.execute_workflow(
        SystemCheckWorkflow.run,
        SystemCheckInput(requested_by="test"),
        id=f"system-check-{uuid.uuid4().hex}",
        task_queue=own.temporal.task_queue,
    )
    assert result.catalog.schema_version >= 1
    stop.set()
    await asyncio.wait_for(task, timeout=45)
    assert task.done()
    assert task.exception() is None


async def test_worker_fails_clearly_when_temporal_is_unreachable(
    postgres: EmbeddedPostgres,
) -> None:
    unreachable = make_settings(postgres, f"127.0.0.1:{free_port()}")
    with pytest.raises(DependencyUnavailable, match="Temporal is unreachable"):
        await asyncio.wait_for(run_worker(unreachable, install_signal_handlers=False), timeout=60)
