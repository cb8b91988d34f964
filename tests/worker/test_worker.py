"""The worker entry point: registers what exists, runs workflows, stops cleanly."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.worker import PollerBehaviorSimpleMaximum

from cli.stack import EmbeddedPostgres, free_port
from common.catalog import open_catalog
from common.errors import DependencyUnavailable
from common.settings import Settings, WorkerSettings
from common.temporal_client import connect_temporal
from models.system import SystemCheckInput
from tests.conftest import make_settings
from worker.main import build_worker, run_worker
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


async def test_worker_settings_size_the_worker(settings: Settings) -> None:
    sized = settings.model_copy(
        update={
            "worker": WorkerSettings(
                max_concurrent_activities=7,
                max_concurrent_workflow_tasks=9,
                activity_pollers=3,
                workflow_pollers=4,
                eager_activities=False,
                graceful_shutdown_seconds=12,
            )
        }
    )
    client = await connect_temporal(sized.temporal, crypto=sized.crypto)
    catalog = await open_catalog(sized.catalog)
    try:
        config = build_worker(sized, client, catalog).config()
    finally:
        await catalog.close()
    assert config.get("max_concurrent_activities") == 7
    assert config.get("max_concurrent_workflow_tasks") == 9
    assert config.get("activity_task_poller_behavior") == PollerBehaviorSimpleMaximum(maximum=3)
    assert config.get("workflow_task_poller_behavior") == PollerBehaviorSimpleMaximum(maximum=4)
    assert config.get("disable_eager_activity_execution") is True
    assert config.get("graceful_shutdown_timeout") == timedelta(seconds=12)


def test_worker_defaults_keep_the_sdk_sizes_and_start_activities_eagerly() -> None:
    defaults = WorkerSettings()
    assert defaults.max_concurrent_activities == defaults.max_concurrent_workflow_tasks == 100
    assert (defaults.activity_pollers, defaults.workflow_pollers) == (5, 5)
    # On: a run's batches skip matching while the worker has slots; the surplus reaches every
    # worker on the queue (test_two_workers.py).
    assert defaults.eager_activities is True
    with pytest.raises(ValueError, match="workflow_pollers"):
        WorkerSettings(workflow_pollers=1)
