"""Models of the health endpoints and the system-check workflow."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class DependencyState(StrEnum):
    """Whether a dependency answered the readiness probe."""

    UP = "up"
    DOWN = "down"


class DependencyStatus(BaseModel):
    """One dependency's readiness."""

    status: DependencyState
    latency_ms: float | None = None
    error: str | None = Field(default=None, description="Why it is down; never contains secrets.")


class Liveness(BaseModel):
    """``/health``: the process is alive."""

    status: str = "ok"
    version: str


class Readiness(BaseModel):
    """``/health/ready``: whether every dependency answers."""

    status: DependencyState
    dependencies: dict[str, DependencyStatus]


class SystemCheckInput(BaseModel):
    """Input of ``SystemCheckWorkflow``: who asked, for the history's sake."""

    requested_by: str = "anonymous"


class CatalogCheck(BaseModel):
    """What the worker saw of the catalog."""

    server_version: str
    schema_version: int
    latency_ms: float
    worker: str = Field(description="host:pid of the worker process that ran the check.")


class SystemCheckResult(BaseModel):
    """Result of ``SystemCheckWorkflow``: a round trip gateway → Temporal → worker → catalog."""

    workflow_id: str
    catalog: CatalogCheck
    started_at: datetime
    finished_at: datetime
