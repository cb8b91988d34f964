"""``PATCH /api/v1/databases/{id}`` and targets on servers, end to end through HTTP with a real
gateway, worker, Temporal and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
import pytest

from cli.stack import EmbeddedPostgres
from tests.conftest import LEAK_CANARIES, TargetDatabase, TargetFactory, Tokens

DATABASES = "/api/v1/databases"


async def _register(
    api: httpx.AsyncClient, tokens: Tokens, target: TargetDatabase, **overrides: object
) -> dict[str, object]:
    response = await api.post(
        DATABASES, json=target.create_body(**overrides), headers=tokens.headers("infra-operator")
    )
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def _patch(
    api: httpx.AsyncClient, tokens: Tokens, database_id: object, body: dict[str, object]
) -> httpx.Response:
    return await api.patch(
        f"{DATABASES}/{database_id}", json=body, headers=tokens.headers("infra-operator")
    )


async def _test_connection(
    api: httpx.AsyncClient, tokens: Tokens, database_id: object
) -> dict[str, object]:
    response = await api.post(
        f"{DATABASES}/{database_id}/test-connection", headers=tokens.headers("infra-viewer")
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


async def test_patching_the_password_makes_the_connection_work(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    catalog_pool: asyncpg.Pool,
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    LEAK_CANARIES.add(wrong)
    created = await _register(api, tokens, target_database, password=wrong)
    refused = await _test_connection(api, tokens, created["id"])
    assert refused["ok"] is False
    assert refused["error_code"] == "28P01"

    patched = await _patch(api, tokens, created["id"], {"password": target_database.password})
    assert patched.status_code == 200, patched.text
    assert "password" not in patched.json()
    assert target_database.password not in patched.text
    assert patched.json()["updated_at"] > created["updated_at"]
    stored = await catalog_pool.fetchval(
        "SELECT password_encrypted FROM databases WHERE id = $1", uuid.UUID(str(created["id"]))
    )
    assert target_database.password not in stored
    assert (await _test_connection(api, tokens, created["id"]))["ok"] is True

    # Audited like the other writes, without the body.
    audit = await catalog_pool.fetchrow(
        "SELECT action, outcome, details FROM audit_events WHERE request_id = $1",
        patched.headers["X-Request-ID"],
    )
    assert audit is not None
    assert audit["action"] == f"PATCH {DATABASES}/{{database_id}}"
    assert audit["outcome"] == "success"
    assert target_database.password not in json.dumps(json.loads(audit["details"]))


async def test_patching_labels_moves_the_target_between_selectors(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    created = await _register(api, tokens, target_database)
    cohort = f"c{uuid.uuid4().hex[:8]}"
    patched = await _patch(api, tokens, created["id"], {"labels": {"cohort": cohort}})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["labels"] == {"cohort": cohort}
    # Fields not sent are left alone.
    assert (body["host"], body["port"], body["user"]) == (
        created["host"],
        created["port"],
        created["user"],
    )
    viewer = tokens.headers("infra-viewer")
    found = await api.get(DATABASES, params={"label": f"cohort={cohort}"}, headers=viewer)
    assert [d["id"] for d in found.json()["items"]] == [created["id"]]
    old = await api.get(DATABASES, params={"label": "tier=free,region=eu"}, headers=viewer)
    assert created["id"] not in [d["id"] for d in old.json()["items"]]


async def test_sslmode_reaches_every_connection(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    created = await _register(api, tokens, target_database, sslmode="disable")
    assert created["sslmode"] == "disable"
    assert (await _test_connection(api, tokens, created["id"]))["ok"] is True
    # The embedded server has no TLS: a worker honouring sslmode=require must be refused.
    required = await _patch(api, tokens, created["id"], {"sslmode": "require"})
    assert required.json()["sslmode"] == "require"
    refused = await _test_connection(api, tokens, created["id"])
    assert refused["ok"] is False
    assert target_database.password not in json.dumps(refused)
    # null returns to asyncpg's default (prefer), which falls back to plain connections.
    reset = await _patch(api, tokens, created["id"], {"sslmode": None})
    assert reset.json()["sslmode"] is None
    assert (await _test_connection(api, tokens, created["id"]))["ok"] is True


async def test_attach_to_a_server_and_detach(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    postgres: EmbeddedPostgres,
) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    server = await api.post(
        "/api/v1/servers",
        json={
            "name": name,
            "host": "127.0.0.1",
            "port": postgres.port,
            "admin_user": postgres.user,
            "admin_password": postgres.password,
        },
        headers=tokens.headers("infra-operator"),
    )
    assert server.status_code == 201, server.text
    created = await _register(api, tokens, target_database)
    assert created["server_id"] is None
    attached = await _patch(api, tokens, created["id"], {"server": name})
    assert attached.status_code == 200, attached.text
    assert attached.json()["server_id"] == server.json()["id"]
    viewer = tokens.headers("infra-viewer")
    assert (await api.get(f"/api/v1/servers/{name}", headers=viewer)).json()["target_count"] == 1
    on_server = await api.get(DATABASES, params={"server": name}, headers=viewer)
    assert [d["id"] for d in on_server.json()["items"]] == [created["id"]]
    detached = await _patch(api, tokens, created["id"], {"server": None})
    assert detached.json()["server_id"] is None
    assert (await api.get(f"/api/v1/servers/{name}", headers=viewer)).json()["target_count"] == 0


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"sslmode": "sometimes"}, 422, "validation_error"),
        ({"port": 0}, 422, "validation_error"),
        ({"host": "db; rm -rf /"}, 422, "validation_error"),
        ({"user": "pg_signal_backend"}, 422, "validation_error"),
        ({"labels": {"Tier": "x"}}, 422, "validation_error"),
        ({"password": ""}, 422, "validation_error"),
        ({"password": None}, 422, "validation_error"),
        ({"host": None}, 422, "validation_error"),
        ({"password_encrypted": "x"}, 422, "validation_error"),
        ({"server": "no-such-server"}, 404, "not_found"),
    ],
)
async def test_bad_patches_change_nothing(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    body: dict[str, object],
    status: int,
    error_type: str,
) -> None:
    created = await _register(api, tokens, target_database)
    response = await _patch(api, tokens, created["id"], body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type
    assert target_database.password not in response.text
    after = await api.get(f"{DATABASES}/{created['id']}", headers=tokens.headers("infra-viewer"))
    assert after.json() == created


async def test_unknown_target_name_clash_and_permissions(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    first = await _register(api, tokens, await make_target())
    second = await _register(api, tokens, await make_target())
    clash = await _patch(api, tokens, second["id"], {"name": first["name"]})
    assert clash.status_code == 409
    assert clash.json()["error"]["type"] == "conflict"
    missing = await _patch(api, tokens, uuid.uuid4(), {"port": 5433})
    assert missing.status_code == 404
    bad_id = await _patch(api, tokens, "not-a-uuid", {"port": 5433})
    assert bad_id.status_code == 422
    viewer = await api.patch(
        f"{DATABASES}/{first['id']}", json={"port": 5433}, headers=tokens.headers("infra-viewer")
    )
    assert viewer.status_code == 403
    assert viewer.json()["error"]["details"]["required"] == "databases:write"


async def test_register_with_unknown_server_or_bad_sslmode(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    operator = tokens.headers("infra-operator")
    unknown = await api.post(
        DATABASES, json=target_database.create_body(server="no-such-server"), headers=operator
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found"
    bad = await api.post(
        DATABASES, json=target_database.create_body(sslmode="maybe"), headers=operator
    )
    assert bad.status_code == 422
    assert target_database.password not in bad.text
    listed = await api.get(
        DATABASES, params={"label": "region=eu"}, headers=tokens.headers("infra-viewer")
    )
    assert target_database.create_body()["name"] not in [d["name"] for d in listed.json()["items"]]
