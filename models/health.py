"""Fleet health: each target's latest snapshot (reachability, latency, ledger version, schema
fingerprint, drift against its reference) and the inputs and results of ``FleetHealthWorkflow``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from models.fleet import FleetSelector
from models.webhooks import EventOut

# At most this many differing objects are kept per target (the count says how many there were).
MAX_DRIFT_OBJECTS = 50


class HealthFilter(StrEnum):
    """``GET /api/v1/databases?health=...``."""

    UNREACHABLE = "unreachable"
    DRIFTED = "drifted"
    BEHIND = "behind"


class DriftSource(StrEnum):
    """What a target's fingerprint was compared with."""

    REFERENCE = "reference"  # the set replayed up to the target's version in a scratch database
    MAJORITY = "majority"  # no reference could be built: the most common fingerprint of its peers
    NONE = "none"  # no assignment, several sets, nothing to compare with, or unreachable


class SchemaFingerprint(BaseModel):
    """A stable hash over a schema's own objects and the object-level listing behind it.

    ``objects`` maps an object key (``table orders: column note``, ``index orders_idx``) to its
    definition, schema names removed so a schema-per-tenant target compares with its reference."""

    hash: str
    objects: dict[str, str]


class SetVersion(BaseModel):
    """One assigned set on one target: the ledger's version and the one it should be at."""

    set_name: str
    version: str | None = Field(description="The ledger's current version (success rows).")
    expected: str | None = Field(description="The assigned version (latest when unpinned).")
    behind: bool


class DriftReport(BaseModel):
    """How a target differs from what its set at its version should have created."""

    drifted: bool = False
    source: DriftSource = DriftSource.NONE
    set_name: str | None = None
    version: str | None = None
    reason: str | None = Field(default=None, description="Why drift was not judged, if it was not.")
    differences: list[str] = Field(default_factory=list, max_length=MAX_DRIFT_OBJECTS)
    total_differences: int = 0


class TargetHealth(BaseModel):
    """The latest snapshot of one target (``GET /api/v1/databases/{id}/health``)."""

    database_id: uuid.UUID
    reachable: bool
    error: str | None = None
    latency_ms: float | None = None
    server_version: str | None = None
    ledger_version: str | None = None
    sets: list[SetVersion] = Field(default_factory=list)
    behind_sets: list[str] = Field(default_factory=list)
    fingerprint: str | None = None
    drift: DriftReport = Field(default_factory=DriftReport)
    checked_at: datetime
    run_id: str | None = Field(default=None, description="The sweep that took the snapshot.")


class HealthBatchInput(BaseModel):
    """Input of ``check_health_batch``: targets to check in one activity."""

    run_id: str
    database_ids: list[uuid.UUID] = Field(min_length=1, max_length=100)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class ReportedState(BaseModel):
    """What the events last sent for one target said; events go out when this changes."""

    database_id: uuid.UUID
    reachable: bool
    drifted: bool
    events_sent: int = Field(ge=0, description="How many events were sent for this target.")


class HealthOutcome(BaseModel):
    """One target's result for the sweep: its state in short and the events still to send."""

    database_id: uuid.UUID
    reachable: bool
    drifted: bool
    behind: bool
    events: list[EventOut] = Field(default_factory=list)
    reported: ReportedState | None = Field(
        default=None, description="To record once ``events`` are published."
    )


class HealthCounts(BaseModel):
    """Totals of one sweep."""

    checked: int = 0
    unreachable: int = 0
    drifted: int = 0
    behind: int = 0
    events: int = 0


class FleetHealthState(BaseModel):
    """What a sweep carries over continue-as-new."""

    after: str | None = None
    counts: HealthCounts = Field(default_factory=HealthCounts)
    started_at: datetime | None = None
    continued: int = 0


class FleetHealthInput(BaseModel):
    """Input of ``FleetHealthWorkflow`` (and of each continue-as-new)."""

    run_id: str = Field(default="", description="Empty: the workflow id (scheduled sweeps).")
    requester: str = "schedule"
    selector: FleetSelector = Field(
        default_factory=lambda: FleetSelector(all=True),
        description="Which targets: every one (scheduled sweeps), or by labels or ids.",
    )
    concurrency: int = Field(default=8, ge=1, le=100, description="Batches in flight.")
    batch_size: int = Field(default=10, ge=1, le=100)
    page_size: int = Field(default=500, ge=1, le=5000)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    continue_after_events: int = Field(
        default=10_000,
        ge=1,
        le=40_000,
        description="Continue-as-new between pages once the history is this long.",
    )
    state: FleetHealthState | None = None


class FleetHealthResult(BaseModel):
    """How a sweep ended."""

    run_id: str
    counts: HealthCounts
    started_at: datetime
    finished_at: datetime


class SweepStarted(BaseModel):
    """``POST /api/v1/health/sweep``: the run started now."""

    run_id: str
    workflow_id: str


class DriftedTarget(BaseModel):
    """A drifted target in ``GET /api/v1/drift``."""

    database_id: uuid.UUID
    name: str
    differences: list[str]
    total_differences: int
    source: DriftSource


class DriftVersion(BaseModel):
    """Targets of a set at one ledger version."""

    version: str | None
    targets: int
    drifted: list[DriftedTarget]


class DriftSummary(BaseModel):
    """``GET /api/v1/drift?set=NAME``: the set's targets grouped by version."""

    set_name: str
    versions: list[DriftVersion]
