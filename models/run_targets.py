"""``GET /api/v1/migrations/{id}/targets``: one page of a fleet run's targets in one state."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, Field


class TargetsFilter(StrEnum):
    """Which of a run's targets a page lists (``done``: succeeded or up to date, told apart
    only where the run still remembers; ``all``: every target of the selector)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UP_TO_DATE = "up_to_date"
    DONE = "done"
    ALL = "all"


class ItemState(StrEnum):
    """One listed target's state: a run's ``TargetState`` or ``done`` (finished without
    failing, when the run no longer remembers whether it changed anything)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UP_TO_DATE = "up_to_date"
    DONE = "done"


class RunTargetItem(BaseModel):
    """One target of a run: its outcome with versions and error when the run knows them."""

    database_id: uuid.UUID
    name: str | None = Field(description="Its catalog name (null when no longer in the catalog).")
    state: ItemState
    from_version: str | None = None
    to_version: str | None = None
    error: str | None = None
    repeatables: list[str] = Field(default_factory=list)


class RunTargetsPage(BaseModel):
    """A page of a run's targets; pass ``next_cursor`` back as ``cursor`` (null only at the
    end: a filtered page may hold fewer than ``limit`` items and still have a next one)."""

    run_id: str
    state: TargetsFilter = Field(description="The filter this page answers.")
    items: list[RunTargetItem]
    next_cursor: str | None
    failed_not_listed: int = Field(
        default=0,
        description="Failed targets of the run no listing can name (the run counted them "
        "without keeping them); with ``done``, ``succeeded`` or ``up_to_date`` they may show "
        "among these states.",
    )
    complete: bool = Field(
        description="True when the listing (over every page) names each target of the state "
        "exactly; false when some are beyond what the run kept or their outcome could not be "
        "read."
    )
