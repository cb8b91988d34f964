"""Per-target runs (``/api/v1/databases/{id}/migrate|rollback|runs``) through HTTP with a real
worker, Temporal and PostgreSQL: bad versions, a wait that runs out, a run that fails."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from gateway.routers import target_runs
from tests.conftest import TargetDatabase, Tokens


async def _target(
    api: httpx.AsyncClient, tokens: Tokens, target: TargetDatabase, files: dict[str, str]
) -> str:
    operator = tokens.headers("infra-operator")
    name = f"tr-{uuid.uuid4().hex[:8]}"
    registered = await api.post(
        "/api/v1/migration-sets", json={"name": name, "files": files}, headers=operator
    )
    assert registered.status_code == 201, registered.text
    created = await api.post(
        "/api/v1/databases",
        json=target.create_body(name=f"tr-{uuid.uuid4().hex[:8]}"),
        headers=operator,
    )
    assert created.status_code == 201, created.text
    database_id: str = created.json()["id"]
    return f"/api/v1/databases/{database_id}|{name}"


async def _until_finished(api: httpx.AsyncClient, tokens: Tokens, url: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(300):
        answer = await api.get(url, headers=tokens.headers("infra-viewer"))
        assert answer.status_code == 200, answer.text
        state = answer.json()
        if state["status"] != "running":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run stayed {state}")


@pytest.mark.usefixtures("running_worker")
async def test_a_version_that_is_not_one_is_refused_before_anything_starts(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    base, name = (await _target(api, tokens, target_database, {"V1__a.sql": "SELECT 1;"})).split(
        "|"
    )
    for path in ("migrate", "rollback"):
        answer = await api.post(
            f"{base}/{path}",
            json={"set": name, "to_version": "one.two!"},
            headers=tokens.headers("infra-operator"),
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_input"
        assert error["details"] == {"to_version": "one.two!"}


@pytest.mark.usefixtures("running_worker")
async def test_a_wait_that_runs_out_answers_202_and_the_run_goes_on(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = {"V1__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(1);"}
    base, name = (await _target(api, tokens, target_database, files)).split("|")
    monkeypatch.setattr(target_runs, "WAIT_SECONDS", 0.2)
    answer = await api.post(
        f"{base}/migrate", json={"set": name}, headers=tokens.headers("infra-operator")
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "running"
    assert accepted["result"] is None
    state = await _until_finished(api, tokens, f"{base}/runs/{accepted['run_id']}")
    assert state["status"] == "completed"
    assert [a["version"] for a in state["result"]["applied"]] == ["1"]


async def _running_workflow(temporal_client: Client, database_id: str) -> str:
    """The id of the per-target run in flight on ``database_id`` (visibility lags a little)."""
    query = f"WorkflowId STARTS_WITH 'target-run-{database_id}-' AND ExecutionStatus = 'Running'"
    for _ in range(300):
        async for execution in temporal_client.list_workflows(query):
            return execution.id
        await asyncio.sleep(0.1)
    raise AssertionError("the run never showed up")


@pytest.mark.usefixtures("running_worker")
async def test_a_run_terminated_from_outside_answers_failed_while_waited_on_and_after(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase, temporal_client: Client
) -> None:
    files = {"V1__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);"}
    base, name = (await _target(api, tokens, target_database, files)).split("|")
    waiting = asyncio.create_task(
        api.post(f"{base}/migrate", json={"set": name}, headers=tokens.headers("infra-operator"))
    )
    workflow_id = await _running_workflow(temporal_client, base.rsplit("/", 1)[1])
    await temporal_client.get_workflow_handle(workflow_id).terminate(reason="operator stop")
    answer = await asyncio.wait_for(waiting, timeout=30)
    assert answer.status_code == 200, answer.text
    failed = answer.json()
    assert (failed["status"], failed["workflow_id"]) == ("failed", workflow_id)
    assert failed["error"]
    assert failed["result"] is None
    state = await _until_finished(api, tokens, f"{base}/runs/{failed['run_id']}")
    assert (state["status"], state["error"]) == ("failed", "terminated")
