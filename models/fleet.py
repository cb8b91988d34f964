"""Fleet runs: one durable run of a migration set across many targets."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator

from models.adoption import AdoptSource
from models.databases import _check_labels as check_labels
from models.migrations import SetName, TargetRunInput, TargetRunKind

# The run's state lives in models.run_state; these names are also imported from here.
from models.run_state import KEPT_ERROR_CHARS as KEPT_ERROR_CHARS
from models.run_state import MAX_FAILED_KEPT as MAX_FAILED_KEPT
from models.run_state import RECENT_KEPT as RECENT_KEPT
from models.run_state import FleetCounts as FleetCounts
from models.run_state import FleetState as FleetState
from models.run_state import TargetProgress as TargetProgress
from models.run_state import TargetState as TargetState


class FleetSelector(BaseModel):
    """Which targets a run covers: all, those matching every label, or explicit ids."""

    all: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    database_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _one_kind(self) -> FleetSelector:
        chosen = sum([self.all, bool(self.labels), bool(self.database_ids)])
        if chosen != 1:
            raise ValueError("choose exactly one of all, labels or database_ids")
        # A target named twice is one target (a compact run counts, it keeps no set of ids).
        self.database_ids = list(dict.fromkeys(self.database_ids))
        return self


def _check_requested_selector(selector: FleetSelector) -> FleetSelector:
    """Labels follow the targets' label rule: a selector no target can match is refused (422)
    rather than started as a run whose resolution can never succeed (a NUL in a label made
    every catalog query of the run fail, retried for ever)."""
    check_labels(selector.labels)
    return selector


RequestedSelector = Annotated[FleetSelector, AfterValidator(_check_requested_selector)]
"""The selector of a run request; workflow inputs keep ``FleetSelector`` (replayed as they are)."""


class FailureBudget(BaseModel):
    """How many failed targets a run tolerates before it pauses itself."""

    max_failed: int | None = Field(default=None, ge=0)
    max_failed_percent: float | None = Field(default=None, ge=0, le=100)

    def exceeded(self, failed: int, total: int, *, total_known: bool = True) -> bool:
        """Whether ``failed`` of ``total`` targets is over the budget; a percentage is judged
        only once the run's total is known (never over the targets resolved so far)."""
        if self.max_failed is not None and failed > self.max_failed:
            return True
        return (
            self.max_failed_percent is not None
            and total_known
            and total > 0
            and failed * 100 / total > self.max_failed_percent
        )


class FleetRunOptions(BaseModel):
    """How a fleet run proceeds: what a caller of ``POST /api/v1/migrations`` chooses, carried
    as is into the workflow's input."""

    concurrency: int = Field(default=16, ge=1, le=1000)
    batch_size: int = Field(
        default=4, ge=1, le=100, description="Targets per activity; the per-target unit."
    )
    batch_connections: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Run each batch's targets at most this many at a time, so a batch takes "
        "only this much of the window: fewer, longer activities (less Temporal work per "
        "target) when smaller than batch_size. A pause or cancel then lets each batch in "
        "flight finish its targets; a batch starts no new target after one of its targets "
        "failed (the rest go back to the queue). Not used for the canary. Null: a batch runs "
        "all its targets at once.",
    )
    canary: int = Field(default=0, ge=0, le=100_000, description="Run these first, then decide.")
    canary_wait_for_resume: bool = False
    failure_budget: FailureBudget = Field(default_factory=FailureBudget)
    lock_timeout_ms: int = Field(default=5_000, ge=0, le=3_600_000)
    statement_timeout_ms: int = Field(default=0, ge=0, le=86_400_000)
    dry_run: bool = False
    heartbeat_timeout_seconds: float = Field(
        default=60.0,
        ge=1,
        le=600,
        description="How soon the targets of a worker that died are retried on another one.",
    )

    def options(self) -> dict[str, Any]:
        """Just the options (for building a ``FleetRunInput`` from a request)."""
        return self.model_dump(include=set(FleetRunOptions.model_fields))


class FleetRunInput(FleetRunOptions):
    """Input of ``MigrateFleetWorkflow`` (and of each continue-as-new)."""

    run_id: str
    set_name: SetName
    kind: TargetRunKind = TargetRunKind.APPLY
    target_version: str | None = None
    adopt_from: AdoptSource | None = Field(default=None, description="adopt: the other tool.")
    selector: FleetSelector
    requester: str = "unknown"
    rollback_of: str | None = Field(
        default=None,
        description="rollback: the run rolled back; a target is rolled back only when its "
        "ledger holds rows of that run (a compact run keeps no list of the targets it changed).",
    )
    continue_after_bytes: int = Field(
        default=1_000_000,
        ge=1,
        description="Continue-as-new once the run's history is this large (bytes); a smaller "
        "history is quicker to replay when a worker picks the run up without it in its cache.",
    )
    state: FleetState | None = Field(default=None, description="Carried over continue-as-new.")


