"""The system-check activity against the real catalog."""

from __future__ import annotations

import asyncpg
from temporalio.testing import ActivityEnvironment

from activities.system import SystemActivities
from common.catalog import load_catalog_migrations


async def test_check_catalog_reports_server_and_schema_versions(catalog_pool: asyncpg.Pool) -> None:
    result = await ActivityEnvironment().run(SystemActivities(catalog_pool).check_catalog)
    assert result.server_version.startswith("18")
    assert result.schema_version == max(m.version for m in load_catalog_migrations())
    assert result.latency_ms > 0
    assert ":" in result.worker
