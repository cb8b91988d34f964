"""What the engine's two paths share: the target's ledger table, the session reset, and the
errors that travel between them."""

from __future__ import annotations

import asyncpg

from common.sql import quote_ident
from models.migrations import DEFAULT_LEDGER_TABLE, MigrationFailure

# The ledger table of a set that names none (each set may name its own: ``ledger_table``).
LEDGER_TABLE = DEFAULT_LEDGER_TABLE
# SQLSTATEs that mean "someone else holds a lock right now": retried, not failed.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001"})

# Settings from the startup packet are session defaults, so this returns the session to the
# state it was connected with; role and session authorization are not part of RESET ALL. Sent
# inside each version's own message: no round trip of its own.
RESET_SESSION = "SET SESSION AUTHORIZATION DEFAULT;\nRESET ROLE;\nRESET ALL"
# The error a version's predecessor guard raises (22P02 with this text) when the ledger changed
# between the plan and the lock.
GUARD_MARKER = "tenantflow: ledger changed under the lock"


class LockTimeout(Exception):
    """The target was busy (lock timeout, deadlock, serialisation); Temporal retries."""


class VersionFailed(Exception):
    """A version's SQL failed; ``offset`` is where its text began in the message sent (negative
    when the statement sent began inside the version's text)."""

    def __init__(self, error: asyncpg.PostgresError, offset: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.offset = offset


def ledger_name(schema: str, table: str = LEDGER_TABLE) -> str:
    """The qualified name of a set's ledger ``table`` in ``schema``."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def ledger_ddl(schema: str, table: str = LEDGER_TABLE) -> str:
    """The ledger table, created in the target schema on first contact. ``success`` is false
    while a no-transaction version is part-way (``statements_done`` of its statements are in;
    NULL: unknown, after a rollback began)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {ledger_name(schema, table)} ("
        " version text PRIMARY KEY,"
        " description text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " execution_ms double precision NOT NULL,"
        " run_id text NOT NULL,"
        " success boolean NOT NULL DEFAULT true,"
        " statements_done integer)"
    )


def progress_column_ddl(ledger_name: str) -> str:
    """Adds ``statements_done`` to a ledger created before it existed; one round trip, and no
    table lock when the column is there."""
    literal = "'" + ledger_name.replace("'", "''") + "'"
    return (
        "DO $tenantflow$ BEGIN IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
        f"to_regclass({literal}) AND attname = 'statements_done' AND NOT attisdropped) THEN "
        f"ALTER TABLE {ledger_name} ADD COLUMN statements_done integer; END IF; END $tenantflow$"
    )


def adopted_column_ddl(ledger_name: str) -> str:
    """Adds ``adopted_from`` (the tool a row was taken over from, or ``baseline``; NULL for
    versions tenantflow ran) to a ledger; written only by adoption (``activities.adoption``), so
    ledgers that never adopted anything keep their shape. No table lock when it is there."""
    literal = "'" + ledger_name.replace("'", "''") + "'"
    return (
        "DO $tenantflow$ BEGIN IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
        f"to_regclass({literal}) AND attname = 'adopted_from' AND NOT attisdropped) THEN "
        f"ALTER TABLE {ledger_name} ADD COLUMN adopted_from text; END IF; END $tenantflow$"
    )


def sql_failure(version: str, exc: asyncpg.PostgresError, offset: int = 0) -> MigrationFailure:
    """A version's SQL error as its result's failure, with PostgreSQL's position made relative
    to the version's own text (``offset``: where it began in the message sent)."""
    position = position_in_script(getattr(exc, "position", None), offset)
    return MigrationFailure(
        version=version,
        reason="sql_error",
        message=str(exc),
        sqlstate=exc.sqlstate,
        position=str(position) if position is not None else None,
    )


def position_in_script(position: object, offset: int) -> int | None:
    """PostgreSQL's 1-based character position within the whole message, made relative to the
    version's own SQL (None when it points into the engine's statements around it)."""
    if position is None:
        return None
    try:
        shifted = int(str(position)) - offset
    except ValueError:
        return None
    return shifted if shifted >= 1 else None
