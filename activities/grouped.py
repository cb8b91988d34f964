"""Grouped schema targets: the schemas of a batch that share a database and credentials go
through a few shared connections, one schema after another on each, instead of one connection
each.

Each schema keeps what a connection of its own gave it: its own transactions and advisory lock
(the engine's, keyed by the schema), and its own ``search_path``. A connection's startup
``search_path`` is ``pg_catalog`` (no schema of any tenant), and the engine's session reset,
sent inside each version's own message, is followed by ``SET search_path`` to the schema, so an
unqualified name in a version lands in its own schema and never in the previous one's.

Before any schema runs, an apply reads every schema's ledger in one query on the group's first
connection; a schema with nothing to do is settled from it (``TargetEngine.settled``) without a
round trip of its own: a no-op rollout costs one connection and one query per database and batch.

The schemas left with work are split into chunks of about ``GROUP_CHUNK``, each on a connection
of its own, and the chunks run at once: one connection for the group left a batch of 100 schemas
in one database running one schema after another. Each connection takes a ``hold`` (the server's
connection budget) for as long as it is open, so a group never opens more connections than it
has members nor more than the budget allows; the first connection's hold is released when its
own chunk is done, so a budget of one slot runs the chunks one after another instead of waiting
on itself.

A failing schema fails only itself; a connection lost on the way is opened again for the
schemas after it. A busy schema (lock timeout) is tried again after the others of its chunk,
with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from activities.engine import TargetEngine
from activities.ledger import RESET_SESSION, RETRYABLE_SQLSTATES, LockTimeout, ledger_name
from activities.reconnect import ConnectionLost, Unreachable, connection_lost, reconnect_pause
from common.network_policy import NetworkRefused
from common.sql import quote_ident
from models.migrations import (
    Migration,
    MigrationFailure,
    TargetRunInput,
    TargetRunKind,
    TargetRunResult,
)

log = logging.getLogger(__name__)

# The kinds that run through the engine; adoption and baselines keep a connection each.
GROUPED_KINDS = frozenset({TargetRunKind.APPLY, TargetRunKind.ROLLBACK})
LOCK_ATTEMPTS = 4
# A group's connection names no tenant schema until the engine sets one.
NEUTRAL_SEARCH_PATH = "pg_catalog"
# Schemas per connection. A connection costs a backend (a fork, authentication: milliseconds)
# and a budget slot, a schema's versions tens of milliseconds; twelve spreads that start-up over
# enough schemas to vanish, while a batch of 100 still runs on 9 connections at once rather than
# one after another on a single one (bench figures in the decision record).
GROUP_CHUNK = 12

Member = tuple[uuid.UUID, str]  # (database id, schema)


@dataclass
class SchemaGroup:
    """Targets in one database with the same credentials, each in its own schema."""

    params: dict[str, Any]  # connection parameters without the schema
    members: list[Member]


def group_schemas(
    database_ids: Sequence[uuid.UUID],
    targets: Mapping[uuid.UUID, dict[str, Any] | BaseException],
) -> tuple[list[SchemaGroup], list[uuid.UUID]]:
    """The groups of two or more schemas that can share a connection, and the targets that
    keep their own (alone in their database, unreadable, or a schema named twice)."""
    by_key: dict[str, SchemaGroup] = {}
    for database_id in database_ids:
        target = targets.get(database_id)
        if target is None or isinstance(target, BaseException):
            continue
        params = {k: v for k, v in target.items() if k != "schema"}
        key = repr(sorted(params.items()))
        group = by_key.setdefault(key, SchemaGroup(params, []))
        schema = target.get("schema") or "public"
        if all(schema != s for _, s in group.members):
            group.members.append((database_id, schema))
    groups = [g for g in by_key.values() if len(g.members) > 1]
    grouped = {i for g in groups for i, _ in g.members}
    return groups, [i for i in database_ids if i not in grouped]


def chunked(members: Sequence[Member], size: int = GROUP_CHUNK) -> list[list[Member]]:
    """``members`` in order, in ceil(n / size) chunks whose sizes differ by one at most (30
    schemas make three chunks of 10, not 12, 12 and 6: the last one would finish early)."""
    if not members:
        return []
    count = -(-len(members) // max(size, 1))
    base, extra = divmod(len(members), count)
    chunks: list[list[Member]] = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        chunks.append(list(members[start:end]))
        start = end
    return chunks


def describe(exc: BaseException) -> str:
    """An error for a result: PostgreSQL's and the OS's messages name hosts and users, never
    passwords."""
    return f"{type(exc).__name__}: {exc}"[:500]


def unrun(params: TargetRunInput, **fields: Any) -> TargetRunResult:
    """A target's result from outside the engine: no version read or reached."""
    return TargetRunResult(
        run_id=params.run_id,
        database_id=params.database_id,
        kind=params.kind,
        dry_run=params.dry_run,
        from_version=None,
        to_version=None,
        **fields,
    )


