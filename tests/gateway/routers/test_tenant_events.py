"""``tenant.created`` and ``tenant.deleted`` CloudEvents drive provisioning (issue 10): the same
event posted three times and once in binary mode starts one run."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.conftest import Tokens
from tests.gateway.routers.test_events import STRUCTURED, URL, binary_headers, structured
from tests.gateway.routers.test_tenants import Fleet, _until_settled, fleet

__all__ = ["fleet"]  # the fixture: a server and a set


async def test_one_tenant_created_event_delivered_four_times_provisions_once(
    api: httpx.AsyncClient, tokens: Tokens, fleet: Fleet
) -> None:
    tenant_id = f"e{uuid.uuid4().hex[:10]}"
    data = {"tenant_id": tenant_id, "server": fleet.server, "sets": [{"name": fleet.set_name}]}
    event_id, source = uuid.uuid4().hex, "/signup"
    headers = {**tokens.headers("infra-operator"), **STRUCTURED}
    body = structured("tenant.created", data, event_id=event_id, source=source)
    answers = [await api.post(URL, content=body, headers=headers) for _ in range(3)]
    answers.append(
        await api.post(
            URL,
            content=json.dumps(data).encode(),
            headers={
                **tokens.headers("infra-operator"),
                **binary_headers("tenant.created", event_id=event_id, source=source),
            },
        )
    )
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    runs = {(a.json()["workflow_id"], a.json()["run_id"]) for a in answers}
    assert len(runs) == 1, runs
    tenant = await _until_settled(api, tokens, tenant_id)
    assert tenant["status"] == "active", tenant
    assert tenant["run_id"] == answers[0].json()["workflow_id"]
    assert tenant["versions"] == {fleet.set_name: "10"}

    gone = structured(
        "tenant.deleted", {"tenant_id": tenant_id}, event_id=uuid.uuid4().hex, source=source
    )
    deleted = [await api.post(URL, content=gone, headers=headers) for _ in range(2)]
    assert [d.status_code for d in deleted] == [202, 202], [d.text for d in deleted]
    assert deleted[0].json()["run_id"] == deleted[1].json()["run_id"]
    assert (await _until_settled(api, tokens, tenant_id))["status"] == "deprovisioned"


async def test_tenant_events_with_bad_data_are_422(api: httpx.AsyncClient, tokens: Tokens) -> None:
    headers = {**tokens.headers("infra-operator"), **STRUCTURED}
    for event_type, data in (
        ("tenant.created", {"tenant_id": "Bad Id"}),
        ("tenant.deleted", {}),
    ):
        answer = await api.post(
            URL,
            content=structured(event_type, data, event_id=uuid.uuid4().hex, source="/s"),
            headers=headers,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["type"] == "validation_error"
