"""Lock-risk warnings: operations of a version that lock or rewrite tables a busy database uses."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class LockRiskSeverity(StrEnum):
    """How bad a finding is on a busy table."""

    # Blocks reads or writes for as long as a scan or rewrite of the whole table takes, or
    # cannot run at all: an outage proportional to the table's size.
    ERROR = "error"
    # A short lock that can still queue traffic, or a change that breaks code still running.
    WARNING = "warning"


class LockRisk(BaseModel):
    """One finding of the lock-risk lint (see ``docs/lock-risks.md``)."""

    rule: str = Field(description="Rule id, e.g. require-concurrent-index-creation.")
    severity: LockRiskSeverity
    line: int = Field(ge=1, description="Line of the statement, 1-based, in the version's SQL.")
    message: str = Field(description="What the statement does to a busy table.")
    advice: str = Field(description="The safe form.")
    statement: str = Field(description="The start of the statement (at most 200 characters).")


class VersionLint(BaseModel):
    """The findings for one version of a set."""

    version: str
    description: str
    no_transaction: bool = False
    source: str | None = Field(default=None, description="The file the version was read from.")
    warnings: list[LockRisk] = Field(default_factory=list)


class SetLint(BaseModel):
    """``GET /api/v1/migration-sets/{name}/lint``: every version's findings (up scripts, or down
    scripts with ``direction=down``), and their counts by severity."""

    name: str
    direction: str = Field(default="up", description="up: the up scripts; down: the downs.")
    errors: int = 0
    warnings: int = 0
    versions: list[VersionLint]
