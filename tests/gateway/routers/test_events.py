"""``/api/v1/events`` through HTTP with a real worker, Temporal and PostgreSQL: CloudEvents in
both modes, one run per event however often it is delivered, 400/422 envelopes, and
``database.created`` registering a real database and migrating it to its assigned set."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError

from cli.stack import free_port
from common.settings import Settings
from gateway.app import create_app
from gateway.event_types import (
    EVENT_STARTERS,
    event_start_options,
    event_workflow_id,
)
from models.events import RegisterDatabaseResult
from models.system import SystemCheckInput
from tests.conftest import TargetDatabase, TargetFactory, Tokens, serve
from workflows.events import RegisterDatabaseWorkflow
from workflows.system import SystemCheckWorkflow

URL = "/api/v1/events"
STRUCTURED = {"content-type": "application/cloudevents+json"}
FILES = {
    "V1__customers.sql": "CREATE TABLE customers (id int PRIMARY KEY);",
    "V2__orders.sql": "CREATE TABLE orders (id int PRIMARY KEY);",
}


def structured(event_type: str, data: Any, *, event_id: str, source: str) -> bytes:
    """A structured-mode CloudEvent body."""
    return json.dumps(
        {"specversion": "1.0", "id": event_id, "source": source, "type": event_type, "data": data}
    ).encode()


def binary_headers(event_type: str, *, event_id: str, source: str) -> dict[str, str]:
    """Binary-mode headers (the data is the body)."""
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": event_type,
        "content-type": "application/json",
    }


@pytest.fixture
async def assigned_set(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A registered set assigned (latest) to a label only this test's targets carry."""
    name = f"ev-{uuid.uuid4().hex[:8]}"
    selector = {"cohort": f"c{uuid.uuid4().hex[:8]}"}
    headers = tokens.headers("infra-operator")
    registered = await api.post(
        "/api/v1/migration-sets", json={"name": name, "files": FILES}, headers=headers
    )
    assert registered.status_code == 201, registered.text
    put = await api.put(f"/api/v1/assignments/{name}", json={"selector": selector}, headers=headers)
    assert put.status_code == 200, put.text
    yield name, selector
    await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = $1", name)


async def _ledger(target: TargetDatabase) -> list[tuple[str, str]]:
    conn = await target.connect()
    try:
        rows = await conn.fetch(
            "SELECT version, run_id FROM tenantflow_schema_history ORDER BY applied_at, version"
        )
    finally:
        await conn.close()
    return [(r["version"], r["run_id"]) for r in rows]


async def _result(client: Client, workflow_id: str) -> RegisterDatabaseResult:
    handle: WorkflowHandle[RegisterDatabaseWorkflow, RegisterDatabaseResult] = (
        client.get_workflow_handle_for(RegisterDatabaseWorkflow.run, workflow_id)
    )
    return await handle.result()


