"""The engine on one open connection: plan, verify, apply or roll back a target's versions.

Every version runs in its own transaction together with its ledger row, under a per-target
``pg_advisory_xact_lock``, as one simple-query message (one round trip); the ledger's primary
key makes a retry (or a second runner) roll back rather than apply a version twice. Checksums
of applied versions are verified before any change. Versions marked no-transaction go through
``activities.no_transaction`` instead.

Repeatable migrations (Flyway's ``R__``; version ``R:<description>``) run after every pending
version, in description order, each in its own transaction with its ledger row, whenever the
ledger's checksum for it differs from the set's (a changed repeatable is applied again and its
row replaced; never a checksum mismatch). A rollback runs the versions' downs as before and
forgets the repeatables' rows (they have no down; their objects stay as the downs leave them,
as with psql), so the next apply runs them again on the schema it rebuilt.

A lock timeout raises (Temporal retries with backoff); any other SQL error is a result that
names the version and carries PostgreSQL's code, message and position.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import asyncpg

from activities.engine_rollback import roll_back
from activities.ledger import (
    GUARD_MARKER,
    LEDGER_TABLE,
    RESET_SESSION,
    RETRYABLE_SQLSTATES,
    LockTimeout,
    VersionFailed,
    ledger_ddl,
    ledger_name,
    sql_failure,
)
from activities.no_transaction import NoTransactionRunner
from common.sql import quote_ident, quote_literal
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
    version_key,
)


class TargetEngine:
    """One run on one open connection; the set's ledger is ``ledger_table`` in the schema."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        schema: str,
        params: TargetRunInput,
        migrations: Sequence[Migration],
        ledger_table: str = LEDGER_TABLE,
        *,
        session_reset: str = RESET_SESSION,
    ) -> None:
        self.conn = conn
        # A connection that serves several schemas (activities.grouped) appends its own
        # SET search_path: the reset returns to the startup defaults, which name no schema.
        self.session_reset = session_reset
        self.schema = schema
        self.params = params
        self.by_version = {m.version: m for m in migrations}
        self.migrations = sorted(
            (m for m in migrations if not m.repeatable), key=lambda m: version_key(m.version)
        )
        self.repeatables = sorted(
            (m for m in migrations if m.repeatable), key=lambda m: m.description
        )
        self.ledger_table = ledger_table
        self.ledger_name = ledger_name(schema, ledger_table)
        # Advisory locks are per database; the key names the schema within it, not the set:
        # the sets of one schema take turns, as their SQL may touch the same objects.
        self.lock_sql = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
        self.lock_key = f"tenantflow:{schema}"
        self.ledger_ready = False
        self.schema_exists = False
        # The runs whose rows the ledger holds (any state), as last read.
        self.ledger_runs: set[str] = set()
        # Versions whose row says part-way (a no-transaction version interrupted or failed).
        self.partial: set[str] = set()
        self.no_transaction = NoTransactionRunner(
            conn, self.ledger_name, self.lock_key, params.run_id, self._ledger_ddl()
        )
        self.no_transaction.reset_session = session_reset

    def _result(self, from_version: str | None, **fields: object) -> TargetRunResult:
        return TargetRunResult(
            run_id=self.params.run_id,
            database_id=self.params.database_id,
            kind=self.params.kind,
            dry_run=self.params.dry_run,
            from_version=from_version,
            **fields,
        )

    async def _ledger(self) -> dict[str, str]:
        # Ask first: selecting from a missing table costs PostgreSQL an error (logged with its
        # statement), which made first contact cost a quarter more CPU than the migrations.
        # The schema too, in the same round trip: CREATE SCHEMA IF NOT EXISTS needs CREATE on
        # the database even when the schema is there, which a provisioned tenant's role lacks.
        found = await self.conn.fetchrow(
            "SELECT to_regclass($1) IS NOT NULL AS ledger, "
            "to_regnamespace($2) IS NOT NULL AS schema",
            self.ledger_name,
            quote_ident(self.schema),
        )
        exists = bool(found and found["ledger"])
        self.schema_exists = bool(found and found["schema"])
        self.no_transaction.ledger_statements = self._ledger_ddl()
        self.ledger_ready = exists
        if not exists:
            return {}
        rows = await self.conn.fetch(
            f"SELECT version, checksum, success, run_id FROM {self.ledger_name}"  # noqa: S608
        )
        self.partial = {r["version"] for r in rows if not r["success"]}
        self.ledger_runs = {r["run_id"] for r in rows}
        return {r["version"]: r["checksum"] for r in rows if r["success"]}

    def _verify(self, ledger: dict[str, str]) -> MigrationFailure | None:
        for version in sorted({*ledger, *self.partial}, key=version_key):
            known = self.by_version.get(version)
            if known is None:
                return MigrationFailure(
                    version=version,
                    reason="unknown_version",
                    message=f"version {version} is applied but not in set "
                    f"{self.params.set_name!r} (ledger table {self.ledger_table})",
                )
            if known.repeatable:
                continue  # a changed repeatable is applied again, not a mismatch
            if version in ledger and known.checksum != ledger[version]:
                return MigrationFailure(
                    version=version,
                    reason="checksum_mismatch",
                    message=f"checksum mismatch at version {version}",
                )
        return None

    @staticmethod
    def _current(versions: Iterable[str]) -> str | None:
        return max((v for v in versions if not is_repeatable(v)), key=version_key, default=None)

    async def _preflight(
        self,
    ) -> tuple[dict[str, str], str | None, tuple[int, ...] | None] | TargetRunResult:
        """The ledger, the current version and the goal; or the result that stops the run
        before any change (checksum mismatch, unknown version)."""
        ledger = await self._ledger()
        current = self._current(ledger)
        failure = self._verify(ledger)
        if failure is not None:
            return self._result(current, to_version=current, failure=failure)
        goal = self._goal()
        if isinstance(goal, MigrationFailure):
            return self._result(current, to_version=current, failure=goal)
        return ledger, current, goal

    async def check(self) -> TargetRunResult:
        """``settle_only``: the result of an apply with nothing to do, from one ledger read;
        a deferred result when there is work (or anything for the engine to report)."""
        ledger = await self._ledger()
        rows = [(v, c, True) for v, c in ledger.items()] + [(v, "", False) for v in self.partial]
        current = self._current(ledger)
        return self.settled(rows) or self._result(current, to_version=current, deferred=True)

    async def apply(self) -> TargetRunResult:
        checked = await self._preflight()
        if isinstance(checked, TargetRunResult):
            return checked
        ledger, current, goal = checked
        pending, repeatables = self._todo(ledger, goal)
        if self.params.dry_run:
            planned = [
                PlannedVersion(
                    version=m.version,
                    description=m.description,
                    sql=m.up_sql,
                    no_transaction=m.no_transaction,
                    repeatable=m.repeatable,
                )
                for m in [*pending, *repeatables]
            ]
            return self._result(current, to_version=current, planned=planned)
        applied: list[AppliedVersion] = []
        reached = list(ledger)
        for migration in pending:
            # The version just below this one that the plan expects in the ledger: checked
            # again under the lock, in the same message.
            predecessor = max(
                (v for v in reached if version_key(v) < version_key(migration.version)),
                key=version_key,
                default=None,
            )
            try:
                took = await self._apply_one(migration, predecessor)
            except VersionFailed as failed:
                return await self._stopped(failed, current, applied, migration.version)
            reached.append(migration.version)
            if took is not None:
                applied.append(
                    AppliedVersion(
                        version=migration.version,
                        description=migration.description,
                        execution_ms=took,
                    )
                )
        # Every pending version is now in the ledger, by this run or by a concurrent one.
        latest = self._current(reached)
        for migration in repeatables:
            try:
                took = await self._apply_one(migration, latest)
            except VersionFailed as failed:
                return await self._stopped(failed, current, applied, migration.version)
            if took is not None:
                applied.append(
                    AppliedVersion(
                        version=migration.version,
                        description=migration.description,
                        execution_ms=took,
                        repeatable=True,
                    )
                )
        return self._result(current, to_version=latest, applied=applied)

    def _todo(
        self, ledger: dict[str, str], goal: tuple[int, ...] | None
    ) -> tuple[list[Migration], list[Migration]]:
        """The pending versions up to the goal and the repeatables whose content changed."""
        pending = [
            m
            for m in self.migrations
            if m.version not in ledger
            and not m.withdrawn
            and (goal is None or version_key(m.version) <= goal)
        ]
        repeatables = [
            m for m in self.repeatables if not m.withdrawn and ledger.get(m.version) != m.checksum
        ]
        return pending, repeatables

    def settled(self, rows: Iterable[tuple[str, str, bool]]) -> TargetRunResult | None:
        """The result of an apply that has nothing to do, judged from the ledger's rows
        (version, checksum, success) read elsewhere: a grouped no-op reads every schema's
        ledger in one query (activities.grouped). None when the engine has to run: something
        pending, a part-way row, or a failure it should report itself."""
        if self.params.kind is not TargetRunKind.APPLY or self.params.dry_run:
            return None
        ledger: dict[str, str] = {}
        for version, checksum, success in rows:
            if not success:
                return None
            ledger[version] = checksum
        goal = self._goal()
        if isinstance(goal, MigrationFailure) or self._verify(ledger) is not None:
            return None
        if any(self._todo(ledger, goal)):
            return None
        current = self._current(ledger)
        return self._result(current, to_version=current, applied=[])

    def _goal(self) -> tuple[int, ...] | MigrationFailure | None:
        if self.params.target_version is None:
            return None
        try:
            version = normalise_version(self.params.target_version)
        except ValueError as exc:
            return MigrationFailure(version=None, reason="unknown_version", message=str(exc))
        if version not in self.by_version and version != "0":
            return MigrationFailure(
                version=version,
                reason="unknown_version",
                message=f"version {version} is not in set {self.params.set_name!r}",
            )
        return version_key(version)

    async def _apply_one(self, migration: Migration, predecessor: str | None) -> float | None:
        """Apply one version with its ledger row; None when another runner already did.

        Raises ``VersionFailed`` for an SQL error (the transaction rolled back)."""
        if migration.no_transaction:
            self.no_transaction.ledger_ready = self.ledger_ready
            took = await self.no_transaction.apply(migration, predecessor)
            self.ledger_ready = True
            return took
        return await self._apply_in_one_message(migration, predecessor)

    def _guard(self, predecessor: str) -> str:
        """A statement that fails (22P02, ``GUARD_MARKER``) unless ``predecessor`` is in the
        ledger at this moment, under the lock; ``now()`` keeps the planner from folding it."""
        return (
            "SELECT CASE WHEN NOT EXISTS (SELECT FROM "  # noqa: S608 - quoted identifier
            f"{self.ledger_name} WHERE version = {quote_literal(predecessor)} AND success) "
            f"THEN ({quote_literal(GUARD_MARKER + ': ')} || now())::int END"
        )

    async def _apply_in_one_message(
        self, migration: Migration, predecessor: str | None
    ) -> float | None:
        """BEGIN, the target's lock, the SQL, the ledger row and COMMIT as one simple-query
        message: one round trip per version (the plain way takes three), and no statement
        beyond the row itself (every extra statement shape costs each new backend catalog
        lookups: an UPDATE of the row's timing cost PostgreSQL a third more CPU in the bench).

        A concurrent runner that committed the version first makes this transaction fail:
        its SQL meets the objects already there, or at the latest the ledger's primary key
        rejects the row; either way nothing of it stays, and the ledger, read again, says
        whether the version is in (skip it) or the SQL really failed.
        """
        version = quote_literal(migration.version)
        prefix = ";\n".join(
            [
                "BEGIN",
                self.session_reset,
                "SELECT pg_advisory_xact_lock(hashtextextended("
                f"{quote_literal(self.lock_key)}, 0))",
                *([] if self.ledger_ready else self._ledger_ddl()),
                *([] if predecessor is None else [self._guard(predecessor)]),
                *self._clear_row(migration),
            ]
        )
        prefix += ";\n"
        # The SQL may end in a line comment or without a semicolon: start on a new line.
        suffix = (
            f"\n;\n{self.session_reset};\nINSERT INTO {self.ledger_name} "
            "(version, description, checksum, execution_ms, run_id, success) VALUES ("
            f"{version}, {quote_literal(migration.description)}, "
            f"{quote_literal(migration.checksum)}, "
            "round(1000 * extract(epoch FROM clock_timestamp() - now()), 3), "
            f"{quote_literal(self.params.run_id)}, true);\nCOMMIT"
        )
        started = time.perf_counter()
        try:
            await self.conn.execute(prefix + migration.up_sql + suffix)
        except asyncpg.PostgresError as exc:
            if self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK")
            if GUARD_MARKER in str(exc):
                raise LockTimeout(
                    f"version {predecessor} left the ledger of this target while version "
                    f"{migration.version} waited for its lock (a concurrent rollback); "
                    "planning again"
                ) from None
            if exc.sqlstate not in RETRYABLE_SQLSTATES and self._in_ledger(
                migration, await self._ledger()
            ):
                return None  # another runner applied it meanwhile
            raise VersionFailed(exc, len(prefix)) from None
        # Only now: had the transaction rolled back, the ledger table would have gone with it.
        self.ledger_ready = True
        return round((time.perf_counter() - started) * 1000, 3)

    @staticmethod
    def _in_ledger(migration: Migration, ledger: dict[str, str]) -> bool:
        """Whether the ledger has the version (a repeatable: with this very content)."""
        if migration.repeatable:
            return ledger.get(migration.version) == migration.checksum
        return migration.version in ledger

    def _clear_row(self, migration: Migration) -> list[str]:
        """The statements that clear the way for the version's row: a repeatable's earlier row
        goes (unless a concurrent runner has just applied this very content: then the
        statement fails and the ledger, read again, says so); a row left part-way by a
        no-transaction version goes too (the file is transactional now)."""
        version = quote_literal(migration.version)
        if migration.repeatable:
            return [
                "SELECT CASE WHEN EXISTS (SELECT FROM "  # noqa: S608 - quoted identifier
                f"{self.ledger_name} WHERE version = {version} AND success AND checksum = "
                f"{quote_literal(migration.checksum)}) THEN ('tenantflow: already applied: ' "
                "|| now())::int END",
                f"DELETE FROM {self.ledger_name} WHERE version = {version}",  # noqa: S608
            ]
        if migration.version in self.partial:
            return [
                f"DELETE FROM {self.ledger_name} WHERE version = {version} AND NOT success"  # noqa: S608
            ]
        return []

    def _ledger_ddl(self) -> list[str]:
        # Schema-per-tenant: the tenant's schema appears with its first migration.
        create_schema = f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}"
        needed = self.schema != "public" and not self.schema_exists
        return [*([create_schema] if needed else []), ledger_ddl(self.schema, self.ledger_table)]

    async def rollback(self) -> TargetRunResult:
        """Undo the versions above the target version (``activities.engine_rollback``)."""
        return await roll_back(self)

    async def _stopped(
        self,
        failed: VersionFailed,
        current: str | None,
        done: list[AppliedVersion],
        version: str,
    ) -> TargetRunResult:
        """A version's SQL failed: a busy target raises (retried); otherwise the result names
        the version, with what was done before it and where the ledger now stands."""
        if failed.error.sqlstate in RETRYABLE_SQLSTATES:
            raise failed.error from None
        return self._result(
            current,
            to_version=self._current(await self._ledger()),
            applied=done,
            failure=sql_failure(version, failed.error, failed.offset),
        )
