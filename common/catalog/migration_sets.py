"""Catalog access for migration sets: register (append-only, checksum-guarded) and read.

Versions never change once registered; a repeatable migration (``R:<description>``) is
replaced by an upload that changes it, which is how repeatables evolve."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from common.errors import Conflict, InvalidInput, NotFound
from common.migrations.loader import checksum, normalise_sql
from models.migrations import (
    DEFAULT_LEDGER_TABLE,
    Migration,
    MigrationSetContent,
    MigrationSetInfo,
    MigrationSetList,
    MigrationSetRegistered,
    MigrationSummary,
    is_repeatable,
    version_key,
)


def _same_as_legacy(row: asyncpg.Record, migration: Migration) -> bool:
    """A version registered by an earlier release uploaded again unchanged: before checksums
    covered every part (its checksum is the up SQL's alone, and an empty down was stored as
    none), or before a down script had a transaction flag of its own (dbmate's
    ``-- migrate:down`` options, a down file's marker line), when the up's flag covered both."""
    if row["down_no_transaction"] is not None or row["no_transaction"] != migration.no_transaction:
        return False
    without_down_flag = checksum(
        migration.up_sql, migration.down_sql, no_transaction=migration.no_transaction
    )
    return row["checksum"] == without_down_flag or (
        row["checksum"] == checksum(migration.up_sql)
        and normalise_sql(row["down_sql"] or "") == normalise_sql(migration.down_sql or "")
    )


def _ordered(migrations: Sequence[Migration]) -> list[Migration]:
    """Versions in order, then repeatables by description (the order the engine runs them)."""
    return sorted(
        migrations,
        key=lambda m: (m.repeatable, version_key(m.version), m.description if m.repeatable else ""),
    )


def _row(name: str, m: Migration) -> tuple[object, ...]:
    return (
        name,
        m.version,
        list(version_key(m.version)),
        m.description,
        m.checksum,
        m.up_sql,
        m.down_sql,
        m.no_transaction,
        m.source,
        m.repeatable,
        m.down_no_transaction,
    )


class MigrationSetRepository:
    """The ``migration_sets`` and ``migration_set_versions`` tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def register(
        self, name: str, migrations: Sequence[Migration], ledger_table: str | None = None
    ) -> MigrationSetRegistered:
        """Add new versions to ``name`` (created if new, keeping its ledger in ``ledger_table``,
        the default when None). A version already registered with other content, or another
        ledger table than the set's, is refused, naming both; nothing is written."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO migration_sets (name, ledger_table) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                name,
                ledger_table or DEFAULT_LEDGER_TABLE,
            )
            # Serialise registrations of one set so two uploads cannot interleave.
            kept: str = await conn.fetchval(
                "SELECT ledger_table FROM migration_sets WHERE name = $1 FOR UPDATE", name
            )
            if ledger_table is not None and ledger_table != kept:
                # Its targets record its versions in the table it has: a new name would make
                # every one of them look empty.
                raise Conflict(
                    f"set {name!r} keeps its ledger in table {kept!r}; it cannot move to "
                    f"{ledger_table!r} (register a new set to use another table)",
                    details={"set": name, "ledger_table": kept, "requested": ledger_table},
                )
            rows = await conn.fetch(
                "SELECT version, checksum, down_sql, no_transaction, down_no_transaction "
                "FROM migration_set_versions WHERE set_name = $1",
                name,
            )
            known = {r["version"]: r["checksum"] for r in rows}
            stored = {r["version"]: r for r in rows}
            conflicts = [
                {"version": m.version, "registered": known[m.version], "uploaded": m.checksum}
                for m in migrations
                if m.version in known
                and not m.repeatable
                and known[m.version] != m.checksum
                and not _same_as_legacy(stored[m.version], m)
            ]
            if conflicts:
                first = conflicts[0]
                raise Conflict(
                    f"version {first['version']} of set {name!r} is already registered with "
                    f"checksum {first['registered']}; the upload has {first['uploaded']}",
                    details={"set": name, "conflicts": conflicts},
                )
            added = [m for m in migrations if m.version not in known]
            updated = [
                m
                for m in migrations
                if m.repeatable and m.version in known and known[m.version] != m.checksum
            ]
            await conn.executemany(
                "INSERT INTO migration_set_versions (set_name, version, version_key, "
                "description, checksum, up_sql, down_sql, no_transaction, source, repeatable, "
                "down_no_transaction) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [_row(name, m) for m in added],
            )
            # A changed repeatable replaces the registered one (registered_at says when).
            await conn.executemany(
                "UPDATE migration_set_versions SET checksum = $3, up_sql = $4, "
                "no_transaction = $5, source = $6, registered_at = now() "
                "WHERE set_name = $1 AND version = $2 AND repeatable",
                [
                    (name, m.version, m.checksum, m.up_sql, m.no_transaction, m.source)
                    for m in updated
                ],
            )
            versions = sorted(
                (v for v in {*known, *(m.version for m in added)} if not is_repeatable(v)),
                key=version_key,
            )
        changed = {m.version for m in updated}
        return MigrationSetRegistered(
            name=name,
            ledger_table=kept,
            added=[m.version for m in _ordered(added)],
            unchanged=[
                m.version
                for m in _ordered(migrations)
                if m.version in known and m.version not in changed
            ],
            latest_version=versions[-1] if versions else None,
            updated=[m.version for m in _ordered(updated)],
        )

    async def content(self, name: str) -> MigrationSetContent:
        """Every version of ``name`` with its SQL, in order, and its ledger table, in one
        query; ``NotFound`` for an unknown set."""
        rows = await self.pool.fetch(
            "SELECT s.ledger_table, v.version, v.description, v.checksum, v.up_sql, v.down_sql, "
            "v.no_transaction, v.down_no_transaction, v.source, v.repeatable, "
            "v.withdrawn_at IS NOT NULL AS withdrawn "
            "FROM migration_sets s LEFT JOIN migration_set_versions v ON v.set_name = s.name "
            "WHERE s.name = $1 ORDER BY v.version_key",
            name,
        )
        if not rows:
            raise NotFound(f"no migration set {name!r}", details={"set": name})
        return MigrationSetContent(
            name=name,
            ledger_table=rows[0]["ledger_table"],
            migrations=_ordered(
                [
                    Migration.model_validate({k: v for k, v in r.items() if k != "ledger_table"})
                    for r in rows
                    if r["version"] is not None
                ]
            ),
        )

    async def migrations(self, name: str) -> list[Migration]:
        """Every version of ``name`` with its SQL, in order; ``NotFound`` for an unknown set."""
        return (await self.content(name)).migrations

    async def ledger_tables(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Set name -> ledger table, of ``names`` (unknown ones left out) or of every set."""
        rows = await self.pool.fetch(
            "SELECT name, ledger_table FROM migration_sets "
            "WHERE $1::text[] IS NULL OR name = ANY($1::text[])",
            None if names is None else list(names),
        )
        return {r["name"]: r["ledger_table"] for r in rows}

    async def check_separate_ledgers(self, names: Sequence[str]) -> None:
        """``InvalidInput`` naming two of ``names`` that keep their ledgers in one table: on one
        target, each would read the other's versions as its own."""
        first: dict[str, str] = {}
        tables = await self.ledger_tables(names)
        for name in sorted(set(names)):
            table = tables.get(name)
            if table is None:
                continue
            if table in first:
                raise InvalidInput(
                    f"sets {first[table]!r} and {name!r} both keep their ledger in table "
                    f"{table!r}: one target cannot carry both; register one of them under a "
                    "new name with its own ledger_table",
                    details={"sets": [first[table], name], "ledger_table": table},
                )
            first[table] = name

    async def info(self, name: str) -> MigrationSetInfo:
        """The set and its versions, without SQL."""
        found = await self.pool.fetchrow(
            "SELECT created_at, ledger_table FROM migration_sets WHERE name = $1", name
        )
        if found is None:
            raise NotFound(f"no migration set {name!r}", details={"set": name})
        rows = await self.pool.fetch(
            "SELECT version, description, checksum, down_sql IS NOT NULL AS has_down, "
            "no_transaction, registered_at, withdrawn_at IS NOT NULL AS withdrawn, repeatable "
            "FROM migration_set_versions "
            "WHERE set_name = $1 ORDER BY repeatable, version_key, version",
            name,
        )
        summaries = [MigrationSummary.model_validate(dict(r)) for r in rows]
        numbered = [s.version for s in summaries if not s.repeatable]
        return MigrationSetInfo(
            name=name,
            ledger_table=found["ledger_table"],
            created_at=found["created_at"],
            latest_version=numbered[-1] if numbered else None,
            migrations=summaries,
        )

    async def list(self) -> MigrationSetList:
        """Every set with its latest version."""
        rows = await self.pool.fetch(
            "SELECT s.name, s.ledger_table, s.created_at, "
            "(SELECT version FROM migration_set_versions v WHERE v.set_name = s.name "
            " AND NOT v.repeatable ORDER BY version_key DESC LIMIT 1) AS latest_version "
            "FROM migration_sets s ORDER BY s.name"
        )
        return MigrationSetList(items=[MigrationSetInfo(migrations=[], **dict(r)) for r in rows])

    async def withdraw(self, name: str, version: str) -> MigrationSummary:
        """Stop applying ``version`` to targets that lack it (its content never changes)."""
        row = await self.pool.fetchrow(
            "UPDATE migration_set_versions SET withdrawn_at = coalesce(withdrawn_at, now()) "
            "WHERE set_name = $1 AND version = $2 RETURNING version, description, checksum, "
            "down_sql IS NOT NULL AS has_down, no_transaction, registered_at, true AS withdrawn, "
            "repeatable",
            name,
            version,
        )
        if row is None:
            raise NotFound(f"set {name!r} has no version {version}", details={"set": name})
        return MigrationSummary.model_validate(dict(row))
