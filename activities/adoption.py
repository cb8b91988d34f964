"""Adopt and baseline on one open connection: record versions in the set's ledger without
running any migration SQL.

Adopt reads another tool's history table where that tool keeps it by default (the target's
schema: the first of the search path, which each tool uses unless told otherwise), checks that
every version it recorded is a version of the set (for Flyway, also that its stored CRC32 equals
the file's, computed as Flyway computes it), and writes ledger rows marked ``adopted_from`` with
the tool's own time where it keeps one (Flyway's repeatables too, when its last run of one had
the file's checksum). Baseline marks a target no tool ever migrated as at a version. Both run in
one transaction under the engine's advisory lock for the schema, so a concurrent apply waits and
then sees the adopted rows; a refusal (dirty, failed, unknown version, checksum mismatch) writes
nothing, and the other tool's table is only ever read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from activities.ledger import LEDGER_TABLE, adopted_column_ddl, ledger_ddl, ledger_name
from common.sql import quote_ident
from models.adoption import BASELINE_MARK, AdoptSource
from models.migrations import (
    AppliedVersion,
    Migration,
    MigrationFailure,
    PlannedVersion,
    TargetRunInput,
    TargetRunKind,
    TargetRunResult,
    is_repeatable,
    normalise_version,
    repeatable_version,
    version_key,
)

# The default table names: Flyway's ``table``, golang-migrate's ``x-migrations-table`` and
# dbmate's ``--migrations-table`` all default to these, in the connection's current schema.
HISTORY_TABLES = {
    AdoptSource.FLYWAY: "flyway_schema_history",
    AdoptSource.GOLANG_MIGRATE: "schema_migrations",
    AdoptSource.DBMATE: "schema_migrations",
}
# Flyway row types that are not a migration applied (the schema-creation marker) and those
# that take a version back out (an undo, or a migration marked deleted by ``repair``).
_FLYWAY_MARKERS = {"SCHEMA"}
_FLYWAY_REMOVALS = {"UNDO_SQL", "UNDO_JDBC", "UNDO_SCRIPT", "DELETE"}


def flyway_checksum(text: str) -> int:
    """Flyway's checksum of a migration file: CRC32 over the UTF-8 bytes of each line, read
    as Java's ``BufferedReader.readLine`` reads them (the BOM and every line terminator
    dropped), as a signed 32-bit integer, as ``flyway_schema_history.checksum`` stores it."""
    lines = text.removeprefix("\ufeff").replace("\r", "").replace("\n", "")
    value = zlib.crc32(lines.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value


def _latest(versions: Iterable[str]) -> str | None:
    return max((v for v in versions if not is_repeatable(v)), key=version_key, default=None)


@dataclass(frozen=True)
class Adopted:
    """One version to record, with the other tool's time when it kept one."""

    migration: Migration
    applied_at: datetime | None = None


