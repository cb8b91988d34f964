"""``/api/v1/migrations``: fleet runs. Start, list, watch (query); the SSE stream is
``gateway.routers.run_stream``, the controls (pause, resume, cancel, concurrency, roll back)
``gateway.routers.run_control``. Progress lives in the workflow; finished runs in visibility."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from temporalio.client import (
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from common.catalog.databases import DatabaseRepository
from common.errors import DependencyUnavailable, InvalidInput, NotFound
from common.migrations.loader import make_migration
from gateway.auth.deps import MigrationsExecute, MigrationsRead
from gateway.deps import SettingsDep, TemporalDep, temporal_unreachable
from gateway.progress import ProgressCache, accepted_progress
from gateway.routers.migration_sets import SetsDep
from gateway.visibility import visibility_page
from models.errors import ErrorResponse
from models.fleet import (
    DynamicMigrationRequest,
    FleetProgress,
    FleetProgressPage,
    FleetRunAccepted,
    FleetRunInput,
    FleetRunKind,
    FleetRunPage,
    FleetRunRequest,
    FleetRunResult,
    FleetRunSummary,
    FleetStatus,
    TargetState,
)
from models.migrations import TargetRunKind, normalise_version
from workflows.fleet import MigrateFleetWorkflow

router = APIRouter(prefix="/api/v1/migrations", tags=["migrations"])

SET_KEY = SearchAttributeKey.for_keyword("TenantflowMigrationSet")
VERSION_KEY = SearchAttributeKey.for_int("TenantflowTargetVersion")
REQUESTER_KEY = SearchAttributeKey.for_keyword("TenantflowRequester")
STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")
RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run."},
    409: {"model": ErrorResponse, "description": "The run has finished."},
}


class TargetsView(StrEnum):
    """``GET /api/v1/migrations/{id}?targets=``: which per-target entries to send."""

    ALL = "all"
    NONE = "none"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UP_TO_DATE = "up_to_date"


QUERY_TIMEOUT_SECONDS = 10.0
# The most targets one page of a run's progress carries (?limit=).
MAX_TARGETS_PAGE = 1000

FleetHandle = WorkflowHandle[MigrateFleetWorkflow, FleetRunResult]


def workflow_id_for(run_id: str) -> str:
    """Business key of a fleet run."""
    return f"migrate-fleet-{run_id}"


async def get_progress_cache(request: Request) -> ProgressCache:
    """One cache per gateway process."""
    cache: ProgressCache = request.app.state.progress_cache
    return cache


CacheDep = Annotated[ProgressCache, Depends(get_progress_cache)]


async def _start(
    temporal: TemporalDep,
    settings: SettingsDep,
    cache: ProgressCache,
    params: FleetRunInput,
    *,
    version: str | None,
) -> FleetRunAccepted:
    attributes: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SET_KEY, params.set_name),
        SearchAttributePair(REQUESTER_KEY, params.requester),
        SearchAttributePair(STATUS_KEY, FleetStatus.RUNNING.value),
    ]
    if version is not None and version.isdigit() and int(version) < 2**63:
        attributes.append(SearchAttributePair(VERSION_KEY, int(version)))
    workflow_id = workflow_id_for(params.run_id)
    try:
        await temporal.start_workflow(
            MigrateFleetWorkflow.run,
            params,
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            search_attributes=TypedSearchAttributes(attributes),
        )
    except (RPCError, RuntimeError) as exc:
        raise DependencyUnavailable(
            "Temporal did not accept the run",
            details={"dependency": "temporal", "cause": getattr(exc, "message", str(exc))[:300]},
        ) from None
    # The starter usually watches next: its first look needs no query (the worker has not
    # even picked the run up yet, and a query would wait for it).
    cache.seed(params.run_id, accepted_progress(params))
    base = f"/api/v1/migrations/{params.run_id}"
    return FleetRunAccepted(
        run_id=params.run_id,
        workflow_id=workflow_id,
        status_url=base,
        stream_url=f"{base}/stream",
    )


def _version(value: str | None, field: str = "to_version") -> str | None:
    if value is None:
        return None
    try:
        return normalise_version(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), details={field: value}) from None


@router.post("", status_code=202, summary="Start a fleet run", responses=RUN_ERRORS)
async def start_run(
    body: FleetRunRequest,
    principal: MigrationsExecute,
    temporal: TemporalDep,
    settings: SettingsDep,
    cache: CacheDep,
    sets: SetsDep,
) -> FleetRunAccepted:
    """Apply a set to every selected target as one durable run; answers at once with its id.
    ``kind`` adopt or baseline records versions in each target's ledger without running them
    (``activities.adoption``)."""
    info = await sets.info(body.set)
    version = _version(body.to_version)
    if body.kind is FleetRunKind.BASELINE:
        version = _version(body.version, "version")
        if version not in {m.version for m in info.migrations}:
            raise InvalidInput(
                f"version {version} is not in set {body.set!r}",
                details={"set": body.set, "version": version},
            )
    params = FleetRunInput(
        run_id=uuid.uuid4().hex[:12],
        set_name=body.set,
        kind=TargetRunKind(body.kind.value),
        target_version=version,
        adopt_from=body.adopt_from,
        selector=body.selector,
        requester=principal.subject,
        **body.options(),
    )
    return await _start(temporal, settings, cache, params, version=version)


@router.post(
    "/dynamic", status_code=202, summary="Run ad-hoc SQL across a fleet (recorded as a set)"
)
async def start_dynamic(
    body: DynamicMigrationRequest,
    principal: MigrationsExecute,
    temporal: TemporalDep,
    settings: SettingsDep,
    cache: CacheDep,
    sets: SetsDep,
) -> FleetRunAccepted:
    """The SQL becomes version 1 of a new set ``dynamic-<run id>``, so every target's ledger
    records it and the run can be rolled back with its down SQL like any other."""
    run_id = uuid.uuid4().hex[:12]
    set_name = f"dynamic-{run_id}"
    migration = make_migration(
        "1", body.description, body.up_sql, body.down_sql or None, source="dynamic"
    )
    await sets.register(set_name, [migration])
    params = FleetRunInput(
        run_id=run_id,
        set_name=set_name,
        target_version="1",
        selector=body.selector,
        concurrency=body.concurrency,
        batch_size=body.batch_size,
        failure_budget=body.failure_budget,
        dry_run=body.dry_run,
        requester=principal.subject,
    )
    return await _start(temporal, settings, cache, params, version="1")


# The run's own search attribute says how a live run is doing; once the execution has closed
# any other way than by returning (terminated, cancelled or failed through Temporal), the
# attribute is stale and Temporal's close status is the truth.
_CLOSED_BY_TEMPORAL = {
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def _listed_status(execution: WorkflowExecution) -> str:
    """How a listed run is doing, or how it closed."""
    if execution.status in _CLOSED_BY_TEMPORAL:
        return _CLOSED_BY_TEMPORAL[execution.status]
    return execution.typed_search_attributes.get(STATUS_KEY) or (
        execution.status.name.lower() if execution.status else "unknown"
    )


def _status_clause(status: FleetStatus) -> str:
    """Visibility filter matching what ``_listed_status`` shows."""
    attribute = f"TenantflowStatus = '{status.value}'"
    if status is FleetStatus.COMPLETED:
        return f"({attribute} AND ExecutionStatus = 'Completed')"
    if status is FleetStatus.CANCELLED:
        return f"(({attribute} AND ExecutionStatus = 'Completed') OR ExecutionStatus = 'Canceled')"
    return f"({attribute} AND ExecutionStatus = 'Running')"


@router.get("", summary="List fleet runs (from Temporal visibility)")
async def list_runs(
    principal: MigrationsRead,
    temporal: TemporalDep,
    status: Annotated[FleetStatus | None, Query()] = None,
    set: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9._-]+$")] = None,
    requester: Annotated[str | None, Query(max_length=255, pattern=r"^[\w.@:-]+$")] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    next_page: Annotated[str | None, Query(max_length=4096)] = None,
) -> FleetRunPage:
    """Newest first; filter by status, set or requester; follow ``next_page``."""
    del principal
    clauses = ["WorkflowType = 'MigrateFleetWorkflow'"]
    # Values are restricted to safe characters by the query patterns above.
    if status is not None:
        clauses.append(_status_clause(status))
    if set is not None:
        clauses.append(f"TenantflowMigrationSet = '{set}'")
    if requester is not None:
        clauses.append(f"TenantflowRequester = '{requester}'")
    executions, following = await visibility_page(
        temporal, " AND ".join(clauses), page_size=page_size, next_page=next_page
    )
    items = [
        FleetRunSummary(
            run_id=execution.id.removeprefix("migrate-fleet-"),
            workflow_id=execution.id,
            status=_listed_status(execution),
            set_name=execution.typed_search_attributes.get(SET_KEY),
            requester=execution.typed_search_attributes.get(REQUESTER_KEY),
            started_at=execution.start_time,
            closed_at=execution.close_time,
        )
        for execution in executions
    ]
    return FleetRunPage(items=items, next_page=following)


def _run_handle(temporal: TemporalDep, run_id: str) -> FleetHandle:
    """The run's workflow handle (no call to Temporal)."""
    return temporal.get_workflow_handle_for(MigrateFleetWorkflow.run, workflow_id_for(run_id))


