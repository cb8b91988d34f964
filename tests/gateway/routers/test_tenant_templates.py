"""The provisioning fast path through HTTP on a real PostgreSQL server and a real Temporal
worker: the first tenant of a set takes the slow path and starts the template's build; later
tenants are copies, verified and owned by their own role; a new version retires the template
and builds the next; a failed build leaves nothing; a template dropped by hand is rebuilt."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from activities.fingerprint import schema_fingerprint
from cli.stack import EmbeddedPostgres
from common.catalog.migration_sets import MigrationSetRepository
from tests.activities.test_migrations import BASE, migration
from tests.conftest import Tokens
from tests.gateway.routers.test_tenants import (
    Fleet,
    _connect,
    _credentials,
    _provision,
    _tenant_id,
    _until_settled,
    fleet,
)

pytestmark = pytest.mark.usefixtures("running_worker")
__all__ = ["fleet"]  # the fixture, shared with the tenants tests


def _request(fleet: Fleet, **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": _tenant_id(),
        "server": fleet.server,
        "sets": [{"name": fleet.set_name}],
        **extra,
    }


async def _provisioned(api: httpx.AsyncClient, tokens: Tokens, body: dict[str, Any]) -> Any:
    answer = await _provision(api, tokens, body)
    assert answer.status_code == 202, answer.text
    tenant = await _until_settled(api, tokens, body["tenant_id"])
    assert tenant["status"] == "active", tenant["error"]
    return tenant


async def _template(pool: asyncpg.Pool, set_name: str, version: str) -> asyncpg.Record:
    """The set's template at ``version`` once its build has ended (ready or failed)."""
    for _ in range(240):
        row = await pool.fetchrow(
            "SELECT key, database_name, status, error, run_id FROM tenant_templates "
            "WHERE sets @> $1::jsonb",
            f'[{{"name": "{set_name}", "version": "{version}"}}]',
        )
        if row is not None and row["status"] in ("ready", "failed"):
            return row
        await asyncio.sleep(0.25)
    raise AssertionError(f"no template of {set_name} at {version} was built")


async def _until_status(pool: asyncpg.Pool, key: str, wanted: str) -> None:
    for _ in range(240):
        status = await pool.fetchval("SELECT status FROM tenant_templates WHERE key = $1", key)
        if status == wanted:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"template {key} is {status}, not {wanted}")


EXISTS = "SELECT count(*) FROM pg_database WHERE datname = $1"


async def _as_admin(postgres: EmbeddedPostgres, sql: str, *args: object) -> Any:
    """One statement as the server's superuser: its first value."""
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        return await admin.fetchval(sql, *args)
    finally:
        await admin.close()


async def _fingerprint(creds: dict[str, Any]) -> str:
    conn = await _connect(creds)
    try:
        return (await schema_fingerprint(conn, "public")).hash
    finally:
        await conn.close()


