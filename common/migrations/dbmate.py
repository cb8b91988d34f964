"""dbmate's layout: one ``<version>[_description].sql`` file per version, with a
``-- migrate:up`` section and an optional ``-- migrate:down`` section.

As dbmate reads them: the version is the file name's leading digits (the rest, usually
``_description``, may be empty); only comments and blank lines may precede ``-- migrate:up``;
``-- migrate:down`` comes after it; each marker takes options as ``key:value`` words, and
``transaction:false`` (exactly: dbmate compares the value with ``false``) makes that section
run outside a transaction: the up's and the down's flags are separate. An empty down section
is an explicit no-op; a file without one has no down (tenantflow then refuses to roll it back,
naming the version). dbmate has no repeatable migrations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from common.migrations.base import (
    Entry,
    MigrationSetError,
    build,
    describe,
    ending,
    listing,
    normalise_sql,
    parse_version,
    slug,
)
from common.migrations.sql import line_at
from models.migrations import Migration

PATTERN = re.compile(r"^(?P<version>\d+)(?P<desc>.*)\.sql$")
UP = re.compile(r"^--[ \t]*migrate:up(?P<options>[ \t][^\r\n]*)?\r?$", re.MULTILINE)
DOWN = re.compile(r"^--[ \t]*migrate:down(?P<options>[ \t][^\r\n]*)?\r?$", re.MULTILINE)
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
EXPECTED = "<version>_<description>.sql"


def is_dbmate(name: str, text: str) -> bool:
    """Whether ``name`` is a dbmate file name and ``text`` has a ``-- migrate:up`` line."""
    return bool(PATTERN.match(name) and UP.search(normalise_sql(text)))


def _outside_transaction(options: str | None) -> bool:
    """dbmate's ``transaction:false`` among a marker's ``key:value`` words."""
    pairs = dict(word.split(":", 1) for word in (options or "").split() if word.count(":") == 1)
    return pairs.get("transaction") == "false"


def split(name: str, raw: str) -> Entry:
    """One dbmate file as an entry: each section exactly as written (from the line after its
    marker), with its own transaction flag and the line it starts on."""
    text = raw.removeprefix("\ufeff")
    ups = list(UP.finditer(text))
    downs = list(DOWN.finditer(text))
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
    entry = Entry(version="")
    entry.up = text[up.end() : down.start() if down else len(text)].removeprefix("\n")
    entry.no_transaction = _outside_transaction(up["options"])
    entry.up_line = line_at(text, up.end()) + 1
    if down is not None:
        # A '-- migrate:down' marker is a down script, an empty one a no-op (as in dbmate).
        entry.down = text[down.end() :].removeprefix("\n")
        entry.down_file = name
        entry.down_no_transaction = _outside_transaction(down["options"])
        entry.down_line = line_at(text, down.end()) + 1
    return entry


def parse(scripts: Mapping[str, str]) -> list[Migration]:
    """dbmate files (base name -> text) as migrations in version order."""
    unmatched = sorted(n for n in scripts if not PATTERN.match(n))
    if unmatched:
        raise MigrationSetError(
            f"{listing(unmatched)}: not dbmate file names (expected {EXPECTED})",
            details={"files": unmatched, "format": "dbmate"},
        )
    entries: dict[str, Entry] = {}
    for name in sorted(scripts):
        match = PATTERN.match(name)
        assert match is not None  # refused above
        version = parse_version(match["version"], name)
        parsed = split(name, scripts[name])
        entry = entries.setdefault(version, Entry(version))
        entry.set_up(name, parsed.up or "", describe(match["desc"].lstrip("_-")))
        entry.no_transaction, entry.up_line = parsed.no_transaction, parsed.up_line
        entry.down, entry.down_file = parsed.down, parsed.down_file
        entry.down_no_transaction, entry.down_line = parsed.down_no_transaction, parsed.down_line
    return [build(entries[v]) for v in sorted(entries, key=int)]


def write(migrations: list[Migration]) -> dict[str, str]:
    """The dbmate files of a set; each section's marker carries its transaction flag."""
    files: dict[str, str] = {}
    for m in migrations:
        if m.repeatable:
            raise MigrationSetError(
                f"{m.source or m.description}: dbmate has no repeatable migrations; make it a "
                "version of its own",
                details={"file": m.source, "version": m.version},
            )
        if "." in m.version:
            raise MigrationSetError(
                f"{m.source or 'version ' + m.version}: version {m.version} cannot be written "
                "as dbmate, whose versions are single integers",
                details={"file": m.source, "version": m.version},
            )
        option = " transaction:false" if m.no_transaction else ""
        text = f"-- migrate:up{option}\n{m.up_sql}"
        if m.down_sql is not None:
            option = " transaction:false" if m.down_outside_transaction else ""
            text = f"{ending(text)}-- migrate:down{option}\n{m.down_sql}"
        files[f"{int(m.version):06d}_{slug(m.description)}.sql"] = text
    return files
