"""``ReadRunOutcomesWorkflow``: what a fleet run did to some targets, read from their ledgers
on a worker (the gateway never connects to targets)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.outcomes import OutcomeActivities
    from models.outcomes import RunOutcomes, RunOutcomesRequest


@workflow.defn(name="ReadRunOutcomesWorkflow")
class ReadRunOutcomesWorkflow:
    """One read of up to 200 targets' ledgers; an unreadable target is its own null outcome,
    so only the catalog failing retries the read."""

    @workflow.run
    async def run(self, request: RunOutcomesRequest) -> RunOutcomes:
        """Each target's outcome, retried briefly."""
        return await workflow.execute_activity_method(
            OutcomeActivities.read_run_outcomes,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
