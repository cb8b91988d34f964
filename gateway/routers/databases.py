"""``/api/v1/databases``: the catalog of targets (tenant databases or schemas)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from common.catalog.databases import DatabaseRepository
from common.errors import InvalidInput
from common.network_policy import check_registered_host
from gateway.auth.deps import DatabasesRead, DatabasesWrite
from gateway.deps import SettingsDep, TemporalDep
from gateway.runs import run_and_wait
from models.databases import (
    ConnectionTestInput,
    ConnectionTestResult,
    Database,
    DatabaseCreate,
    DatabasePage,
    DatabaseUpdate,
)
from models.errors import ErrorResponse
from models.health import HealthFilter
from workflows.targets import TestConnectionWorkflow

router = APIRouter(prefix="/api/v1/databases", tags=["databases"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such database."}
}
NETWORK_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorResponse,
        "description": "Invalid input, or a host on a network TENANTFLOW_NETWORK__* refuses "
        "(type network_refused).",
    }
}


async def get_repository(request: Request) -> DatabaseRepository:
    """The repository built in the lifespan (catalog pool + credential cipher)."""
    repository: DatabaseRepository = request.app.state.databases
    return repository


RepositoryDep = Annotated[DatabaseRepository, Depends(get_repository)]


def parse_label_filters(values: list[str]) -> dict[str, str]:
    """``["tier=free", "region=eu"]`` (or one ``"tier=free,region=eu"``) as a dict."""
    labels: dict[str, str] = {}
    for value in values:
        for pair in value.split(","):
            key, sep, val = pair.partition("=")
            if not sep or not key.strip():
                raise InvalidInput(
                    "label filters look like key=value", details={"label": pair[:100]}
                )
            labels[key.strip()] = val.strip()
    return labels


@router.post(
    "",
    status_code=201,
    summary="Register a target",
    responses={
        404: {"model": ErrorResponse, "description": "No server of that name."},
        409: {"model": ErrorResponse, "description": "The name is taken."},
        **NETWORK_REFUSED,
    },
)
async def create_database(
    spec: DatabaseCreate,
    repository: RepositoryDep,
    settings: SettingsDep,
    principal: DatabasesWrite,
) -> Database:
    """Store a target; the password is encrypted at rest and never returned. With ``server``
    the target is recorded on that registered server and, without its own ``sslmode``,
    connects with the server's. A host on a refused network is a 422 ``network_refused``."""
    del principal  # authorisation only
    check_registered_host(spec.host, settings.network)
    return await repository.create(spec)


@router.get("", summary="List targets, filtered by labels or tenant")
async def list_databases(
    repository: RepositoryDep,
    principal: DatabasesRead,
    label: Annotated[
        list[str], Query(description="key=value; repeat or comma-separate for several")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    tenant_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    server: Annotated[
        str | None, Query(max_length=128, description="Only targets on this server (a name).")
    ] = None,
    health: Annotated[
        HealthFilter | None,
        Query(description="Only targets whose latest health snapshot is in this state."),
    ] = None,
) -> DatabasePage:
    """Targets whose labels include every given pair, by name; follow ``next_cursor``."""
    del principal
    return await repository.list(
        labels=parse_label_filters(label),
        tenant_id=tenant_id,
        limit=limit,
        cursor=cursor,
        server=server,
        health=health,
    )


@router.get("/{database_id}", summary="One target", responses=NOT_FOUND)
async def get_database(
    database_id: uuid.UUID, repository: RepositoryDep, principal: DatabasesRead
) -> Database:
    """The target without its password."""
    del principal
    return await repository.get(database_id)


@router.patch(
    "/{database_id}",
    summary="Change a target",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The new name is taken."},
        **NETWORK_REFUSED,
    },
)
async def update_database(
    database_id: uuid.UUID,
    changes: DatabaseUpdate,
    repository: RepositoryDep,
    settings: SettingsDep,
    principal: DatabasesWrite,
) -> Database:
    """Change only the fields sent; a new password is re-encrypted and never returned.
    ``server`` names a registered server (404 if unknown), ``null`` detaches the target."""
    del principal
    if changes.host is not None:
        check_registered_host(changes.host, settings.network)
    return await repository.update(database_id, changes)


@router.delete("/{database_id}", status_code=204, summary="Forget a target", responses=NOT_FOUND)
async def delete_database(
    database_id: uuid.UUID, repository: RepositoryDep, principal: DatabasesWrite
) -> Response:
    """Remove the target from the catalog; the database itself is not touched."""
    del principal
    await repository.delete(database_id)
    return Response(status_code=204)


@router.post(
    "/{database_id}/test-connection",
    summary="Test the stored credentials from a worker",
    responses={**NOT_FOUND, 503: {"model": ErrorResponse, "description": "No worker answered."}},
)
async def test_connection(
    database_id: uuid.UUID,
    repository: RepositoryDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: DatabasesRead,
) -> ConnectionTestResult:
    """Run ``TestConnectionWorkflow``: a worker decrypts the password and connects.
    ``ok: false`` with PostgreSQL's error when the target refuses."""
    del principal
    await repository.get(database_id)  # 404 before starting anything
    workflow_id = f"test-connection-{database_id}-{uuid.uuid4().hex[:8]}"
    result = await run_and_wait(
        temporal,
        TestConnectionWorkflow.run,
        ConnectionTestInput(database_id=database_id),
        workflow_id=workflow_id,
        task_queue=settings.temporal.task_queue,
        wait_seconds=settings.gateway.system_check_timeout_seconds,
        what="connection test",
    )
    return result.model_copy(update={"workflow_id": workflow_id})
