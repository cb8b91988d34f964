"""``RegisterDatabaseWorkflow``: a ``database.created`` event registers its target and brings it
to its assigned sets, one ``MigrateTargetWorkflow`` child per set. The workflow id is derived
from the event's source and id, so a redelivered event starts nothing new."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from models.events import (
        AssignedSetsInput,
        RegisterDatabaseInput,
        RegisterDatabaseResult,
        SetOutcome,
    )
    from models.migrations import TargetRunInput
    from workflows.migrations import MigrateTargetWorkflow

STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")

CATALOG_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=[
        "Conflict",
        "NotFound",
        "InvalidInput",
        "CredentialDecryptionError",
        "ValidationError",
    ],
)


def _cause(error: BaseException) -> str:
    """The innermost message of a child's failure (the activity's own words)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


@workflow.defn(name="RegisterDatabaseWorkflow")
class RegisterDatabaseWorkflow:
    """Register an event's target, then apply each assigned set to it, one after another
    (sets order by name; ``latest`` is resolved when each child starts)."""

    @workflow.run
    async def run(self, params: RegisterDatabaseInput) -> RegisterDatabaseResult:
        """Register (a conflicting registration fails the run with its cause), then migrate
        per set; a set that fails is reported and the others still run."""
        target = await workflow.execute_activity_method(
            EventActivities.register_database,
            params,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CATALOG_RETRY,
        )
        assigned = await workflow.execute_activity_method(
            EventActivities.assigned_sets,
            AssignedSetsInput(labels=target.labels),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CATALOG_RETRY,
        )
        run_id = params.run_id
        outcomes: list[SetOutcome] = []
        for item in assigned.items:
            try:
                result = await workflow.execute_child_workflow(
                    MigrateTargetWorkflow.run,
                    TargetRunInput(
                        run_id=run_id,
                        database_id=target.database_id,
                        set_name=item.set_name,
                        target_version=item.version,
                    ),
                    id=f"{run_id}-{item.set_name}",
                )
            except ChildWorkflowError as exc:
                outcomes.append(
                    SetOutcome(
                        set_name=item.set_name,
                        requested_version=item.version,
                        ok=False,
                        failure=_cause(exc),
                    )
                )
                continue
            outcomes.append(
                SetOutcome(
                    set_name=item.set_name,
                    requested_version=item.version,
                    ok=result.failure is None,
                    from_version=result.from_version,
                    version_reached=result.to_version,
                    failure=result.failure.message if result.failure else None,
                )
            )
        ok = all(outcome.ok for outcome in outcomes)
        workflow.upsert_search_attributes(
            [STATUS_KEY.value_set("succeeded" if ok else "sets_failed")]
        )
        return RegisterDatabaseResult(
            database_id=target.database_id, name=target.name, created=target.created, sets=outcomes
        )
