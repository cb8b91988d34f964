"""A target's rollback on the engine's open connection (``TargetEngine.rollback``).

Versions above the target version are undone highest first, each down script in one
transaction with its ledger row's removal, under the target's advisory lock (a down marked
no-transaction through ``activities.no_transaction``); a version no longer in the ledger was
rolled back by another runner and is skipped. A version left part-way is undone too (its down
script converges). The repeatables' rows are forgotten, as they have no down: the next apply
runs them again on the schema the rollback rebuilt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import asyncpg

from activities.ledger import RETRYABLE_SQLSTATES, VersionFailed, sql_failure
from models.migrations import (
    AppliedVersion,
    Migration,
    MigrationFailure,
    PlannedVersion,
    TargetRunResult,
    is_repeatable,
    version_key,
)

if TYPE_CHECKING:
    from activities.engine import TargetEngine


async def roll_back(engine: TargetEngine) -> TargetRunResult:
    """Undo the engine's target down to ``params.target_version``: each version's down script
    with its ledger row's removal under the lock, highest first; a version left part-way too;
    the repeatables' rows forgotten (the next apply runs them again)."""
    checked = await engine._preflight()
    rollback_of = engine.params.rollback_of
    if rollback_of is not None and rollback_of not in engine.ledger_runs:
        # The run rolled back never changed this target (a compact run's rollback walks
        # its selector): left as it is, whatever else its ledger says.
        current = checked.from_version if isinstance(checked, TargetRunResult) else checked[1]
        return engine._result(current, to_version=current)
    if isinstance(checked, TargetRunResult):
        return checked
    ledger, current, goal = checked
    if goal is None:
        return engine._result(
            current,
            to_version=current,
            failure=MigrationFailure(
                version=None,
                reason="unknown_version",
                message="a rollback needs a target version (0 for everything)",
            ),
        )
    # A version left part-way is undone too: its down script converges.
    to_undo = sorted(
        (v for v in {*ledger, *engine.partial} if not is_repeatable(v) and version_key(v) > goal),
        key=version_key,
        reverse=True,
    )
    # An empty down script is an explicit no-op; only a missing one (None) stops here.
    missing = [v for v in to_undo if engine.by_version[v].down_sql is None]
    if missing:
        return engine._result(
            current,
            to_version=current,
            failure=MigrationFailure(
                version=missing[0],
                reason="missing_down",
                message="no down script for version(s) " + ", ".join(missing),
            ),
        )
    if engine.params.dry_run:
        planned = [
            PlannedVersion(
                version=v,
                description=engine.by_version[v].description,
                sql=engine.by_version[v].down_sql or "",
                no_transaction=engine.by_version[v].down_outside_transaction,
            )
            for v in to_undo
        ]
        return engine._result(current, to_version=current, planned=planned)
    repeated = [v for v in {*ledger, *engine.partial} if is_repeatable(v)]
    if repeated and (to_undo or goal == (0,)):
        try:
            await _forget_repeatables(engine)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in RETRYABLE_SQLSTATES:
                raise
            return engine._result(
                current,
                to_version=current,
                failure=sql_failure(sorted(repeated)[0], exc),
            )
    undone: list[AppliedVersion] = []
    for version in to_undo:
        migration = engine.by_version[version]
        try:
            took = await (
                engine.no_transaction.rollback(migration)
                if migration.down_outside_transaction
                else _rollback_in_transaction(engine, migration)
            )
        except VersionFailed as failed:
            return await engine._stopped(failed, current, undone, version)
        if took is not None:
            undone.append(
                AppliedVersion(
                    version=version, description=migration.description, execution_ms=took
                )
            )
    return engine._result(
        current, to_version=engine._current(await engine._ledger()), applied=undone
    )


async def _forget_repeatables(engine: TargetEngine) -> None:
    """Remove the repeatables' rows, under the lock: a rollback changes the schema they
    were applied to, and they have no down, so the next apply runs them again."""
    async with engine.conn.transaction():
        await engine.conn.execute(engine.lock_sql, engine.lock_key)
        await engine.conn.execute(
            f"DELETE FROM {engine.ledger_name} WHERE version LIKE 'R:%'"  # noqa: S608
        )
    engine.partial = {v for v in engine.partial if not is_repeatable(v)}


async def _rollback_in_transaction(engine: TargetEngine, migration: Migration) -> float | None:
    """The down script and the ledger row's removal in one transaction under the lock;
    None when the version is no longer in the ledger (another runner rolled it back)."""
    down_prefix = f"{engine.session_reset};\n"
    try:
        async with engine.conn.transaction():
            await engine.conn.execute(engine.lock_sql, engine.lock_key)
            if not await _is_applied(engine, migration.version):
                return None
            started = time.perf_counter()
            await engine.conn.execute(f"{down_prefix}{migration.down_sql or ''}")
            took = round((time.perf_counter() - started) * 1000, 3)
            await engine.conn.execute(engine.session_reset)
            await engine.conn.execute(
                f"DELETE FROM {engine.ledger_name} WHERE version = $1",  # noqa: S608
                migration.version,
            )
    except asyncpg.PostgresError as exc:
        raise VersionFailed(exc, len(down_prefix)) from None
    return took


async def _is_applied(engine: TargetEngine, version: str) -> bool:
    found = await engine.conn.fetchval(
        f"SELECT 1 FROM {engine.ledger_name} WHERE version = $1",  # noqa: S608 - any state
        version,
    )
    return found is not None
