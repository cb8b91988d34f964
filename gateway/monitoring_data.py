"""What the monitoring snapshots are computed from: Temporal visibility and queries for runs,
closed runs' histories for per-target times, the catalog's health snapshots, and Temporal's
``DescribeTaskQueue`` for the queues. Each function here runs once per snapshot, not per viewer.

Per-target migration time comes from the results of the ``run_target_batch`` activities in a
closed run's history: each target's applied versions with their ``execution_ms``, the same
numbers its ledger records, without connecting to any target. A closed execution's history
never changes, so each one is read once per gateway process and only its numbers are kept;
only the newest ``sampled_runs`` closed executions in the window are read at all."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.api.enums.v1 import EventType, TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from common.catalog.monitoring import fleet_health_totals
from common.errors import DependencyUnavailable, TenantflowError
from gateway.monitoring import percentile
from gateway.progress import ProgressCache
from gateway.routers.migrations import SET_KEY, _fetcher, _listed_status, _run_handle
from models.fleet import FleetCounts, FleetRunResult
from models.migrations import TargetRunResult
from models.monitoring import (
    ActiveRun,
    DurationPercentiles,
    FleetHealthTotals,
    Poller,
    QueueState,
    RunOutcomes,
    TargetOutcomes,
)

log = logging.getLogger(__name__)

FLEET = "WorkflowType = 'MigrateFleetWorkflow'"
BATCH_ACTIVITY = "run_target_batch"
PROGRESS_TIMEOUT_SECONDS = 5.0
DESCRIBE_TIMEOUT = timedelta(seconds=5)
# How each outcome is found in visibility (the run's own status attribute says how a run that
# returned ended; Temporal's close status how one closed any other way).
OUTCOME_QUERIES = {
    "completed": "TenantflowStatus = 'completed' AND ExecutionStatus = 'Completed'",
    "cancelled": "((TenantflowStatus = 'cancelled' AND ExecutionStatus = 'Completed') "
    "OR ExecutionStatus = 'Canceled')",
    "terminated": "ExecutionStatus = 'Terminated'",
    "failed": "ExecutionStatus = 'Failed'",
    "timed_out": "ExecutionStatus = 'TimedOut'",
}


def temporal_unavailable(exc: BaseException) -> DependencyUnavailable:
    """Temporal not answering, as the 503 every monitoring route gives for it."""
    cause = getattr(exc, "message", None) or type(exc).__name__
    return DependencyUnavailable(
        "Temporal did not answer", details={"dependency": "temporal", "cause": str(cause)[:300]}
    )


async def active_runs(
    temporal: Client, cache: ProgressCache, limit: int
) -> tuple[list[ActiveRun], bool]:
    """Open fleet runs (newest first, at most ``limit``) with their progress, read through the
    progress cache the run pages use; whether more were open."""
    if limit == 0:
        return [], False
    executions = [
        e
        async for e in temporal.list_workflows(
            f"{FLEET} AND ExecutionStatus = 'Running'", limit=limit + 1, page_size=limit + 1
        )
    ]
    runs = await asyncio.gather(*(_active_run(temporal, cache, e) for e in executions[:limit]))
    return list(runs), len(executions) > limit


async def _active_run(
    temporal: Client, cache: ProgressCache, execution: WorkflowExecution
) -> ActiveRun:
    run_id = execution.id.removeprefix("migrate-fleet-")
    run = ActiveRun(
        run_id=run_id,
        set_name=execution.typed_search_attributes.get(SET_KEY),
        status=_listed_status(execution),
        started_at=execution.start_time,
    )
    try:
        async with asyncio.timeout(PROGRESS_TIMEOUT_SECONDS):
            snapshot = await cache.get(run_id, _fetcher(_run_handle(temporal, run_id), run_id))
    except (TenantflowError, TimeoutError, RPCError) as exc:
        run.progress_error = getattr(exc, "message", None) or "no worker answered the query"
        return run
    progress = snapshot.progress
    counts = progress.counts
    finished = counts.succeeded + counts.failed + counts.up_to_date
    run.status = progress.status.value
    run.total, run.total_known, run.counts = progress.total, progress.total_known, counts
    run.percent_done = round(finished * 100 / progress.total, 1) if progress.total else None
    run.throughput_per_minute = progress.throughput_per_minute
    run.eta_seconds = progress.eta_seconds
    run.paused_reason = progress.paused_reason
    return run


async def run_outcomes(temporal: Client, since: datetime, window_hours: float) -> RunOutcomes:
    """Fleet runs closed since ``since``, counted per outcome by visibility (no history read)."""
    closed = f"{FLEET} AND CloseTime > '{since.isoformat()}'"
    counts = await asyncio.gather(
        *(temporal.count_workflows(f"{closed} AND {q}") for q in OUTCOME_QUERIES.values())
    )
    return RunOutcomes(
        window_hours=window_hours,
        **{name: c.count for name, c in zip(OUTCOME_QUERIES, counts, strict=True)},
    )


@dataclass(frozen=True)
class RunFacts:
    """What one closed execution of a fleet run contributes: per-target migration times and,
    when it returned, its targets per outcome."""

    durations_ms: list[float]
    counts: FleetCounts | None


@dataclass
class ClosedRunReader:
    """Reads closed executions' histories, each once per process (bounded by ``max_runs``)."""

    max_runs: int = 1000
    reads: int = 0
    _facts: OrderedDict[tuple[str, str], RunFacts] = field(default_factory=OrderedDict)

    async def sample(
        self, temporal: Client, since: datetime, limit: int
    ) -> tuple[TargetOutcomes, DurationPercentiles]:
        """Failure rate and per-target time percentiles over the newest ``limit`` closed
        executions (continued-as-new segments included: each holds its own targets' results)."""
        facts: list[RunFacts] = []
        if limit > 0:
            query = f"{FLEET} AND CloseTime > '{since.isoformat()}'"
            executions = [
                e async for e in temporal.list_workflows(query, limit=limit, page_size=limit)
            ]
            facts = list(await asyncio.gather(*(self._read(temporal, e) for e in executions)))
        outcomes = TargetOutcomes(sampled_runs=sum(1 for f in facts if f.counts is not None))
        for fact in facts:
            if fact.counts is not None:
                outcomes.succeeded += fact.counts.succeeded
                outcomes.failed += fact.counts.failed
                outcomes.up_to_date += fact.counts.up_to_date
        finished = outcomes.succeeded + outcomes.failed + outcomes.up_to_date
        if finished:
            outcomes.failure_rate = round(outcomes.failed / finished, 4)
        durations = sorted(d for f in facts for d in f.durations_ms)
        times = DurationPercentiles(
            samples=len(durations),
            p50_ms=round(percentile(durations, 0.5), 3) if durations else None,
            p95_ms=round(percentile(durations, 0.95), 3) if durations else None,
        )
        return outcomes, times

    async def _read(self, temporal: Client, execution: WorkflowExecution) -> RunFacts:
        key = (execution.id, execution.run_id)
        known = self._facts.get(key)
        if known is not None:
            self._facts.move_to_end(key)
            return known
        facts = await self._from_history(temporal, execution)
        self.reads += 1
        self._facts[key] = facts
        while len(self._facts) > self.max_runs:
            self._facts.popitem(last=False)
        return facts

    async def _from_history(self, temporal: Client, execution: WorkflowExecution) -> RunFacts:
        handle = temporal.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        converter = temporal.data_converter
        scheduled: dict[int, str] = {}
        durations: list[float] = []
        counts: FleetCounts | None = None
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                if scheduled.get(done.scheduled_event_id) != BATCH_ACTIVITY:
                    continue
                [results] = await converter.decode(done.result.payloads, [list[TargetRunResult]])
                durations += _durations(results)
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                completed = event.workflow_execution_completed_event_attributes
                [result] = await converter.decode(completed.result.payloads, [FleetRunResult])
                counts = result.counts
        return RunFacts(durations, counts)