async def _handle(temporal: TemporalDep, run_id: str) -> tuple[FleetHandle, bool]:
    """The run's handle and whether it is still running (404 when unknown)."""
    handle = _run_handle(temporal, run_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no run {run_id}", details={"run_id": run_id}) from None
        raise DependencyUnavailable(
            "Temporal did not answer", details={"cause": exc.message}
        ) from None
    except RuntimeError as exc:
        raise temporal_unreachable(exc) from None
    return handle, description.status is WorkflowExecutionStatus.RUNNING


def _fetcher(handle: FleetHandle, run_id: str) -> Callable[[], Awaitable[FleetProgress]]:
    """The ``progress`` query of a run (404 when Temporal does not know it)."""

    async def fetch() -> FleetProgress:
        return await _progress(handle, run_id)

    return fetch


async def _progress(handle: FleetHandle, run_id: str) -> FleetProgress:
    try:
        return await handle.query(
            MigrateFleetWorkflow.progress, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS)
        )
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no run {run_id}", details={"run_id": run_id}) from None
        raise DependencyUnavailable(
            "the run's progress could not be read", details={"cause": exc.message[:300]}
        ) from None
    except WorkflowQueryFailedError as exc:
        raise DependencyUnavailable(
            "the run's progress could not be read", details={"cause": str(exc)[:300]}
        ) from None
    except RuntimeError as exc:
        raise temporal_unreachable(exc) from None


