"""Sets with ledger tables of their own through HTTP, on real PostgreSQL and a real Temporal
worker: registering names the table once, a tenant carries two sets (database and schema mode),
and two sets that would share one ledger table are refused before anything is created."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import EmbeddedPostgres
from common.migrations.loader import parse_files
from tests.activities.test_set_ledgers import BILLING, SEARCH
from tests.conftest import LEAK_CANARIES, Tokens
from tests.gateway.routers.test_tenants import register_server

pytestmark = pytest.mark.usefixtures("running_worker")

SETS = "/api/v1/migration-sets"
# Flyway files of the two sets (versions 1 and 2 each).
BILLING_FILES = {
    "V1__invoices.sql": BILLING[0].up_sql,
    "V2__invoice_totals.sql": BILLING[1].up_sql,
}
SEARCH_FILES = {
    "V1__documents.sql": SEARCH[0].up_sql,
    "V2__documents_body.sql": SEARCH[1].up_sql,
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _table(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _assert_error(answer: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["type"] == error_type and error["message"]
    return dict(error)


async def _register(
    api: httpx.AsyncClient, tokens: Tokens, name: str, files: dict[str, str], table: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "files": files}
    if table is not None:
        body["ledger_table"] = table
    return await api.post(SETS, json=body, headers=tokens.headers("infra-operator"))


def _tgz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_a_set_names_its_ledger_table_when_first_registered(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    name, table = _name("billing"), _table("billing")
    created = await _register(api, tokens, name, dict(list(BILLING_FILES.items())[:1]), table)
    assert created.status_code == 201, created.text
    assert created.json()["ledger_table"] == table
    # More versions later, with or without the table: the set keeps it.
    more = await _register(api, tokens, name, BILLING_FILES, None)
    assert more.status_code == 201, more.text
    assert more.json()["added"] == ["2"] and more.json()["ledger_table"] == table
    viewer = tokens.headers("infra-viewer")
    shown = await api.get(f"{SETS}/{name}", headers=viewer)
    assert shown.status_code == 200 and shown.json()["ledger_table"] == table
    listed = await api.get(SETS, headers=viewer)
    assert {s["name"]: s["ledger_table"] for s in listed.json()["items"]}[name] == table
    # Another table later would make every target carrying the set look empty: 409.
    moved = await _register(api, tokens, name, BILLING_FILES, "elsewhere")
    error = _assert_error(moved, 409, "conflict")
    assert error["details"] == {"set": name, "ledger_table": table, "requested": "elsewhere"}
    # Not a safe lowercase identifier: 422 with the envelope, nothing registered.
    for bad in ["Billing", "bad-name", 'x"; DROP TABLE t; --', "pg_ledger", "a" * 64]:
        refused = await _register(api, tokens, _name("bad"), BILLING_FILES, bad)
        _assert_error(refused, 422, "validation_error")
    # The archive form takes it too; a set registered without one keeps the default table.
    archived, archived_table = _name("arch"), _table("arch")
    operator = tokens.headers("infra-operator")
    form = {"name": archived, "ledger_table": archived_table}
    files = {"archive": ("set.tgz", _tgz(SEARCH_FILES), "application/gzip")}
    uploaded = await api.post(f"{SETS}/archive", data=form, files=files, headers=operator)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["ledger_table"] == archived_table
    again = await api.post(
        f"{SETS}/archive",
        data={**form, "ledger_table": table},
        files={"archive": ("set.tgz", _tgz(SEARCH_FILES), "application/gzip")},
        headers=operator,
    )
    _assert_error(again, 409, "conflict")
    plain = await _register(api, tokens, _name("plain"), BILLING_FILES, None)
    assert plain.json()["ledger_table"] == "tenantflow_schema_history"


async def _until_settled(api: httpx.AsyncClient, tokens: Tokens, tenant_id: str) -> dict[str, Any]:
    viewer = tokens.headers("infra-viewer")
    for _ in range(240):
        answer = await api.get(f"/api/v1/tenants/{tenant_id}", headers=viewer)
        assert answer.status_code == 200, answer.text
        shown = dict(answer.json())
        if shown["status"] not in ("provisioning", "deprovisioning"):
            return shown
        await asyncio.sleep(0.25)
    raise AssertionError(f"tenant {tenant_id} did not settle")


async def _ledger(creds: dict[str, Any], table: str) -> list[tuple[str, str]]:
    LEAK_CANARIES.add(creds["password"])
    conn = await asyncpg.connect(
        host=creds["host"],
        port=creds["port"],
        user=creds["user"],
        password=creds["password"],
        database=creds["database"],
        timeout=10,
    )
    try:
        schema = creds["schema_name"] or "public"
        rows = await conn.fetch(
            f'SELECT version, checksum FROM "{schema}"."{table}" WHERE success ORDER BY version'
        )
    finally:
        await conn.close()
    return [(r["version"], r["checksum"]) for r in rows]


async def test_a_tenant_carries_two_sets_each_with_its_own_ledger(
    api: httpx.AsyncClient, tokens: Tokens, postgres: EmbeddedPostgres
) -> None:
    server, _ = await register_server(api, tokens, postgres)
    billing, search = _name("billing"), _name("search")
    billing_table, search_table = _table("billing"), _table("search")
    for name, files, table in (
        (billing, BILLING_FILES, billing_table),
        (search, SEARCH_FILES, search_table),
    ):
        assert (await _register(api, tokens, name, files, table)).status_code == 201
    operator = tokens.headers("infra-operator")
    tenants = {mode: f"t{uuid.uuid4().hex[:10]}" for mode in ("database", "schema")}
    for mode, tenant_id in tenants.items():
        body = {
            "tenant_id": tenant_id,
            "server": server,
            "mode": mode,
            "shared_database": f"shared_{uuid.uuid4().hex[:6]}",
            "sets": [{"name": billing}, {"name": search}],
        }
        answer = await api.post("/api/v1/tenants", json=body, headers=operator)
        assert answer.status_code == 202, answer.text
    checksums = {
        billing: [(m.version, m.checksum) for m in parse_files(BILLING_FILES, None)],
        search: [(m.version, m.checksum) for m in parse_files(SEARCH_FILES, None)],
    }
    for mode, tenant_id in tenants.items():
        tenant = await _until_settled(api, tokens, tenant_id)
        assert tenant["status"] == "active", (mode, tenant["error"])
        assert tenant["versions"] == {billing: "2", search: "2"}
        creds = await api.get(
            f"/api/v1/tenants/{tenant_id}/credentials",
            headers=tokens.headers("tenant-credentials"),
        )
        assert creds.status_code == 200, creds.text
        assert await _ledger(creds.json(), billing_table) == checksums[billing]
        assert await _ledger(creds.json(), search_table) == checksums[search]
        # The target's history, set by set.
        database_id = tenant["database_id"]
        for name in (billing, search):
            history = await api.get(
                f"/api/v1/databases/{database_id}/history",
                params={"set": name},
                headers=tokens.headers("infra-viewer"),
            )
            assert history.status_code == 200, history.text
            shown = history.json()
            assert shown["ledger_table"] == (billing_table if name == billing else search_table)
            assert [e["version"] for e in shown["entries"]] == ["1", "2"]
        unknown = await api.get(
            f"/api/v1/databases/{database_id}/history",
            params={"set": "no-such-set"},
            headers=tokens.headers("infra-viewer"),
        )
        _assert_error(unknown, 404, "not_found")


async def test_two_sets_sharing_a_ledger_table_are_refused_before_anything_is_created(
    api: httpx.AsyncClient, tokens: Tokens, postgres: EmbeddedPostgres, catalog_pool: asyncpg.Pool
) -> None:
    server, _ = await register_server(api, tokens, postgres)
    first, second = _name("first"), _name("second")
    # Neither names a table: both would keep their ledger in tenantflow_schema_history.
    for name, files in ((first, BILLING_FILES), (second, SEARCH_FILES)):
        assert (await _register(api, tokens, name, files, None)).status_code == 201
    operator = tokens.headers("infra-operator")
    named = {
        "tenant_id": f"t{uuid.uuid4().hex[:10]}",
        "server": server,
        "sets": [{"name": first}, {"name": second}],
    }
    error = _assert_error(
        await api.post("/api/v1/tenants", json=named, headers=operator), 400, "invalid_input"
    )
    assert error["details"] == {
        "sets": sorted([first, second]),
        "ledger_table": "tenantflow_schema_history",
    }
    assert first in error["message"] and second in error["message"]
    assert "ledger_table" in error["message"]
    # The same through assignments: labels matching both.
    plan = f"p{uuid.uuid4().hex[:6]}"
    for name in (first, second):
        put = await api.put(
            f"/api/v1/assignments/{name}", json={"selector": {"plan": plan}}, headers=operator
        )
        assert put.status_code in (200, 201), put.text
    try:
        by_labels = {
            "tenant_id": f"t{uuid.uuid4().hex[:10]}",
            "server": server,
            "labels": {"plan": plan},
        }
        answer = await api.post("/api/v1/tenants", json=by_labels, headers=operator)
        assert _assert_error(answer, 400, "invalid_input")["details"]["sets"] == sorted(
            [first, second]
        )
    finally:
        for name in (first, second):
            await api.delete(f"/api/v1/assignments/{name}", headers=operator)
    # Nothing was claimed: no tenant record, no role.
    for body in (named, by_labels):
        tenant = body["tenant_id"]
        assert (
            await catalog_pool.fetchval("SELECT 1 FROM tenants WHERE tenant_id = $1", tenant)
            is None
        )
        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            role = await admin.fetchval(
                "SELECT 1 FROM pg_roles WHERE rolname = $1", f"tenant_{tenant}"
            )
        finally:
            await admin.close()
        assert role is None
