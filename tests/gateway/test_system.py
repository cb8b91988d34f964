"""``POST /api/v1/system/check``: gateway → Temporal → worker → catalog, and its failure mode."""

from __future__ import annotations

import httpx

from cli.stack import EmbeddedPostgres
from cli.temporal_server import TemporalDevServer
from common.catalog import load_catalog_migrations
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import Tokens, make_settings, serve


async def test_system_check_goes_through_a_worker(api: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await api.post("/api/v1/system/check", headers=tokens.headers("infra-viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow_id"].startswith("system-check-")
    assert body["catalog"]["schema_version"] == len(load_catalog_migrations())
    assert body["catalog"]["server_version"].startswith("18")


async def test_system_check_without_a_worker_is_503_and_says_so(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    lonely = make_settings(
        postgres,
        temporal_server.address,
        auth=settings.auth,
        gateway={"system_check_timeout_seconds": 1.0},
    )
    async for client in serve(create_app(lonely)):
        response = await client.post("/api/v1/system/check", headers=tokens.headers())
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "dependency_unavailable"
    assert "tenantflow worker" in error["message"]
    assert error["details"]["task_queue"] == lonely.temporal.task_queue
