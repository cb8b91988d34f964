"""Short workflows the gateway waits for (``gateway.runs.run_and_wait``) and fleet run starts,
when Temporal cannot be reached or the workflow fails: 503 envelopes that say which. Real
Temporal, PostgreSQL and worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from cli.stack import free_port
from common.catalog.databases import DatabaseRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from gateway.app import create_app
from models.databases import DatabaseCreate
from tests.conftest import TargetDatabase, Tokens, serve


@pytest.fixture
async def temporal_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose Temporal address answers nothing (the catalog works)."""
    temporal = settings.temporal.model_copy(update={"address": f"127.0.0.1:{free_port()}"})
    async for client in serve(create_app(settings.model_copy(update={"temporal": temporal}))):
        yield client


async def test_a_system_check_temporal_does_not_accept_is_a_503(
    temporal_down: httpx.AsyncClient, tokens: Tokens
) -> None:
    answer = await temporal_down.post(
        "/api/v1/system/check", headers=tokens.headers("infra-operator")
    )
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["type"] == "dependency_unavailable"
    assert error["message"] == "Temporal did not accept the system check"


async def test_fleet_run_controls_with_temporal_away_are_503(
    temporal_down: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    operator = tokens.headers("infra-operator")
    set_name = f"down-{uuid.uuid4().hex[:8]}"
    registered = await temporal_down.post(
        "/api/v1/migration-sets",
        json={"name": set_name, "files": {"V1__a.sql": "SELECT 1;"}},
        headers=operator,
    )
    assert registered.status_code == 201, registered.text
    started = await temporal_down.post(
        "/api/v1/migrations",
        json={"set": set_name, "selector": {"labels": {"nobody": "here"}}},
        headers=operator,
    )
    assert started.status_code == 503, started.text
    error = started.json()["error"]
    assert error["message"] == "Temporal did not accept the run"
    assert error["details"]["dependency"] == "temporal"
    target = await DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    ).create(
        DatabaseCreate.model_validate(
            {
                "name": f"down-{uuid.uuid4().hex[:8]}",
                "host": "db.internal",
                "database": "app",
                "user": "app",
                "password": "pw",
            }
        )
    )
    one = await temporal_down.post(
        f"/api/v1/databases/{target.id}/migrate", json={"set": set_name}, headers=operator
    )
    assert one.status_code == 503, one.text
    assert one.json()["error"]["message"] == "Temporal did not accept the run"
    assert one.json()["error"]["details"] == {"dependency": "temporal", "cause": "RuntimeError"}
    # A gateway started while Temporal was away: every call on a run is a 503, never a 500.
    for method, path, body in [
        ("GET", "/api/v1/migrations/abc123", None),
        ("GET", "/api/v1/migrations/abc123/targets", None),
        ("GET", "/api/v1/migrations/abc123/stream", None),
        ("POST", "/api/v1/migrations/abc123/pause", None),
        ("PATCH", "/api/v1/migrations/abc123", {"concurrency": 2}),
        ("POST", "/api/v1/migrations/abc123/rollback", {"to_version": "0"}),
        ("GET", f"/api/v1/databases/{uuid.uuid4()}/runs/abc123", None),
    ]:
        answer = await temporal_down.request(method, path, json=body, headers=operator)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["Retry-After"]
        error = answer.json()["error"]
        assert error["type"] == "dependency_unavailable", path
        assert error["details"]["dependency"] == "temporal", path


@pytest.mark.usefixtures("running_worker")
async def test_a_ledger_read_that_fails_on_the_worker_is_a_503_naming_it(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    operator = tokens.headers("infra-operator")
    body = target_database.create_body(name=f"l-{uuid.uuid4().hex[:8]}", password="not-it")
    created = await api.post("/api/v1/databases", json=body, headers=operator)
    assert created.status_code == 201, created.text
    answer = await api.get(
        f"/api/v1/databases/{created.json()['id']}/history", headers=tokens.headers("infra-viewer")
    )
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["message"] == "the ledger read failed on the worker"
    assert error["details"]["cause"]
