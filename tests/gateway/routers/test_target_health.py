"""Fleet health over HTTP: a sweep started through the API by a real worker, snapshots, the
``?health=`` filter, drift per set and the permissions (real gateway, Temporal, PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from cli.stack import free_port
from models.health import FleetHealthResult
from tests.conftest import TargetDatabase, Tokens
from workflows.health import FleetHealthWorkflow


async def _register(api: httpx.AsyncClient, tokens: Tokens, body: dict[str, object]) -> str:
    created = await api.post(
        "/api/v1/databases", json=body, headers=tokens.headers("infra-operator")
    )
    assert created.status_code == 201, created.text
    database_id: str = created.json()["id"]
    return database_id


async def _sweep(
    api: httpx.AsyncClient, tokens: Tokens, temporal_client: Client, label: str
) -> str:
    started = await api.post(
        "/api/v1/health/sweep", params={"label": label}, headers=tokens.headers("infra-operator")
    )
    assert started.status_code == 202, started.text
    body = started.json()
    handle: WorkflowHandle[FleetHealthWorkflow, FleetHealthResult] = (
        temporal_client.get_workflow_handle_for(FleetHealthWorkflow.run, body["workflow_id"])
    )
    result = await handle.result()
    assert result.run_id == body["run_id"]
    assert result.counts.checked >= 1
    run_id: str = body["run_id"]
    return run_id


async def test_a_sweep_fills_snapshots_and_the_health_filter(
    api: httpx.AsyncClient,
    tokens: Tokens,
    temporal_client: Client,
    target_database: TargetDatabase,
) -> None:
    label = uuid.uuid4().hex[:8]
    good = await _register(api, tokens, target_database.create_body(labels={"h": label}))
    # Nothing listens on this port: the target is unreachable.
    down = await _register(
        api,
        tokens,
        target_database.create_body(name=f"down-{label}", port=free_port(), labels={"h": label}),
    )
    viewer = tokens.headers("infra-viewer")
    unchecked = await api.get(f"/api/v1/databases/{good}/health", headers=viewer)
    assert unchecked.status_code == 404
    assert unchecked.json()["error"]["details"]["reason"] == "not_checked"

    run_id = await _sweep(api, tokens, temporal_client, f"h={label}")

    ok = await api.get(f"/api/v1/databases/{good}/health", headers=viewer)
    assert ok.status_code == 200, ok.text
    snapshot = ok.json()
    assert snapshot["reachable"] is True and snapshot["run_id"] == run_id
    assert snapshot["server_version"] and snapshot["latency_ms"] is not None
    assert snapshot["drift"]["drifted"] is False
    assert snapshot["drift"]["reason"] == "no set is assigned to this target"
    assert target_database.password not in ok.text
    bad = (await api.get(f"/api/v1/databases/{down}/health", headers=viewer)).json()
    assert bad["reachable"] is False and bad["error"]
    assert target_database.password not in bad["error"]

    params = {"label": f"h={label}"}
    unreachable = await api.get(
        "/api/v1/databases", params={**params, "health": "unreachable"}, headers=viewer
    )
    assert [d["id"] for d in unreachable.json()["items"]] == [down]
    drifted = await api.get(
        "/api/v1/databases", params={**params, "health": "drifted"}, headers=viewer
    )
    assert drifted.json()["items"] == []
    wrong = await api.get("/api/v1/databases", params={"health": "sleepy"}, headers=viewer)
    assert wrong.status_code == 422


async def test_unknown_target_and_set_are_404_and_a_bad_set_name_422(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    viewer = tokens.headers("infra-viewer")
    missing = await api.get(f"/api/v1/databases/{uuid.uuid4()}/health", headers=viewer)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    no_set = await api.get("/api/v1/drift", params={"set": "no-such-set"}, headers=viewer)
    assert no_set.status_code == 404
    assert no_set.json()["error"]["type"] == "not_found"
    bad = await api.get("/api/v1/drift", params={"set": "Bad Name!"}, headers=viewer)
    assert bad.status_code == 422
    assert "error" in bad.json()
    absent = await api.get("/api/v1/drift", headers=viewer)
    assert absent.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "allowed", "denied"),
    [
        ("GET", f"/api/v1/databases/{uuid.UUID(int=1)}/health", "infra-viewer", None),
        ("GET", "/api/v1/drift?set=core", "infra-viewer", None),
        ("POST", "/api/v1/health/sweep", "infra-operator", "infra-viewer"),
    ],
)
async def test_permissions(
    api: httpx.AsyncClient,
    tokens: Tokens,
    method: str,
    path: str,
    allowed: str,
    denied: str | None,
) -> None:
    anonymous = await api.request(method, path)
    assert anonymous.status_code == 401
    if denied is not None:
        refused = await api.request(method, path, headers=tokens.headers(denied))
        assert refused.status_code == 403
    if method == "GET":
        permitted = await api.request(method, path, headers=tokens.headers(allowed))
        assert permitted.status_code in (200, 404)
        assert permitted.status_code != 403
