"""Read migration sets in the layouts users already have: Flyway, golang-migrate, dbmate.

``parse_files`` works on ``{file name: text}`` (what the HTTP upload sends); ``load_directory``
reads a directory into that shape; ``to_format`` writes a set back out in any layout. Every
refusal is a ``MigrationSetError`` whose message names the offending file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput
from common.migrations.sql import has_marker, line_at, refusals
from models.migrations import Migration, MigrationFormat, normalise_version, version_key

_FLYWAY = re.compile(r"^(?P<kind>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<desc>.+)\.sql$")
_FLYWAY_REPEATABLE = re.compile(r"^R__.*\.sql$")
_GOLANG = re.compile(r"^(?P<version>\d+)_(?P<desc>.+)\.(?P<kind>up|down)\.sql$")
_DBMATE = re.compile(r"^(?P<version>\d+)_(?P<desc>.+)\.sql$")
_DBMATE_UP = re.compile(r"^--[ \t]*migrate:up(?P<options>[ \t][^\r\n]*)?\r?$", re.MULTILINE)
_DBMATE_DOWN = re.compile(r"^--[ \t]*migrate:down(?:[ \t][^\r\n]*)?\r?$", re.MULTILINE)
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
# The line that makes a migration run outside a transaction (CREATE INDEX CONCURRENTLY, ...).
NO_TRANSACTION_MARKER = "-- tenantflow:no-transaction"
_SHOWN = 10  # file names listed in one message; ``details`` carries them all


class MigrationSetError(InvalidInput):
    """A migration file is malformed, duplicated or unpaired; the message names it."""

    error_type = "invalid_migration_set"


def normalise_sql(sql: str) -> str:
    """The canonical text of a migration script.

    Args:
        sql: Script text as read or uploaded.

    Returns:
        The text with a UTF-8 BOM removed, line endings turned into ``\\n``, trailing whitespace
        stripped from every line and leading/trailing blank lines removed.
    """
    text = sql.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def checksum(sql: str, down_sql: str | None = None, *, no_transaction: bool = False) -> str:
    """The checksum recorded for a migration: every part of the version.

    A version with neither a down script nor the no-transaction flag keeps the checksum of its
    up SQL alone (what earlier releases recorded), so ledgers written then still verify.

    Args:
        sql: The up script; each part is normalised for the checksum only (see
            ``normalise_sql``), so line endings and trailing blanks do not change it while any
            change of a statement does.
        down_sql: The down script; ``None`` (no down) and ``""`` (an explicit no-op) differ.
        no_transaction: Whether the version runs outside a transaction.

    Returns:
        The sha256 of the normalised UTF-8 parts, as 64 lowercase hex digits.
    """
    text = normalise_sql(sql)
    if down_sql is not None:
        text += "\0down\0" + normalise_sql(down_sql)
    if no_transaction:
        text += "\0no-transaction"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _is_dbmate(name: str, text: str) -> bool:
    return bool(_DBMATE.match(name) and _DBMATE_UP.search(normalise_sql(text)))


def detect_format(files: Mapping[str, str]) -> MigrationFormat:
    """The one layout a set's ``.sql`` files follow.

    Flyway when any file is named ``V<version>__<description>.sql`` or ``U...`` (or ``R__...``,
    refused later), golang-migrate when any is ``<version>_<description>.up.sql``/``.down.sql``,
    dbmate when any ``<version>_<description>.sql`` contains a ``-- migrate:up`` line.

    Args:
        files: Base file name -> text; names not ending in ``.sql`` are ignored.

    Returns:
        The detected format.

    Raises:
        MigrationSetError: The files follow no layout or more than one.
    """
    sql = sorted(name for name in files if name.endswith(".sql"))
    evidence: dict[MigrationFormat, list[str]] = {
        MigrationFormat.FLYWAY: [n for n in sql if _FLYWAY.match(n) or _FLYWAY_REPEATABLE.match(n)],
        MigrationFormat.GOLANG_MIGRATE: [n for n in sql if _GOLANG.match(n)],
        MigrationFormat.DBMATE: [n for n in sql if _is_dbmate(n, files[n])],
    }
    found = {fmt: names for fmt, names in evidence.items() if names}
    if len(found) == 1:
        return next(iter(found))
    if found:
        mix = "; ".join(f"{fmt.value} ({_listing(names[:2])})" for fmt, names in found.items())
        raise MigrationSetError(
            f"the files mix migration formats: {mix}; use one layout per set, or name the "
            "format explicitly",
            details={"files": {fmt.value: names for fmt, names in found.items()}},
        )
    hint = ""
    unmarked = [n for n in sql if _DBMATE.match(n)]
    if unmarked:
        hint = f"; {_listing(unmarked)} look like dbmate files but have no '-- migrate:up' line"
    raise MigrationSetError(
        "cannot tell the migration format of "
        f"{_listing(sql) or 'the upload (no .sql files)'}: expected Flyway (V1__x.sql, "
        "U1__x.sql), golang-migrate (000001_x.up.sql, 000001_x.down.sql) or dbmate "
        f"(20240101120000_x.sql with a '-- migrate:up' line){hint}",
        details={"files": sql},
    )


@dataclass
class _Pending:
    version: str
    description: str = ""
    up: str | None = None
    up_file: str | None = None
    down: str | None = None
    down_file: str | None = None
    no_transaction: bool = False
    up_line: int = 1  # where the up / down SQL starts in its file (dbmate sections)
    down_line: int = 1


def _describe(raw: str) -> str:
    return " ".join(raw.replace("_", " ").split())


def _version(raw: str, name: str) -> str:
    try:
        return normalise_version(raw)
    except ValueError as exc:
        raise MigrationSetError(f"{name}: {exc}", details={"file": name}) from None


def _set_up(entry: _Pending, name: str, sql: str, description: str) -> None:
    if entry.up_file is not None:
        raise MigrationSetError(
            f"version {entry.version} is defined twice: {entry.up_file} and {name}",
            details={"files": [entry.up_file, name], "version": entry.version},
        )
    entry.up, entry.up_file, entry.description = sql, name, description


def _set_down(entry: _Pending, name: str, sql: str) -> None:
    if entry.down_file is not None:
        raise MigrationSetError(
            f"version {entry.version} has two down scripts: {entry.down_file} and {name}",
            details={"files": [entry.down_file, name], "version": entry.version},
        )
    entry.down, entry.down_file = sql, name


def _split_dbmate(name: str, raw: str) -> tuple[str, str | None, bool, int, int]:
    """(up SQL, down SQL or None, transaction:false, up line, down line) of one dbmate file;
    each section exactly as written (from the line after its marker)."""
    text = raw.removeprefix("\ufeff")
    ups = list(_DBMATE_UP.finditer(text))
    downs = list(_DBMATE_DOWN.finditer(text))
    if not ups:
        raise MigrationSetError(f"{name} has no '-- migrate:up' line", details={"file": name})
    if len(ups) > 1 or len(downs) > 1:
        raise MigrationSetError(
            f"{name} has more than one '-- migrate:up' or '-- migrate:down' line",
            details={"file": name},
        )
    up, down = ups[0], (downs[0] if downs else None)
    if down is not None and down.start() < up.start():
        raise MigrationSetError(
            f"{name}: '-- migrate:down' comes before '-- migrate:up'", details={"file": name}
        )
    prelude = _BLOCK_COMMENT.sub(lambda c: "\n" * c[0].count("\n"), text[: up.start()])
    for number, line in enumerate(prelude.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            raise MigrationSetError(
                f"{name}, line {number}: only comments and blank lines may precede '-- migrate:up'",
                details={"file": name, "line": number},
            )
    up_sql = text[up.end() : down.start() if down else len(text)].removeprefix("\n")
    down_sql = text[down.end() :].removeprefix("\n") if down else None
    options = (up["options"] or "").split()
    no_transaction = any(option.lower() == "transaction:false" for option in options)
    up_line = line_at(text, up.end()) + 1
    down_line = line_at(text, down.end()) + 1 if down else 1
    return up_sql, down_sql, no_transaction, up_line, down_line


def _base_names(files: Mapping[str, str]) -> dict[str, str]:
    named: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path, text in files.items():
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        if not base.endswith(".sql"):
            continue
        if base in named:
            raise MigrationSetError(
                f"{base} appears twice: {origin[base]} and {path}",
                details={"files": [origin[base], path]},
            )
        named[base], origin[base] = text, path
    return named


def _refuse_repeatables(names: Sequence[str]) -> None:
    repeatable = [n for n in names if _FLYWAY_REPEATABLE.match(n)]
    if repeatable:
        raise MigrationSetError(
            f"{_listing(repeatable)}: Flyway repeatable migrations (R__) are not supported; "
            "make each change a versioned migration (V<n>__...)",
            details={"files": repeatable},
        )


_PATTERNS = {
    MigrationFormat.FLYWAY: _FLYWAY,
    MigrationFormat.GOLANG_MIGRATE: _GOLANG,
    MigrationFormat.DBMATE: _DBMATE,
}
_EXPECTED = {
    MigrationFormat.FLYWAY: "V<version>__<description>.sql or U<version>__<description>.sql",
    MigrationFormat.GOLANG_MIGRATE: "<version>_<description>.up.sql or .down.sql",
    MigrationFormat.DBMATE: "<version>_<description>.sql",
}


def parse_files(files: Mapping[str, str], fmt: MigrationFormat | None = None) -> list[Migration]:
    """Parse a migration set held in memory.

    Only base names count (the part after the last ``/``); names not ending in ``.sql`` (a
    README, say) are ignored, while ``.sql`` files that fit no name of the format are refused.
    An up script with a whole line ``-- tenantflow:no-transaction`` (any case), or a dbmate file
    with ``-- migrate:up transaction:false``, runs outside a transaction.

    Args:
        files: Relative file name -> text (already decoded).
        fmt: The layout; detected from the names (and dbmate markers) when ``None``.

    Returns:
        The migrations in version order (numeric, part by part: 2 < 10, 1.2 < 1.10), each with
        normalised SQL, the checksum of its up SQL and its up file as ``source``.

    Raises:
        MigrationSetError: No ``.sql`` files, an undetectable or mixed layout, a file name that
            fits no pattern of the format, a repeatable Flyway migration, a version defined
            twice, a down script without an up, an empty up script, or a malformed dbmate file.
    """
    named = _base_names(files)
    if not named:
        raise MigrationSetError("the migration set has no .sql files", details={"files": []})
    names = sorted(named)
    fmt = fmt or detect_format(named)
    if fmt is MigrationFormat.FLYWAY:
        _refuse_repeatables(names)
    matches = {name: _PATTERNS[fmt].match(name) for name in names}
    unmatched = [name for name, match in matches.items() if match is None]
    if unmatched:
        raise MigrationSetError(
            f"{_listing(unmatched)}: not {fmt.value} file names (expected {_EXPECTED[fmt]})",
            details={"files": unmatched, "format": fmt.value},
        )
    pending: dict[str, _Pending] = {}
    for name, match in matches.items():
        if match is None:  # refused above
            continue
        version = _version(match["version"], name)
        entry = pending.setdefault(version, _Pending(version))
        description = _describe(match["desc"])
        if fmt is MigrationFormat.DBMATE:
            up_sql, down_sql, no_transaction, up_line, down_line = _split_dbmate(name, named[name])
            _set_up(entry, name, up_sql, description)
            # A '-- migrate:down' marker is a down script, an empty one a no-op (as in dbmate).
            if down_sql is not None:
                entry.down, entry.down_file = down_sql, name
            entry.no_transaction = no_transaction
            entry.up_line, entry.down_line = up_line, down_line
        elif match["kind"] in ("V", "up"):
            _set_up(entry, name, named[name], description)
        else:
            _set_down(entry, name, named[name])
    ordered = sorted(pending.values(), key=lambda e: version_key(e.version))
    return [_build(entry) for entry in ordered]


def _build(entry: _Pending) -> Migration:
    if entry.up is None or entry.up_file is None:
        raise MigrationSetError(
            f"{entry.down_file} has no matching up migration for version {entry.version}",
            details={"file": entry.down_file, "version": entry.version},
        )
    return make_migration(
        entry.version,
        entry.description,
        entry.up,
        entry.down,
        source=entry.up_file,
        down_source=entry.down_file,
        no_transaction=entry.no_transaction,
        lines=(entry.up_line, entry.down_line),
    )


def make_migration(
    version: str,
    description: str,
    up_sql: str,
    down_sql: str | None,
    *,
    source: str,
    down_source: str | None = None,
    no_transaction: bool = False,
    lines: tuple[int, int] = (1, 1),
) -> Migration:
    """One version from its scripts, refused (``MigrationSetError`` naming file and line) when
    it cannot run as a version: transaction control outside a no-transaction version,
    ``COPY ... FROM STDIN``, psql meta-commands, NUL characters.

    The scripts are stored and run byte for byte as written (a leading BOM, an encoding mark,
    is dropped); an empty or comment-only up script is a no-op version, an empty down script
    an explicit no-op down (``None``: no down at all)."""
    up_sql = up_sql.removeprefix("\ufeff")
    down_sql = down_sql.removeprefix("\ufeff") if down_sql is not None else None
    no_transaction = no_transaction or has_marker(up_sql, NO_TRANSACTION_MARKER)
    _refuse(source, up_sql, lines[0], no_transaction)
    if down_sql is not None:
        _refuse(down_source or source, down_sql, lines[1], no_transaction)
    return Migration(
        version=version,
        description=description[:500] or f"version {version}",
        up_sql=up_sql,
        down_sql=down_sql,
        checksum=checksum(up_sql, down_sql, no_transaction=no_transaction),
        no_transaction=no_transaction,
        source=source,
    )


def _refuse(name: str, sql: str, first_line: int, no_transaction: bool) -> None:
    """Refuse SQL that cannot run as a version, naming the file and line."""
    if "\0" in sql:
        line = first_line + line_at(sql, sql.index("\0")) - 1
        raise MigrationSetError(
            f"{name}, line {line}: contains a NUL character, which PostgreSQL cannot take",
            details={"file": name, "line": line},
        )
    found = refusals(sql, no_transaction=no_transaction)
    if found:
        lines = [first_line + r.line - 1 for r in found]
        raise MigrationSetError(
            f"{name}, line {lines[0]}: {found[0].message}",
            details={
                "file": name,
                "line": lines[0],
                "problems": [
                    {"line": line, "message": r.message}
                    for line, r in zip(lines, found, strict=True)
                ],
            },
        )


def load_directory(path: Path, fmt: MigrationFormat | None = None) -> list[Migration]:
    """Read and parse the ``.sql`` files of one directory (not its subdirectories).

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
    for file in sorted(path.glob("*.sql")):
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