class FleetStatus(StrEnum):
    """The run as a whole."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class FleetProgress(BaseModel):
    """The ``progress`` query: totals, counts, per-target states, rate and ETA."""

    run_id: str
    set_name: str
    status: FleetStatus
    paused_reason: str | None
    total: int
    total_known: bool = Field(description="False while the selector is still being paged.")
    dry_run: bool = Field(default=False, description="True when the run only planned.")
    kind: TargetRunKind = Field(
        default=TargetRunKind.APPLY,
        description="apply, rollback, adopt (versions another tool applied, recorded) or "
        "baseline (targets marked at a version); adopt and baseline run no migration SQL.",
    )
    adopt_from: AdoptSource | None = Field(default=None, description="adopt: the other tool.")
    counts: FleetCounts
    concurrency: int
    targets: dict[str, TargetProgress] = Field(
        description="Every target when ``targets_complete``; otherwise (every run of the "
        "compact kind) only those in flight, the failed ones kept and the most recent results: "
        "page them all with GET /api/v1/migrations/{id}/targets."
    )
    targets_complete: bool = Field(
        default=True, description="False when ``targets`` holds only a bounded part of the run."
    )
    failed_not_listed: int = Field(
        default=0, description="Failed targets beyond those the run keeps (counted only)."
    )
    position: str | None = Field(
        default=None,
        description="The selector's cursor: while ``total_known`` is false, the targets after "
        "it (all of them when it is null) are not resolved yet, so pending.",
    )
    queued: list[str] = Field(
        default_factory=list, description="Resolved targets not started yet (one page at most)."
    )
    started_at: datetime
    updated_at: datetime
    throughput_per_minute: float
    eta_seconds: float | None

    @classmethod
    def of(
        cls,
        params: FleetRunInput,
        state: FleetState,
        counts: FleetCounts,
        status: FleetStatus,
        now: datetime,
    ) -> FleetProgress:
        """The run's progress at ``now`` (the workflow's clock: a query stays deterministic)."""
        done = counts.succeeded + counts.failed + counts.up_to_date
        elapsed = max((now - state.started_at).total_seconds(), 0.001)
        rate = done / elapsed
        remaining = counts.pending + counts.running
        return cls(
            run_id=params.run_id,
            set_name=params.set_name,
            status=status,
            paused_reason=state.paused_reason,
            total=state.resolved,
            total_known=state.selector_exhausted,
            dry_run=params.dry_run,
            kind=params.kind,
            adopt_from=params.adopt_from,
            counts=counts,
            concurrency=state.concurrency,
            targets=state.known_targets() if state.compact else state.targets,
            targets_complete=not state.compact,
            failed_not_listed=state.failed_not_listed,
            position=state.after,
            queued=[str(i) for i in state.queue] if state.compact else [],
            started_at=state.started_at,
            updated_at=now,
            throughput_per_minute=round(rate * 60, 2),
            eta_seconds=round(remaining / rate, 1)
            if rate > 0 and state.selector_exhausted
            else None,
        )


class FleetProgressPage(FleetProgress):
    """``GET /api/v1/migrations/{id}?limit=``: the progress with one page of its targets, in id
    order, and their names; pass ``next_cursor`` back as ``cursor`` for the next page."""

    next_cursor: str | None = None
    target_names: dict[str, str] = Field(
        default_factory=dict, description="Names of this page's targets, by id."
    )


class FleetRunResult(BaseModel):
    """How a fleet run ended."""

    run_id: str
    status: FleetStatus
    counts: FleetCounts
    failed: dict[str, TargetProgress]
    failed_not_listed: int = Field(default=0, description="Failed targets beyond ``failed``.")
    started_at: datetime
    finished_at: datetime


class TargetBatchInput(BaseModel):
    """One activity's worth of targets."""

    run_id: str
    set_name: str
    kind: TargetRunKind
    target_version: str | None
    adopt_from: AdoptSource | None = None
    database_ids: list[uuid.UUID]
    dry_run: bool
    lock_timeout_ms: int
    statement_timeout_ms: int
    rollback_of: str | None = None
    settle_only: bool = Field(
        default=False,
        description="Only read each ledger: settle the up-to-date targets, defer the others.",
    )
    connections: int | None = Field(
        default=None,
        description="At most this many targets (or schema groups) at once: a settle-only "
        "batch's share of the window, or an ordinary batch's batch_connections.",
    )
    stop_at_failure: bool = Field(
        default=False,
        description="Start no new target once one of the batch's targets failed; the ones "
        "not started come back deferred (the run queues them again first).",
    )

    def for_target(self, database_id: uuid.UUID) -> TargetRunInput:
        """The engine's input for one target of the batch."""
        return TargetRunInput(
            database_id=database_id,
            **self.model_dump(exclude={"database_ids", "connections", "stop_at_failure"}),
        )