def deferred_result(params: TargetRunInput) -> TargetRunResult:
    """``settle_only``: a target with work left, which a batch of its own runs."""
    return unrun(params, deferred=True)


def error_result(params: TargetRunInput, reason: str, message: str) -> TargetRunResult:
    """A target's result when it failed before or outside the engine."""
    return unrun(params, failure=MigrationFailure(version=None, reason=reason, message=message))


def schema_reset(schema: str) -> str:
    """The engine's session reset on a grouped connection: back to the startup defaults, then
    the schema's own search path (the reset alone would leave ``pg_catalog``)."""
    return f"{RESET_SESSION};\nSET search_path = {quote_ident(schema)}"


def ledgers_query(schemas: Sequence[str], ledger_table: str) -> str:
    """Every schema's ledger rows in one statement, each row tagged with its schema's index."""
    return "\nUNION ALL\n".join(
        f"SELECT {i} AS i, version, checksum, success FROM {ledger_name(s, ledger_table)}"  # noqa: S608 - quoted identifiers
        for i, s in enumerate(schemas)
    )


Connect = Callable[[], Awaitable[asyncpg.Connection]]
# Held while one of the group's connections is open (the caller's server budget slot).
Hold = Callable[[], contextlib.AbstractAsyncContextManager[None]]
Results = dict[uuid.UUID, TargetRunResult]


def no_hold() -> contextlib.AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


class GroupRunner:
    """Runs one group's schemas on a connection per chunk (see the module docstring)."""

    def __init__(
        self,
        group: SchemaGroup,
        for_target: Callable[[uuid.UUID], TargetRunInput],
        migrations: Sequence[Migration],
        ledger_table: str,
        connect: Connect,
        *,
        hold: Hold = no_hold,
        chunk_size: int = GROUP_CHUNK,
    ) -> None:
        self.group = group
        self.for_target = for_target
        self.migrations = migrations
        self.ledger_table = ledger_table
        self.connect = connect
        self.hold = hold
        self.chunk_size = chunk_size
        # How many ledger reads the no-op check sent (one per group; tests count it).
        self.ledger_queries = 0
        # The members left to run after the no-op check, as they were split over connections.
        self.chunks: list[list[Member]] = []

    def engine(self, conn: asyncpg.Connection, database_id: uuid.UUID, schema: str) -> TargetEngine:
        return TargetEngine(
            conn,
            schema,
            self.for_target(database_id),
            self.migrations,
            self.ledger_table,
            session_reset=schema_reset(schema),
        )

    async def run(self) -> Results:
        """Every member's result; never raises for one member's failure."""
        results: Results = {}
        others: list[asyncio.Task[None]] = []

        async def lead(lane: Lane) -> list[Member]:
            """The first connection settles the group, starts the other chunks and keeps the
            first chunk for itself."""
            remaining = await self._settle(lane, results)
            if remaining and self.for_target(remaining[0][0]).settle_only:
                # Only the ledgers were asked for: the schemas with work go to a batch.
                for database_id, _ in remaining:
                    results[database_id] = deferred_result(self.for_target(database_id))
                remaining = []
            self.chunks = chunked(remaining, self.chunk_size)
            others.extend(
                asyncio.create_task(self._chunk(chunk, results)) for chunk in self.chunks[1:]
            )
            return self.chunks[0] if self.chunks else []

        try:
            await self._chunk(self.group.members, results, lead)
            await asyncio.gather(*others)
        except BaseException:
            # Cancelled: no chunk goes on unseen.
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            raise
        return results

    async def _chunk(
        self,
        members: list[Member],
        results: Results,
        first: Callable[[Lane], Awaitable[list[Member]]] | None = None,
    ) -> None:
        """``members`` one after another on a connection of their own, under a hold of its
        own (``first`` picks them on that connection). An unexpected error fails the members
        it left without a result, and no others."""
        try:
            async with self.hold():
                lane = Lane(self, results)
                try:
                    if first is not None:
                        members = await first(lane)
                    await lane.run(members)
                finally:
                    await lane.close()
        except Exception as exc:
            log.exception("grouped schemas failed unexpectedly (%d members)", len(members))
            for database_id, _ in members:
                if database_id not in results:
                    results[database_id] = error_result(
                        self.for_target(database_id), "internal", describe(exc)
                    )

    async def _settle(self, lane: Lane, results: Results) -> list[Member]:
        """The members an apply finds up to date, settled from one read of every ledger; the
        others are returned, to run. Any error (a schema's first contact: its ledger is not
        there yet) leaves them all to the engine, which reads its own ledger."""
        members = self.group.members
        first = self.for_target(members[0][0])
        if first.kind is not TargetRunKind.APPLY or first.dry_run:
            return list(members)
        try:
            conn = await lane.connection()
            self.ledger_queries += 1
            rows = await conn.fetch(ledgers_query([s for _, s in members], self.ledger_table))
        except (asyncpg.PostgresError, OSError, TimeoutError, NetworkRefused):
            # A refused connection is refused again, and recorded, per member (Lane.run).
            return list(members)
        by_member: dict[int, list[tuple[str, str, bool]]] = {i: [] for i in range(len(members))}
        for row in rows:
            by_member[row["i"]].append((row["version"], row["checksum"], row["success"]))
        remaining: list[Member] = []
        for index, (database_id, schema) in enumerate(members):
            # An engine without a round trip: settled() only reads what it is given.
            settled = self.engine(conn, database_id, schema).settled(by_member[index])
            if settled is None:
                remaining.append((database_id, schema))
            else:
                results[database_id] = settled
        return remaining

    async def one(
        self, conn: asyncpg.Connection, database_id: uuid.UUID, schema: str
    ) -> TargetRunResult:
        """One schema's apply or rollback on ``conn``; raises LockTimeout when it is busy."""
        params = self.for_target(database_id)
        try:
            engine = self.engine(conn, database_id, schema)
            if params.kind is TargetRunKind.ROLLBACK:
                return await engine.rollback()
            return await engine.apply()
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in RETRYABLE_SQLSTATES:
                raise LockTimeout(f"target busy ({exc.sqlstate}): {exc}") from None
            if connection_lost(exc):
                conn.terminate()
                raise ConnectionLost(exc) from None
            return error_result(params, "unreachable", describe(exc))
        except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            # The connection dropped mid-version; the next attempt opens another.
            if not conn.is_closed():
                conn.terminate()
            if connection_lost(exc):
                raise ConnectionLost(exc) from None
            return error_result(params, "unreachable", describe(exc))