class Refused(Exception):
    """The target cannot be adopted (or baselined); nothing was written."""

    def __init__(self, failure: MigrationFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _refused(reason: str, message: str, version: str | None = None) -> Refused:
    return Refused(MigrationFailure(version=version, reason=reason, message=message))


class TargetAdopter:
    """One adopt or baseline run on one open connection; the set's ledger is ``ledger_table``
    in ``schema``."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        schema: str,
        params: TargetRunInput,
        migrations: Sequence[Migration],
        ledger_table: str = LEDGER_TABLE,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.params = params
        # Repeatables have no number: no "current version" covers them. Only Flyway records
        # them (by description); elsewhere the next apply runs them.
        self.migrations = sorted(
            (m for m in migrations if not m.repeatable), key=lambda m: version_key(m.version)
        )
        self.by_version = {m.version: m for m in self.migrations}
        self.repeatables = {m.version: m for m in migrations if m.repeatable}
        self.ledger_table = ledger_table
        self.ledger_name = ledger_name(schema, ledger_table)
        # The engine's lock (activities.engine.TargetEngine.lock_key): one per schema.
        self.lock_key = f"tenantflow:{schema}"

    def _result(self, from_version: str | None, **fields: object) -> TargetRunResult:
        return TargetRunResult(
            run_id=self.params.run_id,
            database_id=self.params.database_id,
            kind=self.params.kind,
            dry_run=self.params.dry_run,
            from_version=from_version,
            **fields,
        )

    async def run(self) -> TargetRunResult:
        """Verify, then write every version not yet in the ledger, in one transaction."""
        async with self.conn.transaction():
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", self.lock_key
            )
            found = await self.conn.fetchrow(
                "SELECT to_regclass($1) IS NOT NULL AS ledger, "
                "to_regnamespace($2) IS NOT NULL AS schema",
                self.ledger_name,
                quote_ident(self.schema),
            )
            has_ledger, has_schema = (
                bool(found and found["ledger"]),
                bool(found and found["schema"]),
            )
            ledger = await self._ledger() if has_ledger else set()
            current = _latest(ledger)
            try:
                if self.params.kind is TargetRunKind.BASELINE:
                    wanted = self._baseline(ledger)
                else:
                    wanted = await self._adopted(has_schema)
            except Refused as refused:
                return self._result(current, to_version=current, failure=refused.failure)
            todo = [a for a in wanted if a.migration.version not in ledger]
            reached = _latest([*ledger, *(a.migration.version for a in todo)])
            if self.params.dry_run:
                planned = [
                    PlannedVersion(
                        version=a.migration.version,
                        description=a.migration.description,
                        sql="",
                        repeatable=a.migration.repeatable,
                    )
                    for a in todo
                ]
                return self._result(current, to_version=current, planned=planned)
            if todo:
                await self._write(todo, has_schema)
        applied = [
            AppliedVersion(
                version=a.migration.version,
                description=a.migration.description,
                execution_ms=0.0,
                repeatable=a.migration.repeatable,
            )
            for a in todo
        ]
        return self._result(current, to_version=reached, applied=applied)

    async def _ledger(self) -> set[str]:
        rows = await self.conn.fetch(f"SELECT version FROM {self.ledger_name}")  # noqa: S608
        return {r["version"] for r in rows}

    def _baseline(self, ledger: set[str]) -> list[Adopted]:
        """Every version of the set up to the requested one; refused on a target whose ledger
        already has versions (unless it has them all: a retry after the commit)."""
        raw = self.params.target_version or ""
        try:
            version = normalise_version(raw)
        except ValueError as exc:
            raise _refused("unknown_version", str(exc)) from None
        if version not in self.by_version:
            raise _refused(
                "unknown_version",
                f"version {version} is not in set {self.params.set_name!r}",
                version,
            )
        goal = version_key(version)
        wanted = [Adopted(m) for m in self.migrations if version_key(m.version) <= goal]
        missing = [a for a in wanted if a.migration.version not in ledger]
        if ledger and missing:
            shown = ", ".join(sorted(ledger, key=version_key)[:5])
            raise _refused(
                "already_managed",
                f"the ledger already records versions ({shown}); a baseline only marks targets "
                "tenantflow never migrated",
                missing[0].migration.version,
            )
        return wanted

    async def _adopted(self, has_schema: bool) -> list[Adopted]:
        source = self.params.adopt_from
        if source is None:
            raise _refused("unknown_version", 'an adopt run needs "from" (the other tool)')
        table = f"{quote_ident(self.schema)}.{quote_ident(HISTORY_TABLES[source])}"
        columns = await self._columns(table) if has_schema else set()
        if not columns:
            raise _refused(
                "no_history",
                f"no {HISTORY_TABLES[source]} table in schema {self.schema!r}: nothing for "
                f"{source.value} to hand over",
            )
        if source is AdoptSource.FLYWAY:
            return await self._flyway(table)
        if source is AdoptSource.GOLANG_MIGRATE:
            return await self._golang_migrate(table, columns)
        return await self._dbmate(table, columns)

    async def _columns(self, table: str) -> set[str]:
        rows = await self.conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attnum > 0 AND NOT attisdropped",
            table,
        )
        return {r["attname"] for r in rows}

    def _known(self, raw: str, where: str) -> Migration:
        """The set's migration for a version another tool recorded, or the refusal naming it."""
        try:
            version = normalise_version(raw)
        except ValueError:
            raise _refused(
                "unknown_version", f"{where} records version {raw[:60]!r}, not a version number"
            ) from None
        known = self.by_version.get(version)
        if known is None:
            raise _refused(
                "unknown_version",
                f"{where} records version {version}, which is not in set {self.params.set_name!r}",
                version,
            )
        return known

    def _up_to(self, version: str) -> list[Migration]:
        goal = version_key(version)
        return [m for m in self.migrations if version_key(m.version) <= goal]

    async def _flyway(self, table: str) -> list[Adopted]:
        """Flyway's rows in ``installed_rank`` order: each versioned migration's latest state;
        a baseline row stands for every version up to it. Repeatable rows (no version) are
        left for a normal apply to run again."""
        rows = await self.conn.fetch(
            "SELECT installed_rank, version, description, script, type, checksum, success, "  # noqa: S608
            f"installed_on::timestamptz AS installed_on FROM {table} ORDER BY installed_rank"
        )
        where = "flyway_schema_history"
        applied: dict[str, Adopted] = {}
        repeated: dict[str, asyncpg.Record] = {}
        for row in rows:
            kind = (row["type"] or "").upper()
            if not row["success"]:
                shown = row["version"] or row["script"]
                raise _refused(
                    "failed_version",
                    f"{where} row {row['installed_rank']} records a failed migration "
                    f"({shown}, success = false): repair or finish it with Flyway first",
                    row["version"],
                )
            if row["version"] is None:
                repeated[repeatable_version(row["description"])] = row  # the latest counts
                continue
            if kind in _FLYWAY_MARKERS:
                continue
            if kind in _FLYWAY_REMOVALS:
                applied.pop(normalise_version(row["version"]), None)
                continue
            if kind == "BASELINE":
                for migration in self._up_to(normalise_version(row["version"])):
                    applied[migration.version] = Adopted(migration, row["installed_on"])
                continue
            known = self._known(row["version"], where)
            if kind == "SQL" or row["checksum"] is not None:
                expected = flyway_checksum(known.up_sql)
                if row["checksum"] != expected:
                    raise _refused(
                        "checksum_mismatch",
                        f"{where} stores checksum {row['checksum']} for version "
                        f"{known.version}, {known.source or 'the set'} computes {expected} as "
                        "Flyway does: the file changed after Flyway ran it",
                        known.version,
                    )
            applied[known.version] = Adopted(known, row["installed_on"])
        adopted = sorted(applied.values(), key=lambda a: version_key(a.migration.version))
        return adopted + self._flyway_repeatables(repeated)

    def _flyway_repeatables(self, latest: dict[str, asyncpg.Record]) -> list[Adopted]:
        """The set's repeatables as Flyway last ran them: recorded when that run's checksum is
        the file's (Flyway would not run it again); a changed one, or one the set lacks, is
        left to the next apply, as Flyway would re-run (or ignore) it."""
        return [
            Adopted(migration, latest[version]["installed_on"])
            for version, migration in sorted(self.repeatables.items())
            if version in latest
            and latest[version]["checksum"] == flyway_checksum(migration.up_sql)
        ]

    async def _golang_migrate(self, table: str, columns: set[str]) -> list[Adopted]:
        """golang-migrate keeps one row: the current version, and whether it stopped part-way.
        Every version of the set up to it is applied (it runs them in order)."""
        if not {"version", "dirty"} <= columns:
            raise _refused(
                "no_history",
                f"schema_migrations in schema {self.schema!r} is not golang-migrate's "
                "(version bigint, dirty boolean): no dirty column",
            )
        rows = await self.conn.fetch(f"SELECT version::text AS version, dirty FROM {table}")  # noqa: S608
        if len(rows) > 1:
            raise _refused(
                "no_history",
                f"schema_migrations in schema {self.schema!r} has {len(rows)} rows; "
                "golang-migrate keeps exactly one",
            )
        if not rows:
            return []
        where = "golang-migrate's schema_migrations"
        if rows[0]["dirty"]:
            raise _refused(
                "dirty",
                f"{where} marks version {rows[0]['version']} dirty: it failed part-way; fix the "
                "database and run `migrate force` to a clean version first",
                rows[0]["version"],
            )
        known = self._known(rows[0]["version"], where)
        return [Adopted(m) for m in self._up_to(known.version)]

    async def _dbmate(self, table: str, columns: set[str]) -> list[Adopted]:
        """dbmate keeps a row per applied version (no time)."""
        if "version" not in columns or "dirty" in columns:
            raise _refused(
                "no_history",
                f"schema_migrations in schema {self.schema!r} is not dbmate's (version varchar)"
                + ("; it has golang-migrate's dirty column" if "dirty" in columns else ""),
            )
        rows = await self.conn.fetch(f"SELECT version::text AS version FROM {table}")  # noqa: S608
        where = "dbmate's schema_migrations"
        found = {self._known(r["version"], where).version: r for r in rows}
        return [Adopted(self.by_version[v]) for v in sorted(found, key=version_key)]

    async def _write(self, todo: Sequence[Adopted], has_schema: bool) -> None:
        """The ledger (created on first contact, with its ``adopted_from`` column) and one row
        per version: the set's checksum, so the engine verifies it as its own from now on."""
        source = BASELINE_MARK
        if self.params.kind is TargetRunKind.ADOPT and self.params.adopt_from is not None:
            source = self.params.adopt_from.value
        statements = [
            *([] if has_schema else [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}"]),
            ledger_ddl(self.schema, self.ledger_table),
            adopted_column_ddl(self.ledger_name),
        ]
        await self.conn.execute(";\n".join(statements))
        await self.conn.execute(
            f"INSERT INTO {self.ledger_name} "  # noqa: S608 - quoted identifier
            "(version, description, checksum, applied_at, execution_ms, run_id, success, "
            "adopted_from) SELECT v, d, c, coalesce(a, now()), 0, $5, true, $6 "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(v, d, c, a) "
            "ON CONFLICT (version) DO NOTHING",
            [a.migration.version for a in todo],
            [a.migration.description for a in todo],
            [a.migration.checksum for a in todo],
            [a.applied_at for a in todo],
            self.params.run_id,
            source,
        )
