"""golang-migrate's layout: ``<version>_<title>.up.sql`` and ``<version>_<title>.down.sql``.

As golang-migrate reads them: the version is one unsigned integer (leading zeros do not make
another version: ``000010`` and ``10`` collide and are refused), the title may be empty
(``1_.up.sql``), a down file is optional (an up-only set applies; rolling it back stops at the
first version without a down, naming it, as ``migrate down`` does), and a down without its up is
refused. golang-migrate has no per-file transaction setting: the marker line
``-- tenantflow:no-transaction`` says it, in the up file (then for the down too) or in the down
file alone. It has no repeatable migrations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from common.migrations.base import (
    NO_TRANSACTION_MARKER,
    Entry,
    MigrationSetError,
    build,
    describe,
    has_no_transaction_marker,
    listing,
    parse_version,
    slug,
)
from models.migrations import Migration

PATTERN = re.compile(r"^(?P<version>\d+)_(?P<desc>.*)\.(?P<kind>up|down)\.sql$")
EXPECTED = "<version>_<description>.up.sql or .down.sql"


def parse(scripts: Mapping[str, str]) -> list[Migration]:
    """golang-migrate files (base name -> text) as migrations in version order."""
    unmatched = sorted(n for n in scripts if not PATTERN.match(n))
    if unmatched:
        raise MigrationSetError(
            f"{listing(unmatched)}: not golang-migrate file names (expected {EXPECTED})",
            details={"files": unmatched, "format": "golang-migrate"},
        )
    entries: dict[str, Entry] = {}
    for name in sorted(scripts):
        match = PATTERN.match(name)
        assert match is not None  # refused above
        version = parse_version(match["version"], name)
        entry = entries.setdefault(version, Entry(version))
        if match["kind"] == "up":
            entry.set_up(name, scripts[name], describe(match["desc"]))
        else:
            entry.set_down(name, scripts[name])
    return [build(entries[v]) for v in sorted(entries, key=int)]


def write(migrations: list[Migration]) -> dict[str, str]:
    """The golang-migrate files of a set; the marker line carries the transaction flags (a
    version whose down must run in a transaction while its up cannot is refused: the layout
    has no way to say it)."""
    files: dict[str, str] = {}
    for m in migrations:
        if m.repeatable:
            raise MigrationSetError(
                f"{m.source or m.description}: golang-migrate has no repeatable migrations; "
                "make it a version of its own",
                details={"file": m.source, "version": m.version},
            )
        if "." in m.version:
            raise MigrationSetError(
                f"{m.source or 'version ' + m.version}: version {m.version} cannot be written "
                "as golang-migrate, whose versions are single integers",
                details={"file": m.source, "version": m.version},
            )
        base = f"{int(m.version):06d}_{slug(m.description)}"
        up_sql = m.up_sql
        if m.no_transaction and not has_no_transaction_marker(up_sql):
            up_sql = f"{NO_TRANSACTION_MARKER}\n{up_sql}"
        files[f"{base}.up.sql"] = up_sql
        if m.down_sql is None:
            continue
        down_sql = m.down_sql
        if m.down_outside_transaction and not m.no_transaction:
            if not has_no_transaction_marker(down_sql):
                down_sql = f"{NO_TRANSACTION_MARKER}\n{down_sql}"
        elif m.no_transaction and not m.down_outside_transaction:
            raise MigrationSetError(
                f"{m.source or 'version ' + m.version}: its down script runs in a transaction "
                "while its up cannot, which golang-migrate files cannot say",
                details={"file": m.source, "version": m.version},
            )
        files[f"{base}.down.sql"] = down_sql
    return files
