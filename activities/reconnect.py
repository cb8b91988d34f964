"""Whether a target's error is its connection lost (a server restarting, a connection cut), and
how long to wait before connecting again: a run rides out a target cluster's restart instead of
failing the targets that were mid-version (PostgreSQL rolled their version back; the ledger says
what committed, so connecting again finishes the rest and applies nothing twice)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# How long one target keeps connecting again before it counts as unreachable; the pauses
# double from FIRST_PAUSE up to MAX_PAUSE.
RECONNECT_SECONDS = 30.0
FIRST_PAUSE = 0.5
MAX_PAUSE = 8.0

# A connection refused, reset or closed under us; PostgreSQL shutting down (57P01, 57P02),
# starting up (57P03) or a connection-class error (08xxx). Not: a wrong password, an unknown
# database or host name, a timeout (a host that does not answer would hold its slot for long).
LOST: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the target's connection was lost or refused for now (asyncpg says
    "connection is closed" with a bare InterfaceError when the engine's next step meets the
    connection the server closed; other interface errors, such as a value that does not
    encode, are not)."""
    if isinstance(exc, LOST):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def reconnect_pause(exc: BaseException, waited: float) -> float | None:
    """Seconds to wait before connecting again after ``exc``, ``waited`` seconds already spent
    on this target; None when it is not a lost connection or the time is up."""
    if not connection_lost(exc) or waited >= RECONNECT_SECONDS:
        return None
    pause = FIRST_PAUSE
    while pause <= waited and pause < MAX_PAUSE:
        pause *= 2
    return min(pause, MAX_PAUSE, RECONNECT_SECONDS - waited)


class ConnectionLost(Exception):
    """A schema's connection was lost mid-version (grouped targets): its lane connects again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Unreachable:
    """A lane's database cannot be reached (or is refused): this schema and those after it."""

    reason: str
    message: str
