"""``/api/v1/servers``: PostgreSQL servers tenantflow may create roles, databases and schemas on."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from common.catalog.servers import ServerRepository
from common.network_policy import check_registered_host
from gateway.auth.deps import DatabasesRead, DatabasesWrite
from gateway.deps import SettingsDep
from gateway.routers.databases import NETWORK_REFUSED, parse_label_filters
from models.errors import ErrorResponse
from models.servers import Server, ServerCreate, ServerPage, ServerUpdate

router = APIRouter(prefix="/api/v1/servers", tags=["servers"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such server."}
}
NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The name is taken."}
}


async def get_server_repository(request: Request) -> ServerRepository:
    """The repository built in the lifespan (catalog pool + credential cipher)."""
    repository: ServerRepository = request.app.state.servers
    return repository


ServersDep = Annotated[ServerRepository, Depends(get_server_repository)]

ServerName = Annotated[str, Path(max_length=128, description="The server's unique name.")]


@router.post(
    "",
    status_code=201,
    summary="Register a server",
    responses={**NAME_TAKEN, **NETWORK_REFUSED},
)
async def create_server(
    spec: ServerCreate, servers: ServersDep, settings: SettingsDep, principal: DatabasesWrite
) -> Server:
    """Store a server; the admin password is encrypted at rest and never returned. A host on a
    refused network is a 422 ``network_refused``."""
    del principal  # authorisation only
    check_registered_host(spec.host, settings.network)
    return await servers.create(spec)


@router.get("", summary="List servers, filtered by labels")
async def list_servers(
    servers: ServersDep,
    principal: DatabasesRead,
    label: Annotated[
        list[str], Query(description="key=value; repeat or comma-separate for several")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ServerPage:
    """Servers whose labels include every given pair, by name; follow ``next_cursor``."""
    del principal
    return await servers.list(labels=parse_label_filters(label), limit=limit, cursor=cursor)


@router.get("/{name}", summary="One server", responses=NOT_FOUND)
async def get_server(name: ServerName, servers: ServersDep, principal: DatabasesRead) -> Server:
    """The server with its target count, without its admin password."""
    del principal
    return await servers.get_by_name(name)


@router.patch(
    "/{name}",
    summary="Change a server",
    responses={**NOT_FOUND, **NAME_TAKEN, **NETWORK_REFUSED},
)
async def update_server(
    name: ServerName,
    changes: ServerUpdate,
    servers: ServersDep,
    settings: SettingsDep,
    principal: DatabasesWrite,
) -> Server:
    """Change any field; only the fields sent change. A new admin password is re-encrypted."""
    del principal
    if changes.host is not None:
        check_registered_host(changes.host, settings.network)
    server = await servers.get_by_name(name)
    return await servers.update(server.id, changes)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Forget a server",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "Targets still reference the server."},
    },
)
async def delete_server(
    name: ServerName, servers: ServersDep, principal: DatabasesWrite
) -> Response:
    """Remove the server from the catalog (the server itself is untouched); refused with 409
    while any registered target lives on it."""
    del principal
    server = await servers.get_by_name(name)
    await servers.delete(server.id)
    return Response(status_code=204)
