"""Entry point of ``tenantflow worker``: poll the task queue until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Interceptor, PollerBehaviorSimpleMaximum, Worker

from common import network_policy
from common.catalog import open_catalog
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from common.telemetry.metrics import WorkerMetrics
from common.telemetry.tracing import start_tracing
from common.telemetry.workflow_metrics import WorkflowMetricsInterceptor
from common.temporal_client import connect_temporal
from worker.registry import WORKFLOWS, build_activities
from worker.schedules import ensure_alert_watch, ensure_health_schedule

log = logging.getLogger(__name__)


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
) -> None:
    """Run a worker until ``stop`` is set or the process receives SIGTERM/SIGINT.

    On a stop request the worker stops polling, lets running activities finish (up to the graceful
    timeout) and closes the catalog pool; a killed worker's activities are retried elsewhere by
    Temporal.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    # Its own Temporal runtime, whose metrics (the SDK's and tenantflow's) this worker serves.
    metrics = WorkerMetrics(settings.telemetry)
    catalog = await open_catalog(settings.catalog)
    tracing = None
    try:
        tracing = start_tracing(settings.telemetry, "worker")
        client = await connect_temporal(
            settings.temporal,
            crypto=settings.crypto,
            interceptors=tracing.interceptors if tracing else (),
            runtime=metrics.runtime,
        )
        worker = build_worker(
            settings,
            client,
            catalog,
            interceptors=[WorkflowMetricsInterceptor()] if metrics.runtime else [],
        )
        log.info(
            "worker started",
            extra={
                "task_queue": settings.temporal.task_queue,
                "namespace": settings.temporal.namespace,
                "activity_slots": settings.worker.max_concurrent_activities,
                "temporal": settings.temporal.address,
            },
        )
        await ensure_health_schedule(client, settings.health, settings.temporal.task_queue)
        await ensure_alert_watch(client, settings.alerts, settings.temporal.task_queue)
        async with metrics.serving(), worker:
            await stop.wait()
            log.info("worker stopping: draining running activities")
        log.info("worker stopped")
    finally:
        await catalog.close()
        if tracing is not None:
            await tracing.shutdown()


def build_worker(
    settings: Settings,
    client: Client,
    catalog: asyncpg.Pool,
    *,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """Every workflow and activity on the task queue, sized by ``settings.worker``."""
    # The activities' target connections follow this worker's allow-list, not the process's
    # default settings (they are the same for `tenantflow worker`; not for embedded workers).
    network_policy.configure(settings.network)
    sizing = settings.worker
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            catalog,
            CredentialCipher(KeyRing.from_settings(settings.crypto)),
            temporal=client,
            webhook_settings=settings.webhooks,
            task_queue=settings.temporal.task_queue,
            catalog_dsn=settings.catalog.dsn.get_secret_value(),
            templates=settings.provisioning.templates,
            alert_settings=settings.alerts,
        ),
        max_concurrent_activities=sizing.max_concurrent_activities,
        max_concurrent_workflow_tasks=sizing.max_concurrent_workflow_tasks,
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=sizing.activity_pollers),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=sizing.workflow_pollers),
        disable_eager_activity_execution=not sizing.eager_activities,
        graceful_shutdown_timeout=timedelta(seconds=sizing.graceful_shutdown_seconds),
        interceptors=list(interceptors),
    )
