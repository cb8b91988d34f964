"""Activities of the system check: prove a worker can reach the catalog."""

from __future__ import annotations

import os
import socket
import time

import asyncpg
from temporalio import activity

from models.system import CatalogCheck


class SystemActivities:
    """Holds the catalog pool the system-check activities use."""

    def __init__(self, catalog: asyncpg.Pool) -> None:
        self._catalog = catalog

    @activity.defn(name="check_catalog")
    async def check_catalog(self) -> CatalogCheck:
        """Query the catalog's server version and schema version, timing the round trip."""
        started = time.perf_counter()
        async with self._catalog.acquire() as conn:
            server_version = await conn.fetchval("SHOW server_version")
            schema_version = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM tenantflow_catalog_schema"
            )
        return CatalogCheck(
            server_version=str(server_version),
            schema_version=int(schema_version),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            worker=f"{socket.gethostname()}:{os.getpid()}",
        )
