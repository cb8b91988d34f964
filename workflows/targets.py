"""``TestConnectionWorkflow``: a worker connects to one target with its stored credentials."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.targets import TargetActivities
    from models.databases import ConnectionTestInput, ConnectionTestResult


@workflow.defn(name="TestConnectionWorkflow")
class TestConnectionWorkflow:
    """Runs ``test_connection`` once; the input and result carry ids and outcomes only."""

    @workflow.run
    async def run(self, params: ConnectionTestInput) -> ConnectionTestResult:
        """Test the connection, retrying only infrastructure failures (catalog, worker)."""
        return await workflow.execute_activity_method(
            TargetActivities.test_connection,
            params,
            start_to_close_timeout=timedelta(seconds=params.timeout_seconds + 10),
            retry_policy=RetryPolicy(
                maximum_attempts=3,
                initial_interval=timedelta(seconds=1),
                non_retryable_error_types=["NotFound", "CredentialDecryptionError"],
            ),
        )
