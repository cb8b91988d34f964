"""Dependency checks shared by ``tenantflow check`` and ``tenantflow dev``."""

from __future__ import annotations

import asyncio

from common.catalog import create_catalog_pool, ping_catalog
from common.errors import DependencyUnavailable
from common.settings import Settings
from common.temporal_client import connect_temporal, ping_temporal


async def _temporal(settings: Settings) -> str | None:
    try:
        client = await connect_temporal(settings.temporal, crypto=settings.crypto, lazy=True)
        await ping_temporal(client, settings.temporal.rpc_timeout_seconds)
    except DependencyUnavailable as exc:
        return exc.message
    return None


async def _catalog(settings: Settings) -> str | None:
    # No connection at start (min_pool_size 0): creating the pool cannot fail on an unreachable
    # catalog, the ping below is what finds out.
    quick = settings.catalog.model_copy(update={"startup_retry_seconds": 0, "min_pool_size": 0})
    pool = await create_catalog_pool(quick)
    try:
        await ping_catalog(pool, settings.catalog.connect_timeout_seconds)
    except DependencyUnavailable as exc:
        return exc.message
    finally:
        await pool.close()
    return None


async def check_dependencies(settings: Settings) -> dict[str, str | None]:
    """``{"temporal": None | reason, "catalog": None | reason}``."""
    temporal, catalog = await asyncio.gather(_temporal(settings), _catalog(settings))
    return {"temporal": temporal, "catalog": catalog}
