"""``/api/v1/migration-sets``: register (JSON files or an archive) and read migration sets."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.params import Form

from common.catalog.migration_sets import MigrationSetRepository
from common.errors import InvalidInput, NotFound, PayloadTooLarge
from common.migrations.lint import lint_set
from common.migrations.loader import parse_files
from gateway import archives
from gateway.auth.deps import MigrationsExecute, MigrationsRead
from models.errors import ErrorResponse
from models.lint import SetLint
from models.migrations import (
    LedgerTable,
    Migration,
    MigrationFormat,
    MigrationSetInfo,
    MigrationSetList,
    MigrationSetRegistered,
    MigrationSetUpload,
    MigrationSummary,
    SetName,
    is_repeatable,
    normalise_version,
)

router = APIRouter(prefix="/api/v1/migration-sets", tags=["migration-sets"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A file is malformed; it is named."},
    409: {
        "model": ErrorResponse,
        "description": "A version exists with other content, or the set keeps its ledger in "
        "another table.",
    },
    422: {"model": ErrorResponse, "description": "A field is invalid (a name, ledger_table)."},
}


async def get_sets(request: Request) -> MigrationSetRepository:
    """The repository built in the lifespan."""
    repository: MigrationSetRepository = request.app.state.migration_sets
    return repository


SetsDep = Annotated[MigrationSetRepository, Depends(get_sets)]


@router.post("", status_code=201, summary="Register a migration set (JSON)", responses=ERRORS)
async def register_json(
    upload: MigrationSetUpload, sets: SetsDep, principal: MigrationsExecute
) -> MigrationSetRegistered:
    """Register ``files`` (name -> SQL text) as versions of ``name``; new versions are added,
    identical ones left alone, changed ones refused. ``ledger_table`` is fixed when the set is
    created; naming another one later is refused."""
    del principal
    return await sets.register(
        upload.name, parse_files(upload.files, upload.format), upload.ledger_table
    )


@router.post(
    "/archive",
    status_code=201,
    summary="Register a migration set (tar.gz or zip upload)",
    responses=ERRORS,
)
async def register_archive(
    name: Annotated[SetName, Form()],
    archive: UploadFile,
    sets: SetsDep,
    principal: MigrationsExecute,
    format: Annotated[MigrationFormat | None, Form()] = None,
    ledger_table: Annotated[LedgerTable | None, Form()] = None,
) -> MigrationSetRegistered:
    """The same as the JSON form, from a ``.tar.gz``/``.tgz`` or ``.zip`` of the directory."""
    del principal
    limit = archives.MAX_ARCHIVE_BYTES
    data = await archive.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"archives are limited to {limit} bytes")
    # Decompression is CPU work: in a worker thread, so other requests keep being served.
    files = await asyncio.to_thread(archives.extract_sql_files, data)
    return await sets.register(name, parse_files(files, format), ledger_table)


@router.get("", summary="List migration sets")
async def list_sets(sets: SetsDep, principal: MigrationsRead) -> MigrationSetList:
    """Every registered set with its latest version."""
    del principal
    return await sets.list()


@router.get(
    "/{name}",
    summary="One migration set and its versions",
    responses={404: {"model": ErrorResponse, "description": "No such set."}},
)
async def get_set(name: str, sets: SetsDep, principal: MigrationsRead) -> MigrationSetInfo:
    """Versions with descriptions and checksums (no SQL), and the set's ledger table."""
    del principal
    return await sets.info(name)


@router.get(
    "/{name}/lint",
    summary="Lock-risk warnings of every version (docs/lock-risks.md)",
    responses={404: {"model": ErrorResponse, "description": "No such set."}},
)
async def lint(
    name: str,
    sets: SetsDep,
    principal: MigrationsRead,
    direction: Annotated[
        Literal["up", "down"], Query(description="Lint the up scripts, or the down scripts.")
    ] = "up",
    lock_timeout_ms: Annotated[
        int,
        Query(
            ge=0,
            le=3_600_000,
            description="The lock_timeout runs will use (5000, the runs' default, unless "
            "given); 0 checks that versions set one themselves.",
        ),
    ] = 5_000,
) -> SetLint:
    """What each version would do to tables a busy database is using: rule, severity,
    message, advice and line; withdrawn versions are left out. The same findings a dry run
    lists per planned version."""
    del principal
    migrations = await sets.migrations(name)
    # Parsing is CPU work: in a worker thread, so other requests keep being served.
    return await asyncio.to_thread(
        lint_set, name, migrations, down=direction == "down", lock_timeout_ms=lock_timeout_ms
    )


@router.post(
    "/{name}/versions/{version}/withdraw",
    summary="Withdraw a version (it will not be applied to targets lacking it)",
    responses={404: {"model": ErrorResponse, "description": "No such set or version."}},
)
async def withdraw_version(
    name: str, version: str, sets: SetsDep, principal: MigrationsExecute
) -> MigrationSummary:
    """For a version that cannot succeed: register a corrected one as a new version and
    withdraw the broken one. Targets that already have it keep it (and verify it)."""
    del principal
    try:
        wanted = version if is_repeatable(version) else normalise_version(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return await sets.withdraw(name, wanted)


@router.get(
    "/{name}/versions/{version}",
    summary="One version with its SQL",
    responses={404: {"model": ErrorResponse, "description": "No such set or version."}},
)
async def get_version(
    name: str, version: str, sets: SetsDep, principal: MigrationsRead
) -> Migration:
    """The up and down SQL of one version."""
    del principal
    try:
        wanted = version if is_repeatable(version) else normalise_version(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    for migration in await sets.migrations(name):
        if migration.version == wanted:
            return migration
    raise NotFound(f"set {name!r} has no version {wanted}", details={"set": name})
