"""``/api/v1/assignments``: which migration set targets with given labels should carry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from common.catalog.assignments import AssignmentRepository
from gateway.auth.deps import MigrationsExecute, MigrationsRead
from models.assignments import Assignment, AssignmentList, AssignmentSpec
from models.errors import ErrorResponse

router = APIRouter(prefix="/api/v1/assignments", tags=["assignments"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such set, or the set is not assigned."}
}


async def get_assignments(request: Request) -> AssignmentRepository:
    """The repository built in the lifespan."""
    repository: AssignmentRepository = request.app.state.assignments
    return repository


AssignmentsDep = Annotated[AssignmentRepository, Depends(get_assignments)]


@router.put(
    "/{set_name}",
    summary="Assign a migration set to the targets a selector matches",
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "The pinned version is not in the set."},
    },
)
async def put_assignment(
    set_name: str, spec: AssignmentSpec, assignments: AssignmentsDep, principal: MigrationsExecute
) -> Assignment:
    """Create or replace the set's assignment: targets whose labels contain ``selector``
    (``{}``: every target) should carry ``version`` (``latest``: resolved when a run starts)."""
    del principal
    return await assignments.put(set_name, spec)


@router.get("", summary="List assignments")
async def list_assignments(
    assignments: AssignmentsDep, principal: MigrationsRead
) -> AssignmentList:
    """Every assignment, by set name."""
    del principal
    return await assignments.list()


@router.get("/{set_name}", summary="One set's assignment", responses=NOT_FOUND)
async def get_assignment(
    set_name: str, assignments: AssignmentsDep, principal: MigrationsRead
) -> Assignment:
    """The selector and version of the set's assignment."""
    del principal
    return await assignments.get(set_name)


@router.delete(
    "/{set_name}", status_code=204, summary="Remove a set's assignment", responses=NOT_FOUND
)
async def delete_assignment(
    set_name: str, assignments: AssignmentsDep, principal: MigrationsExecute
) -> Response:
    """New targets stop receiving the set; targets that have it keep it (nothing rolls back)."""
    del principal
    await assignments.delete(set_name)
    return Response(status_code=204)
