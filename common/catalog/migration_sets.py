"""Catalog access for migration sets: register (append-only, checksum-guarded) and read."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from common.errors import Conflict, NotFound
from common.migrations.loader import checksum, normalise_sql
from models.migrations import (
    Migration,
    MigrationSetInfo,
    MigrationSetList,
    MigrationSetRegistered,
    MigrationSummary,
    version_key,
)


def _same_as_legacy(row: asyncpg.Record, migration: Migration) -> bool:
    """A version registered before checksums covered every part (its checksum is the up
    SQL's alone, and an empty down was stored as none) uploaded again unchanged."""
    return (
        row["checksum"] == checksum(migration.up_sql)
        and normalise_sql(row["down_sql"] or "") == normalise_sql(migration.down_sql or "")
        and row["no_transaction"] == migration.no_transaction
    )


class MigrationSetRepository:
    """The ``migration_sets`` and ``migration_set_versions`` tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def register(self, name: str, migrations: Sequence[Migration]) -> MigrationSetRegistered:
        """Add new versions to ``name`` (created if new). A version already registered with
        other content is refused, naming the version and both checksums; nothing is written."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO migration_sets (name) VALUES ($1) ON CONFLICT DO NOTHING", name
            )
            # Serialise registrations of one set so two uploads cannot interleave.
            await conn.execute("SELECT 1 FROM migration_sets WHERE name = $1 FOR UPDATE", name)
            rows = await conn.fetch(
                "SELECT version, checksum, down_sql, no_transaction FROM migration_set_versions "
                "WHERE set_name = $1",
                name,
            )
            known = {r["version"]: r["checksum"] for r in rows}
            stored = {r["version"]: r for r in rows}
            conflicts = [
                {"version": m.version, "registered": known[m.version], "uploaded": m.checksum}
                for m in migrations
                if m.version in known
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
            await conn.executemany(
                "INSERT INTO migration_set_versions (set_name, version, version_key, "
                "description, checksum, up_sql, down_sql, no_transaction, source) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                [
                    (
                        name,
                        m.version,
                        list(version_key(m.version)),
                        m.description,
                        m.checksum,
                        m.up_sql,
                        m.down_sql,
                        m.no_transaction,
                        m.source,
                    )
                    for m in added
                ],
            )
            versions = sorted([*known, *(m.version for m in added)], key=version_key)
        return MigrationSetRegistered(
            name=name,
            added=[m.version for m in sorted(added, key=lambda m: version_key(m.version))],
            unchanged=sorted(
                (m.version for m in migrations if m.version in known), key=version_key
            ),
            latest_version=versions[-1] if versions else None,
        )

    async def migrations(self, name: str) -> list[Migration]:
        """Every version of ``name`` with its SQL, in order; ``NotFound`` for an unknown set."""
        rows = await self.pool.fetch(
            "SELECT version, description, checksum, up_sql, down_sql, no_transaction, source, "
            "withdrawn_at IS NOT NULL AS withdrawn "
            "FROM migration_set_versions WHERE set_name = $1 ORDER BY version_key",
            name,
        )
        if not rows and not await self._exists(name):
            raise NotFound(f"no migration set {name!r}", details={"set": name})
        return [Migration.model_validate(dict(r)) for r in rows]

    async def info(self, name: str) -> MigrationSetInfo:
        """The set and its versions, without SQL."""
        created = await self.pool.fetchval(
            "SELECT created_at FROM migration_sets WHERE name = $1", name
        )
        if created is None:
            raise NotFound(f"no migration set {name!r}", details={"set": name})
        rows = await self.pool.fetch(
            "SELECT version, description, checksum, down_sql IS NOT NULL AS has_down, "
            "no_transaction, registered_at, withdrawn_at IS NOT NULL AS withdrawn "
            "FROM migration_set_versions "
            "WHERE set_name = $1 ORDER BY version_key",
            name,
        )
        summaries = [MigrationSummary.model_validate(dict(r)) for r in rows]
        return MigrationSetInfo(
            name=name,
            created_at=created,
            latest_version=summaries[-1].version if summaries else None,
            migrations=summaries,
        )

    async def list(self) -> MigrationSetList:
        """Every set with its latest version."""
        rows = await self.pool.fetch(
            "SELECT s.name, s.created_at, "
            "(SELECT version FROM migration_set_versions v WHERE v.set_name = s.name "
            " ORDER BY version_key DESC LIMIT 1) AS latest_version "
            "FROM migration_sets s ORDER BY s.name"
        )
        return MigrationSetList(items=[MigrationSetInfo(migrations=[], **dict(r)) for r in rows])

    async def withdraw(self, name: str, version: str) -> MigrationSummary:
        """Stop applying ``version`` to targets that lack it (its content never changes)."""
        row = await self.pool.fetchrow(
            "UPDATE migration_set_versions SET withdrawn_at = coalesce(withdrawn_at, now()) "
            "WHERE set_name = $1 AND version = $2 RETURNING version, description, checksum, "
            "down_sql IS NOT NULL AS has_down, no_transaction, registered_at, true AS withdrawn",
            name,
            version,
        )
        if row is None:
            raise NotFound(f"set {name!r} has no version {version}", details={"set": name})
        return MigrationSummary.model_validate(dict(row))

    async def _exists(self, name: str) -> bool:
        found = await self.pool.fetchval("SELECT 1 FROM migration_sets WHERE name = $1", name)
        return found is not None
