"""``SystemCheckWorkflow``: one activity on a worker, proving the whole path works."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.system import SystemActivities
    from models.system import SystemCheckInput, SystemCheckResult


@workflow.defn(name="SystemCheckWorkflow")
class SystemCheckWorkflow:
    """Runs ``check_catalog`` once on a worker and reports what it saw."""

    @workflow.run
    async def run(self, params: SystemCheckInput) -> SystemCheckResult:
        """Check the catalog from a worker; fail fast so the caller learns quickly."""
        workflow.logger.info("system check requested by %s", params.requested_by)
        started_at = workflow.now()
        catalog = await workflow.execute_activity_method(
            SystemActivities.check_catalog,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)),
        )
        return SystemCheckResult(
            workflow_id=workflow.info().workflow_id,
            catalog=catalog,
            started_at=started_at,
            finished_at=workflow.now(),
        )
