"""Activities that connect to targets. Credentials are read from the catalog and decrypted here,
inside the activity: they never travel through workflow inputs, results or history."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from temporalio import activity

from common import network_policy
from common.catalog.databases import DatabaseRepository
from models.databases import ConnectionTestInput, ConnectionTestResult


class TargetActivities:
    """Holds the catalog repository (pool + cipher) the target activities use."""

    def __init__(self, databases: DatabaseRepository) -> None:
        self._databases = databases

    @activity.defn(name="test_connection")
    async def test_connection(self, params: ConnectionTestInput) -> ConnectionTestResult:
        """Connect with the stored credentials; report the server version and whether the
        target schema exists. A refused connection is a result, not an activity failure."""
        target = await self._databases.connection_params(params.database_id)
        schema = target.pop("schema")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(params.timeout_seconds):
                conn = await network_policy.connect(target, timeout=params.timeout_seconds)
                try:
                    version = await conn.fetchval("SHOW server_version")
                    schema_exists = None
                    if schema is not None:
                        schema_exists = await conn.fetchval(
                            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                            schema,
                        )
                finally:
                    await conn.close()
        except network_policy.NetworkRefused as exc:
            return ConnectionTestResult(database_id=params.database_id, ok=False, error=exc.message)
        except asyncpg.PostgresError as exc:
            # PostgreSQL's messages name users and databases, never the password.
            return ConnectionTestResult(
                database_id=params.database_id,
                ok=False,
                error=str(exc),
                error_code=exc.sqlstate,
            )
        except (OSError, TimeoutError) as exc:
            return ConnectionTestResult(
                database_id=params.database_id,
                ok=False,
                error=f"cannot reach {target['host']}:{target['port']} ({type(exc).__name__})",
            )
        return ConnectionTestResult(
            database_id=params.database_id,
            ok=True,
            server_version=str(version),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            schema_exists=schema_exists,
        )