def _slug(description: str) -> str:
    return re.sub(r"\W+", "_", description).strip("_") or "migration"


def _ending(sql: str) -> str:
    """``sql`` ending in a line break, so that a marker written after it stands on its own."""
    return sql if not sql or sql.endswith("\n") else sql + "\n"


def to_format(migrations: Sequence[Migration], fmt: MigrationFormat) -> dict[str, str]:
    """Write a set as the files of a layout (the inverse of ``parse_files``).

    ``parse_files(to_format(ms, fmt), fmt)`` gives the same versions, up/down SQL and checksums.
    The one exception: a migration flagged ``no_transaction`` without the marker line in its SQL
    (from dbmate's ``transaction:false``) gets the marker prepended in Flyway and golang-migrate,
    which have no other way to say it, so its up SQL and checksum change there.

    Args:
        migrations: The set.
        fmt: The layout to write.

    Returns:
        File name -> text, up and down files (or dbmate sections) for every migration.

    Raises:
        MigrationSetError: A dotted version (Flyway's ``1.2``) written as golang-migrate or
            dbmate, whose versions are single integers.
    """
    files: dict[str, str] = {}
    for m in migrations:
        slug = _slug(m.description)
        up_sql = m.up_sql
        if fmt is not MigrationFormat.FLYWAY and "." in m.version:
            raise MigrationSetError(
                f"{m.source or 'version ' + m.version}: version {m.version} cannot be written "
                f"as {fmt.value}, whose versions are single integers",
                details={"file": m.source, "version": m.version},
            )
        number = m.version if fmt is MigrationFormat.FLYWAY else f"{int(m.version):06d}"
        if fmt is MigrationFormat.DBMATE:
            option = " transaction:false" if m.no_transaction else ""
            text = f"-- migrate:up{option}\n{up_sql}"
            if m.down_sql is not None:
                text = f"{_ending(text)}-- migrate:down\n{m.down_sql}"
            files[f"{number}_{slug}.sql"] = text
            continue
        # Flyway and golang-migrate: separate up and down files; the marker says no-transaction.
        if fmt is MigrationFormat.FLYWAY:
            up_name, down_name = f"V{number}__{slug}.sql", f"U{number}__{slug}.sql"
        else:
            up_name, down_name = f"{number}_{slug}.up.sql", f"{number}_{slug}.down.sql"
        if m.no_transaction and not has_marker(up_sql, NO_TRANSACTION_MARKER):
            up_sql = f"{NO_TRANSACTION_MARKER}\n{up_sql}"
        files[up_name] = up_sql
        if m.down_sql is not None:
            files[down_name] = m.down_sql
    return files
