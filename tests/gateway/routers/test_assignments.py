"""``/api/v1/assignments`` through HTTP on the real catalog: CRUD, 404/400/422, permissions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from common.catalog.assignments import AssignmentRepository
from tests.conftest import Tokens

URL = "/api/v1/assignments"


@pytest.fixture
async def set_name(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> AsyncIterator[str]:
    """A registered set with versions 1 and 2; its assignment is removed afterwards."""
    name = f"asg-{uuid.uuid4().hex[:8]}"
    response = await api.post(
        "/api/v1/migration-sets",
        json={
            "name": name,
            "files": {"V1__a.sql": "CREATE TABLE a (id int);", "V2__b.sql": "SELECT 1;"},
        },
        headers=tokens.headers("infra-operator"),
    )
    assert response.status_code == 201, response.text
    yield name
    await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = $1", name)


async def test_put_list_get_delete(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str, catalog_pool: asyncpg.Pool
) -> None:
    operator = tokens.headers("infra-operator")
    put = await api.put(
        f"{URL}/{set_name}",
        json={"selector": {"tier": "free"}, "version": "latest"},
        headers=operator,
    )
    assert put.status_code == 200, put.text
    assert put.json()["selector"] == {"tier": "free"}
    assert put.json()["version"] == "latest"
    pinned = await api.put(
        f"{URL}/{set_name}", json={"selector": {"tier": "free"}, "version": "2"}, headers=operator
    )
    assert pinned.json()["version"] == "2"
    viewer = tokens.headers("infra-viewer")
    listed = await api.get(URL, headers=viewer)
    assert listed.status_code == 200
    assert set_name in [item["set_name"] for item in listed.json()["items"]]
    one = await api.get(f"{URL}/{set_name}", headers=viewer)
    assert (one.status_code, one.json()["version"]) == (200, "2")
    # What other code reads: the pinned version for a matching target, nothing otherwise.
    repo = AssignmentRepository(catalog_pool)
    assert [
        a.version for a in await repo.for_labels({"tier": "free"}) if a.set_name == set_name
    ] == ["2"]
    deleted = await api.delete(f"{URL}/{set_name}", headers=operator)
    assert deleted.status_code == 204
    gone = await api.get(f"{URL}/{set_name}", headers=viewer)
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found"
    again = await api.delete(f"{URL}/{set_name}", headers=operator)
    assert again.status_code == 404


async def test_an_empty_selector_selects_every_target(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str, catalog_pool: asyncpg.Pool
) -> None:
    put = await api.put(f"{URL}/{set_name}", json={"selector": {}}, headers=tokens.headers())
    assert put.status_code == 200, put.text
    repo = AssignmentRepository(catalog_pool)
    for labels in ({}, {"anything": "at-all"}):
        assert set_name in [a.set_name for a in await repo.for_labels(labels)]


async def test_unknown_set_is_404_and_unknown_version_400(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str
) -> None:
    headers = tokens.headers("infra-operator")
    missing = await api.put(f"{URL}/no-such-{uuid.uuid4().hex[:6]}", json={}, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    unknown = await api.put(f"{URL}/{set_name}", json={"version": "7"}, headers=headers)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["details"] == {"set": set_name, "version": "7"}


@pytest.mark.parametrize(
    "body",
    [
        {"version": "newest"},
        {"selector": {"Tier": "free"}},
        {"selector": {"tier": "a b"}},
        {"selector": ["tier=free"]},
    ],
)
async def test_malformed_bodies_are_422(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str, body: dict[str, object]
) -> None:
    response = await api.put(f"{URL}/{set_name}", json=body, headers=tokens.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "validation_error"


async def test_permissions(api: httpx.AsyncClient, tokens: Tokens, set_name: str) -> None:
    anonymous = await api.get(URL)
    assert anonymous.status_code == 401
    viewer = tokens.headers("infra-viewer")
    refused = await api.put(f"{URL}/{set_name}", json={}, headers=viewer)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["required"] == "migrations:execute"
    assert (await api.delete(f"{URL}/{set_name}", headers=viewer)).status_code == 403
    assert (await api.get(URL, headers=viewer)).status_code == 200


async def test_writes_are_audited(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str, catalog_pool: asyncpg.Pool
) -> None:
    response = await api.put(f"{URL}/{set_name}", json={}, headers=tokens.headers("infra-operator"))
    assert response.status_code == 200
    row = await catalog_pool.fetchrow(
        "SELECT action, outcome FROM audit_events WHERE resource = $1 ORDER BY id DESC LIMIT 1",
        f"{URL}/{set_name}",
    )
    assert row is not None
    assert (row["action"], row["outcome"]) == ("PUT /api/v1/assignments/{set_name}", "success")
