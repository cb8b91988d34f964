"""``/api/v1/migration-sets``: register (JSON files or an archive) and read migration sets."""

from __future__ import annotations

import io
import tarfile
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.params import Form

from common.catalog.migration_sets import MigrationSetRepository
from common.errors import InvalidInput, NotFound, PayloadTooLarge
from common.migrations.loader import parse_files
from gateway.auth.deps import MigrationsExecute, MigrationsRead
from models.errors import ErrorResponse
from models.migrations import (
    Migration,
    MigrationFormat,
    MigrationSetInfo,
    MigrationSetList,
    MigrationSetRegistered,
    MigrationSetUpload,
    MigrationSummary,
    SetName,
    normalise_version,
)

router = APIRouter(prefix="/api/v1/migration-sets", tags=["migration-sets"])

MAX_ARCHIVE_BYTES = 20 * 1024 * 1024
MAX_EXTRACTED_BYTES = 100 * 1024 * 1024
MAX_FILES = 10_000
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A file is malformed; it is named."},
    409: {"model": ErrorResponse, "description": "A version exists with other content."},
}


def get_sets(request: Request) -> MigrationSetRepository:
    """The repository built in the lifespan."""
    repository: MigrationSetRepository = request.app.state.migration_sets
    return repository


SetsDep = Annotated[MigrationSetRepository, Depends(get_sets)]


@router.post("", status_code=201, summary="Register a migration set (JSON)", responses=ERRORS)
async def register_json(
    upload: MigrationSetUpload, sets: SetsDep, principal: MigrationsExecute
) -> MigrationSetRegistered:
    """Register ``files`` (name -> SQL text) as versions of ``name``; new versions are added,
    identical ones left alone, changed ones refused."""
    del principal
    return await sets.register(upload.name, parse_files(upload.files, upload.format))


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
) -> MigrationSetRegistered:
    """The same as the JSON form, from a ``.tar.gz``/``.tgz`` or ``.zip`` of the directory."""
    del principal
    data = await archive.read(MAX_ARCHIVE_BYTES + 1)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise PayloadTooLarge(f"archives are limited to {MAX_ARCHIVE_BYTES} bytes")
    return await sets.register(name, parse_files(extract_sql_files(data), format))


def extract_sql_files(data: bytes) -> dict[str, str]:
    """``.sql`` members of a tar.gz or zip archive, by base name, with size limits."""
    files: dict[str, str] = {}
    total = 0

    def add(member_name: str, content: bytes) -> None:
        nonlocal total
        total += len(content)
        if total > MAX_EXTRACTED_BYTES or len(files) >= MAX_FILES:
            raise PayloadTooLarge("the archive expands beyond the accepted size")
        base = member_name.rsplit("/", 1)[-1]
        if not base.endswith(".sql"):
            return
        try:
            files[base] = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{base} is not UTF-8 text", details={"file": base}) from None

    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            for info in bundle.infolist():
                if not info.is_dir():
                    if info.file_size > MAX_EXTRACTED_BYTES:
                        raise PayloadTooLarge("the archive expands beyond the accepted size")
                    add(info.filename, bundle.read(info))
        return files
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if member.isfile():
                    if member.size > MAX_EXTRACTED_BYTES:
                        raise PayloadTooLarge("the archive expands beyond the accepted size")
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        add(member.name, extracted.read())
    except tarfile.TarError:
        raise InvalidInput("the upload is neither a zip nor a (gzipped) tar archive") from None
    return files


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
    """Versions with descriptions and checksums (no SQL)."""
    del principal
    return await sets.info(name)


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
        wanted = normalise_version(version)
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
        wanted = normalise_version(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    for migration in await sets.migrations(name):
        if migration.version == wanted:
            return migration
    raise NotFound(f"set {name!r} has no version {wanted}", details={"set": name})
