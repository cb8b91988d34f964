"""Versions marked ``-- tenantflow:no-transaction`` (``CREATE INDEX CONCURRENTLY`` and the
like): applied and rolled back statement by statement, as ``psql`` without ``-1`` would, under a
session advisory lock.

Exactly once without a transaction: before the first statement the version's ledger row goes in
with ``success = false``; after each statement its ``statements_done`` moves on; after the last
the row becomes ``success = true``. A crash or a failure leaves the row false and says how far
the version got. The retry starts at the first statement not known to be done and runs that one
*converging*: a named index already built and valid is kept, an INVALID one (a failed or
interrupted concurrent build) is dropped and built again, and "already exists" (or, for a
drop, "does not exist") counts as done. When the file changed since (its author fixed it), or a
rollback began, every statement converges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from activities.ledger import RESET_SESSION, LockTimeout, VersionFailed, progress_column_ddl
from common.migrations.sql import Statement, convergence, split_statements
from common.sql import quote_literal
from models.migrations import Migration

# An index named NAME on TABLE (as written in the statement): whether it is valid, and its
# schema (an index lives in its table's schema).
_INDEX_STATE = (
    "SELECT x.indisvalid, n.nspname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
    "JOIN pg_namespace n ON n.oid = i.relnamespace WHERE i.relname = $1 AND i.relnamespace = "
    "(SELECT relnamespace FROM pg_class WHERE oid = to_regclass($2))"
)
# The connection itself is gone (class 08) or the server ended the session (class 57: admin
# shutdown, crash shutdown, cannot connect now): not the version's fault; retried.
_CONNECTION_LOST = ("08", "57")


@dataclass
class NoTransactionRunner:
    """One target's connection, ledger and lock, for no-transaction versions."""

    conn: asyncpg.Connection
    ledger_name: str
    lock_key: str
    run_id: str
    ledger_statements: list[str]
    ledger_ready: bool = False
    progress_ready: bool = False
    # The engine's session reset (a grouped connection's names its schema's search_path).
    reset_session: str = RESET_SESSION

    async def apply(self, migration: Migration, predecessor: str | None) -> float | None:
        """Apply ``migration``; None when it was already in (another runner). Raises
        ``VersionFailed`` for an SQL error (the row stays false, marking how far it got)."""
        await self._lock()
        try:
            if predecessor is not None and await self.row(predecessor) is not True:
                raise LockTimeout(
                    f"version {predecessor} left the ledger of this target while version "
                    f"{migration.version} waited for its lock; planning again"
                )
            await self._ensure_ledger()
            state = await self.conn.fetchrow(
                f"SELECT success, checksum, statements_done FROM {self.ledger_name} "  # noqa: S608
                "WHERE version = $1",
                migration.version,
            )
            if state is not None and state["success"]:  # noqa: SIM102 - reads better apart
                # A repeatable with other content in its row is applied again, below.
                if not migration.repeatable or state["checksum"] == migration.checksum:
                    return None
            statements = split_statements(migration.up_sql)
            if state is None:
                await self._note(migration, "INSERT", 0)
                start, converge_all = 0, False
            elif state["success"]:
                # A repeatable applied before with other content: run it again from the top
                # (repeatables are written to be re-run), its row part-way meanwhile.
                await self._note(migration, "RESTART", 0)
                start, converge_all = 0, False
            elif state["checksum"] == migration.checksum and state["statements_done"] is not None:
                start, converge_all = int(state["statements_done"]), False
            else:
                await self._note(migration, "UPDATE", 0)
                start, converge_all = 0, True
            started = time.perf_counter()
            for index in range(start, len(statements)):
                # The first statement of a retry may have taken effect before the crash.
                converge = converge_all or (state is not None and index == start)
                await self._run(statements[index], migration.up_sql, converge)
                await self.conn.execute(
                    f"UPDATE {self.ledger_name} SET statements_done = $2 "  # noqa: S608
                    "WHERE version = $1",
                    migration.version,
                    index + 1,
                )
            if self.conn.is_in_transaction():
                # A BEGIN without its COMMIT: psql would end the session and lose it too.
                raise VersionFailed(
                    asyncpg.exceptions.InvalidTransactionStateError(
                        "the version ends inside a transaction it began (a BEGIN without its "
                        "COMMIT); its changes were rolled back"
                    ),
                    0,
                )
            took = round((time.perf_counter() - started) * 1000, 3)
            await self.conn.execute(
                f"{self.reset_session};\nUPDATE {self.ledger_name} SET success = true, "
                "statements_done = NULL, applied_at = now(), "
                f"execution_ms = {took}, run_id = {quote_literal(self.run_id)} "
                f"WHERE version = {quote_literal(migration.version)}"
            )
            return took
        finally:
            await self._unlock()

    async def rollback(self, migration: Migration) -> float | None:
        """Run ``migration``'s down script statement by statement, converging (a retry after a
        failure, or a half-applied version, finds part of it done); None when the version is
        not in the ledger (another runner rolled it back)."""
        await self._lock()
        try:
            if await self.row(migration.version) is None:
                return None
            await self._ensure_progress_column()
            await self.conn.execute(
                f"UPDATE {self.ledger_name} SET success = false, "  # noqa: S608
                "statements_done = NULL WHERE version = $1",
                migration.version,
            )
            started = time.perf_counter()
            down = migration.down_sql or ""
            for statement in split_statements(down):
                await self._run(statement, down, converge=True)
            took = round((time.perf_counter() - started) * 1000, 3)
            await self.conn.execute(
                f"{self.reset_session};\nDELETE FROM {self.ledger_name} "
                f"WHERE version = {quote_literal(migration.version)}"
            )
            return took
        finally:
            await self._unlock()

    async def row(self, version: str) -> bool | None:
        """The version's ledger row: True (applied), False (part-way) or None (absent)."""
        if not self.ledger_ready:
            exists = await self.conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", self.ledger_name
            )
            if not exists:
                return None
        found = await self.conn.fetchval(
            f"SELECT success FROM {self.ledger_name} WHERE version = $1",  # noqa: S608
            version,
        )
        return None if found is None else bool(found)

    async def _lock(self) -> None:
        # The session is reset in the lock's own message (a statement that refuses transaction
        # blocks cannot share a multi-statement message).
        await self.conn.execute(
            "SELECT pg_advisory_lock(hashtextextended("
            f"{quote_literal(self.lock_key)}, 0));\n{self.reset_session}"
        )

    async def _unlock(self) -> None:
        if self.conn.is_closed():  # the session lock went with the session
            return
        if self.conn.is_in_transaction():
            # A version's own BEGIN, then a failure: its work (and the progress noted inside
            # it) rolls back, so the retry starts again at that BEGIN.
            await self.conn.execute("ROLLBACK")
        await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self.lock_key)

    async def _ensure_ledger(self) -> None:
        if not self.ledger_ready:
            for statement in self.ledger_statements:
                await self.conn.execute(statement)
            self.ledger_ready = True
        await self._ensure_progress_column()

    async def _ensure_progress_column(self) -> None:
        if not self.progress_ready:
            await self.conn.execute(progress_column_ddl(self.ledger_name))
            self.progress_ready = True

    async def _note(self, migration: Migration, how: str, done: int) -> None:
        """The row that says the version is part-way: inserted, reset after a change, or (a
        repeatable applied again) turned back to part-way."""
        if how == "INSERT":
            await self.conn.execute(
                f"INSERT INTO {self.ledger_name} (version, description, checksum, "  # noqa: S608
                "execution_ms, run_id, success, statements_done) "
                "VALUES ($1, $2, $3, 0, $4, false, $5)",
                migration.version,
                migration.description,
                migration.checksum,
                self.run_id,
                done,
            )
            return
        restart = ", success = false" if how == "RESTART" else ""
        await self.conn.execute(
            f"UPDATE {self.ledger_name} SET description = $2, checksum = $3, "  # noqa: S608
            f"run_id = $4, statements_done = $5{restart} WHERE version = $1",
            migration.version,
            migration.description,
            migration.checksum,
            self.run_id,
            done,
        )

    async def _run(self, statement: Statement, script: str, converge: bool) -> None:
        """One statement on its own (autocommitted); converging when it may have run before."""
        plan = convergence(statement.text) if converge else None
        if plan is not None and plan.index is not None:
            state = await self.conn.fetchrow(_INDEX_STATE, plan.index.name, plan.index.table)
            if state is not None and state["indisvalid"]:
                return  # built before the interruption
            if state is not None:
                # An INVALID index: a concurrent build that failed or was interrupted.
                name = '"' + state["nspname"].replace('"', '""') + '".'
                name += '"' + plan.index.name.replace('"', '""') + '"'
                await self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        try:
            await self.conn.execute(statement.text)
        except asyncpg.PostgresError as exc:
            if self.conn.is_closed() or str(exc.sqlstate or "")[:2] in _CONNECTION_LOST:
                raise
            if plan is not None and exc.sqlstate in plan.done_codes:
                return
            # PostgreSQL's position counts from the statement's start in the script.
            raise VersionFailed(exc, -script.find(statement.text, statement.offset)) from None
