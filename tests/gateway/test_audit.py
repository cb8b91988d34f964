"""The audit trail: one row per mutating call (who, what, where, outcome, request id); none for
reads."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx

from common.audit import outcome_for_status
from tests.conftest import Tokens

CHECK = "/api/v1/system/check"


async def rows_for(pool: asyncpg.Pool, response: httpx.Response) -> list[dict[str, Any]]:
    """The audit rows written under the response's request id."""
    request_id = response.headers["X-Request-ID"]
    found = await pool.fetch(
        "SELECT subject, action, resource, outcome, request_id, details FROM audit_events "
        "WHERE request_id = $1 ORDER BY id",
        request_id,
    )
    return [{**dict(row), "details": json.loads(row["details"])} for row in found]


async def test_mutating_call_writes_exactly_one_row(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    response = await api.post(CHECK, headers=tokens.headers("infra-operator"))
    assert response.status_code == 200, response.text
    assert await rows_for(catalog_pool, response) == [
        {
            "subject": "user-infra-operator",
            "action": f"POST {CHECK}",
            "resource": CHECK,
            "outcome": "success",
            "request_id": response.headers["X-Request-ID"],
            "details": {"status": 200, "via": "token"},
        }
    ]


async def test_call_without_a_token_is_audited_as_denied_anonymous(
    api: httpx.AsyncClient, catalog_pool: asyncpg.Pool
) -> None:
    response = await api.post(CHECK)
    assert response.status_code == 401
    rows = await rows_for(catalog_pool, response)
    assert [(r["subject"], r["action"], r["outcome"], r["details"]["status"]) for r in rows] == [
        ("anonymous", f"POST {CHECK}", "denied", 401)
    ]


async def test_forbidden_call_is_audited_as_denied_under_the_caller(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    response = await api.post("/api/v1/databases", json={}, headers=tokens.headers("infra-viewer"))
    assert response.status_code == 403
    rows = await rows_for(catalog_pool, response)
    assert [(r["subject"], r["action"], r["outcome"]) for r in rows] == [
        ("user-infra-viewer", "POST /api/v1/databases", "denied")
    ]


async def test_action_names_the_route_and_resource_the_path(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    target = "/api/v1/databases/00000000-0000-4000-8000-000000000000"
    response = await api.delete(target, headers=tokens.headers("infra-operator"))
    assert response.status_code == 404
    rows = await rows_for(catalog_pool, response)
    assert [(r["action"], r["resource"], r["outcome"]) for r in rows] == [
        ("DELETE /api/v1/databases/{database_id}", target, "failure")
    ]


async def test_reads_write_nothing(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    before = await catalog_pool.fetchval("SELECT count(*) FROM audit_events")
    responses = [
        await api.get("/api/v1/auth/me", headers=tokens.headers("infra-viewer")),
        await api.get("/api/v1/databases", headers=tokens.headers("infra-viewer")),
        await api.get("/api/v1/databases"),  # refused reads are not audited either
        await api.get("/health"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 200]
    for response in responses:
        assert await rows_for(catalog_pool, response) == []
    assert await catalog_pool.fetchval("SELECT count(*) FROM audit_events") == before


def test_outcome_mapping() -> None:
    assert [
        outcome_for_status(s) for s in (200, 201, 204, 307, 400, 401, 403, 404, 429, 500, 503)
    ] == [
        "success",
        "success",
        "success",
        "success",
        "failure",
        "denied",
        "denied",
        "failure",
        "denied",
        "failure",
        "failure",
    ]
