"""A server's connection budget (``servers.max_connections``), held across every worker and
every run: a migration connection to a target on a server first takes one of the server's
slots, a session advisory lock in the catalog keyed by the server and the slot number.

A crashed worker's session ends and its slots go with it, so nothing has to be cleaned up. One
catalog connection holds the slots of a whole batch; the locks are re-entrant within a session,
so the session also remembers which slots it holds itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1), $2)"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1), $2)"
WAIT_FIRST_SECONDS = 0.05
WAIT_LONGEST_SECONDS = 1.0


@dataclass(frozen=True)
class Budget:
    """The server a target lives on and its connection budget."""

    server_id: uuid.UUID
    max_connections: int
    server_name: str = ""  # the metrics' server label (bounded: registered servers)


async def budgets(pool: asyncpg.Pool, database_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Budget]:
    """The budget of each target that lives on a registered server (others have none)."""
    rows = await pool.fetch(
        "SELECT d.id, s.id AS server_id, s.max_connections, s.name FROM databases d "
        "JOIN servers s ON s.id = d.server_id WHERE d.id = ANY($1::uuid[])",
        list(database_ids),
    )
    return {r["id"]: Budget(r["server_id"], r["max_connections"], r["name"]) for r in rows}


@dataclass
class SlotSession:
    """One catalog connection holding slots for several targets at once."""

    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
    held: set[tuple[uuid.UUID, int]] = field(default_factory=set)
    # One query at a time on the connection.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @contextlib.asynccontextmanager
    async def slot(self, budget: Budget | None) -> AsyncIterator[None]:
        """Holds one of the server's slots while the block runs (waits for one to free up);
        a target with no budget passes straight through."""
        if budget is None:
            yield
            return
        taken = await self._take(budget)
        try:
            yield
        finally:
            async with self.lock:
                self.held.discard((budget.server_id, taken))
                await self.conn.execute(_UNLOCK, _key(budget.server_id), taken)

    async def _take(self, budget: Budget) -> int:
        wait = WAIT_FIRST_SECONDS
        while True:
            async with self.lock:
                for slot in range(budget.max_connections):
                    if (budget.server_id, slot) in self.held:
                        continue
                    if await self.conn.fetchval(_TRY_LOCK, _key(budget.server_id), slot):
                        self.held.add((budget.server_id, slot))
                        return slot
            await asyncio.sleep(wait)
            wait = min(wait * 2, WAIT_LONGEST_SECONDS)


def _key(server_id: uuid.UUID) -> str:
    return f"tenantflow:server-slot:{server_id}"


@contextlib.asynccontextmanager
async def slot_session(pool: asyncpg.Pool, needed: bool) -> AsyncIterator[SlotSession | None]:
    """A catalog connection for the slots of a batch (None when no target has a budget); every
    slot it still holds is released with it."""
    if not needed:
        yield None
        return
    async with pool.acquire() as conn:
        session = SlotSession(conn)
        try:
            yield session
        finally:
            if session.held:
                await conn.execute("SELECT pg_advisory_unlock_all()")
