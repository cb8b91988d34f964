"""``/api/v1/monitoring``: the fleet at a glance and the machinery's performance, each served
from a short-lived snapshot shared by every viewer (``gateway.monitoring.SnapshotCache``), so a
wall of dashboards costs one computation per ``TENANTFLOW_MONITORING__SNAPSHOT_SECONDS``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from temporalio.service import RPCError

from common.settings import MonitoringSettings, Settings
from gateway.auth.deps import MonitoringRead
from gateway.deps import CatalogDep, SettingsDep, TemporalDep
from gateway.monitoring import LatencyWindow, SnapshotCache
from gateway.monitoring_data import (
    ClosedRunReader,
    active_runs,
    health_totals,
    run_outcomes,
    task_queues,
    temporal_unavailable,
)
from gateway.routers.databases import parse_label_filters
from gateway.routers.migrations import CacheDep
from models.errors import ErrorResponse
from models.monitoring import MonitoringPerformance, MonitoringSummary

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])

ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Temporal or the catalog did not answer."},
}


@dataclass
class Monitoring:
    """The monitoring state of one gateway process."""

    settings: MonitoringSettings
    snapshots: SnapshotCache
    latency: LatencyWindow
    closed_runs: ClosedRunReader = field(default_factory=ClosedRunReader)


def install_monitoring(app: FastAPI, settings: Settings) -> None:
    """Keep the monitoring state on ``app.state`` (its latency window is fed by the gateway's
    request-timing middleware)."""
    config = settings.monitoring
    app.state.monitoring = Monitoring(
        settings=config,
        snapshots=SnapshotCache(max_age=config.snapshot_seconds),
        latency=LatencyWindow(
            samples=config.latency_samples, max_age=config.latency_window_seconds
        ),
    )


async def get_monitoring(request: Request) -> Monitoring:
    """The process's monitoring state."""
    monitoring: Monitoring = request.app.state.monitoring
    return monitoring


MonitoringDep = Annotated[Monitoring, Depends(get_monitoring)]


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


@router.get(
    "/summary",
    summary="The fleet at a glance",
    response_model=MonitoringSummary,
    responses=ERRORS,
)
async def get_summary(
    principal: MonitoringRead,
    monitoring: MonitoringDep,
    temporal: TemporalDep,
    catalog: CatalogDep,
    progress: CacheDep,
    label: Annotated[
        list[str] | None,
        Query(description="The health part covers targets with these labels (key=value)."),
    ] = None,
) -> Response:
    """Active runs with their progress; runs closed in the window by outcome; the failure rate
    and p50/p95 per-target migration time over the newest closed runs; checked, unreachable,
    drifted and behind targets, and each set's targets per version, from the latest health
    snapshots. ``generated_at`` says when the shared snapshot was computed."""
    del principal
    labels = parse_label_filters(label or [])
    config = monitoring.settings

    async def compute() -> bytes:
        now = datetime.now(UTC)
        since = now - timedelta(hours=config.window_hours)
        try:
            (runs, truncated), outcomes, (targets, times) = await asyncio.gather(
                active_runs(temporal, progress, config.max_active_runs),
                run_outcomes(temporal, since, config.window_hours),
                monitoring.closed_runs.sample(temporal, since, config.sampled_runs),
            )
        except (RPCError, RuntimeError) as exc:
            raise temporal_unavailable(exc) from None
        summary = MonitoringSummary(
            generated_at=now,
            labels=labels,
            active_runs=runs,
            active_runs_truncated=truncated,
            outcomes=outcomes,
            targets=targets,
            target_migration_time=times,
            health=await health_totals(catalog, labels),
        )
        return summary.model_dump_json().encode()

    key = ("summary", tuple(sorted(labels.items())))
    return _json(await monitoring.snapshots.get(key, compute))


@router.get(
    "/performance",
    summary="Gateway latency per route and the task queue's backlog and workers",
    response_model=MonitoringPerformance,
    responses=ERRORS,
)
async def get_performance(
    principal: MonitoringRead,
    monitoring: MonitoringDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """Latency percentiles per route template, measured by this gateway process over its last
    ``latency_window_seconds`` (each replica keeps its own: Prometheus has the fleet's); the
    task queue's workflow and activity sides with their backlog and the workers polling them."""
    del principal

    async def compute() -> bytes:
        now = datetime.now(UTC)
        try:
            queues = await task_queues(temporal, settings.temporal.task_queue)
        except (RPCError, RuntimeError) as exc:
            raise temporal_unavailable(exc) from None
        performance = MonitoringPerformance(
            generated_at=now,
            latency_window_seconds=monitoring.settings.latency_window_seconds,
            routes=monitoring.latency.summary(),
            task_queues=queues,
        )
        return performance.model_dump_json().encode()

    return _json(await monitoring.snapshots.get(("performance",), compute))