@router.get(
    "/{run_id}",
    summary="Live progress of a fleet run",
    response_model=FleetProgress,
    responses=RUN_ERRORS,
)
async def get_run(
    run_id: str,
    request: Request,
    principal: MigrationsRead,
    temporal: TemporalDep,
    cache: CacheDep,
    targets: Annotated[
        TargetsView,
        Query(description="Which per-target entries to include: all (default), none, or a state."),
    ] = TargetsView.ALL,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_TARGETS_PAGE, description="Page the targets (with their names)."),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page.")
    ] = None,
) -> Response:
    """Counts per state, the targets' states with versions and error, rate and ETA.

    Served from a snapshot shared by every viewer of the run (at most about a second old while
    the run is watched), so the answer never waits for the worker; gzipped when the client
    accepts it. While no worker answers (one restarting) or Temporal is away, the last state
    read is served for up to two minutes: ``Age`` says how many seconds old it is.

    ``targets=none`` leaves the per-target map (and ``queued``) out: a light poll;
    ``targets=failed`` (or any state) keeps only those targets. With ``limit``, one page of
    the (filtered) targets in id order with their names and a ``next_cursor``.

    A run started since compact state (``targets_complete`` false) keeps only a bounded part
    of its targets: those in flight, the failed ones up to 500 (``failed_not_listed`` counts
    the rest) and the last 100 results; ``targets`` and its pages cover only those. Every
    target of such a run, in any state, pages through ``GET /api/v1/migrations/{id}/targets``.
    """
    del principal
    snapshot = await cache.get(run_id, _fetcher(_run_handle(temporal, run_id), run_id))
    # How old the answer is: above a few seconds the run could not be read meanwhile (a
    # worker or Temporal restarting) and this is the last state known.
    headers = {"Age": str(int(cache.age(snapshot)))}
    if limit is not None:
        page = await _targets_page(request, snapshot.progress, targets, limit, cursor)
        body = page.model_dump_json().encode()
    elif targets is TargetsView.NONE:
        body = snapshot.summary
    elif targets is not TargetsView.ALL:
        wanted = TargetState(targets.value)
        subset = {k: v for k, v in snapshot.progress.targets.items() if v.state is wanted}
        body = snapshot.progress.model_copy(update={"targets": subset}).model_dump_json().encode()
    elif "gzip" in request.headers.get("accept-encoding", ""):
        body = snapshot.gzipped
        headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    else:
        body = snapshot.body
    return Response(content=body, media_type="application/json", headers=headers)


async def _targets_page(
    request: Request, progress: FleetProgress, view: TargetsView, limit: int, cursor: str | None
) -> FleetProgressPage:
    """One page of ``progress``'s targets (of one state, unless ``view`` is all or none)."""
    base = {name: getattr(progress, name) for name in FleetProgress.model_fields}
    if view is TargetsView.NONE:
        return FleetProgressPage(**base | {"targets": {}, "queued": []})
    wanted = None if view is TargetsView.ALL else TargetState(view.value)
    ids = sorted(
        key
        for key, target in progress.targets.items()
        if (wanted is None or target.state is wanted) and (cursor is None or key > cursor)
    )
    chosen = ids[:limit]
    databases: DatabaseRepository = request.app.state.databases
    names = await databases.names([uuid.UUID(key) for key in chosen])
    return FleetProgressPage(
        **base
        | {
            "targets": {key: progress.targets[key] for key in chosen},
            "next_cursor": chosen[-1] if len(ids) > limit else None,
            "target_names": names,
        }
    )
