"""The migration activities: apply or roll back one target, or a batch of targets, correctly,
safely and idempotently; read a target's ledger.

Connecting, heartbeats and per-target outcomes live here; what happens on the connection is
``activities.engine`` (transactional versions) and ``activities.no_transaction``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
from temporalio import activity

from activities.adoption import TargetAdopter
from activities.engine import TargetEngine
from activities.grouped import (
    GROUPED_KINDS,
    NEUTRAL_SEARCH_PATH,
    GroupRunner,
    SchemaGroup,
    describe,
    error_result,
    group_schemas,
    unrun,
)
from activities.ledger import (
    GUARD_MARKER,
    LEDGER_TABLE,
    RESET_SESSION,
    RETRYABLE_SQLSTATES,
    LockTimeout,
    ledger_ddl,
    ledger_name,
)
from activities.reconnect import reconnect_pause
from activities.server_slots import SlotSession, budgets, slot_session
from common import network_policy
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.migrations.lint import CACHE as LINT_CACHE
from common.sql import quote_ident
from common.telemetry import recording
from models.fleet import TargetBatchInput
from models.migrations import (
    Ledger,
    LedgerEntry,
    LedgerRequest,
    Migration,
    TargetRunInput,
    TargetRunKind,
    TargetRunResult,
    is_repeatable,
    version_key,
)

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
BATCH_LOCK_ATTEMPTS = 4

__all__ = [
    "GUARD_MARKER",
    "LEDGER_TABLE",
    "RESET_SESSION",
    "RETRYABLE_SQLSTATES",
    "LockTimeout",
    "MigrationActivities",
    "ledger_ddl",
]


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat in the background so a long statement does not look like a dead worker.

    The first beat comes after one interval, not at the start: Temporal's SDK sends the first
    heartbeat of an activity at once (later ones are throttled), which for a batch that ends
    within the interval was one more RPC and one more write of the run's state on the server,
    for nothing (at 200 databases, 50 of them per run)."""

    async def beat() -> None:
        timeout = activity.info().heartbeat_timeout
        every = HEARTBEAT_SECONDS
        if timeout is not None:
            every = min(every, max(timeout.total_seconds() / 3, 0.2))
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat()) if activity.in_activity() else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class MigrationActivities:
    """Holds the catalog repositories the engine reads targets and sets from."""

    def __init__(self, databases: DatabaseRepository, sets: MigrationSetRepository) -> None:
        self._databases = databases
        self._sets = sets

    @activity.defn(name="run_target")
    async def run_target(self, params: TargetRunInput) -> TargetRunResult:
        """Apply (or roll back, or plan) one target; see the module docstring."""
        async with heartbeating():
            found = await self._sets.content(params.set_name)
            began = time.perf_counter()
            result = await self.run_one(params, found.migrations, ledger_table=found.ledger_table)
            recording.target_finished(params.set_name, result, time.perf_counter() - began)
            return result

    @activity.defn(name="run_target_batch")
    async def run_target_batch(self, batch: TargetBatchInput) -> list[TargetRunResult]:
        """Several targets at once (the fleet's per-target unit). A target's failure is its
        result; a busy target is retried here with backoff before it counts as failed."""
        found = await self._sets.content(batch.set_name)
        targets = await self._databases.connection_params_each(batch.database_ids)
        # A server's connection budget holds across runs and workers (activities.server_slots).
        limits = await budgets(self._databases.pool, batch.database_ids)
        seconds: dict[uuid.UUID, float] = {}

        async def one(database_id: uuid.UUID, slots: SlotSession | None) -> TargetRunResult:
            params = batch.for_target(database_id)
            target = targets.get(database_id)
            if target is None:
                return _error_result(params, "not_found", f"no database {database_id}")
            if isinstance(target, BaseException):
                return _error_result(params, "credentials", _describe(target))
            delay, attempt, lost_waited = 1.0, 0, 0.0
            while True:
                try:
                    async with (
                        slots.slot(limits.get(database_id))
                        if slots is not None
                        else contextlib.nullcontext()
                    ):
                        budget = limits.get(database_id)
                        with recording.server_connection(budget.server_name if budget else None):
                            return await self.run_one(
                                params,
                                found.migrations,
                                dict(target),
                                ledger_table=found.ledger_table,
                            )
                except LockTimeout as exc:
                    attempt += 1
                    if attempt == BATCH_LOCK_ATTEMPTS:
                        return _error_result(params, "lock_timeout", str(exc))
                    recording.lock_timeout_retry()
                    await asyncio.sleep(delay)
                    delay *= 2
                except network_policy.NetworkRefused as exc:
                    return _error_result(params, "network_refused", exc.message)
                except (
                    asyncpg.PostgresError,
                    OSError,
                    TimeoutError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                ) as exc:
                    # A server restarting (or a connection cut) mid-version: PostgreSQL rolled
                    # the version back, the ledger says what committed; connect again for a
                    # while before the target counts as unreachable.
                    pause = reconnect_pause(exc, lost_waited)
                    if pause is None:
                        return _error_result(params, "unreachable", _describe(exc))
                    lost_waited += pause
                    await asyncio.sleep(pause)

        async def timed(database_id: uuid.UUID, slots: SlotSession | None) -> TargetRunResult:
            began = time.perf_counter()
            try:
                return await one(database_id, slots)
            finally:
                seconds[database_id] = time.perf_counter() - began

        # Schemas sharing a database and credentials share a connection (activities.grouped).
        groups: list[SchemaGroup] = []
        singles = list(batch.database_ids)
        if batch.kind in GROUPED_KINDS:
            groups, singles = group_schemas(batch.database_ids, targets)
        by_target: dict[uuid.UUID, TargetRunResult | BaseException] = {}

        async def grouped(group: SchemaGroup, slots: SlotSession | None) -> None:
            """A connection (one budget slot) per chunk of the group's schemas."""
            budget = limits.get(group.members[0][0])
            params = batch.for_target(group.members[0][0])

            @contextlib.asynccontextmanager
            async def hold() -> AsyncIterator[None]:
                async with slots.slot(budget) if slots is not None else contextlib.nullcontext():
                    with recording.server_connection(budget.server_name if budget else None):
                        yield

            began = time.perf_counter()
            try:
                found_results = await GroupRunner(
                    group,
                    batch.for_target,
                    found.migrations,
                    found.ledger_table,
                    lambda: _connect(group.params, params, NEUTRAL_SEARCH_PATH),
                    hold=hold,
                ).run()
            except Exception as exc:  # each member gets it, below
                for database_id, _ in group.members:
                    by_target[database_id] = exc
                return
            share = (time.perf_counter() - began) / len(group.members)
            for database_id, _ in group.members:
                member = batch.for_target(database_id)
                result = found_results.get(database_id)
                by_target[database_id] = (
                    with_lock_risks(result, member, found.migrations)
                    if result is not None
                    else _error_result(member, "internal", "the group ran without it")
                )
                seconds[database_id] = share

        # A settle-only batch is bigger than the run's window, and so is an ordinary one with
        # batch_connections: it runs at most ``connections`` targets at once (each target or
        # group, one connection). With ``stop_at_failure`` it starts none after a failure:
        # those come back deferred, for the run to judge its budget first.
        at_once = asyncio.Semaphore(batch.connections or len(batch.database_ids) or 1)
        stop = asyncio.Event()

        def judge(members: Sequence[uuid.UUID]) -> None:
            if batch.stop_at_failure and any(
                not isinstance(found, TargetRunResult) or found.failure is not None
                for found in (by_target.get(i) for i in members)
            ):
                stop.set()

        def defer(members: Sequence[uuid.UUID]) -> None:
            for database_id in members:
                by_target[database_id] = unrun(batch.for_target(database_id), deferred=True)

        async def single(database_id: uuid.UUID, slots: SlotSession | None) -> None:
            async with at_once:
                if stop.is_set():
                    return defer([database_id])
                try:
                    by_target[database_id] = await timed(database_id, slots)
                except Exception as exc:  # its result, below
                    by_target[database_id] = exc
                judge([database_id])

        async def group_unit(group: SchemaGroup, slots: SlotSession | None) -> None:
            members = [database_id for database_id, _ in group.members]
            async with at_once:
                if stop.is_set():
                    return defer(members)
                await grouped(group, slots)
                judge(members)

        async with heartbeating(), slot_session(self._databases.pool, bool(limits)) as slots:
            # Each target's surprise is caught as its own: it never leaves the others running
            # unseen while Temporal retries the batch against them.
            await asyncio.gather(
                *(single(i, slots) for i in singles),
                *(group_unit(g, slots) for g in groups),
            )
        outcomes = [by_target[i] for i in batch.database_ids]
        results: list[TargetRunResult] = []
        for database_id, outcome in zip(batch.database_ids, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                log.exception("target %s failed unexpectedly", database_id, exc_info=outcome)
                outcome = _error_result(
                    batch.for_target(database_id), "internal", _describe(outcome)
                )
            results.append(outcome)
            if not outcome.deferred:
                recording.target_finished(batch.set_name, outcome, seconds.get(database_id, 0.0))
        return results

    @activity.defn(name="read_ledger")
    async def read_ledger(self, request: LedgerRequest) -> Ledger:
        """The target's ledger rows (empty before its first migration): the ledger table of
        ``request.set_name``, or the default one."""
        ledger_table = LEDGER_TABLE
        if request.set_name is not None:
            ledger_table = (await self._sets.content(request.set_name)).ledger_table
        target = await self._databases.connection_params(request.database_id)
        schema = target.pop("schema") or "public"
        conn = await network_policy.connect(target, timeout=30)
        try:
            table = ledger_name(schema, ledger_table)
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            rows = (
                await conn.fetch(
                    "SELECT version, description, checksum, applied_at, execution_ms, run_id, "  # noqa: S608 - quoted identifier
                    # adopted_from exists only in ledgers that adopted (activities.adoption).
                    "success, to_jsonb(l) ->> 'adopted_from' AS adopted_from "
                    f"FROM {table} AS l ORDER BY applied_at, version"
                )
                if exists
                else []
            )
        finally:
            await conn.close()
        entries = sorted(
            (LedgerEntry.model_validate(dict(r)) for r in rows),
            # Versions in order, then repeatables (R:<description>) by description.
            key=lambda e: (is_repeatable(e.version), version_key(e.version), e.version),
        )
        return Ledger(
            database_id=request.database_id,
            schema_name=schema,
            ledger_table=ledger_table,
            entries=entries,
        )

    async def run_one(
        self,
        params: TargetRunInput,
        migrations: Sequence[Migration],
        target: dict[str, Any] | None = None,
        *,
        role: str | None = None,
        ledger_table: str | None = None,
    ) -> TargetRunResult:
        """Connect to one target (``target``: its connection parameters, when already read)
        and run the engine on it with the set's ``ledger_table`` (read from the catalog when
        None); ``role``: the session's role (a template build's objects belong to the template
        role, the engine's session reset returns to it)."""
        if ledger_table is None:  # the set's own table (read here, so no caller can miss it)
            ledger_table = await self._ledger_table(params.set_name)
        if target is None:
            target = await self._databases.connection_params(params.database_id)
        schema = target.pop("schema") or "public"
        conn = await _connect(target, params, quote_ident(schema), role)
        try:
            if params.kind in (TargetRunKind.ADOPT, TargetRunKind.BASELINE):
                # Ledger rows only, no migration SQL (activities.adoption).
                return await TargetAdopter(conn, schema, params, migrations, ledger_table).run()
            engine = TargetEngine(conn, schema, params, migrations, ledger_table)
            if params.settle_only:
                return await engine.check()
            if params.kind is TargetRunKind.ROLLBACK:
                return with_lock_risks(await engine.rollback(), params, migrations)
            return with_lock_risks(await engine.apply(), params, migrations)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in RETRYABLE_SQLSTATES:
                raise LockTimeout(f"target busy ({exc.sqlstate}): {exc}") from None
            raise
        finally:
            await conn.close()

    async def _ledger_table(self, set_name: str) -> str:
        """The set's ledger table; the default for a set the catalog does not know (migrations
        given by the caller, as a scratch replay may be)."""
        return (await self._sets.ledger_tables([set_name])).get(set_name, LEDGER_TABLE)


async def _connect(
    target: dict[str, Any], params: TargetRunInput, search_path: str, role: str | None = None
) -> asyncpg.Connection:
    """A migration connection to ``target`` (its parameters without the schema)."""
    return await network_policy.connect(
        target,
        timeout=30,
        # Sent in the startup packet: no round trip of their own.
        server_settings={
            "application_name": f"tenantflow:{params.run_id}"[:63],
            # Abort the statement when the worker that sent it is gone.
            "client_connection_check_interval": "5000",
            "lock_timeout": str(int(params.lock_timeout_ms)),
            "statement_timeout": str(int(params.statement_timeout_ms)),
            "search_path": search_path,
            # quote_literal relies on it.
            "standard_conforming_strings": "on",
            **({"role": role} if role is not None else {}),
        },
    )


def with_lock_risks(
    result: TargetRunResult, params: TargetRunInput, migrations: Sequence[Migration]
) -> TargetRunResult:
    """A dry run's plan with each version's lock-risk findings (``common.migrations.lint``),
    linted once per version across targets and batches (the lint cache)."""
    if not result.planned:
        return result
    by_version = {m.version: m for m in migrations}
    for step in result.planned:
        migration = by_version.get(step.version)
        if migration is not None:
            step.warnings = LINT_CACHE.lint(
                params.set_name,
                migration,
                down=params.kind is TargetRunKind.ROLLBACK,
                no_transaction=step.no_transaction,
                lock_timeout_ms=params.lock_timeout_ms,
            )
    return result


_describe = describe
_error_result = error_result
