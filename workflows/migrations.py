"""Per-target migration workflows: apply (or plan) and roll back one target."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.migrations import MigrationActivities
    from models.migrations import (
        Ledger,
        LedgerRequest,
        TargetRunInput,
        TargetRunKind,
        TargetRunResult,
    )

# Lock timeouts and crashed workers are retried with backoff; a version that committed is never
# applied again (the activity re-reads the ledger under the target's lock).
TARGET_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=[
        "NotFound",
        "InvalidInput",
        "CredentialDecryptionError",
        "InvalidCatalogNameError",
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
    ],
)


async def run_target(params: TargetRunInput) -> TargetRunResult:
    """Run the engine on one target as one activity (heartbeating; retried on crashes)."""
    return await workflow.execute_activity_method(
        MigrationActivities.run_target,
        params,
        start_to_close_timeout=timedelta(hours=6),
        heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
        retry_policy=TARGET_RETRY,
    )


@workflow.defn(name="MigrateTargetWorkflow")
class MigrateTargetWorkflow:
    """Apply a set to one target up to the latest or a given version (or plan it: dry run)."""

    @workflow.run
    async def run(self, params: TargetRunInput) -> TargetRunResult:
        """Apply pending versions; the result says what was applied and what failed."""
        return await run_target(params.model_copy(update={"kind": TargetRunKind.APPLY}))


@workflow.defn(name="RollbackTargetWorkflow")
class RollbackTargetWorkflow:
    """Roll one target back to a version with the down scripts, newest first."""

    @workflow.run
    async def run(self, params: TargetRunInput) -> TargetRunResult:
        """Undo versions above ``target_version``; refused before any change if a down
        script is missing."""
        return await run_target(params.model_copy(update={"kind": TargetRunKind.ROLLBACK}))


@workflow.defn(name="ReadLedgerWorkflow")
class ReadLedgerWorkflow:
    """Reads one target's ledger on a worker (the gateway never connects to targets)."""

    @workflow.run
    async def run(self, request: LedgerRequest) -> Ledger:
        """One read, retried briefly."""
        return await workflow.execute_activity_method(
            MigrationActivities.read_ledger,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["NotFound"]),
        )
