"""What every format's reader shares: the error, checksums, and building one checked version.

A format module turns its files into ``Entry`` objects (one per version or repeatable, with the
files they came from) and ``build`` turns each into a ``Migration``, refusing SQL that cannot
run as a version and naming the file and line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import InvalidInput
from common.migrations.sql import has_marker, line_at, refusals
from models.migrations import Migration, normalise_version, repeatable_version

# The line that makes a script run outside a transaction (CREATE INDEX CONCURRENTLY, ...).
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


def checksum(
    sql: str,
    down_sql: str | None = None,
    *,
    no_transaction: bool = False,
    down_no_transaction: bool | None = None,
) -> str:
    """The checksum recorded for a migration: every part of the version.

    A version with neither a down script nor a transaction flag keeps the checksum of its up
    SQL alone (what earlier releases recorded), so ledgers written then still verify.

    Args:
        sql: The up script; each part is normalised for the checksum only (see
            ``normalise_sql``), so line endings and trailing blanks do not change it while any
            change of a statement does.
        down_sql: The down script; ``None`` (no down) and ``""`` (an explicit no-op) differ.
        no_transaction: Whether the version runs outside a transaction.
        down_no_transaction: Whether the down script does, when it differs from the up
            (``None``: as the up, which adds nothing to the checksum).

    Returns:
        The sha256 of the normalised UTF-8 parts, as 64 lowercase hex digits.
    """
    text = normalise_sql(sql)
    if down_sql is not None:
        text += "\0down\0" + normalise_sql(down_sql)
    if no_transaction:
        text += "\0no-transaction"
    if down_sql is not None and down_no_transaction not in (None, no_transaction):
        text += "\0down-no-transaction" if down_no_transaction else "\0down-transaction"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def has_no_transaction_marker(sql: str) -> bool:
    """Whether ``sql`` has the whole line ``-- tenantflow:no-transaction`` (any case)."""
    return has_marker(sql, NO_TRANSACTION_MARKER)


def listing(names: Sequence[str]) -> str:
    """Up to ten names, and how many more."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def describe(raw: str) -> str:
    """A description from a file name's words (``add_orders`` -> ``add orders``)."""
    return " ".join(raw.replace("_", " ").split())


def parse_version(raw: str, name: str) -> str:
    """The canonical version in a file name, or a refusal naming the file."""
    try:
        return normalise_version(raw)
    except ValueError as exc:
        raise MigrationSetError(f"{name}: {exc}", details={"file": name}) from None


def slug(description: str) -> str:
    """A description made fit for a file name."""
    return re.sub(r"\W+", "_", description).strip("_") or "migration"


def ending(sql: str) -> str:
    """``sql`` ending in a line break, so that a marker written after it stands on its own."""
    return sql if not sql or sql.endswith("\n") else sql + "\n"


@dataclass
class Entry:
    """One version (or repeatable migration) as its format's files describe it."""

    version: str
    description: str = ""
    up: str | None = None
    up_file: str | None = None
    down: str | None = None
    down_file: str | None = None
    no_transaction: bool = False
    down_no_transaction: bool | None = None
    repeatable: bool = False
    up_line: int = 1  # where the up / down SQL starts in its file (dbmate sections)
    down_line: int = 1

    def set_up(self, name: str, sql: str, description: str) -> None:
        """The up script, refused when the version already has one."""
        if self.up_file is not None:
            what = "repeatable migration" if self.repeatable else "version"
            label = self.description if self.repeatable else self.version
            raise MigrationSetError(
                f"{what} {label} is defined twice: {self.up_file} and {name}",
                details={"files": [self.up_file, name], "version": self.version},
            )
        self.up, self.up_file, self.description = sql, name, description

    def set_down(self, name: str, sql: str) -> None:
        """The down script, refused when the version already has one."""
        if self.down_file is not None:
            raise MigrationSetError(
                f"version {self.version} has two down scripts: {self.down_file} and {name}",
                details={"files": [self.down_file, name], "version": self.version},
            )
        self.down, self.down_file = sql, name


def build(entry: Entry) -> Migration:
    """The checked ``Migration`` of an entry; a down without an up is refused."""
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
        down_no_transaction=entry.down_no_transaction,
        lines=(entry.up_line, entry.down_line),
        repeatable=entry.repeatable,
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
    down_no_transaction: bool | None = None,
    lines: tuple[int, int] = (1, 1),
    repeatable: bool = False,
) -> Migration:
    """One version from its scripts, refused (``MigrationSetError`` naming file and line) when
    it cannot run as a version: transaction control outside a no-transaction script,
    ``COPY ... FROM STDIN``, psql meta-commands, NUL characters.

    The scripts are stored and run byte for byte as written (a leading BOM, an encoding mark,
    is dropped); an empty or comment-only up script is a no-op version, an empty down script
    an explicit no-op down (``None``: no down at all). The marker line makes its own script run
    outside a transaction (the up's marker the down's too, unless the down says otherwise);
    ``down_no_transaction`` equal to the up's flag is stored as ``None``. A repeatable
    migration's version is ``R:<description>`` (``version`` is ignored) and it has no down."""
    up_sql = up_sql.removeprefix("\ufeff")
    down_sql = down_sql.removeprefix("\ufeff") if down_sql is not None else None
    no_transaction = no_transaction or has_marker(up_sql, NO_TRANSACTION_MARKER)
    if down_sql is None:
        down_no_transaction = None
    else:
        if down_no_transaction is None and has_marker(down_sql, NO_TRANSACTION_MARKER):
            down_no_transaction = True
        if down_no_transaction == no_transaction:
            down_no_transaction = None
    description = description[:500] or f"version {version}"
    if repeatable:
        version = repeatable_version(description)
    _refuse(source, up_sql, lines[0], no_transaction)
    if down_sql is not None:
        down_outside = no_transaction if down_no_transaction is None else down_no_transaction
        _refuse(down_source or source, down_sql, lines[1], down_outside)
    return Migration(
        version=version,
        description=description,
        up_sql=up_sql,
        down_sql=down_sql,
        checksum=checksum(
            up_sql,
            down_sql,
            no_transaction=no_transaction,
            down_no_transaction=down_no_transaction,
        ),
        no_transaction=no_transaction,
        down_no_transaction=down_no_transaction,
        source=source,
        repeatable=repeatable,
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
