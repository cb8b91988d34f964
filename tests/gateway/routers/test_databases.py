"""``/api/v1/databases`` end to end: real gateway, worker, Temporal and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import TargetDatabase, Tokens


async def _create(
    api: httpx.AsyncClient, tokens: Tokens, body: dict[str, object]
) -> httpx.Response:
    return await api.post("/api/v1/databases", json=body, headers=tokens.headers("infra-operator"))


async def test_register_get_list_delete(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    # A label of its own: earlier tests in the session leave many databases with the default
    # labels, more than one page of the list.
    run = uuid.uuid4().hex[:12]
    labels = {"tier": "free", "region": "eu", "run": run}
    created = await _create(api, tokens, target_database.create_body(labels=labels))
    assert created.status_code == 201, created.text
    body = created.json()
    assert "password" not in body
    assert target_database.password not in created.text
    assert body["schema"] is None
    assert body["labels"] == labels
    database_id = body["id"]

    viewer = tokens.headers("infra-viewer")
    fetched = await api.get(f"/api/v1/databases/{database_id}", headers=viewer)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == body["name"]

    listed = await api.get(
        "/api/v1/databases", params={"label": f"tier=free,region=eu,run={run}"}, headers=viewer
    )
    assert database_id in [d["id"] for d in listed.json()["items"]]
    other = await api.get(
        "/api/v1/databases", params={"label": f"tier=paid,run={run}"}, headers=viewer
    )
    assert database_id not in [d["id"] for d in other.json()["items"]]

    deleted = await api.delete(
        f"/api/v1/databases/{database_id}", headers=tokens.headers("infra-operator")
    )
    assert deleted.status_code == 204
    gone = await api.get(f"/api/v1/databases/{database_id}", headers=viewer)
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found"


async def test_duplicate_name_is_409(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    body = target_database.create_body()
    assert (await _create(api, tokens, body)).status_code == 201
    again = await _create(api, tokens, body)
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "conflict"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database", 'x"; DROP DATABASE tenantflow; --'),
        ("user", "pg_signal_backend"),
        ("schema", "has space"),
        ("database", "a" * 64),
        ("labels", {"Tier": "free"}),
        ("labels", {"tier": "free; drop"}),
        ("port", 70000),
        ("host", "db.internal; rm -rf /"),
        ("password", ""),
        ("name", "Upper Case"),
    ],
)
async def test_bad_input_is_422_and_nothing_is_stored(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    field: str,
    value: object,
) -> None:
    body = target_database.create_body(**{field: value})
    response = await _create(api, tokens, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert any(field in e["loc"] for e in error["details"]["errors"])
    assert target_database.password not in response.text
    listed = await api.get(
        "/api/v1/databases",
        params={"label": "region=eu"},
        headers=tokens.headers("infra-viewer"),
    )
    assert body["name"] not in [d["name"] for d in listed.json()["items"]]


async def test_bad_label_filter_and_cursor_are_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    viewer = tokens.headers("infra-viewer")
    bad_label = await api.get("/api/v1/databases", params={"label": "nokey"}, headers=viewer)
    assert bad_label.status_code == 400
    bad_cursor = await api.get("/api/v1/databases", params={"cursor": "%%%"}, headers=viewer)
    assert bad_cursor.status_code == 400
    bad_id = await api.get("/api/v1/databases/not-a-uuid", headers=viewer)
    assert bad_id.status_code == 422


async def test_viewer_cannot_register(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    response = await api.post(
        "/api/v1/databases",
        json=target_database.create_body(),
        headers=tokens.headers("infra-viewer"),
    )
    assert response.status_code == 403
    assert response.json()["error"]["details"]["required"] == "databases:write"


async def test_connection_test_goes_through_a_worker(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    good = (await _create(api, tokens, target_database.create_body())).json()
    result = await api.post(
        f"/api/v1/databases/{good['id']}/test-connection", headers=tokens.headers("infra-viewer")
    )
    assert result.status_code == 200, result.text
    assert result.json()["ok"] is True
    assert result.json()["server_version"].startswith("18")

    wrong = (
        await _create(
            api,
            tokens,
            target_database.create_body(name=f"wrong-{uuid.uuid4().hex[:6]}", password="nope"),
        )
    ).json()
    refused = await api.post(
        f"/api/v1/databases/{wrong['id']}/test-connection", headers=tokens.headers("infra-viewer")
    )
    assert refused.status_code == 200
    assert refused.json()["ok"] is False
    assert refused.json()["error_code"] == "28P01"  # invalid_password
    assert target_database.password not in refused.text

    missing = await api.post(
        f"/api/v1/databases/{uuid.uuid4()}/test-connection",
        headers=tokens.headers("infra-viewer"),
    )
    assert missing.status_code == 404


async def test_schema_target_reports_whether_the_schema_exists(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    created = (
        await _create(api, tokens, target_database.create_body(schema="tenant_schema"))
    ).json()
    assert created["schema"] == "tenant_schema"
    result = await api.post(
        f"/api/v1/databases/{created['id']}/test-connection",
        headers=tokens.headers("infra-viewer"),
    )
    assert result.json()["ok"] is True
    assert result.json()["schema_exists"] is False