def _durations(results: Sequence[TargetRunResult]) -> list[float]:
    """Each target's migration time: the sum of its applied versions' ``execution_ms``
    (targets that applied nothing, and dry runs, took no migration time)."""
    return [sum(a.execution_ms for a in r.applied) for r in results if r.applied and not r.dry_run]


async def health_totals(pool: asyncpg.Pool, labels: dict[str, str]) -> FleetHealthTotals:
    """The health part of the summary; the catalog not answering is a 503."""
    try:
        return await fleet_health_totals(pool, labels)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DependencyUnavailable(
            "the catalog did not answer",
            details={"dependency": "catalog", "cause": type(exc).__name__},
        ) from None


_QUEUE_TYPES = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}


async def task_queues(temporal: Client, task_queue: str) -> list[QueueState]:
    """The workflow and activity sides of ``task_queue``: backlog (``report_stats``) and the
    workers polling it, as Temporal's ``DescribeTaskQueue`` reports them."""
    return list(
        await asyncio.gather(
            *(_describe(temporal, task_queue, name, kind) for name, kind in _QUEUE_TYPES.items())
        )
    )


async def _describe(
    temporal: Client, task_queue: str, name: str, kind: TaskQueueType.ValueType
) -> QueueState:
    response = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
            report_stats=True,
        ),
        retry=True,
        timeout=DESCRIBE_TIMEOUT,
    )
    pollers = [
        Poller(
            identity=p.identity,
            last_access_time=p.last_access_time.ToDatetime(tzinfo=UTC)
            if p.HasField("last_access_time")
            else None,
        )
        for p in response.pollers
    ]
    state = QueueState(
        task_queue=task_queue,
        type=name,
        backlog=None,
        polled=bool(pollers),
        pollers=pollers,
    )
    if response.HasField("stats"):
        stats = response.stats
        state.backlog = stats.approximate_backlog_count
        state.backlog_age_seconds = stats.approximate_backlog_age.ToTimedelta().total_seconds()
        state.tasks_add_rate = round(stats.tasks_add_rate, 3)
        state.tasks_dispatch_rate = round(stats.tasks_dispatch_rate, 3)
    return state
