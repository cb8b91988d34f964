"""Migration sets and per-target runs through HTTP, with a real worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid

import httpx

from tests.conftest import TargetDatabase, Tokens

FILES = {
    "V1__create_customers.sql": "CREATE TABLE customers (id bigint PRIMARY KEY, name text);",
    "U1__create_customers.sql": "DROP TABLE customers;",
    "V2__create_orders.sql": (
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers);"
    ),
    "U2__create_orders.sql": "DROP TABLE orders;",
    "README.md": "ignored",
}


def _set_name() -> str:
    return f"core-{uuid.uuid4().hex[:6]}"


async def _register(
    api: httpx.AsyncClient, tokens: Tokens, name: str, files: dict[str, str]
) -> httpx.Response:
    return await api.post(
        "/api/v1/migration-sets",
        json={"name": name, "files": files},
        headers=tokens.headers("infra-operator"),
    )


async def test_register_is_append_only_and_checksum_guarded(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    name = _set_name()
    first = await _register(api, tokens, name, FILES)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "name": name,
        "ledger_table": "tenantflow_schema_history",
        "added": ["1", "2"],
        "unchanged": [],
        "latest_version": "2",
        "updated": [],  # repeatable migrations registered again with new content
    }
    again = await _register(api, tokens, name, FILES)
    assert again.json()["added"] == [] and again.json()["unchanged"] == ["1", "2"]
    grown = await _register(
        api, tokens, name, {**FILES, "V3__idx.sql": "CREATE INDEX o_c ON orders (customer_id);"}
    )
    assert grown.json()["added"] == ["3"]
    changed = await _register(
        api, tokens, name, {**FILES, "V2__create_orders.sql": "CREATE TABLE orders (id int);"}
    )
    assert changed.status_code == 409
    error = changed.json()["error"]
    assert error["type"] == "conflict"
    assert "version 2" in error["message"]
    conflict = error["details"]["conflicts"][0]
    assert conflict["registered"] != conflict["uploaded"]
    assert len(conflict["registered"]) == 64

    viewer = tokens.headers("infra-viewer")
    shown = (await api.get(f"/api/v1/migration-sets/{name}", headers=viewer)).json()
    assert [m["version"] for m in shown["migrations"]] == ["1", "2", "3"]
    assert shown["migrations"][2]["has_down"] is False
    version = (await api.get(f"/api/v1/migration-sets/{name}/versions/2", headers=viewer)).json()
    assert version["up_sql"].startswith("CREATE TABLE orders")
    listed = (await api.get("/api/v1/migration-sets", headers=viewer)).json()
    assert name in [s["name"] for s in listed["items"]]


async def test_malformed_sets_are_refused_naming_the_file(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    cases = {
        "U7__orphan.sql": {"V1__a.sql": "SELECT 1;", "U7__orphan.sql": "SELECT 1;"},
        "V01__b.sql": {"V1__a.sql": "SELECT 1;", "V01__b.sql": "SELECT 2;"},
        "V2__commit.sql": {"V1__a.sql": "SELECT 1;", "V2__commit.sql": "SELECT 1;\nCOMMIT;\n"},
        "V3__copy.sql": {"V1__a.sql": "SELECT 1;", "V3__copy.sql": "COPY t FROM STDIN;\n"},
        # Repeatables are supported now; two with one description are not.
        "R__my__view.sql": {"R__my_view.sql": "SELECT 1;", "R__my__view.sql": "SELECT 2;"},
        "V1__a.sql.conf": {"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction=no"},
    }
    for culprit, files in cases.items():
        response = await _register(api, tokens, _set_name(), files)
        assert response.status_code == 400, (culprit, response.text)
        assert response.json()["error"]["type"] == "invalid_migration_set"
        assert culprit in response.json()["error"]["message"]


async def test_archive_upload(api: httpx.AsyncClient, tokens: Tokens) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file_name, text in FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"migrations/{file_name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    name = _set_name()
    response = await api.post(
        "/api/v1/migration-sets/archive",
        data={"name": name},
        files={"archive": ("set.tar.gz", buffer.getvalue(), "application/gzip")},
        headers=tokens.headers("infra-operator"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["added"] == ["1", "2"]
    junk = await api.post(
        "/api/v1/migration-sets/archive",
        data={"name": name},
        files={"archive": ("x.tar.gz", b"not an archive", "application/gzip")},
        headers=tokens.headers("infra-operator"),
    )
    assert junk.status_code == 400


async def test_migrate_dry_run_rollback_through_the_api(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    operator = tokens.headers("infra-operator")
    name = _set_name()
    assert (await _register(api, tokens, name, FILES)).status_code == 201
    database = (
        await api.post("/api/v1/databases", json=target_database.create_body(), headers=operator)
    ).json()
    base = f"/api/v1/databases/{database['id']}"

    plan = (
        await api.post(f"{base}/migrate", json={"set": name, "dry_run": True}, headers=operator)
    ).json()
    assert plan["status"] == "completed"
    assert [p["version"] for p in plan["result"]["planned"]] == ["1", "2"]

    done = (await api.post(f"{base}/migrate", json={"set": name}, headers=operator)).json()
    assert done["status"] == "completed", done
    result = done["result"]
    assert (result["from_version"], result["to_version"]) == (None, "2")
    assert [a["version"] for a in result["applied"]] == ["1", "2"]
    assert all(a["execution_ms"] >= 0 for a in result["applied"])

    no_version = await api.post(f"{base}/rollback", json={"set": name}, headers=operator)
    assert no_version.status_code == 400
    viewer_rollback = await api.post(
        f"{base}/rollback",
        json={"set": name, "to_version": "1"},
        headers=tokens.headers("infra-viewer"),
    )
    assert viewer_rollback.status_code == 403

    started = await api.post(
        f"{base}/rollback", json={"set": name, "to_version": "1", "wait": False}, headers=operator
    )
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    for _ in range(100):
        state = (
            await api.get(f"{base}/runs/{run_id}", headers=tokens.headers("infra-viewer"))
        ).json()
        if state["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert state["status"] == "completed"
    assert state["result"]["to_version"] == "1"
    assert [a["version"] for a in state["result"]["applied"]] == ["2"]

    unknown_set = await api.post(f"{base}/migrate", json={"set": "nope"}, headers=operator)
    assert unknown_set.status_code == 404
    unknown_run = await api.get(f"{base}/runs/nope", headers=operator)
    assert unknown_run.status_code == 404
