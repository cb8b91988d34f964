"""BuildTenantTemplateWorkflow: the template database of the provisioning fast path.

Started by the first provisioning run that finds no ready template for its server and set
versions, and left to run on its own (that run and those racing it take the slow path). A failed
build is undone: its half-built database is dropped and the template marked failed.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.templates import TemplateActivities
    from models.templates import TemplateBuild, TemplateDiscard, TemplateStatus

BUILD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=["MigrationFailed", "ForeignObject", "NotFound"],
)
# Dropping a half-built database must not give up on a passing outage.
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=100,
)


@workflow.defn(name="BuildTenantTemplateWorkflow")
class BuildTenantTemplateWorkflow:
    """Build, then retire the templates it replaces; on failure, discard it."""

    @workflow.run
    async def run(self, build: TemplateBuild) -> TemplateStatus:
        """The template's final status: ready, or failed (after the cleanup)."""
        try:
            await workflow.execute_activity_method(
                TemplateActivities.build,
                build,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=BUILD_RETRY,
            )
        except ActivityError as error:
            cause = error.cause if error.cause is not None else error
            await workflow.execute_activity_method(
                TemplateActivities.discard,
                TemplateDiscard(build=build, error=str(cause) or type(cause).__name__),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=UNDO_RETRY,
            )
            return TemplateStatus.FAILED
        await workflow.execute_activity_method(
            TemplateActivities.retire,
            build,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=UNDO_RETRY,
        )
        return TemplateStatus.READY
