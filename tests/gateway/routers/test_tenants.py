"""Tenant provisioning through HTTP on a real PostgreSQL server and a real Temporal worker:
database and schema tenants, isolation, credentials, rotation, idempotency, the saga's
compensations after a failure at each step, and deprovisioning."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import EmbeddedPostgres
from common.catalog.migration_sets import MigrationSetRepository
from tests.activities.test_migrations import BASE
from tests.conftest import LEAK_CANARIES, Tokens

pytestmark = pytest.mark.usefixtures("running_worker")


@dataclass
class Fleet:
    """A server registered for the test and a migration set to provision with."""

    server: str
    set_name: str
    region: str


async def register_server(
    api: httpx.AsyncClient, tokens: Tokens, postgres: EmbeddedPostgres
) -> tuple[str, str]:
    """The test's PostgreSQL as a server of its own, labelled with a fresh region: its name and
    region."""
    region = f"r{uuid.uuid4().hex[:6]}"
    body: dict[str, Any] = {
        "name": f"pg-{region}",
        "host": postgres.host,
        "port": postgres.port,
        "admin_user": postgres.user,
        "admin_password": postgres.password,
        "sslmode": "disable",
        "max_connections": 50,
        "labels": {"region": region},
    }
    created = await api.post("/api/v1/servers", json=body, headers=tokens.headers("infra-admin"))
    assert created.status_code == 201, created.text
    return str(body["name"]), region


@pytest.fixture
async def fleet(
    api: httpx.AsyncClient, tokens: Tokens, postgres: EmbeddedPostgres, catalog_pool: asyncpg.Pool
) -> AsyncIterator[Fleet]:
    server, region = await register_server(api, tokens, postgres)
    set_name = f"core-{uuid.uuid4().hex[:6]}"
    await MigrationSetRepository(catalog_pool).register(set_name, BASE)
    yield Fleet(server=server, set_name=set_name, region=region)


def _tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _provision(
    api: httpx.AsyncClient, tokens: Tokens, body: dict[str, Any]
) -> httpx.Response:
    return await api.post("/api/v1/tenants", json=body, headers=tokens.headers("infra-operator"))


async def _until_settled(api: httpx.AsyncClient, tokens: Tokens, tenant_id: str) -> dict[str, Any]:
    viewer = tokens.headers("infra-viewer")
    for _ in range(240):  # polled gently: the route has a per-caller rate limit
        answer = await api.get(f"/api/v1/tenants/{tenant_id}", headers=viewer)
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        if shown["status"] not in ("provisioning", "deprovisioning"):
            return dict(shown)
        await asyncio.sleep(0.25)
    raise AssertionError(f"tenant {tenant_id} did not settle: {shown}")


async def _credentials(api: httpx.AsyncClient, tokens: Tokens, tenant_id: str) -> dict[str, Any]:
    answer = await api.get(
        f"/api/v1/tenants/{tenant_id}/credentials", headers=tokens.headers("tenant-credentials")
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    found = dict(answer.json())
    LEAK_CANARIES.add(found["password"])
    return found


async def _connect(creds: dict[str, Any], **override: Any) -> asyncpg.Connection:
    params = {
        "host": creds["host"],
        "port": creds["port"],
        "user": creds["user"],
        "password": creds["password"],
        "database": creds["database"],
        **override,
    }
    return await asyncpg.connect(**params, timeout=10)


async def _catalog_targets(pool: asyncpg.Pool, tenant_id: str) -> int:
    found: int = await pool.fetchval(
        "SELECT count(*) FROM databases WHERE tenant_id = $1", tenant_id
    )
    return found


async def _schema_exists(postgres: EmbeddedPostgres, database: str, schema: str) -> bool:
    try:
        conn = await asyncpg.connect(postgres.dsn(database))
    except asyncpg.InvalidCatalogNameError:
        return False
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema))
    finally:
        await conn.close()


async def test_database_and_schema_tenants_are_provisioned_isolated_and_rotated(
    api: httpx.AsyncClient, tokens: Tokens, fleet: Fleet, postgres: EmbeddedPostgres
) -> None:
    shared = f"shared_{uuid.uuid4().hex[:6]}"
    requests: list[dict[str, Any]] = [
        {
            "tenant_id": _tenant_id(),
            "server_selector": {"region": fleet.region},
            "mode": mode,
            "shared_database": shared,
            "sets": [{"name": fleet.set_name}],
            "labels": {"plan": "free"},
        }
        for mode in ["database"] * 20 + ["schema"] * 20
    ]
    # 40 at once, as a signup burst would send them.
    answers = await asyncio.gather(*(_provision(api, tokens, r) for r in requests))
    assert [a.status_code for a in answers] == [202] * 40, [a.text for a in answers]
    settled = [await _until_settled(api, tokens, r["tenant_id"]) for r in requests]
    for tenant in settled:
        assert tenant["status"] == "active", (tenant["tenant_id"], tenant["error"])
        assert tenant["versions"] == {fleet.set_name: "10"}
        assert tenant["server"] == fleet.server
    creds = [await _credentials(api, tokens, r["tenant_id"]) for r in requests]
    for mine, request in zip(creds, requests, strict=True):
        conn = await _connect(mine)
        try:
            if request["mode"] == "schema":
                assert mine["database"] == shared
                assert mine["schema_name"] == f"tenant_{request['tenant_id']}"
                await conn.execute(f'SET search_path TO "{mine["schema_name"]}"')
            assert await conn.fetchval("SELECT count(*) FROM customers") == 0
        finally:
            await conn.close()
    # Every tenant is refused by every other tenant's database (each database once) and, in
    # the shared database, by every other tenant's schema.
    gate = asyncio.Semaphore(8)

    async def refused_everywhere_else(mine: dict[str, Any]) -> None:
        async with gate:
            others = [o for o in creds if o is not mine]
            for database in sorted({o["database"] for o in others} - {mine["database"]}):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await (await _connect(mine, database=database)).close()
            if mine["schema_name"] is None:
                return
            conn = await _connect(mine)
            try:
                for other in others:
                    if other["schema_name"] is not None:
                        with pytest.raises(asyncpg.InsufficientPrivilegeError):
                            await conn.fetch(f'SELECT * FROM "{other["schema_name"]}".customers')
            finally:
                await conn.close()

    await asyncio.gather(*(refused_everywhere_else(mine) for mine in creds))
    # Rotation: the old password stops working, the new one works.
    rotated = await api.post(
        f"/api/v1/tenants/{requests[0]['tenant_id']}/credentials/rotate",
        headers=tokens.headers("tenant-credentials"),
    )
    assert rotated.status_code == 200, rotated.text
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _connect(creds[0])
    fresh = await _credentials(api, tokens, requests[0]["tenant_id"])
    assert fresh["password"] != creds[0]["password"]
    await (await _connect(fresh)).close()


async def test_the_same_request_is_the_same_tenant_and_another_is_409(
    api: httpx.AsyncClient, tokens: Tokens, fleet: Fleet
) -> None:
    body: dict[str, Any] = {
        "tenant_id": _tenant_id(),
        "server": fleet.server,
        "sets": [{"name": fleet.set_name}],
    }
    first = await _provision(api, tokens, body)
    again = await _provision(api, tokens, body)
    assert first.status_code == again.status_code == 202
    assert first.json()["created"] is True and again.json()["created"] is False
    assert again.json()["run_id"] == first.json()["run_id"]
    other = await _provision(api, tokens, {**body, "mode": "schema"})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["type"] == "conflict"
    assert (await _until_settled(api, tokens, body["tenant_id"]))["status"] == "active"
    assert (await _provision(api, tokens, body)).json()["run_id"] == first.json()["run_id"]


async def test_bad_requests_get_clear_errors(
    api: httpx.AsyncClient, tokens: Tokens, fleet: Fleet, catalog_pool: asyncpg.Pool
) -> None:
    # A second set keeping its ledger in the same (default) table as the fleet's set.
    sharing = f"{fleet.set_name}-b"
    await MigrationSetRepository(catalog_pool).register(sharing, BASE)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"tenant_id": "Bad Id", "server": fleet.server}, 422),
        ({"tenant_id": _tenant_id(), "server": fleet.server, "server_selector": {}}, 422),
        ({"tenant_id": _tenant_id(), "server": "no-such-server"}, 404),
        ({"tenant_id": _tenant_id(), "server": fleet.server, "sets": [{"name": "nope"}]}, 404),
        (
            {
                "tenant_id": _tenant_id(),
                "server": fleet.server,
                "sets": [{"name": fleet.set_name, "version": "99"}],
            },
            400,
        ),
        ({"tenant_id": _tenant_id(), "server_selector": {"region": "nowhere"}}, 409),
        (
            {
                "tenant_id": _tenant_id(),
                "server": fleet.server,
                "sets": [{"name": fleet.set_name}, {"name": sharing}],
            },
            400,
        ),
    ]
    malformed = await _provision(
        api,
        tokens,
        {
            "tenant_id": _tenant_id(),
            "server": fleet.server,
            "sets": [{"name": fleet.set_name, "version": "one.two!"}],
        },
    )
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["error"]["type"] == "invalid_input"
    assert malformed.json()["error"]["details"] == {"set": fleet.set_name}
    for body, status in cases:
        answer = await _provision(api, tokens, body)
        assert answer.status_code == status, (body, answer.text)
        assert set(answer.json()["error"]) >= {"type", "message"}
    viewer = await api.get("/api/v1/tenants/x/credentials", headers=tokens.headers("infra-viewer"))
    assert viewer.status_code == 403
    unknown = await api.get("/api/v1/tenants/nope", headers=tokens.headers("infra-viewer"))
    assert unknown.status_code == 404


async def _obstacle(postgres: EmbeddedPostgres, step: str, tenant_id: str) -> str:
    """Something foreign in the way of one step; returns the SQL that removes it."""
    name = f"tenant_{tenant_id}"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        if step == "role":  # a role of that name that tenantflow did not make
            await admin.execute(f'CREATE ROLE "{name}"')
            return f'DROP ROLE "{name}"'
        if step == "storage":  # a database of that name owned by someone else
            await admin.execute(f'CREATE DATABASE "{name}"')
            return f'DROP DATABASE "{name}"'
        raise AssertionError(step)
    finally:
        await admin.close()


@pytest.mark.parametrize("step", ["role", "storage", "target", "migrate"])
async def test_a_failure_at_each_step_leaves_nothing_and_the_tenant_provisions_again(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
    step: str,
) -> None:
    tenant_id = _tenant_id()
    body: dict[str, Any] = {
        "tenant_id": tenant_id,
        "server": fleet.server,
        "sets": [{"name": fleet.set_name}],
    }
    cleanup: str | None = None
    if step in ("role", "storage"):
        cleanup = await _obstacle(postgres, step, tenant_id)
    elif step == "target":  # another tenant's target already has the name
        await catalog_pool.execute(
            "INSERT INTO databases (id, name, tenant_id, host, port, database, username, "
            "password_encrypted, password_key_id) VALUES ($1, $2, 'someone-else', 'h', 5432, "
            "'d', 'u', 'x', 'k')",
            uuid.uuid4(),
            f"tenant-{tenant_id}",
        )
    else:  # a set whose second version fails
        broken = f"broken-{uuid.uuid4().hex[:6]}"
        await MigrationSetRepository(catalog_pool).register(
            broken, [BASE[0], BASE[1].model_copy(update={"up_sql": "CREATE TABLE nope (;"})]
        )
        body["sets"] = [{"name": broken}]
    assert (await _provision(api, tokens, body)).status_code == 202
    failed = await _until_settled(api, tokens, tenant_id)
    assert failed["status"] == "failed", failed
    assert failed["error"], failed
    name = f"tenant_{tenant_id}"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        role = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
        database = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        # The foreign obstacle is untouched; nothing of tenantflow's stays.
        assert role == (1 if step == "role" else None)
        assert database == (1 if step == "storage" else None)
        assert await _catalog_targets(catalog_pool, tenant_id) == 0
        if cleanup is not None:
            await admin.execute(cleanup)
    finally:
        await admin.close()
    if step == "target":
        await catalog_pool.execute("DELETE FROM databases WHERE name = $1", f"tenant-{tenant_id}")
    body["sets"] = [{"name": fleet.set_name}]
    assert (await _provision(api, tokens, body)).status_code == 202
    active = await _until_settled(api, tokens, tenant_id)
    assert active["status"] == "active", active
    assert active["versions"] == {fleet.set_name: "10"}


async def test_deprovision_drops_database_and_role_and_keeps_the_record(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
) -> None:
    tenant_id = _tenant_id()
    body = {"tenant_id": tenant_id, "server": fleet.server, "mode": "schema", "sets": []}
    assert (await _provision(api, tokens, body)).status_code == 202
    assert (await _until_settled(api, tokens, tenant_id))["status"] == "active"
    operator = tokens.headers("infra-operator")
    refused = await api.delete(f"/api/v1/tenants/{tenant_id}", headers=operator)
    assert refused.status_code == 400
    gone = await api.delete(f"/api/v1/tenants/{tenant_id}?confirm={tenant_id}", headers=operator)
    assert gone.status_code == 202, gone.text
    record = await _until_settled(api, tokens, tenant_id)
    assert record["status"] == "deprovisioned"
    name = f"tenant_{tenant_id}"
    assert not await _schema_exists(postgres, "tenants", name)
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        assert await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name) is None
    finally:
        await admin.close()
    assert await _catalog_targets(catalog_pool, tenant_id) == 0
    # A deprovisioned tenant has no credentials to read or rotate.
    creds = await api.get(
        f"/api/v1/tenants/{tenant_id}/credentials", headers=tokens.headers("tenant-credentials")
    )
    assert creds.status_code == 404, creds.text
    assert creds.json()["error"]["details"] == {"tenant_id": tenant_id, "status": "deprovisioned"}
    rotate = await api.post(
        f"/api/v1/tenants/{tenant_id}/credentials/rotate",
        headers=tokens.headers("tenant-credentials"),
    )
    assert rotate.status_code == 400, rotate.text
    assert rotate.json()["error"]["message"] == (
        f"tenant {tenant_id!r} is deprovisioned; only an active tenant rotates"
    )
    listed = await api.get(
        "/api/v1/tenants?status=deprovisioned&limit=500", headers=tokens.headers("infra-viewer")
    )
    assert tenant_id in [t["tenant_id"] for t in listed.json()["items"]]


async def test_without_sets_a_tenant_gets_the_sets_assigned_to_its_labels(
    api: httpx.AsyncClient, tokens: Tokens, fleet: Fleet
) -> None:
    operator = tokens.headers("infra-operator")
    plan = f"p{uuid.uuid4().hex[:6]}"
    assigned = await api.put(
        f"/api/v1/assignments/{fleet.set_name}",
        json={"selector": {"plan": plan}, "version": "2"},
        headers=operator,
    )
    assert assigned.status_code in (200, 201), assigned.text
    tenant_id = _tenant_id()
    body = {"tenant_id": tenant_id, "server": fleet.server, "labels": {"plan": plan}}
    assert (await _provision(api, tokens, body)).status_code == 202
    tenant = await _until_settled(api, tokens, tenant_id)
    assert tenant["status"] == "active", tenant
    assert tenant["versions"] == {fleet.set_name: "2"}
    await api.delete(f"/api/v1/assignments/{fleet.set_name}", headers=operator)
