"""Workflow-level metrics from a worker interceptor: runs started and ended, provisioning time,
the latest health sweep's counts.

Workflows do no I/O, so these go through ``workflow.metric_meter()``: replay-safe (nothing is
recorded while a workflow replays, so a worker restart or a cache eviction never counts a run
twice), and carried by the worker's Temporal runtime into its metrics endpoint
(``common.telemetry.metrics``). An interceptor rather than lines in each workflow: no workflow
code (and no recorded history) changes, and a run started from anywhere (API, CLI, ``temporal``
CLI, a schedule) is counted. A run ended from outside the worker (terminated, timed out) runs
no workflow code; ``temporal_*`` server-side metrics or visibility show those.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import CancelledError, FailureError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from common.telemetry.metrics import (
    HEALTH_TARGETS,
    PROVISIONING_DURATION,
    RUNS_ENDED,
    RUNS_STARTED,
)

# The workflows that are "runs" of a migration set (fleet or single target).
RUN_WORKFLOWS = frozenset(
    {"MigrateFleetWorkflow", "MigrateTargetWorkflow", "RollbackTargetWorkflow"}
)
PROVISION_WORKFLOW = "ProvisionTenantWorkflow"
HEALTH_WORKFLOW = "FleetHealthWorkflow"
# Set by the gateway when it starts a provisioning run (the workflow input carries ids only).
MODE_MEMO = "mode"


class WorkflowMetricsInterceptor(Interceptor):
    """Registers ``_MetricsInbound`` on every workflow of the worker."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Every workflow gets the metrics interceptor."""
        del input
        return _MetricsInbound


def run_kind(params: Any) -> str:
    """A migration run's ``kind`` label: apply, rollback, adopt, baseline, or dry_run for a plan
    (provisioning runs are ``provision``)."""
    if getattr(params, "dry_run", False):
        return "dry_run"
    kind = getattr(params, "kind", None)
    return str(getattr(kind, "value", kind or "apply"))


class _MetricsInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        name = info.workflow_type
        if name in RUN_WORKFLOWS:
            return await self._run(input, run_kind(input.args[0] if input.args else None))
        if name == PROVISION_WORKFLOW:
            return await self._provision(input)
        result = await super().execute_workflow(input)
        if name == HEALTH_WORKFLOW:
            _health(result)
        return result

    async def _run(self, input: ExecuteWorkflowInput, kind: str) -> Any:
        meter = workflow.metric_meter()
        # A continued run is the same run: counted once, when its chain starts.
        if workflow.info().continued_run_id is None:
            meter.create_counter(RUNS_STARTED, "Runs started, by kind.").add(1, {"kind": kind})
        ended = meter.create_counter(RUNS_ENDED, "Runs ended, by kind and outcome.")
        try:
            result = await super().execute_workflow(input)
        except (asyncio.CancelledError, CancelledError):
            ended.add(1, {"kind": kind, "outcome": "cancelled"})
            raise
        except FailureError as error:
            outcome = "cancelled" if is_cancelled_exception(error) else "failed"
            ended.add(1, {"kind": kind, "outcome": outcome})
            raise
        status = getattr(getattr(result, "status", None), "value", None)
        ended.add(
            1, {"kind": kind, "outcome": "cancelled" if status == "cancelled" else "completed"}
        )
        return result

    async def _provision(self, input: ExecuteWorkflowInput) -> Any:
        """A provisioning run: a run of kind ``provision``, and its time by mode and outcome."""
        mode = str(workflow.memo_value(MODE_MEMO, "unknown"))
        meter = workflow.metric_meter()
        meter.create_counter(RUNS_STARTED, "Runs started, by kind.").add(1, {"kind": "provision"})
        outcome: str | None = None
        try:
            result = await super().execute_workflow(input)
            status = getattr(getattr(result, "status", None), "value", None)
            # A failed provisioning returns (after its compensations) with status failed.
            outcome = "completed" if status == "active" else "failed"
            return result
        except (asyncio.CancelledError, CancelledError):
            outcome = "cancelled"
            raise
        except FailureError as error:
            outcome = "cancelled" if is_cancelled_exception(error) else "failed"
            raise
        finally:
            # None: a workflow task failed (a bug; Temporal retries the task): the run goes on.
            if outcome is not None:
                meter.create_counter(RUNS_ENDED, "Runs ended, by kind and outcome.").add(
                    1, {"kind": "provision", "outcome": outcome}
                )
                elapsed = (workflow.now() - workflow.info().start_time).total_seconds()
                meter.create_histogram_float(
                    PROVISIONING_DURATION, "Provisioning runs, by mode and outcome.", "s"
                ).record(max(elapsed, 0.0), {"mode": mode, "outcome": outcome})


def _health(result: Any) -> None:
    counts = getattr(result, "counts", None)
    if counts is None:
        return
    gauge = workflow.metric_meter().create_gauge(
        HEALTH_TARGETS, "Targets by state in the latest health sweep."
    )
    gauge.set(counts.checked - counts.unreachable, {"state": "reachable"})
    gauge.set(counts.unreachable, {"state": "unreachable"})
    gauge.set(counts.drifted, {"state": "drifted"})
    gauge.set(counts.behind, {"state": "behind"})