class Lane:
    """One of a group's connections and the chunk of schemas it runs, one after another."""

    def __init__(self, runner: GroupRunner, results: Results) -> None:
        self.runner = runner
        self.results = results
        self.conn: asyncpg.Connection | None = None
        self.lost_waited = 0.0  # seconds this lane has waited for lost connections

    async def run(self, members: list[Member]) -> None:
        """Every member's result into ``results``; busy members are tried again last."""
        runner, results = self.runner, self.results
        remaining = members
        delay = 1.0
        attempt = 0
        while True:
            attempt += 1
            busy: list[tuple[uuid.UUID, str, LockTimeout]] = []
            for index, (database_id, schema) in enumerate(remaining):
                outcome = await self._member(database_id, schema)
                if isinstance(outcome, LockTimeout):
                    busy.append((database_id, schema, outcome))
                elif isinstance(outcome, Unreachable):
                    # The database cannot be reached: nor can the schemas after this one.
                    for other, _ in remaining[index:]:
                        results[other] = error_result(
                            runner.for_target(other), outcome.reason, outcome.message
                        )
                    break
                else:
                    results[database_id] = outcome
                await self._clean_up()
            if not busy:
                return
            if attempt >= LOCK_ATTEMPTS:
                for database_id, _, timed_out in busy:
                    results[database_id] = error_result(
                        runner.for_target(database_id), "lock_timeout", str(timed_out)
                    )
                return
            await asyncio.sleep(delay)
            delay *= 2
            remaining = [(i, s) for i, s, _ in busy]

    async def _member(
        self, database_id: uuid.UUID, schema: str
    ) -> TargetRunResult | LockTimeout | Unreachable:
        """One schema's result; a lost connection (its server restarting) is opened again with
        growing pauses, for RECONNECT_SECONDS in all per lane (activities.reconnect)."""
        runner = self.runner
        while True:
            try:
                conn = await self.connection()
            except NetworkRefused as exc:
                return Unreachable("network_refused", exc.message)
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                pause = reconnect_pause(exc, self.lost_waited)
                if pause is None:
                    return Unreachable("unreachable", describe(exc))
            else:
                try:
                    return await runner.one(conn, database_id, schema)
                except LockTimeout as busy:
                    return busy
                except ConnectionLost as lost:
                    pause = reconnect_pause(lost.cause, self.lost_waited)
                    if pause is None:
                        params = runner.for_target(database_id)
                        return error_result(params, "unreachable", describe(lost.cause))
            self.lost_waited += pause
            await asyncio.sleep(pause)

    async def connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await self.runner.connect()
        return self.conn

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()

    async def _clean_up(self) -> None:
        """Leaves no transaction open for the next schema; a connection that cannot even
        roll back is closed (the next schema opens another)."""
        conn = self.conn
        if conn is None or conn.is_closed() or not conn.is_in_transaction():
            return
        try:
            await conn.execute("ROLLBACK")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