class TargetPage(BaseModel):
    """One page of a resolved selector."""

    database_ids: list[uuid.UUID]
    after: str | None


class TargetPageRequest(BaseModel):
    """Input of ``resolve_targets``."""

    selector: FleetSelector
    after: str | None = None
    limit: int = Field(default=500, ge=1, le=5000)


FleetRunInput.model_rebuild()


class FleetRunKind(StrEnum):
    """What ``POST /api/v1/migrations`` starts."""

    APPLY = "apply"
    ADOPT = "adopt"  # take over targets migrated by another tool ("from")
    BASELINE = "baseline"  # mark targets never migrated as at "version"


class FleetRunRequest(FleetRunOptions):
    """``POST /api/v1/migrations``: start a fleet run."""

    model_config = {"populate_by_name": True}

    set: SetName
    kind: FleetRunKind = Field(
        default=FleetRunKind.APPLY,
        description="apply (run the set's SQL), adopt (record what another tool applied) or "
        "baseline (mark targets as at a version); adopt and baseline run no migration SQL.",
    )
    to_version: str | None = Field(
        default=None, max_length=120, description="apply: latest when null."
    )
    adopt_from: AdoptSource | None = Field(
        default=None,
        alias="from",
        description="adopt: the tool whose history table each target has.",
    )
    version: str | None = Field(
        default=None, max_length=120, description="baseline: the version targets are at."
    )
    selector: RequestedSelector

    @model_validator(mode="after")
    def _fields_of_kind(self) -> FleetRunRequest:
        if self.kind is FleetRunKind.ADOPT and self.adopt_from is None:
            raise ValueError('kind "adopt" needs "from": flyway, golang-migrate or dbmate')
        if self.kind is FleetRunKind.BASELINE and self.version is None:
            raise ValueError('kind "baseline" needs "version"')
        if self.kind is not FleetRunKind.ADOPT and self.adopt_from is not None:
            raise ValueError('"from" belongs to kind "adopt"')
        if self.kind is not FleetRunKind.BASELINE and self.version is not None:
            raise ValueError('"version" belongs to kind "baseline" (apply takes "to_version")')
        if self.kind is not FleetRunKind.APPLY and self.to_version is not None:
            raise ValueError(f'kind "{self.kind.value}" takes no "to_version"')
        return self


class FleetRollbackRequest(BaseModel):
    """``POST /api/v1/migrations/{id}/rollback``: return the targets a run touched to a version."""

    to_version: str = Field(max_length=120, description="0 rolls everything back.")
    concurrency: int = Field(default=16, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=100)
    failure_budget: FailureBudget = Field(default_factory=FailureBudget)


class FleetRunAccepted(BaseModel):
    """A started fleet run."""

    run_id: str
    workflow_id: str
    status_url: str
    stream_url: str


class ConcurrencyChange(BaseModel):
    """``PATCH /api/v1/migrations/{id}``."""

    concurrency: int = Field(ge=1, le=1000)


class FleetRunSummary(BaseModel):
    """One run in a listing, from Temporal visibility."""

    run_id: str
    workflow_id: str
    status: str
    set_name: str | None
    requester: str | None
    started_at: datetime | None
    closed_at: datetime | None


class FleetRunPage(BaseModel):
    """A page of runs; pass ``next_page`` back for the next."""

    items: list[FleetRunSummary]
    next_page: str | None = None


class DynamicMigrationRequest(BaseModel):
    """``POST /api/v1/migrations/dynamic``: ad-hoc SQL recorded as its own set, run as a fleet."""

    description: str = Field(min_length=1, max_length=500)
    up_sql: str = Field(min_length=1, max_length=1_000_000)
    down_sql: str | None = Field(default=None, max_length=1_000_000)
    selector: RequestedSelector
    concurrency: int = Field(default=16, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=100)
    failure_budget: FailureBudget = Field(default_factory=FailureBudget)
    dry_run: bool = False
