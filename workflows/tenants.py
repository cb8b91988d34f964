"""Tenant workflows: provision (a saga with compensations), deprovision, rotate the password.

Every step is an idempotent activity; inputs and results carry tenant ids and versions, never a
password. Any failure or a cancel of a provisioning run undoes what was done, in reverse, and
the tenant ends ``failed`` with the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.templates import TemplateActivities
    from activities.tenants import TenantActivities
    from models.migrations import TargetRunInput, TargetRunKind
    from models.templates import TemplateBuild, TemplateChoice, template_run_id
    from models.tenants import TenantJob, TenantOutcome, TenantStatus
    from models.webhooks import EventOut, WebhookEventType

from workflows.migrations import run_target
from workflows.templates import BuildTenantTemplateWorkflow
from workflows.webhooks import emit

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=[
        "NotFound",
        "InvalidInput",
        "ForeignObject",
        "Conflict",
        "CredentialDecryptionError",
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
    ],
)
# Undoing must not give up on a passing outage: retried for a long while.
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=100,
    non_retryable_error_types=["ForeignObject"],
)
STEP_TIMEOUT = timedelta(minutes=2)
# A tenant waits on its provisioning: a dead worker's migration is picked up again this soon.
PROVISION_HEARTBEAT_SECONDS = 10.0


async def _step(activity: Any, arg: object, *, undo: bool = False) -> Any:
    return await workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=STEP_TIMEOUT,
        retry_policy=UNDO_RETRY if undo else STEP_RETRY,
    )


def _cause(error: BaseException) -> str:
    """The innermost message of a failure (an activity's own error, not Temporal's wrapper)."""
    if is_cancelled_exception(error):
        return "cancelled"
    while isinstance(error, (ActivityError, ChildWorkflowError)) and error.cause is not None:
        error = error.cause
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return str(error)[:1000] or type(error).__name__


async def _announce(kind: WebhookEventType, job: TenantJob, outcome: TenantOutcome) -> None:
    """A webhook event about the tenant, its id derived from the run (a retry repeats it). A
    publish that keeps failing is logged: the tenant's outcome stands without it."""
    try:
        await emit(
            EventOut(
                id=f"{job.run_id}-{kind.value.split('.')[1]}"[:128],
                type=kind,
                subject=f"tenant/{job.tenant_id}",
                data=outcome.model_dump(mode="json"),
                time=workflow.now(),
            )
        )
    except ActivityError as error:
        workflow.logger.warning("tenant event %s not published: %s", kind.value, _cause(error))


async def _start_template_build(build: TemplateBuild) -> None:
    """Start the template's build on its own (it outlives this run); one already running for
    the same key is fine."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await workflow.start_child_workflow(
            BuildTenantTemplateWorkflow.run,
            build,
            id=template_run_id(build.key),
            parent_close_policy=ParentClosePolicy.ABANDON,
        )


async def _undo(job: TenantJob) -> None:
    """Compensations in reverse order of the steps; each is safe when its step never ran."""
    await _step(TenantActivities.remove_target, job, undo=True)
    await _step(TenantActivities.drop_storage, job, undo=True)
    await _step(TenantActivities.drop_role, job, undo=True)


@workflow.defn(name="ProvisionTenantWorkflow")
class ProvisionTenantWorkflow:
    """Role, database or schema, target, migrations, active; undone on failure or cancel."""

    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def step(self) -> str:
        """The step the run is at (for a progress line)."""
        return self._step

    @workflow.run
    async def run(self, job: TenantJob) -> TenantOutcome:
        """Provision ``job.tenant_id``; the outcome says active (with versions) or failed."""
        versions: dict[str, str | None] = {}
        try:
            self._step = "role"
            await _step(TenantActivities.create_role, job)
            if workflow.patched("tenant-template"):
                self._step = "template"
                choice: TemplateChoice = await _step(TemplateActivities.choose, job)
                if choice.build is not None:
                    await _start_template_build(choice.build)
            self._step = "storage"
            await _step(TenantActivities.create_storage, job)
            self._step = "target"
            target = await workflow.execute_activity_method(
                TenantActivities.register_target,
                job,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            for plan in target.sets:
                self._step = f"migrate {plan.set_name}"
                result = await run_target(
                    TargetRunInput(
                        run_id=job.run_id,
                        database_id=target.database_id,
                        set_name=plan.set_name,
                        kind=TargetRunKind.APPLY,
                        target_version=plan.target_version,
                        heartbeat_timeout_seconds=PROVISION_HEARTBEAT_SECONDS,
                    )
                )
                if result.failure is not None:
                    raise ApplicationError(
                        f"set {plan.set_name}, version {result.failure.version}: "
                        f"{result.failure.message}",
                        type="MigrationFailed",
                        non_retryable=True,
                    )
                versions[plan.set_name] = result.to_version
            self._step = "activate"
            outcome = TenantOutcome(
                tenant_id=job.tenant_id, status=TenantStatus.ACTIVE, versions=versions
            )
            await _step(TenantActivities.activate, outcome)
            self._step = "done"
            await _announce(WebhookEventType.TENANT_PROVISIONED, job, outcome)
            return outcome
        except BaseException as error:  # cancellation is not an Exception
            cause = _cause(error)
            self._step = "undoing"
            await _undo(job)
            failed = TenantOutcome(tenant_id=job.tenant_id, status=TenantStatus.FAILED, error=cause)
            await _step(TenantActivities.finish, failed, undo=True)
            self._step = "failed"
            await _announce(WebhookEventType.TENANT_PROVISIONING_FAILED, job, failed)
            if is_cancelled_exception(error):
                raise  # the run ends cancelled, after its compensations
            return failed


@workflow.defn(name="DeprovisionTenantWorkflow")
class DeprovisionTenantWorkflow:
    """Drops the tenant's target row, database or schema and role; keeps an archived record."""

    @workflow.run
    async def run(self, job: TenantJob) -> TenantOutcome:
        """Each step is idempotent; retried until it holds."""
        await _undo(job)
        outcome = TenantOutcome(tenant_id=job.tenant_id, status=TenantStatus.DEPROVISIONED)
        await _step(TenantActivities.finish, outcome, undo=True)
        await _announce(WebhookEventType.TENANT_DEPROVISIONED, job, outcome)
        return outcome


@workflow.defn(name="RotateTenantPasswordWorkflow")
class RotateTenantPasswordWorkflow:
    """A new password for the tenant's role and target (safe to retry)."""

    @workflow.run
    async def run(self, job: TenantJob) -> None:
        """One idempotent activity."""
        await _step(TenantActivities.rotate_password, job)