async def test_tenants_after_the_first_are_copies_of_a_verified_template(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
) -> None:
    first = await _provisioned(api, tokens, _request(fleet))
    assert first["template"] is None  # no template yet: created empty and migrated
    template = await _template(catalog_pool, fleet.set_name, "10")
    assert template["status"] == "ready", template["error"]

    bodies = [_request(fleet) for _ in range(3)]
    copies = await asyncio.gather(*(_provisioned(api, tokens, b) for b in bodies))
    for tenant in copies:
        assert tenant["template"] == template["database_name"]
        assert tenant["versions"] == {fleet.set_name: "10"}

    reference = await _fingerprint(await _credentials(api, tokens, first["tenant_id"]))
    for tenant in copies:
        creds = await _credentials(api, tokens, tenant["tenant_id"])
        conn = await _connect(creds)
        try:
            ledger = await conn.fetch(
                "SELECT version, run_id FROM tenantflow_schema_history ORDER BY applied_at"
            )
            # The ledger came with the copy: no migration ran in the tenant's database.
            assert [r["version"] for r in ledger] == ["1", "2", "10"]
            assert {r["run_id"] for r in ledger} == {template["run_id"]}
            foreign = await conn.fetchval(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relowner <> "
                "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
            )
            assert foreign == 0  # every object is the tenant's own
            assert not await conn.fetchval(
                "SELECT has_schema_privilege('tenantflow_template', 'public', 'CREATE')"
            )
            await conn.execute("INSERT INTO customers VALUES (1, 'a')")
        finally:
            await conn.close()
        assert await _fingerprint(creds) == reference  # the same schema as the slow path's
    # Copies are as isolated as any tenant: one's credentials open no other's database.
    one = await _credentials(api, tokens, copies[0]["tenant_id"])
    other = await _credentials(api, tokens, copies[1]["tenant_id"])
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _connect(one, database=other["database"])

    allowed = await _as_admin(
        postgres,
        "SELECT datallowconn FROM pg_database WHERE datname = $1",
        template["database_name"],
    )
    assert allowed is False  # nobody connects to it: a connection would stop copies

    # Schema tenants never take the fast path.
    shared = f"shared_{uuid.uuid4().hex[:6]}"
    schema = await _provisioned(api, tokens, _request(fleet, mode="schema", shared_database=shared))
    assert schema["template"] is None


async def test_a_new_version_builds_a_new_template_and_retires_the_old(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
) -> None:
    await _provisioned(api, tokens, _request(fleet))
    old = await _template(catalog_pool, fleet.set_name, "10")
    assert old["status"] == "ready"

    await MigrationSetRepository(catalog_pool).register(
        fleet.set_name, [*BASE, migration("11", "ALTER TABLE customers ADD COLUMN note text;")]
    )
    slow = await _provisioned(api, tokens, _request(fleet))
    assert slow["template"] is None  # the old template is stale: never copied
    assert slow["versions"] == {fleet.set_name: "11"}
    new = await _template(catalog_pool, fleet.set_name, "11")
    assert new["status"] == "ready", new["error"]
    await _until_status(catalog_pool, old["key"], "retired")
    assert not await _as_admin(postgres, EXISTS, old["database_name"])

    fast = await _provisioned(api, tokens, _request(fleet))
    assert fast["template"] == new["database_name"]
    assert fast["versions"] == {fleet.set_name: "11"}


async def test_a_failed_build_leaves_no_database_and_says_why(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
) -> None:
    broken = f"broken-{uuid.uuid4().hex[:6]}"
    await MigrationSetRepository(catalog_pool).register(
        broken, [BASE[0], migration("2", "CREATE TABLE customers (id int);")]
    )
    body = {**_request(fleet), "sets": [{"name": broken}]}
    answer = await _provision(api, tokens, body)
    assert answer.status_code == 202, answer.text
    tenant = await _until_settled(api, tokens, body["tenant_id"])
    assert tenant["status"] == "failed"
    template = await _template(catalog_pool, broken, "2")
    assert template["status"] == "failed"
    assert 'relation "customers" already exists' in template["error"]
    assert not await _as_admin(postgres, EXISTS, template["database_name"])


async def test_a_template_dropped_by_hand_is_rebuilt(
    api: httpx.AsyncClient,
    tokens: Tokens,
    fleet: Fleet,
    postgres: EmbeddedPostgres,
    catalog_pool: asyncpg.Pool,
) -> None:
    await _provisioned(api, tokens, _request(fleet))
    template = await _template(catalog_pool, fleet.set_name, "10")
    await _as_admin(postgres, f'DROP DATABASE "{template["database_name"]}"')
    tenant = await _provisioned(api, tokens, _request(fleet))
    assert tenant["template"] is None  # taken the slow way while the template is rebuilt
    assert tenant["versions"] == {fleet.set_name: "10"}
    await _until_status(catalog_pool, template["key"], "ready")
    again = await _provisioned(api, tokens, _request(fleet))
    assert again["template"] == template["database_name"]
