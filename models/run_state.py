"""The state of a fleet run (``MigrateFleetWorkflow``), kept small whatever the fleet's size.

Pure bookkeeping with no I/O: the workflow calls it, and unit tests check its bounds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from models.migrations import TargetRunResult

# What a compact run keeps beyond its counts (FleetState): every payload of a run stays far
# below Temporal's 2 MB (500 failed targets with 500-character errors are about 300 KB).
MAX_FAILED_KEPT = 500
RECENT_KEPT = 100
KEPT_ERROR_CHARS = 500
# The start of a pause reason that the failure budget gave.
BUDGET_PAUSE = "failure budget exceeded"


class TargetState(StrEnum):
    """Where one target of a fleet run is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UP_TO_DATE = "up_to_date"


class TargetProgress(BaseModel):
    """One target's outcome in a fleet run."""

    state: TargetState
    from_version: str | None = None
    to_version: str | None = None
    error: str | None = None
    repeatables: list[str] = Field(
        default_factory=list,
        description="Repeatable migrations (R:<description>) the run applied again, or would "
        "(dry run), on this target: they change no version number.",
    )


class FleetCounts(BaseModel):
    """Targets per state."""

    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    up_to_date: int = 0


class FleetState(BaseModel):
    """Everything a fleet run knows; survives continue-as-new.

    A compact run (every run started since compact state, ``compact``) keeps no entry per
    finished target: counts, the selector's cursor and the queued page, the targets in flight,
    the failed ones up to ``MAX_FAILED_KEPT`` (the rest counted) and the last
    ``RECENT_KEPT`` results. Its size does not grow with the fleet. Older runs kept every
    target in ``targets``."""

    started_at: datetime
    resolved: int = 0
    selector_exhausted: bool = False
    after: str | None = Field(default=None, description="Cursor of the selector's next page.")
    queue: list[uuid.UUID] = Field(default_factory=list)
    targets: dict[str, TargetProgress] = Field(
        default_factory=dict, description="Runs before compact state: every target."
    )
    compact: bool = False
    counts: FleetCounts | None = Field(default=None, description="compact: targets per state.")
    in_flight: list[uuid.UUID] = Field(default_factory=list, description="compact.")
    failed: dict[str, TargetProgress] = Field(
        default_factory=dict, description="compact: failed targets, the first MAX_FAILED_KEPT."
    )
    failed_not_listed: int = Field(default=0, description="compact: failed beyond those kept.")
    recent: dict[str, TargetProgress] = Field(
        default_factory=dict, description="compact: the last RECENT_KEPT finished targets."
    )
    started: int = Field(default=0, description="compact: targets started so far.")
    settling: bool = Field(
        default=False,
        description="compact: the queue goes through settle-only batches first (a batch "
        "found every target up to date), and only targets with work through real ones.",
    )
    checked: list[uuid.UUID] = Field(
        default_factory=list, description="compact: settled as having work; run next."
    )
    paused: bool = False
    paused_reason: str | None = None
    cancel_requested: bool = False
    budget_failed_before: int = Field(
        default=0, description="Failures before the last resume from a budget pause."
    )
    canary_done: bool = False
    concurrency: int = 16
    continued: int = 0

    # -- a compact run's bookkeeping (``counts`` is set) --------------------------------------
    def queue_page(self, database_ids: Sequence[uuid.UUID]) -> None:
        """A resolved page of the selector: pages follow one another in selector order, so no
        target comes twice and no set of ids is needed to tell."""
        assert self.counts is not None
        self.queue.extend(database_ids)
        self.resolved += len(database_ids)
        self.counts.pending += len(database_ids)

    def start(self, batch: Sequence[uuid.UUID]) -> None:
        """``batch`` leaves the queue's head and is in flight."""
        assert self.counts is not None
        self.in_flight.extend(batch)
        self.counts.pending -= len(batch)
        self.counts.running += len(batch)
        self.started += len(batch)

    def land(self, batch: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Take a finished ``batch`` out of flight in one pass; returns the ids that were in
        flight, for ``finish``/``defer`` (``in_flight=``). Removing them one by one cost a scan
        of the in-flight list each: with four settle-only batches of 500 in flight, a million
        UUID comparisons in one workflow task, which tripped the SDK's 2 s deadlock detector."""
        landing = set(batch)
        if not landing:
            return set()
        kept: list[uuid.UUID] = []
        landed: set[uuid.UUID] = set()
        for database_id in self.in_flight:
            if database_id in landing:
                landed.add(database_id)
            else:
                kept.append(database_id)
        self.in_flight = kept
        return landed

    def defer(self, database_id: uuid.UUID, *, in_flight: bool) -> None:
        """A settle-only batch found work on ``database_id``, or a batch stopped at a failure
        before starting it: pending again, run next.
        ``in_flight``: whether ``land`` took it out of flight."""
        assert self.counts is not None
        if in_flight:
            self.counts.running -= 1
            self.counts.pending += 1
            self.started -= 1
        self.checked.append(database_id)

    def finish(
        self,
        database_id: uuid.UUID,
        progress: TargetProgress,
        *,
        max_failed: int = MAX_FAILED_KEPT,
        recent: int = RECENT_KEPT,
        in_flight: bool,
    ) -> None:
        """A finished target: a count, the recent ring and, when it failed, the bounded failed
        set (the rest counted in ``failed_not_listed``); nothing else stays. ``in_flight``:
        whether ``land`` took it out of flight."""
        assert self.counts is not None
        if in_flight:
            self.counts.running -= 1
        state = progress.state.value
        setattr(self.counts, state, getattr(self.counts, state) + 1)
        if progress.error is not None:
            progress = progress.model_copy(update={"error": progress.error[:KEPT_ERROR_CHARS]})
        key = str(database_id)
        if progress.state is TargetState.FAILED:
            if len(self.failed) < max_failed:
                self.failed[key] = progress
            else:
                self.failed_not_listed += 1
        self.recent.pop(key, None)
        self.recent[key] = progress
        while len(self.recent) > recent:
            del self.recent[next(iter(self.recent))]

    def known_targets(self) -> dict[str, TargetProgress]:
        """What a compact run can say per target: in flight, the recent results and the failed
        ones kept (a failed target shows its kept entry)."""
        running = TargetProgress(state=TargetState.RUNNING)
        return {**dict.fromkeys(map(str, self.in_flight), running), **self.recent, **self.failed}


def outcome(result: TargetRunResult, repeatables: bool = False) -> TargetProgress:
    """A target's progress entry from the engine's result (``repeatables``: with the
    repeatable migrations it applied or planned, which no version number shows)."""
    if result.failure is not None:
        where = f" at version {result.failure.version}" if result.failure.version else ""
        return TargetProgress(
            state=TargetState.FAILED,
            from_version=result.from_version,
            to_version=result.to_version,
            error=f"{result.failure.reason}{where}: {result.failure.message}"[:1000],
        )
    changed = bool(result.applied or result.planned)
    return TargetProgress(
        state=TargetState.SUCCEEDED if changed else TargetState.UP_TO_DATE,
        from_version=result.from_version,
        to_version=result.to_version,
        repeatables=(
            [a.version for a in result.applied if a.repeatable]
            + [p.version for p in result.planned if p.repeatable]
            if repeatables
            else []
        ),
    )


def pause_reason(paused_reason: str | None) -> str:
    """The bounded ``reason`` label of a pause: budget, canary or operator."""
    if paused_reason and paused_reason.startswith(BUDGET_PAUSE):
        return "budget"
    if paused_reason and paused_reason.startswith("canary"):
        return "canary"
    return "operator"
