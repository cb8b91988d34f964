"""``/api/v1/monitoring``: the fleet at a glance (summary) and the machinery's own performance."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from models.fleet import FleetCounts


class ActiveRun(BaseModel):
    """A fleet run still open (running, paused or cancelling), with its live progress."""

    run_id: str
    set_name: str | None
    status: str
    started_at: datetime | None
    total: int | None = None
    total_known: bool | None = None
    counts: FleetCounts | None = None
    percent_done: float | None = Field(
        default=None, description="Finished targets (any outcome) of the known total."
    )
    throughput_per_minute: float | None = None
    eta_seconds: float | None = None
    paused_reason: str | None = None
    progress_error: str | None = Field(
        default=None, description="Why the progress could not be read (no worker answered)."
    )


class RunOutcomes(BaseModel):
    """Fleet runs closed within the window, by how they ended."""

    window_hours: float
    completed: int = 0
    cancelled: int = 0
    terminated: int = 0
    failed: int = 0
    timed_out: int = 0


class DurationPercentiles(BaseModel):
    """Percentiles of a set of durations, in milliseconds."""

    samples: int
    p50_ms: float | None
    p95_ms: float | None


class TargetOutcomes(BaseModel):
    """Targets of the sampled closed runs, by outcome: the failure rate's basis."""

    sampled_runs: int = Field(description="Closed runs read (newest first, within the window).")
    succeeded: int = 0
    failed: int = 0
    up_to_date: int = 0
    failure_rate: float | None = Field(
        default=None, description="failed / (succeeded + failed + up_to_date); null: none."
    )


class SetHealth(BaseModel):
    """One set's targets as the latest health snapshots saw them."""

    set_name: str
    targets: int
    versions: dict[str, int] = Field(
        description="Targets per ledger version; ``none`` for targets with no version applied."
    )
    behind: int
    drifted: int


class FleetHealthTotals(BaseModel):
    """Checked targets (latest snapshot each) and how many of them are in trouble."""

    checked: int
    unreachable: int
    drifted: int
    behind: int
    sets: list[SetHealth]


class MonitoringSummary(BaseModel):
    """``GET /api/v1/monitoring/summary``."""

    generated_at: datetime = Field(description="When this shared snapshot was computed.")
    labels: dict[str, str] = Field(description="The health part covers targets with these.")
    active_runs: list[ActiveRun]
    active_runs_truncated: bool
    outcomes: RunOutcomes
    targets: TargetOutcomes
    target_migration_time: DurationPercentiles = Field(
        description="Per-target migration time (the sum of its applied versions' execution_ms, "
        "as its ledger records it) over the sampled closed runs."
    )
    health: FleetHealthTotals


class RouteLatency(BaseModel):
    """Latency of one route template in this gateway process (time to the response's start)."""

    route: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class Poller(BaseModel):
    """A worker that polled the queue recently."""

    identity: str
    last_access_time: datetime | None


class QueueState(BaseModel):
    """One task queue type (workflow or activity) as Temporal describes it."""

    task_queue: str
    type: str
    backlog: int | None = Field(description="Approximate tasks waiting; null: not reported.")
    backlog_age_seconds: float | None = None
    tasks_add_rate: float | None = None
    tasks_dispatch_rate: float | None = None
    polled: bool = Field(description="Whether any worker polls it.")
    pollers: list[Poller]


class MonitoringPerformance(BaseModel):
    """``GET /api/v1/monitoring/performance``."""

    generated_at: datetime
    latency_scope: str = Field(
        default="process",
        description="Latencies are this gateway process's own (each replica keeps its own).",
    )
    latency_window_seconds: float
    routes: list[RouteLatency]
    task_queues: list[QueueState]
