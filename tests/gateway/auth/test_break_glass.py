"""Break-glass: an emergency token (only its sha256 is configured) that grants admin, loudly."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import httpx
import pytest

from cli.stack import EmbeddedPostgres
from cli.temporal_server import TemporalDevServer
from common.settings import AuthSettings, Settings
from gateway.app import create_app
from models.auth import ADMIN_PERMISSIONS
from tests.conftest import LEAK_CANARIES, make_settings, serve

ME = "/api/v1/auth/me"
HEADER = "X-Break-Glass-Token"
EMERGENCY = secrets.token_urlsafe(32)
WRONG = secrets.token_urlsafe(32)
LEAK_CANARIES.update({EMERGENCY, WRONG})


def sha256hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@asynccontextmanager
async def gateway(
    postgres: EmbeddedPostgres,
    temporal: TemporalDevServer,
    settings: Settings,
    *,
    break_glass: str | None,
    failed_auth: str = "1000/minute",
) -> AsyncIterator[httpx.AsyncClient]:
    auth = AuthSettings.model_validate(
        {
            **settings.auth.model_dump(),
            "break_glass_token_sha256": sha256hex(break_glass) if break_glass else None,
        }
    )
    app = create_app(
        make_settings(
            postgres, temporal.address, auth=auth, rate_limit={"failed_auth": failed_auth}
        )
    )
    clients = cast(AsyncGenerator[httpx.AsyncClient, None], serve(app))
    try:
        yield await anext(clients)
    finally:
        await clients.aclose()


async def audit_rows(pool: asyncpg.Pool, response: httpx.Response) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT subject, action, resource, outcome, request_id, details FROM audit_events "
        "WHERE request_id = $1",
        response.headers["X-Request-ID"],
    )
    return [{**dict(row), "details": json.loads(row["details"])} for row in rows]


def record_text(record: logging.LogRecord) -> str:
    """Everything a log record carries (message, arguments and ``extra`` fields)."""
    return record.getMessage() + " " + " ".join(map(str, vars(record).values()))


async def test_break_glass_is_off_by_default(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> None:
    assert settings.auth.break_glass_token_sha256 is None
    async with gateway(postgres, temporal_server, settings, break_glass=None) as client:
        response = await client.get(ME, headers={HEADER: EMERGENCY})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_break_glass_grants_admin_loudly_and_is_audited(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(postgres, temporal_server, settings, break_glass=EMERGENCY) as client:
        response = await client.get(ME, headers={HEADER: EMERGENCY})
        assert response.status_code == 200, response.text
        me = response.json()
        assert me["via"] == "break-glass"
        assert me["subject"] == "break-glass"
        assert sorted(me["permissions"]) == sorted(p.value for p in ADMIN_PERMISSIONS)
        # The header alone (no bearer token) passes the guard of a mutating route.
        created = await client.post("/api/v1/databases", json={}, headers={HEADER: EMERGENCY})
        assert created.status_code == 422, created.text

    warnings = [
        r
        for r in caplog.records
        if r.name == "tenantflow.auth" and r.levelno == logging.WARNING and "break-glass" in r.msg
    ]
    assert [r.getMessage() for r in warnings] == ["break-glass access used"] * 2
    assert getattr(warnings[0], "path", None) == ME
    assert all(EMERGENCY not in record_text(r) for r in caplog.records)

    rows = await audit_rows(catalog_pool, response)
    assert rows == [
        {
            "subject": "break-glass",
            "action": f"GET {ME}",
            "resource": ME,
            "outcome": "success",
            "request_id": response.headers["X-Request-ID"],
            "details": {"status": 200, "via": "break-glass"},
        }
    ]
    post_rows = await audit_rows(catalog_pool, created)
    assert [(r["subject"], r["action"], r["outcome"]) for r in post_rows] == [
        ("break-glass", "POST /api/v1/databases", "failure")
    ]
    stored = await catalog_pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE details::text LIKE '%' || $1 || '%'", EMERGENCY
    )
    assert stored == 0


async def test_wrong_break_glass_token_is_refused_and_counts_as_a_failed_auth(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(
        postgres, temporal_server, settings, break_glass=EMERGENCY, failed_auth="2/minute"
    ) as client:
        for _ in range(2):
            refused = await client.get(ME, headers={HEADER: WRONG})
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "invalid_token"
        # Two failures exhaust the address's allowance: even the right token is now blocked.
        blocked = await client.get(ME, headers={HEADER: EMERGENCY})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["type"] == "rate_limited"
    refusals = [r for r in caplog.records if r.getMessage() == "break-glass token refused"]
    assert len(refusals) == 2
    assert all(r.levelno == logging.WARNING for r in refusals)
    assert all(
        WRONG not in record_text(r) and EMERGENCY not in record_text(r) for r in caplog.records
    )


async def test_break_glass_token_is_not_a_bearer_token(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> None:
    """The emergency token only works in its own header."""
    async with gateway(postgres, temporal_server, settings, break_glass=EMERGENCY) as client:
        response = await client.get(ME, headers={"Authorization": f"Bearer {EMERGENCY}"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_token"
