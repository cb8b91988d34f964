"""``/api/v1/servers`` end to end: real gateway and PostgreSQL, through HTTP."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import LEAK_CANARIES, TargetDatabase, Tokens

SERVERS = "/api/v1/servers"


def server_body(**overrides: object) -> dict[str, object]:
    """A server with a unique name and a fresh admin password (registered as a leak canary)."""
    password = f"admin-{uuid.uuid4().hex}"
    LEAK_CANARIES.add(password)
    body: dict[str, object] = {
        "name": f"pg-{uuid.uuid4().hex[:8]}",
        "host": "pg.internal",
        "admin_user": "tenantflow_admin",
        "admin_password": password,
        "labels": {"region": "eu"},
    }
    body.update(overrides)
    return body


async def _create(
    api: httpx.AsyncClient, tokens: Tokens, body: dict[str, object]
) -> httpx.Response:
    return await api.post(SERVERS, json=body, headers=tokens.headers("infra-operator"))


async def test_register_get_list_update_delete(api: httpx.AsyncClient, tokens: Tokens) -> None:
    body = server_body(labels={"region": "eu", "tier": f"t{uuid.uuid4().hex[:6]}"})
    password = str(body["admin_password"])
    created = await _create(api, tokens, body)
    assert created.status_code == 201, created.text
    server = created.json()
    assert "admin_password" not in server
    assert password not in created.text
    assert server["sslmode"] == "prefer"
    assert server["maintenance_database"] == "postgres"
    assert server["max_connections"] == 20
    assert server["target_count"] == 0

    viewer = tokens.headers("infra-viewer")
    fetched = await api.get(f"{SERVERS}/{body['name']}", headers=viewer)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == server["id"]
    assert password not in fetched.text

    tier = body["labels"]["tier"]  # type: ignore[index]
    listed = await api.get(SERVERS, params={"label": f"tier={tier}"}, headers=viewer)
    assert [s["name"] for s in listed.json()["items"]] == [body["name"]]
    other = await api.get(SERVERS, params={"label": "tier=none-such"}, headers=viewer)
    assert other.json()["items"] == []

    operator = tokens.headers("infra-operator")
    new_password = f"rotated-{uuid.uuid4().hex}"
    LEAK_CANARIES.add(new_password)
    patched = await api.patch(
        f"{SERVERS}/{body['name']}",
        json={"max_connections": 7, "sslmode": "require", "admin_password": new_password},
        headers=operator,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_connections"] == 7
    assert patched.json()["sslmode"] == "require"
    assert patched.json()["host"] == "pg.internal"
    assert new_password not in patched.text

    deleted = await api.delete(f"{SERVERS}/{body['name']}", headers=operator)
    assert deleted.status_code == 204
    gone = await api.get(f"{SERVERS}/{body['name']}", headers=viewer)
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found"


async def test_pagination_follows_next_cursor(api: httpx.AsyncClient, tokens: Tokens) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    names = sorted(f"{group}-{i}" for i in range(3))
    for name in names:
        assert (
            await _create(api, tokens, server_body(name=name, labels={"group": group}))
        ).status_code == 201
    viewer = tokens.headers("infra-viewer")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, str | int] = {"label": f"group={group}", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(SERVERS, params=params, headers=viewer)).json()
        seen += [s["name"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    bad = await api.get(SERVERS, params={"cursor": "%%%"}, headers=viewer)
    assert bad.status_code == 400


async def test_duplicate_name_and_rename_clash_are_409(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    first = server_body()
    second = server_body()
    assert (await _create(api, tokens, first)).status_code == 201
    assert (await _create(api, tokens, second)).status_code == 201
    again = await _create(api, tokens, server_body(name=first["name"]))
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "conflict"
    clash = await api.patch(
        f"{SERVERS}/{second['name']}",
        json={"name": first["name"]},
        headers=tokens.headers("infra-operator"),
    )
    assert clash.status_code == 409


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Upper Case"),
        ("host", "pg.internal; rm -rf /"),
        ("port", 0),
        ("admin_user", 'x"; DROP ROLE postgres; --'),
        ("admin_password", ""),
        ("sslmode", "sometimes"),
        ("maintenance_database", "has space"),
        ("max_connections", 0),
        ("labels", {"Region": "eu"}),
    ],
)
async def test_bad_input_is_422_and_secret_not_echoed(
    api: httpx.AsyncClient, tokens: Tokens, field: str, value: object
) -> None:
    body = server_body(**{field: value})
    response = await _create(api, tokens, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert any(field in e["loc"] for e in error["details"]["errors"])
    if field != "admin_password":
        assert str(body["admin_password"]) not in response.text
    missing = await api.get(f"{SERVERS}/{body['name']}", headers=tokens.headers("infra-viewer"))
    assert missing.status_code in (404, 422)


async def test_patch_bad_values_and_unknown_server(api: httpx.AsyncClient, tokens: Tokens) -> None:
    body = server_body()
    assert (await _create(api, tokens, body)).status_code == 201
    operator = tokens.headers("infra-operator")
    bad = await api.patch(f"{SERVERS}/{body['name']}", json={"sslmode": "x"}, headers=operator)
    assert bad.status_code == 422
    unknown_field = await api.patch(
        f"{SERVERS}/{body['name']}", json={"admin_password_encrypted": "x"}, headers=operator
    )
    assert unknown_field.status_code == 422
    cleared = await api.patch(f"{SERVERS}/{body['name']}", json={"host": None}, headers=operator)
    assert cleared.status_code == 422
    assert "host cannot be null" in cleared.text
    missing = await api.patch(f"{SERVERS}/no-such-server", json={"port": 5433}, headers=operator)
    assert missing.status_code == 404
    assert (await api.delete(f"{SERVERS}/no-such-server", headers=operator)).status_code == 404


async def test_delete_refused_while_a_target_lives_on_it(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    body = server_body(sslmode="disable")
    assert (await _create(api, tokens, body)).status_code == 201
    operator = tokens.headers("infra-operator")
    target = await api.post(
        "/api/v1/databases",
        json=target_database.create_body(server=body["name"]),
        headers=operator,
    )
    assert target.status_code == 201, target.text
    assert target.json()["sslmode"] == "disable"  # inherited from the server
    shown = await api.get(f"{SERVERS}/{body['name']}", headers=operator)
    assert shown.json()["target_count"] == 1
    refused = await api.delete(f"{SERVERS}/{body['name']}", headers=operator)
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "conflict"
    assert refused.json()["error"]["details"]["target_count"] == 1
    assert (
        await api.delete(f"/api/v1/databases/{target.json()['id']}", headers=operator)
    ).status_code == 204
    assert (await api.delete(f"{SERVERS}/{body['name']}", headers=operator)).status_code == 204


async def test_viewer_reads_but_cannot_write(api: httpx.AsyncClient, tokens: Tokens) -> None:
    viewer = tokens.headers("infra-viewer")
    refused = await api.post(SERVERS, json=server_body(), headers=viewer)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["required"] == "databases:write"
    assert (await api.get(SERVERS, headers=viewer)).status_code == 200
    anonymous = await api.get(SERVERS)
    assert anonymous.status_code == 401
