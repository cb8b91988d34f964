"""Set assignments: which migration set (and version) targets with given labels should carry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from models.databases import Labels
from models.migrations import normalise_version

LATEST = "latest"


def _check_version(value: str) -> str:
    """``latest`` (any case) or a canonical version."""
    if value.strip().lower() == LATEST:
        return LATEST
    return normalise_version(value)


AssignmentVersion = Annotated[str, AfterValidator(_check_version)]


class AssignmentSpec(BaseModel):
    """``PUT /api/v1/assignments/{set}``: the selector and the version targets should reach."""

    selector: Labels = Field(
        default_factory=dict,
        description="Label equality; every pair must match. {} selects every target.",
    )
    version: AssignmentVersion = Field(
        default=LATEST,
        description="'latest' (resolved when a run starts) or a version registered in the set.",
    )

    @property
    def pinned_version(self) -> str | None:
        """The pinned version, or None for latest."""
        return None if self.version == LATEST else self.version


class Assignment(BaseModel):
    """A stored assignment."""

    set_name: str
    selector: dict[str, str]
    version: str = Field(description="'latest' or the pinned version.")
    created_at: datetime
    updated_at: datetime


class AssignmentList(BaseModel):
    """Every assignment, ordered by set name."""

    items: list[Assignment]


class AssignedSet(BaseModel):
    """What a target with given labels should carry: ``version`` None means the set's latest,
    resolved when the run starts."""

    set_name: str
    version: str | None = None
