"""The workflow metrics interceptor on a real Temporal dev server: runs that fail, are cancelled
or continue as new, provisioning runs that fail or are cancelled, and a health sweep without
counts, each read back from the worker runtime's metric buffer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from cli.temporal_server import TemporalDevServer
from common.telemetry.metrics import (
    HEALTH_TARGETS,
    PROVISIONING_DURATION,
    RUNS_ENDED,
    RUNS_STARTED,
)
from common.telemetry.workflow_metrics import MODE_MEMO, WorkflowMetricsInterceptor

LABELS = frozenset({"kind", "outcome", "mode", "state"})


@dataclass
class Params:
    """What the interceptor reads of a run's input (its kind, dry_run)."""

    kind: str = "apply"
    dry_run: bool = False
    continued: bool = False
    fail: bool = False


@workflow.defn(name="MigrateFleetWorkflow")
class FailingRun:
    @workflow.run
    async def run(self, params: Params) -> None:
        raise ApplicationError(f"the {params.kind} run failed", non_retryable=True)


@workflow.defn(name="MigrateTargetWorkflow")
class WaitingRun:
    @workflow.run
    async def run(self, params: Params) -> None:
        await workflow.wait_condition(lambda: params.continued)


@workflow.defn(name="RollbackTargetWorkflow")
class ContinuedRun:
    @workflow.run
    async def run(self, params: Params) -> Params:
        if not params.continued:
            workflow.continue_as_new(replace(params, continued=True))
        return params


@workflow.defn(name="ProvisionTenantWorkflow")
class Provisioning:
    @workflow.run
    async def run(self, params: Params) -> None:
        if params.fail:
            raise ApplicationError("provisioning failed", non_retryable=True)
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="FleetHealthWorkflow")
class HealthWithoutCounts:
    @workflow.run
    async def run(self) -> None:
        return None


class Metrics:
    def __init__(self, buffer: MetricBuffer, client: Client, task_queue: str) -> None:
        self.buffer = buffer
        self.client = client
        self.task_queue = task_queue
        self.seen: list[tuple[str, dict[str, str | int | float | bool], float]] = []

    def read(self) -> list[tuple[str, dict[str, str | int | float | bool], float]]:
        for update in self.buffer.retrieve_updates():
            # Ours only: the SDK adds its own (namespace, task queue, workflow type).
            ours = {k: v for k, v in update.attributes.items() if k in LABELS}
            self.seen.append((update.metric.name, ours, float(update.value)))
        return self.seen

    def named(self, name: str) -> list[dict[str, str | int | float | bool]]:
        return [attributes for metric, attributes, _ in self.read() if metric == name]

    async def start(self, name: str, *args: Any, **options: Any) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            name,
            args=list(args),
            id=f"wm-{uuid.uuid4().hex[:10]}",
            task_queue=self.task_queue,
            execution_timeout=timedelta(seconds=60),
            **options,
        )


@pytest.fixture
async def metrics(temporal_server: TemporalDevServer) -> AsyncIterator[Metrics]:
    buffer = MetricBuffer(10_000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    client = await Client.connect(
        temporal_server.address, namespace=temporal_server.namespace, runtime=runtime
    )
    task_queue = f"wm-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FailingRun, WaitingRun, ContinuedRun, Provisioning, HealthWithoutCounts],
        interceptors=[WorkflowMetricsInterceptor()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        yield Metrics(buffer, client, task_queue)


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the metric never arrived")


async def test_failed_cancelled_and_continued_runs_are_counted_once_each(
    metrics: Metrics,
) -> None:
    failing = await metrics.start("MigrateFleetWorkflow", Params())
    with pytest.raises(WorkflowFailureError):
        await failing.result()
    waiting = await metrics.start("MigrateTargetWorkflow", Params(kind="rollback"))
    continued = await metrics.start("RollbackTargetWorkflow", Params(dry_run=True))
    assert await continued.result() == {
        "kind": "apply",
        "dry_run": True,
        "continued": True,
        "fail": False,
    }
    await _until(lambda: {"kind": "rollback"} in metrics.named(RUNS_STARTED))
    await waiting.cancel()
    with pytest.raises(WorkflowFailureError):
        await waiting.result()

    def ended() -> list[dict[str, str | int | float | bool]]:
        return metrics.named(RUNS_ENDED)

    await _until(lambda: len(ended()) == 3)
    assert sorted((e["kind"], e["outcome"]) for e in ended()) == [
        ("apply", "failed"),
        ("dry_run", "completed"),
        ("rollback", "cancelled"),
    ]
    # The continued run counts as started once, when its chain began.
    assert sorted(str(s["kind"]) for s in metrics.named(RUNS_STARTED)) == [
        "apply",
        "dry_run",
        "rollback",
    ]


async def test_failed_and_cancelled_provisioning_are_timed_by_mode_and_outcome(
    metrics: Metrics,
) -> None:
    failing = await metrics.start(
        "ProvisionTenantWorkflow", Params(fail=True), memo={MODE_MEMO: "new"}
    )
    with pytest.raises(WorkflowFailureError):
        await failing.result()
    waiting = await metrics.start("ProvisionTenantWorkflow", Params(), memo={MODE_MEMO: "template"})
    await _until(lambda: len(metrics.named(RUNS_STARTED)) == 2)
    await waiting.cancel()
    with pytest.raises(WorkflowFailureError):
        await waiting.result()
    await _until(lambda: len(metrics.named(PROVISIONING_DURATION)) == 2)
    assert sorted((d["mode"], d["outcome"]) for d in metrics.named(PROVISIONING_DURATION)) == [
        ("new", "failed"),
        ("template", "cancelled"),
    ]
    assert sorted(str(e["outcome"]) for e in metrics.named(RUNS_ENDED)) == [
        "cancelled",
        "failed",
    ]


async def test_a_health_sweep_without_counts_sets_no_gauge(metrics: Metrics) -> None:
    handle = await metrics.start("FleetHealthWorkflow")
    assert await handle.result() is None
    await asyncio.sleep(0.5)  # what the worker recorded has reached the buffer
    assert metrics.named(HEALTH_TARGETS) == []
