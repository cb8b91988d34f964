"""``check_dependencies`` (behind ``tenantflow check`` and ``tenantflow dev``) against the
session's real Temporal server and PostgreSQL, and a catalog port where nothing listens."""

from __future__ import annotations

from cli.checks import check_dependencies
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import Settings
from tests.conftest import make_settings


async def test_both_dependencies_answer(settings: Settings) -> None:
    assert await check_dependencies(settings) == {"temporal": None, "catalog": None}


async def test_an_unreachable_catalog_is_named_with_a_reason(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    dead = postgres.dsn().replace(f":{postgres.port}/", f":{free_port()}/")
    assert dead != postgres.dsn()
    settings = make_settings(
        postgres,
        temporal_server.address,
        catalog={"dsn": dead, "startup_retry_seconds": 0, "connect_timeout_seconds": 2},
    )
    found = await check_dependencies(settings)
    assert found == {"temporal": None, "catalog": "the catalog database does not answer"}
