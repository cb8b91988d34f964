"""Read migration sets in the layouts users already have: Flyway, golang-migrate, dbmate.

``parse_files`` works on ``{file name: text}`` (what the HTTP upload sends); ``load_directory``
reads a directory into that shape; ``to_format`` writes a set back out in any layout. Each
layout's rules live in its own module (``flyway``, ``golang_migrate``, ``dbmate``); this one
detects the layout and dispatches. Every refusal is a ``MigrationSetError`` whose message names
the offending file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from common.migrations import dbmate, flyway, golang_migrate
from common.migrations.base import (
    NO_TRANSACTION_MARKER,
    MigrationSetError,
    checksum,
    listing,
    make_migration,
    normalise_sql,
)
from models.migrations import Migration, MigrationFormat

__all__ = [
    "NO_TRANSACTION_MARKER",
    "MigrationSetError",
    "checksum",
    "detect_format",
    "load_directory",
    "make_migration",
    "normalise_sql",
    "parse_files",
    "to_format",
]

_CONF = ".sql.conf"  # Flyway's script configuration files


def detect_format(files: Mapping[str, str]) -> MigrationFormat:
    """The one layout a set's ``.sql`` files follow.

    Flyway when any file is named ``V<version>__<description>.sql``, ``U...`` or ``R__...``,
    golang-migrate when any is ``<version>_<description>.up.sql``/``.down.sql``, dbmate when
    any ``<version>_<description>.sql`` contains a ``-- migrate:up`` line.

    Args:
        files: Base file name -> text; names not ending in ``.sql`` are ignored.

    Returns:
        The detected format.

    Raises:
        MigrationSetError: The files follow no layout or more than one.
    """
    sql = sorted(name for name in files if name.endswith(".sql"))
    evidence: dict[MigrationFormat, list[str]] = {
        MigrationFormat.FLYWAY: [n for n in sql if flyway.matches(n)],
        MigrationFormat.GOLANG_MIGRATE: [n for n in sql if golang_migrate.PATTERN.match(n)],
        MigrationFormat.DBMATE: [n for n in sql if dbmate.is_dbmate(n, files[n])],
    }
    found = {fmt: names for fmt, names in evidence.items() if names}
    if len(found) == 1:
        return next(iter(found))
    if found:
        mix = "; ".join(f"{fmt.value} ({listing(names[:2])})" for fmt, names in found.items())
        raise MigrationSetError(
            f"the files mix migration formats: {mix}; use one layout per set, or name the "
            "format explicitly",
            details={"files": {fmt.value: names for fmt, names in found.items()}},
        )
    hint = ""
    unmarked = [n for n in sql if dbmate.PATTERN.match(n)]
    if unmarked:
        hint = f"; {listing(unmarked)} look like dbmate files but have no '-- migrate:up' line"
    raise MigrationSetError(
        "cannot tell the migration format of "
        f"{listing(sql) or 'the upload (no .sql files)'}: expected Flyway (V1__x.sql, "
        "U1__x.sql, R__x.sql), golang-migrate (000001_x.up.sql, 000001_x.down.sql) or dbmate "
        f"(20240101120000_x.sql with a '-- migrate:up' line){hint}",
        details={"files": sql},
    )


def _base_names(files: Mapping[str, str]) -> dict[str, str]:
    """Base name -> text of the ``.sql`` (and Flyway ``.sql.conf``) files; others ignored."""
    named: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path, text in files.items():
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        if not base.endswith((".sql", _CONF)):
            continue
        if base in named:
            raise MigrationSetError(
                f"{base} appears twice: {origin[base]} and {path}",
                details={"files": [origin[base], path]},
            )
        named[base], origin[base] = text, path
    return named


def parse_files(files: Mapping[str, str], fmt: MigrationFormat | None = None) -> list[Migration]:
    """Parse a migration set held in memory.

    Only base names count (the part after the last ``/``); names not ending in ``.sql`` or
    ``.sql.conf`` (a README, say) are ignored, while ``.sql`` files that fit no name of the
    format are refused. An up script with a whole line ``-- tenantflow:no-transaction`` (any
    case), a dbmate section marked ``transaction:false`` or a Flyway script whose ``.sql.conf``
    says ``executeInTransaction=false`` runs outside a transaction.

    Args:
        files: Relative file name -> text (already decoded).
        fmt: The layout; detected from the names (and dbmate markers) when ``None``.

    Returns:
        The migrations in version order (numeric, part by part: 2 < 10, 1.2 < 1.10), each with
        its SQL as written, its checksum and its up file as ``source``; then Flyway's
        repeatable migrations (``repeatable``, version ``R:<description>``) by description.

    Raises:
        MigrationSetError: No ``.sql`` files, an undetectable or mixed layout, a file name that
            fits no pattern of the format, a version (or repeatable description) defined
            twice, a down script without an up, a malformed dbmate file or Flyway script
            configuration, or SQL that cannot run as a version; the message names the file.
    """
    named = _base_names(files)
    scripts = {name: text for name, text in named.items() if name.endswith(".sql")}
    confs = {name: text for name, text in named.items() if name.endswith(_CONF)}
    if not scripts:
        raise MigrationSetError(
            "the migration set has no .sql files", details={"files": sorted(confs)}
        )
    fmt = fmt or detect_format(scripts)
    if fmt is MigrationFormat.FLYWAY:
        return flyway.parse(scripts, confs)
    if confs:
        names = sorted(confs)
        raise MigrationSetError(
            f"{listing(names)}: script configuration files are Flyway's; {fmt.value} sets "
            "cannot have them",
            details={"files": names, "format": fmt.value},
        )
    if fmt is MigrationFormat.GOLANG_MIGRATE:
        return golang_migrate.parse(scripts)
    return dbmate.parse(scripts)


def load_directory(path: Path, fmt: MigrationFormat | None = None) -> list[Migration]:
    """Read and parse the ``.sql`` and ``.sql.conf`` files of one directory (not its
    subdirectories).

    Args:
        path: The directory.
        fmt: The layout; detected when ``None``.

    Returns:
        The migrations, as ``parse_files`` returns them.

    Raises:
        MigrationSetError: The directory is missing, a file cannot be read as UTF-8, or the
            set is refused by ``parse_files``.
    """
    if not path.is_dir():
        raise MigrationSetError(f"{path} is not a directory", details={"path": str(path)})
    files: dict[str, str] = {}
    for file in sorted([*path.glob("*.sql"), *path.glob(f"*{_CONF}")]):
        if file.is_dir():
            continue
        try:
            files[file.name] = file.read_bytes().decode("utf-8")  # line endings as written
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationSetError(
                f"{file.name} cannot be read as UTF-8 text ({type(exc).__name__})",
                details={"file": file.name},
            ) from None
    return parse_files(files, fmt)


def to_format(migrations: Sequence[Migration], fmt: MigrationFormat) -> dict[str, str]:
    """Write a set as the files of a layout (the inverse of ``parse_files``).

    ``parse_files(to_format(ms, fmt), fmt)`` gives the same versions, SQL, flags and
    checksums, with one exception: golang-migrate has no setting for a transaction, so a
    version flagged no-transaction without the marker line in its SQL (from dbmate's
    ``transaction:false`` or a Flyway ``.sql.conf``) gets the marker prepended there, and its
    SQL and checksum change. Flyway writes a ``.sql.conf`` instead; dbmate its option.

    Args:
        migrations: The set.
        fmt: The layout to write.

    Returns:
        File name -> text.

    Raises:
        MigrationSetError: A dotted version (Flyway's ``1.2``) or a repeatable migration
            written as golang-migrate or dbmate, which have neither; or a down that must run
            in a transaction under an up that cannot, written as golang-migrate.
    """
    ordered = list(migrations)
    if fmt is MigrationFormat.FLYWAY:
        return flyway.write(ordered)
    if fmt is MigrationFormat.GOLANG_MIGRATE:
        return golang_migrate.write(ordered)
    return dbmate.write(ordered)
