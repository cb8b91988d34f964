"""Flyway's layout: ``V<version>__<description>.sql`` (versioned), ``U<version>__...sql`` (undo),
``R__<description>.sql`` (repeatable) and ``<script>.sql.conf`` (script configuration).

As Flyway documents them: the version's parts are separated by dots or underscores
(``V1_1`` is 1.1); the description's underscores are spaces; a repeatable's identity is its
description (two files with one description are refused), it is applied after every versioned
migration, in description order, and again whenever its checksum changes. A script
configuration file sits beside its script (``V2__index.sql.conf``) and may say
``executeInTransaction=false`` (the script runs outside a transaction, statement by statement)
or ``encoding=UTF-8``; other settings, and a file without its script, are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from common.migrations.base import (
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

VERSIONED = re.compile(r"^(?P<kind>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<desc>.+)\.sql$")
REPEATABLE = re.compile(r"^R__(?P<desc>.*)\.sql$")
BASELINE = re.compile(r"^B\d+(?:[._]\d+)*__.*\.sql$")
# Flyway's default placeholder syntax (prefix ``${``, suffix ``}``), its own ``flyway:`` ones too.
PLACEHOLDER = re.compile(r"\$\{[A-Za-z0-9_.:-]+\}")
CONF_SUFFIX = ".conf"
EXPECTED = "V<version>__<description>.sql, U<version>__<description>.sql or R__<description>.sql"
_TRUE_FALSE = {"true": True, "false": False}
_UTF8 = {"utf-8", "utf8"}
_PROPERTY = re.compile(r"^(?P<key>[^=:\s]+)\s*[=:]\s*(?P<value>.*)$")


def matches(name: str) -> bool:
    """Whether ``name`` is a Flyway script name (versioned, undo or repeatable)."""
    return bool(VERSIONED.match(name) or REPEATABLE.match(name))


def parse_conf(name: str, text: str) -> dict[str, str]:
    """The settings of one script configuration file (Java properties: ``key=value`` or
    ``key: value`` lines, ``#``/``!`` comments); unknown keys and malformed lines are refused
    naming the file and line."""
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        pair = _PROPERTY.match(line)
        if pair is None:
            raise MigrationSetError(
                f"{name}, line {number}: expected key=value",
                details={"file": name, "line": number},
            )
        key = pair["key"]
        if key not in ("executeInTransaction", "encoding"):
            raise MigrationSetError(
                f"{name}, line {number}: {key!r} is not a script setting tenantflow supports "
                "(executeInTransaction, encoding)",
                details={"file": name, "line": number, "setting": key},
            )
        settings[key] = pair["value"].strip()
    return settings


def _execute_in_transaction(name: str, settings: Mapping[str, str]) -> bool | None:
    encoding = settings.get("encoding")
    if encoding is not None and encoding.lower().replace("_", "-") not in _UTF8:
        raise MigrationSetError(
            f"{name}: encoding {encoding!r}: tenantflow reads scripts as UTF-8 only; convert "
            "the script to UTF-8 and drop the setting",
            details={"file": name, "encoding": encoding},
        )
    value = settings.get("executeInTransaction")
    if value is None:
        return None
    if value.lower() not in _TRUE_FALSE:
        raise MigrationSetError(
            f"{name}: executeInTransaction must be true or false, not {value!r}",
            details={"file": name},
        )
    return _TRUE_FALSE[value.lower()]


def parse(scripts: Mapping[str, str], confs: Mapping[str, str]) -> list[Migration]:
    """Flyway scripts (base name -> text) and their ``.sql.conf`` files, as migrations:
    versions in order, then repeatables in description order."""
    baselines = sorted(n for n in scripts if BASELINE.match(n))
    if baselines:
        raise MigrationSetError(
            f"{listing(baselines)}: Flyway baseline migrations (B<version>__) are not supported: "
            "register the versioned scripts, and mark databases already at a version with a "
            'baseline run ("kind": "baseline")',
            details={"files": baselines, "format": "flyway"},
        )
    unmatched = sorted(n for n in scripts if not matches(n))
    if unmatched:
        raise MigrationSetError(
            f"{listing(unmatched)}: not flyway file names (expected {EXPECTED})",
            details={"files": unmatched, "format": "flyway"},
        )
    orphans = sorted(c for c in confs if c.removesuffix(CONF_SUFFIX) not in scripts)
    if orphans:
        raise MigrationSetError(
            f"{listing(orphans)}: script configuration without its script "
            f"({orphans[0].removesuffix(CONF_SUFFIX)} is not in the set)",
            details={"files": orphans},
        )
    versions: dict[str, Entry] = {}
    repeatables: dict[str, Entry] = {}
    configured: set[str] = set()  # versions whose V script's .sql.conf says outside
    for name in sorted(scripts):
        _refuse_placeholders(name, scripts[name])
        conf = f"{name}{CONF_SUFFIX}"
        in_transaction = (
            _execute_in_transaction(conf, parse_conf(conf, confs[conf])) if conf in confs else None
        )
        outside = None if in_transaction is None else not in_transaction
        repeatable = REPEATABLE.match(name)
        if repeatable is not None:
            description = describe(repeatable["desc"])
            if not description:
                raise MigrationSetError(
                    f"{name}: a repeatable migration needs a description (R__<description>.sql)",
                    details={"file": name},
                )
            entry = repeatables.setdefault(description, Entry(version="", repeatable=True))
            entry.description = description
            entry.set_up(name, scripts[name], description)
            entry.no_transaction = _up_flag(name, scripts[name], outside)
            continue
        match = VERSIONED.match(name)
        assert match is not None  # refused above
        version = parse_version(match["version"], name)
        entry = versions.setdefault(version, Entry(version))
        if match["kind"] == "V":
            entry.set_up(name, scripts[name], describe(match["desc"]))
            entry.no_transaction = _up_flag(name, scripts[name], outside)
            if outside:
                configured.add(version)
        else:
            entry.set_down(name, scripts[name])
            entry.down_no_transaction = outside
    for version in configured:
        entry = versions[version]
        # Flyway runs an undo script in a transaction unless its own .sql.conf says otherwise;
        # only tenantflow's marker line carries over from the up script to the down.
        if (
            entry.down is not None
            and entry.down_no_transaction is None
            and not has_no_transaction_marker(entry.down)
        ):
            entry.down_no_transaction = False
    ordered = sorted(versions.values(), key=lambda e: tuple(int(p) for p in e.version.split(".")))
    return [build(e) for e in ordered] + [build(repeatables[d]) for d in sorted(repeatables)]


def _refuse_placeholders(name: str, sql: str) -> None:
    """Flyway replaces ``${name}`` placeholders in the text of every script (and fails on one
    it has no value for); tenantflow runs SQL byte for byte, so a placeholder would reach the
    database as it is written. Refused with its line, as Flyway refuses an unknown one."""
    found = PLACEHOLDER.search(sql)
    if found is None:
        return
    line = sql.count("\n", 0, found.start()) + 1
    raise MigrationSetError(
        f"{name}:{line}: Flyway placeholder {found.group(0)}: tenantflow runs SQL as written "
        "and does not replace placeholders; put its value in the script before registering",
        details={"file": name, "line": line, "placeholder": found.group(0)},
    )


def _up_flag(name: str, sql: str, outside: bool | None) -> bool:
    """Outside a transaction: the conf's say, else the marker line's."""
    if outside is False and has_no_transaction_marker(sql):
        raise MigrationSetError(
            f"{name}: its .sql.conf says executeInTransaction=true but the script is marked "
            "-- tenantflow:no-transaction; keep one of them",
            details={"file": name},
        )
    return bool(outside)


def write(migrations: list[Migration]) -> dict[str, str]:
    """The Flyway files of a set: V/U scripts, R scripts, and a ``.sql.conf`` beside every
    script whose transaction setting differs from Flyway's default (so no SQL changes)."""
    files: dict[str, str] = {}
    for m in migrations:
        name_slug = slug(m.description)
        if m.repeatable:
            up_name, down_name = f"R__{name_slug}.sql", None
        else:
            up_name, down_name = f"V{m.version}__{name_slug}.sql", f"U{m.version}__{name_slug}.sql"
        files[up_name] = m.up_sql
        if m.no_transaction and not has_no_transaction_marker(m.up_sql):
            files[f"{up_name}{CONF_SUFFIX}"] = "executeInTransaction=false\n"
        if m.down_sql is not None and down_name is not None:
            files[down_name] = m.down_sql
            # What the files would say without a .sql.conf of the down's own (see parse).
            implied = m.no_transaction and has_no_transaction_marker(m.up_sql)
            implied = implied or has_no_transaction_marker(m.down_sql)
            if m.down_outside_transaction != implied:
                in_transaction = "false" if m.down_outside_transaction else "true"
                files[f"{down_name}{CONF_SUFFIX}"] = f"executeInTransaction={in_transaction}\n"
    return files