async def test_database_created_registers_and_migrates_to_the_assigned_set(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    assigned_set: tuple[str, dict[str, str]],
    temporal_client: Client,
    catalog_pool: asyncpg.Pool,
) -> None:
    set_name, selector = assigned_set
    data = target_database.create_body(labels={**selector, "tier": "free"})
    event_id, source = f"evt-{uuid.uuid4().hex}", "/billing/tenants"
    response = await api.post(
        URL,
        content=structured("database.created", data, event_id=event_id, source=source),
        headers={**tokens.headers("infra-operator"), **STRUCTURED},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["workflow_id"] == event_workflow_id(source, event_id)
    assert (accepted["id"], accepted["source"], accepted["type"]) == (
        event_id,
        source,
        "database.created",
    )
    assert target_database.password not in response.text
    result = await _result(temporal_client, accepted["workflow_id"])
    assert result.created is True
    assert [(s.set_name, s.ok, s.version_reached) for s in result.sets] == [(set_name, True, "2")]
    # The catalog row, and the target's own ledger, written by the run.
    row = await catalog_pool.fetchrow(
        "SELECT id, labels FROM databases WHERE name = $1", data["name"]
    )
    assert row is not None and row["id"] == result.database_id
    assert await _ledger(target_database) == [
        ("1", accepted["workflow_id"]),
        ("2", accepted["workflow_id"]),
    ]
    # The history holds only the encrypted password.
    history = await temporal_client.get_workflow_handle(accepted["workflow_id"]).fetch_history()
    assert target_database.password not in history.to_json()
    await _listed_outcome(api, tokens.headers(), accepted["workflow_id"], "succeeded")
    listed = await api.get(URL, params={"type": "database.created"}, headers=tokens.headers())
    assert listed.status_code == 200, listed.text
    mine = [e for e in listed.json()["items"] if e["workflow_id"] == accepted["workflow_id"]]
    assert len(mine) == 1
    assert (mine[0]["id"], mine[0]["source"], mine[0]["type"], mine[0]["outcome"]) == (
        event_id,
        source,
        "database.created",
        "succeeded",
    )
    assert mine[0]["run_id"] == accepted["run_id"] and mine[0]["received_at"]


async def test_the_same_event_three_times_and_once_in_binary_mode_starts_one_run(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    assigned_set: tuple[str, dict[str, str]],
    temporal_client: Client,
) -> None:
    _, selector = assigned_set
    data = target_database.create_body(labels=selector)
    event_id, source = f"evt-{uuid.uuid4().hex}", "urn:crm:accounts"
    headers = tokens.headers("infra-operator")
    answers = []
    for _ in range(3):
        answers.append(
            await api.post(
                URL,
                content=structured("database.created", data, event_id=event_id, source=source),
                headers={**headers, **STRUCTURED},
            )
        )
    workflow_id = event_workflow_id(source, event_id)
    await _result(temporal_client, workflow_id)  # closed now: a late redelivery
    answers.append(
        await api.post(
            URL,
            content=json.dumps(data).encode(),
            headers={
                **headers,
                **binary_headers("database.created", event_id=event_id, source=source),
            },
        )
    )
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert all(a.json() == answers[0].json() for a in answers)
    runs = [
        execution
        async for execution in temporal_client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]
    assert [r.run_id for r in runs] == [answers[0].json()["run_id"]]
    assert [v for v, _ in await _ledger(target_database)] == ["1", "2"]


async def test_binary_mode_alone_starts_a_run(
    api: httpx.AsyncClient,
    tokens: Tokens,
    make_target: TargetFactory,
    assigned_set: tuple[str, dict[str, str]],
    temporal_client: Client,
) -> None:
    target = await make_target()
    _, selector = assigned_set
    response = await api.post(
        URL,
        content=json.dumps(target.create_body(labels=selector)).encode(),
        headers={
            **tokens.headers("infra-operator"),
            **binary_headers("database.created", event_id="1", source="https://crm.example/x"),
        },
    )
    assert response.status_code == 202, response.text
    result = await _result(temporal_client, response.json()["workflow_id"])
    assert [s.version_reached for s in result.sets] == ["2"]


async def _listed_outcome(
    api: httpx.AsyncClient, headers: dict[str, str], workflow_id: str, wanted: str
) -> str | None:
    """The event's outcome in the listing, once it says ``wanted`` or after 10 s: the listing
    reads Temporal's visibility, which records a run's close a moment after the run closes."""
    outcome = None
    for _ in range(100):
        listed = await api.get(URL, headers=headers)
        assert listed.status_code == 200, listed.text
        outcome = {e["workflow_id"]: e["outcome"] for e in listed.json()["items"]}.get(workflow_id)
        if outcome == wanted:
            break
        await asyncio.sleep(0.1)
    return outcome


async def test_the_same_name_registers_once_and_another_connection_fails_the_run(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    temporal_client: Client,
) -> None:
    headers = {**tokens.headers("infra-operator"), **STRUCTURED}
    data = target_database.create_body(labels={"cohort": f"none-{uuid.uuid4().hex[:6]}"})
    ids = []
    for event_id in ("a", "b"):
        response = await api.post(
            URL,
            content=structured(
                "database.created", data, event_id=event_id, source=str(data["name"])
            ),
            headers=headers,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["workflow_id"])
    first, second = [await _result(temporal_client, i) for i in ids]
    assert (first.created, second.created) == (True, False)
    assert first.database_id == second.database_id
    assert first.sets == []  # no set is assigned to these labels
    other = {**data, "password": "not-the-same", "port": 1}
    response = await api.post(
        URL,
        content=structured("database.created", other, event_id="c", source=str(data["name"])),
        headers=headers,
    )
    assert response.status_code == 202, response.text
    with pytest.raises(WorkflowFailureError) as failed:
        await _result(temporal_client, response.json()["workflow_id"])
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "Conflict" and activity_error.cause.non_retryable
    cause = activity_error.cause.message
    assert "already registered with another connection (port, password differ)" in cause
    assert "not-the-same" not in cause
    assert (
        await _listed_outcome(
            api, tokens.headers("infra-viewer"), response.json()["workflow_id"], "failed"
        )
        == "failed"
    )


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{not json", STRUCTURED, "malformed CloudEvent"),
        (
            json.dumps({"specversion": "1.0", "source": "/s", "type": "database.created"}).encode(),
            STRUCTURED,
            "malformed CloudEvent",
        ),
        (
            json.dumps({"specversion": "1.0", "id": "1", "source": "/s"}).encode(),
            STRUCTURED,
            "malformed CloudEvent",
        ),
        (b"[1, 2]", STRUCTURED, "malformed CloudEvent"),
        (
            json.dumps({"specversion": "0.3", "id": "1", "source": "/s", "type": "x"}).encode(),
            STRUCTURED,
            "CloudEvent",
        ),
        (b"{}", {"content-type": "application/json"}, "not a CloudEvent"),
        (
            b"{}",
            {"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "database.created"},
            "malformed CloudEvent",
        ),
    ],
    ids=[
        "bad-json",
        "no-id",
        "no-type",
        "not-an-object",
        "specversion-0.3",
        "plain-json",
        "binary-no-id",
    ],
)
async def test_malformed_events_are_400(
    api: httpx.AsyncClient,
    tokens: Tokens,
    body: bytes,
    headers: dict[str, str],
    needle: str,
) -> None:
    response = await api.post(URL, content=body, headers={**tokens.headers(), **headers})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert needle in error["message"]


async def test_unknown_types_and_invalid_data_are_422(
    api: httpx.AsyncClient,
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = {**tokens.headers("infra-operator"), **STRUCTURED}
    unknown = await api.post(
        URL, content=structured("com.example.nope", {}, event_id="1", source="/s"), headers=headers
    )
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["type"] == "unsupported_event"
    assert "database.created" in unknown.json()["error"]["details"]["supported"]
    # tenant.created/deleted answer unsupported_event until provisioning registers them.
    monkeypatch.delitem(EVENT_STARTERS, "tenant.created", raising=False)
    tenant = await api.post(
        URL, content=structured("tenant.created", {}, event_id="1", source="/s"), headers=headers
    )
    assert tenant.status_code == 422
    assert tenant.json()["error"]["type"] == "unsupported_event"
    secret = f"pw-{uuid.uuid4().hex}"
    invalid = await api.post(
        URL,
        content=structured(
            "database.created",
            {"name": "Not Valid", "host": "h", "database": "d", "user": "u", "password": secret},
            event_id=uuid.uuid4().hex,
            source="/s",
        ),
        headers=headers,
    )
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["error"]["type"] == "validation_error"
    assert ["data", "name"] in [e["loc"] for e in invalid.json()["error"]["details"]["errors"]]
    assert secret not in invalid.text
    not_object = await api.post(
        URL,
        content=structured("database.created", "text", event_id="2", source="/s"),
        headers=headers,
    )
    assert not_object.status_code == 422
    assert not_object.json()["error"]["type"] == "validation_error"
    # The network allow-list applies to events as to POST /api/v1/databases: refused at once.
    metadata = await api.post(
        URL,
        content=structured(
            "database.created",
            {
                "name": "meta",
                "host": "169.254.169.254",
                "database": "d",
                "user": "u",
                "password": secret,
            },
            event_id=uuid.uuid4().hex,
            source="/s",
        ),
        headers=headers,
    )
    assert metadata.status_code == 422, metadata.text
    assert metadata.json()["error"]["type"] == "network_refused"
    assert secret not in metadata.text


async def test_a_registered_starter_gets_the_event_id_and_is_deduplicated(
    api: httpx.AsyncClient,
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
    temporal_client: Client,
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def start(client: Client, settings: Settings, event_id: str, data: dict[str, Any]) -> str:
        seen.append((event_id, data))
        handle = await client.start_workflow(
            SystemCheckWorkflow.run,
            SystemCheckInput(requested_by="event"),
            task_queue=settings.temporal.task_queue,
            **event_start_options(event_id),
        )
        return handle.first_execution_run_id or handle.run_id or ""

    monkeypatch.setitem(EVENT_STARTERS, "tenant.created", start)
    event_id, source = uuid.uuid4().hex, "/provisioning"
    body = structured("tenant.created", {"tenant_id": "t1"}, event_id=event_id, source=source)
    headers = {**tokens.headers("infra-operator"), **STRUCTURED}
    first = await api.post(URL, content=body, headers=headers)
    assert first.status_code == 202, first.text
    await temporal_client.get_workflow_handle(first.json()["workflow_id"]).result()
    again = await api.post(URL, content=body, headers=headers)
    assert (again.status_code, again.json()) == (202, first.json())
    assert [s[0] for s in seen] == [event_workflow_id(source, event_id)] * 2
    assert seen[0][1] == {"tenant_id": "t1"}
    listed = await api.get(URL, params={"type": "tenant.created"}, headers=tokens.headers())
    mine = [e for e in listed.json()["items"] if e["id"] == event_id]
    assert [(e["source"], e["run_id"]) for e in mine] == [(source, first.json()["run_id"])]


async def test_permissions_and_paging(api: httpx.AsyncClient, tokens: Tokens) -> None:
    body = structured("database.created", {}, event_id="1", source="/s")
    refused = await api.post(
        URL, content=body, headers={**tokens.headers("infra-viewer"), **STRUCTURED}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["required"] == "events:publish"
    assert (await api.post(URL, content=body, headers=STRUCTURED)).status_code == 401
    page = await api.get(URL, params={"page_size": 1}, headers=tokens.headers("infra-viewer"))
    assert page.status_code == 200
    assert len(page.json()["items"]) <= 1
    bad = await api.get(URL, params={"next_page": "AAAAAAAA"}, headers=tokens.headers())
    assert bad.status_code == 400


@pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
async def test_another_specversion_is_a_malformed_event_naming_it(
    api: httpx.AsyncClient, tokens: Tokens, binary: bool
) -> None:
    if binary:
        headers = {**binary_headers("database.created", event_id="1", source="/s")}
        headers["ce-specversion"] = "0.3"
        body = b"{}"
    else:
        headers = STRUCTURED
        body = json.dumps(
            {"specversion": "0.3", "id": "1", "source": "/s", "type": "database.created"}
        ).encode()
    response = await api.post(URL, content=body, headers={**tokens.headers(), **headers})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] == "malformed CloudEvent"
    assert error["details"]["mode"] == ("binary" if binary else "structured")
    assert "specversion" in error["details"]["cause"]


async def test_an_event_without_data_reaches_its_starter_as_an_empty_object(
    api: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    async def start(client: Client, settings: Settings, event_id: str, data: dict[str, Any]) -> str:
        del client, settings, event_id
        seen.append(data)
        return "run-1"

    monkeypatch.setitem(EVENT_STARTERS, "tenant.created", start)
    body = json.dumps(
        {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/s", "type": "tenant.created"}
    ).encode()
    answer = await api.post(
        URL, content=body, headers={**tokens.headers("infra-operator"), **STRUCTURED}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["run_id"] == "run-1"
    assert seen == [{}]


async def test_an_event_temporal_cannot_take_is_a_503(
    settings: Settings, tokens: Tokens, target_database: TargetDatabase
) -> None:
    temporal = settings.temporal.model_copy(update={"address": f"127.0.0.1:{free_port()}"})
    async for client in serve(create_app(settings.model_copy(update={"temporal": temporal}))):
        body = structured(
            "database.created",
            target_database.create_body(name=f"ev-{uuid.uuid4().hex[:8]}"),
            event_id=uuid.uuid4().hex,
            source="/s",
        )
        answer = await client.post(
            URL, content=body, headers={**tokens.headers("infra-operator"), **STRUCTURED}
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        assert answer.json()["error"] == {
            "type": "dependency_unavailable",
            "message": "Temporal did not accept the event's run",
            "details": {"dependency": "temporal", "cause": "RuntimeError"},
        }
