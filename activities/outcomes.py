"""What a fleet run did to each of some targets, read from their ledgers.

A compact fleet run keeps nothing per finished target; each target's ledger does: every row a
run applied carries its ``run_id``. A target whose ledger (the set's table) holds a row of the
run was changed by it (``succeeded``), one whose ledger holds none was left as it was
(``up_to_date``); one that cannot be read is ``None``.

Cheap by construction: schema targets sharing a database and credentials are read with one
statement per database (a ``UNION ALL`` over their ledgers, grouped as a fleet batch groups
them: ``activities.grouped.group_schemas``), every other target on a connection of its own, at
most ``CONCURRENT_CONNECTIONS`` at once, all within ``READ_DEADLINE_SECONDS``. A ledger that
does not exist yet fails the statement; only then is the database asked which ledgers exist
(one more statement) and the read repeated over those.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from temporalio import activity

from activities.grouped import group_schemas
from activities.ledger import LEDGER_TABLE, ledger_name
from common import network_policy
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from models.outcomes import RunOutcomes, RunOutcomesRequest
from models.run_state import TargetState

log = logging.getLogger(__name__)

# Connections open at once per read (a page of 200 database targets: 13 rounds).
CONCURRENT_CONNECTIONS = 16
CONNECT_TIMEOUT_SECONDS = 5.0
# The whole read, so that the gateway waiting on it answers: targets not read by then are None.
READ_DEADLINE_SECONDS = 20.0
STATEMENT_TIMEOUT_MS = 10_000
# SQLSTATE of a relation (here: a ledger, or its schema) that does not exist.
UNDEFINED_TABLE = "42P01"

Member = tuple[uuid.UUID, str]  # (database id, schema)


def touched_query(schemas: Sequence[str], ledger_table: str) -> str:
    """One statement answering, per schema (by its index), whether its ledger holds a row of
    the run given as ``$1``."""
    return "\nUNION ALL\n".join(
        f"SELECT {i} AS i, EXISTS (SELECT FROM {ledger_name(s, ledger_table)} "  # noqa: S608 - quoted identifiers
        "WHERE run_id = $1) AS touched"
        for i, s in enumerate(schemas)
    )


class OutcomeActivities:
    """Holds the catalog repositories the targets' connections and the set's ledger table are
    read from."""

    def __init__(self, databases: DatabaseRepository, sets: MigrationSetRepository) -> None:
        self._databases = databases
        self._sets = sets
        # Statements sent to targets (tests count them: one per database when ledgers exist).
        self.statements = 0

    @activity.defn(name="read_run_outcomes")
    async def read_run_outcomes(self, request: RunOutcomesRequest) -> RunOutcomes:
        """Every requested target's outcome; a target's failure is its ``None``, never the
        activity's."""
        tables = await self._sets.ledger_tables([request.set_name])
        ledger_table = tables.get(request.set_name, LEDGER_TABLE)
        ids = list(dict.fromkeys(request.database_ids))
        targets = await self._databases.connection_params_each(ids)
        groups, singles = group_schemas(ids, targets)
        reads: list[tuple[dict[str, Any], list[Member]]] = [(g.params, g.members) for g in groups]
        for database_id in singles:
            target = targets.get(database_id)
            if target is None or isinstance(target, BaseException):
                continue  # not in the catalog, or its credentials cannot be read: None
            params = {k: v for k, v in target.items() if k != "schema"}
            reads.append((params, [(database_id, target.get("schema") or "public")]))

        outcomes: dict[uuid.UUID, TargetState | None] = dict.fromkeys(ids)
        limit = asyncio.Semaphore(CONCURRENT_CONNECTIONS)

        async def read(params: dict[str, Any], members: list[Member]) -> None:
            async with limit:
                try:
                    touched = await self._read(params, members, request.run_id, ledger_table)
                except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                    # Hosts and users, never passwords, are in these messages.
                    log.warning("outcomes: %d target(s) unreadable: %s", len(members), exc)
                    return
                except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                    log.warning("outcomes: %d target(s) unreadable: %s", len(members), exc)
                    return
                except network_policy.NetworkRefused as exc:
                    log.warning("outcomes: %d target(s) refused: %s", len(members), exc.message)
                    return
            for database_id, _ in members:
                outcomes[database_id] = (
                    TargetState.SUCCEEDED if database_id in touched else TargetState.UP_TO_DATE
                )

        try:
            async with asyncio.timeout(READ_DEADLINE_SECONDS):
                await asyncio.gather(*(read(params, members) for params, members in reads))
        except TimeoutError:
            # Slow hosts must not hold a page of answers: what was not read in time is None.
            unread = sum(1 for o in outcomes.values() if o is None)
            log.warning("outcomes: %d target(s) not read within the deadline", unread)
        return RunOutcomes(outcomes=outcomes)

    async def _read(
        self, params: dict[str, Any], members: list[Member], run_id: str, ledger_table: str
    ) -> set[uuid.UUID]:
        """The members whose ledger holds a row of ``run_id``, over one connection."""
        conn = await network_policy.connect(
            params,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={
                "application_name": "tenantflow:outcomes",
                "statement_timeout": str(STATEMENT_TIMEOUT_MS),
            },
        )
        try:
            try:
                self.statements += 1
                query = touched_query([s for _, s in members], ledger_table)
                rows = await conn.fetch(query, run_id)
                return {members[r["i"]][0] for r in rows if r["touched"]}
            except asyncpg.PostgresError as exc:
                if exc.sqlstate != UNDEFINED_TABLE:
                    raise
            # Some ledger (or schema) is not there: a target the set never reached holds no
            # row of the run. Read only the ledgers that exist.
            self.statements += 1
            found = await conn.fetch(
                "SELECT i - 1 AS i FROM unnest($1::text[]) WITH ORDINALITY AS l(name, i) "
                "WHERE to_regclass(name) IS NOT NULL",
                [ledger_name(s, ledger_table) for _, s in members],
            )
            present = [members[r["i"]] for r in found]
            if not present:
                return set()
            self.statements += 1
            rows = await conn.fetch(touched_query([s for _, s in present], ledger_table), run_id)
            return {present[r["i"]][0] for r in rows if r["touched"]}
        finally:
            await conn.close()
