"""The listings that page Temporal visibility (runs, events, webhook deliveries) when Temporal
cannot be reached: a 503 envelope naming it, never a 500. A real gateway and catalog; the
Temporal address answers nothing."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.conftest import Tokens
from tests.gateway.test_runs import temporal_down

__all__ = ["temporal_down"]  # the fixture: a gateway whose Temporal address answers nothing


@pytest.mark.parametrize("path", ["/api/v1/migrations", "/api/v1/events"])
async def test_listings_with_temporal_away_are_503(
    temporal_down: httpx.AsyncClient, tokens: Tokens, path: str
) -> None:
    answer = await temporal_down.get(path, headers=tokens.headers("infra-admin"))
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["type"] == "dependency_unavailable"
    assert error["message"] == "Temporal visibility did not answer"
    assert error["details"]["dependency"] == "temporal"


async def test_an_endpoints_deliveries_with_temporal_away_are_503(
    temporal_down: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    created = await temporal_down.post(
        "/api/v1/webhooks",
        json={"url": "https://receiver.example.com/hooks", "event_types": ["migration.failed"]},
        headers=tokens.headers("infra-operator"),
    )
    assert created.status_code == 201, created.text
    webhook_id = created.json()["id"]
    try:
        answer = await temporal_down.get(
            f"/api/v1/webhooks/{webhook_id}/deliveries", headers=tokens.headers("infra-admin")
        )
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["details"]["dependency"] == "temporal"
    finally:
        await catalog_pool.execute("DELETE FROM webhook_endpoints WHERE id = $1", webhook_id)
