"""Read migration sets in the layouts users already have: Flyway, golang-migrate, dbmate."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput
from models.migrations import Migration, MigrationFormat, normalise_version, version_key

_FLYWAY = re.compile(r"^(?P<kind>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<desc>.+)\.sql$")
_FLYWAY_REPEATABLE = re.compile(r"^R__.+\.sql$")
_GOLANG = re.compile(r"^(?P<version>\d+)_(?P<desc>.+)\.(?P<kind>up|down)\.sql$")
_DBMATE = re.compile(r"^(?P<version>\d+)_(?P<desc>.+)\.sql$")
_DBMATE_UP = re.compile(r"^--\s*migrate:up(?P<options>[^\n]*)$", re.MULTILINE | re.IGNORECASE)
_DBMATE_DOWN = re.compile(r"^--\s*migrate:down[^\n]*$", re.MULTILINE | re.IGNORECASE)
_NO_TRANSACTION = re.compile(r"^\s*--\s*tenantflow:no-transaction\s*$", re.MULTILINE | re.I)


class MigrationSetError(InvalidInput):
    """A migration file is malformed, duplicated or unpaired; the message names it."""

    error_type = "invalid_migration_set"


def normalise_sql(sql: str) -> str:
    """Line endings to LF, trailing blanks and surrounding blank lines removed, BOM dropped."""
    text = sql.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def checksum(sql: str) -> str:
    """sha256 hex of the normalised SQL."""
    return hashlib.sha256(normalise_sql(sql).encode("utf-8")).hexdigest()


@dataclass
class _Pending:
    version: str
    description: str
    up: str | None = None
    up_file: str | None = None
    down: str | None = None
    down_file: str | None = None
    no_transaction: bool = False


def _describe(raw: str) -> str:
    return raw.replace("_", " ").strip()


def detect_format(names: Sequence[str]) -> MigrationFormat:
    """The one layout the ``.sql`` file names follow."""
    sql = [n for n in names if n.endswith(".sql")]
    found = set()
    if any(_FLYWAY.match(n) or _FLYWAY_REPEATABLE.match(n) for n in sql):
        found.add(MigrationFormat.FLYWAY)
    if any(_GOLANG.match(n) for n in sql):
        found.add(MigrationFormat.GOLANG_MIGRATE)
    if not found and any(_DBMATE.match(n) for n in sql):
        found.add(MigrationFormat.DBMATE)
    if len(found) != 1:
        raise MigrationSetError(
            "cannot tell the migration format: expected Flyway (V1__x.sql), golang-migrate "
            "(000001_x.up.sql) or dbmate (20240101_x.sql with -- migrate:up) file names"
            + (f"; found a mix of {sorted(found)}" if found else ""),
            details={"files": sorted(sql)[:20]},
        )
    return found.pop()


def _version(raw: str, name: str) -> str:
    try:
        return normalise_version(raw)
    except ValueError as exc:
        raise MigrationSetError(f"{name}: {exc}", details={"file": name}) from None


def _slot(pending: dict[str, _Pending], version: str, description: str) -> _Pending:
    return pending.setdefault(version, _Pending(version=version, description=description))


def _set_up(entry: _Pending, name: str, sql: str) -> None:
    if entry.up_file is not None:
        raise MigrationSetError(
            f"version {entry.version} is defined twice: {entry.up_file} and {name}",
            details={"files": [entry.up_file, name], "version": entry.version},
        )
    entry.up, entry.up_file = sql, name


def _set_down(entry: _Pending, name: str, sql: str) -> None:
    if entry.down_file is not None:
        raise MigrationSetError(
            f"version {entry.version} has two down scripts: {entry.down_file} and {name}",
            details={"files": [entry.down_file, name], "version": entry.version},
        )
    entry.down, entry.down_file = sql, name


def _split_dbmate(name: str, text: str) -> tuple[str, str | None, bool]:
    up = _DBMATE_UP.search(text)
    if up is None:
        raise MigrationSetError(f"{name} has no '-- migrate:up' line", details={"file": name})
    down = _DBMATE_DOWN.search(text, up.end())
    up_sql = text[up.end() : down.start() if down else len(text)]
    down_sql = text[down.end() :] if down else None
    no_transaction = "transaction:false" in up["options"].replace(" ", "").lower()
    return up_sql, down_sql, no_transaction


def parse_files(files: Mapping[str, str], fmt: MigrationFormat | None = None) -> list[Migration]:
    """Parse ``{file name: SQL text}`` into ordered migrations; refuse anything ambiguous."""
    named = {path.rsplit("/", 1)[-1]: text for path, text in files.items()}
    sql_names = sorted(n for n in named if n.endswith(".sql"))
    if not sql_names:
        raise MigrationSetError("no .sql files")
    fmt = fmt or detect_format(sql_names)
    pending: dict[str, _Pending] = {}
    for name in sql_names:
        text = named[name]
        if fmt is MigrationFormat.FLYWAY:
            if _FLYWAY_REPEATABLE.match(name):
                raise MigrationSetError(
                    f"{name}: repeatable migrations (R__) are not supported",
                    details={"file": name},
                )
            match = _FLYWAY.match(name)
            if match is None:
                raise MigrationSetError(
                    f"{name} is not a Flyway file name (V1__x.sql, U1__x.sql)",
                    details={"file": name},
                )
            entry = _slot(pending, _version(match["version"], name), _describe(match["desc"]))
            (_set_up if match["kind"] == "V" else _set_down)(entry, name, text)
        elif fmt is MigrationFormat.GOLANG_MIGRATE:
            golang = _GOLANG.match(name)
            if golang is None:
                raise MigrationSetError(
                    f"{name} is not a golang-migrate file name (000001_x.up.sql / .down.sql)",
                    details={"file": name},
                )
            entry = _slot(pending, _version(golang["version"], name), _describe(golang["desc"]))
            (_set_up if golang["kind"] == "up" else _set_down)(entry, name, text)
        else:
            dbmate = _DBMATE.match(name)
            if dbmate is None:
                raise MigrationSetError(
                    f"{name} is not a dbmate file name (20240101_x.sql)", details={"file": name}
                )
            entry = _slot(pending, _version(dbmate["version"], name), _describe(dbmate["desc"]))
            up_sql, down_sql, no_tx = _split_dbmate(name, text)
            _set_up(entry, name, up_sql)
            if down_sql is not None and normalise_sql(down_sql):
                entry.down, entry.down_file = down_sql, name
            entry.no_transaction = no_tx
    migrations: list[Migration] = []
    for entry in sorted(pending.values(), key=lambda e: version_key(e.version)):
        if entry.up is None:
            raise MigrationSetError(
                f"{entry.down_file} has no matching up migration for version {entry.version}",
                details={"file": entry.down_file, "version": entry.version},
            )
        up_sql = normalise_sql(entry.up)
        if not up_sql:
            raise MigrationSetError(f"{entry.up_file} is empty", details={"file": entry.up_file})
        down_sql = normalise_sql(entry.down) if entry.down is not None else None
        migrations.append(
            Migration(
                version=entry.version,
                description=entry.description[:500] or f"version {entry.version}",
                up_sql=up_sql,
                down_sql=down_sql or None,
                checksum=checksum(up_sql),
                no_transaction=entry.no_transaction or bool(_NO_TRANSACTION.search(up_sql)),
                source=entry.up_file,
            )
        )
    return migrations


def load_directory(path: Path, fmt: MigrationFormat | None = None) -> list[Migration]:
    """Read the ``.sql`` files of one directory (not recursive) and parse them."""
    if not path.is_dir():
        raise MigrationSetError(f"{path} is not a directory", details={"path": str(path)})
    files: dict[str, str] = {}
    for file in sorted(path.glob("*.sql")):
        try:
            files[file.name] = file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationSetError(
                f"{file.name} cannot be read as UTF-8 text ({type(exc).__name__})",
                details={"file": file.name},
            ) from None
    return parse_files(files, fmt)


def to_format(migrations: Sequence[Migration], fmt: MigrationFormat) -> dict[str, str]:
    """Write migrations as files of ``fmt`` (the inverse of ``parse_files``)."""
    files: dict[str, str] = {}
    for m in migrations:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", m.description).strip("_") or "migration"
        if fmt is MigrationFormat.FLYWAY:
            files[f"V{m.version}__{slug}.sql"] = m.up_sql + "\n"
            if m.down_sql:
                files[f"U{m.version}__{slug}.sql"] = m.down_sql + "\n"
        elif fmt is MigrationFormat.GOLANG_MIGRATE:
            number = m.version.replace(".", "")
            files[f"{int(number):06d}_{slug}.up.sql"] = m.up_sql + "\n"
            if m.down_sql:
                files[f"{int(number):06d}_{slug}.down.sql"] = m.down_sql + "\n"
        else:
            number = m.version.replace(".", "")
            option = " transaction:false" if m.no_transaction else ""
            text = f"-- migrate:up{option}\n{m.up_sql}\n"
            if m.down_sql:
                text += f"\n-- migrate:down\n{m.down_sql}\n"
            files[f"{number}_{slug}.sql"] = text
    return files
