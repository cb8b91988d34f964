"""Template databases for the provisioning fast path: what a provisioning run chose and what a
template build makes. Ids and versions only, never credentials."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, Field


def template_database(key: str) -> str:
    """The template database's name on the server."""
    return f"tenantflow_template_{key[:16]}"


def template_run_id(key: str) -> str:
    """The build workflow's id: one build per key at a time."""
    return f"tenant-template-{key[:32]}"


class TemplateStatus(StrEnum):
    """Where a template stands: only a ``ready`` one is copied."""

    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


class TemplateSet(BaseModel):
    """One set a template holds, at a resolved version."""

    name: str
    version: str


class TemplateBuild(BaseModel):
    """Input of ``BuildTenantTemplateWorkflow``: the template database to make on a server."""

    key: str = Field(description="Hash of the server and every set's versions and checksums.")
    server_id: uuid.UUID
    database_name: str
    sets: list[TemplateSet]


class TemplateDiscard(BaseModel):
    """Input of the compensation of a failed build."""

    build: TemplateBuild
    error: str


class TemplateChoice(BaseModel):
    """What a provisioning run does for the tenant's database: copy ``template`` (the fast
    path) or create it empty and migrate (``template`` null); ``build`` asks the run to start
    the template's build, so later tenants take the fast path."""

    template: str | None = None
    build: TemplateBuild | None = None


class Template(BaseModel):
    """A template database as the catalog records it."""

    key: str
    server_id: uuid.UUID
    database_name: str
    sets: list[TemplateSet]
    status: TemplateStatus
    run_id: str
    error: str | None = None
