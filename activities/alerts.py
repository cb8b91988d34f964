"""``evaluate_alerts``: the fleet-wide alert conditions of deploy/prometheus/alerts.yml, measured
without Prometheus, for ``WatchAlertsWorkflow`` to turn into webhook events.

- failure rate: runs (fleet, target, rollback) closed within the window, from Temporal
  visibility, so every worker's runs count, whichever process ran them;
- workers: the distinct identities polling the task queue (``DescribeTaskQueue``), both for
  workflow and activity tasks;
- gateway errors and latency: the gateways' own ``/metrics`` (``gateway_metrics_urls``), as
  differences between two evaluations, computed the way PromQL's ``rate`` and
  ``histogram_quantile`` do.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, timedelta

import httpx
from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus

from common.settings import AlertSettings
from models.alerts import (
    AlertCondition,
    AlertEvaluation,
    AlertName,
    EvaluateAlertsInput,
    GatewaySample,
)

log = logging.getLogger(__name__)

# The workflows whose end is a run's end (the runs_ended_total metric counts the same ones).
RUN_WORKFLOWS = ("MigrateFleetWorkflow", "MigrateTargetWorkflow", "RollbackTargetWorkflow")
FAILED = frozenset(
    {
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
    }
)
# Cap on the runs read per evaluation: beyond it the rate is judged on the newest ones.
MAX_RUNS = 5000
REQUESTS = "tenantflow_http_requests_total"
DURATION_BUCKET = "tenantflow_http_request_duration_seconds_bucket"
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def parse_gateway_metrics(text: str) -> GatewaySample:
    """Requests, 5xx answers and duration buckets from one gateway's Prometheus text exposition.
    Server-Sent Event streams (routes ending in ``/stream``) are left out of the durations."""
    sample = GatewaySample()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in (REQUESTS, DURATION_BUCKET):
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        value = float(match["value"])
        if match["name"] == REQUESTS:
            sample.requests += value
            if re.fullmatch(r"5\d\d", labels.get("status", "")):
                sample.errors += value
        elif not labels.get("route", "").endswith("/stream") and "le" in labels:
            le = _le(labels["le"])
            sample.buckets[le] = sample.buckets.get(le, 0.0) + value
    return sample


def _le(raw: str) -> str:
    """A bucket bound in one spelling (``1``, ``1.0`` and ``+Inf`` forms vary by exporter)."""
    bound = float(raw)
    return "+Inf" if math.isinf(bound) else repr(bound)


def add_samples(a: GatewaySample, b: GatewaySample) -> GatewaySample:
    """Two gateways' counters summed (PromQL's ``sum``)."""
    buckets = dict(a.buckets)
    for le, count in b.buckets.items():
        buckets[le] = buckets.get(le, 0.0) + count
    return GatewaySample(
        requests=a.requests + b.requests, errors=a.errors + b.errors, buckets=buckets
    )


def difference(previous: GatewaySample, current: GatewaySample) -> GatewaySample:
    """What happened between two samples; a counter that went down means a gateway restarted,
    and then (as PromQL's ``rate`` does for a reset) the current value is what happened."""
    if current.requests < previous.requests or current.errors < previous.errors:
        return current
    buckets = {le: count - previous.buckets.get(le, 0.0) for le, count in current.buckets.items()}
    if any(count < 0 for count in buckets.values()):
        return current
    return GatewaySample(
        requests=current.requests - previous.requests,
        errors=current.errors - previous.errors,
        buckets=buckets,
    )


def histogram_quantile(q: float, buckets: dict[str, float]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative buckets: linear interpolation inside the
    bucket holding the rank; a rank in the +Inf bucket answers the highest finite bound."""
    bounds = sorted(((float(le), count) for le, count in buckets.items()), key=lambda b: b[0])
    if not bounds or not math.isinf(bounds[-1][0]) or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def gateway_conditions(
    previous: GatewaySample, current: GatewaySample, settings: AlertSettings
) -> list[AlertCondition]:
    """alert.gateway_errors and alert.gateway_latency over the time between two samples; with
    fewer than ``gateway_min_requests`` requests, neither fires."""
    window = difference(previous, current)
    enough = window.requests >= settings.gateway_min_requests
    ratio = window.errors / window.requests if window.requests > 0 else 0.0
    p95 = histogram_quantile(0.95, window.buckets) or 0.0
    detail = {"requests": window.requests, "errors": window.errors}
    return [
        AlertCondition(
            name=AlertName.GATEWAY_ERRORS,
            firing=enough and ratio > settings.gateway_error_ratio,
            value=ratio,
            threshold=settings.gateway_error_ratio,
            details=detail,
        ),
        AlertCondition(
            name=AlertName.GATEWAY_LATENCY,
            firing=enough and p95 > settings.gateway_latency_seconds,
            value=p95,
            threshold=settings.gateway_latency_seconds,
            details=detail,
        ),
    ]


class AlertActivities:
    """Holds the Temporal client (visibility, task queue), the alert settings and the queue."""

    def __init__(
        self, temporal: Client | None, settings: AlertSettings, task_queue: str = "tenantflow"
    ) -> None:
        self._temporal = temporal
        self._settings = settings
        self._task_queue = task_queue

    @activity.defn(name="evaluate_alerts")
    async def evaluate_alerts(self, params: EvaluateAlertsInput) -> AlertEvaluation:
        """Measure every condition now; the gateway ones need the previous sample."""
        if self._temporal is None:
            raise RuntimeError("evaluate_alerts needs a Temporal client")
        settings = self._settings
        conditions = [
            await self._failure_rate(self._temporal),
            await self._workers(self._temporal),
        ]
        gateway = await self._gateway_sample()
        if gateway is not None and params.previous_gateway is not None:
            conditions.extend(gateway_conditions(params.previous_gateway, gateway, settings))
        return AlertEvaluation(
            conditions=conditions,
            gateway=gateway,
            interval_seconds=settings.interval_seconds,
            no_worker_seconds=settings.no_worker_seconds,
        )

    async def _failure_rate(self, temporal: Client) -> AlertCondition:
        settings = self._settings
        since = datetime.now(UTC) - timedelta(seconds=settings.failure_rate_window_seconds)
        types = ", ".join(f"'{name}'" for name in RUN_WORKFLOWS)
        query = (
            f"WorkflowType IN ({types}) AND TaskQueue = '{_quote(self._task_queue)}' "
            f"AND CloseTime > '{since.isoformat()}'"
        )
        ended = failed = 0
        async for execution in temporal.list_workflows(query, limit=MAX_RUNS):
            # A continued run goes on in its next execution: it has not ended.
            if execution.status in (None, WorkflowExecutionStatus.CONTINUED_AS_NEW):
                continue
            ended += 1
            failed += execution.status in FAILED
        rate = failed / ended if ended else 0.0
        return AlertCondition(
            name=AlertName.FAILURE_RATE,
            firing=ended >= settings.failure_rate_min_runs and rate > settings.failure_rate,
            value=rate,
            threshold=settings.failure_rate,
            details={
                "ended": ended,
                "failed": failed,
                "window_seconds": settings.failure_rate_window_seconds,
            },
        )

    async def _workers(self, temporal: Client) -> AlertCondition:
        """Workers polling for both workflow and activity tasks within ``no_worker_seconds``."""
        recent = datetime.now(UTC) - timedelta(seconds=self._settings.no_worker_seconds)
        polling: list[set[str]] = []
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            answer = await temporal.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=temporal.namespace,
                    task_queue=TaskQueue(name=self._task_queue),
                    task_queue_type=kind,
                )
            )
            polling.append(
                {
                    poller.identity
                    for poller in answer.pollers
                    if poller.last_access_time.ToDatetime(tzinfo=UTC) >= recent
                }
            )
        workers = len(polling[0] & polling[1])
        return AlertCondition(
            name=AlertName.NO_WORKER,
            firing=workers < self._settings.min_workers,
            value=workers,
            threshold=self._settings.min_workers,
            details={"task_queue": self._task_queue},
        )

    async def _gateway_sample(self) -> GatewaySample | None:
        """The gateways' counters summed; None when there are none to read or one did not
        answer (a partial sum would look like a counter reset)."""
        urls = self._settings.gateway_metrics_urls
        if not urls:
            return None
        total = GatewaySample()
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
            for index, url in enumerate(urls):
                try:
                    response = await http.get(url)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    # The URL is configuration, but may carry credentials: name its position.
                    log.warning(
                        "gateway metrics unreadable",
                        extra={"gateway_metrics_url_index": index, "error": type(exc).__name__},
                    )
                    return None
                total = add_samples(total, parse_gateway_metrics(response.text))
        return total


def _quote(value: str) -> str:
    """A value inside a single-quoted visibility query literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
