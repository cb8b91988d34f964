"""Workflow-level metrics, read from a real worker's endpoint: a run paused by its failure budget
and then cancelled counts one start, one budget pause, one failed target and one cancelled end;
a provisioning run counts as a run of kind ``provision`` with its time by mode and outcome."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
from temporalio.client import Client

from cli.stack import EmbeddedPostgres
from common.settings import Settings
from tests.conftest import TargetFactory, Tokens
from tests.gateway.routers.test_tenants import register_server

FILES = {"V1__a.sql": "CREATE TABLE a (id int);"}


def _value(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for match in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.MULTILINE):
        present = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if all(present.get(k) == v for k, v in labels.items()):
            total += float(match[2])
    return total


async def test_budget_pause_and_cancel_are_counted(
    stack: tuple[Settings, int], gateway_port: int, make_target: TargetFactory, tokens: Tokens
) -> None:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"pause-{label}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=60) as http:
        registered = await http.post(
            "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
        )
        assert registered.status_code == 201, registered.text
        good = (await make_target()).create_body(
            name=f"p-{uuid.uuid4().hex[:8]}", labels={"fleet": label}
        )
        assert (
            await http.post("/api/v1/databases", json=good, headers=operator)
        ).status_code == 201
        # Wrong credentials, named to be resolved first: it fails and the budget (0) pauses.
        wrong = (await make_target()).create_body(name=f"0-{uuid.uuid4().hex[:8]}")
        wrong.update(password="not-the-password", labels={"fleet": label})
        assert (
            await http.post("/api/v1/databases", json=wrong, headers=operator)
        ).status_code == 201
        started = await http.post(
            "/api/v1/migrations",
            json={
                "set": set_name,
                "selector": {"labels": {"fleet": label}},
                "concurrency": 1,
                "batch_size": 1,
                "failure_budget": {"max_failed": 0},
            },
            headers=operator,
        )
        assert started.status_code == 202, started.text
        url = started.json()["status_url"]
        for _ in range(300):
            state = (await http.get(url, headers=operator)).json()
            if state["status"] == "paused" and state["counts"]["running"] == 0:
                break
            await asyncio.sleep(0.2)
        assert state["status"] == "paused", state
        assert (await http.post(f"{url}/cancel", headers=operator)).status_code == 202
        for _ in range(300):
            state = (await http.get(url, headers=operator)).json()
            if state["status"] == "cancelled":
                break
            await asyncio.sleep(0.2)
        assert state["status"] == "cancelled", state

        text = (await http.get(f"http://127.0.0.1:{stack[1]}/metrics")).text
    assert _value(text, "tenantflow_runs_started_total", {"kind": "apply"}) == 1
    assert _value(text, "tenantflow_runs_paused_total", {"reason": "budget"}) == 1
    assert _value(text, "tenantflow_targets_failed_total", {"set": set_name}) == 1
    assert _value(text, "tenantflow_targets_migrated_total", {"set": set_name}) == 0
    assert (
        _value(text, "tenantflow_runs_ended_total", {"kind": "apply", "outcome": "cancelled"}) == 1
    )
    assert _value(text, "tenantflow_runs_ended_total", {"outcome": "completed"}) == 0


async def test_provisioning_is_counted_by_mode_and_outcome(
    stack: tuple[Settings, int],
    gateway_port: int,
    tokens: Tokens,
    postgres: EmbeddedPostgres,
) -> None:
    operator = tokens.headers("infra-operator")
    tenant_id = f"t{uuid.uuid4().hex[:10]}"
    set_name = f"prov-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=60) as http:
        _server, region = await register_server(http, tokens, postgres)
        registered = await http.post(
            "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
        )
        assert registered.status_code == 201, registered.text
        accepted = await http.post(
            "/api/v1/tenants",
            json={
                "tenant_id": tenant_id,
                "server_selector": {"region": region},
                "mode": "schema",
                "shared_database": f"shared_{uuid.uuid4().hex[:6]}",
                "sets": [{"name": set_name}],
            },
            headers=operator,
        )
        assert accepted.status_code == 202, accepted.text
        for _ in range(240):
            tenant = (await http.get(f"/api/v1/tenants/{tenant_id}", headers=operator)).json()
            if tenant["status"] != "provisioning":
                break
            await asyncio.sleep(0.25)
        assert tenant["status"] == "active", tenant
        text = ""
        for _ in range(40):  # the run's end is recorded as its last workflow task completes
            text = (await http.get(f"http://127.0.0.1:{stack[1]}/metrics")).text
            if _value(text, "tenantflow_runs_ended_total", {"kind": "provision"}):
                break
            await asyncio.sleep(0.25)
    assert _value(text, "tenantflow_runs_started_total", {"kind": "provision"}) == 1
    assert (
        _value(text, "tenantflow_runs_ended_total", {"kind": "provision", "outcome": "completed"})
        == 1
    )
    assert (
        _value(
            text,
            "tenantflow_provisioning_duration_seconds_count",
            {"mode": "schema", "outcome": "completed"},
        )
        == 1
    )
    # Its migration is a target run like any other.
    assert _value(text, "tenantflow_targets_migrated_total", {"set": set_name}) == 1
    assert _value(text, "tenantflow_versions_applied_total", {"set": set_name}) == 1
    assert tenant_id not in text


async def test_a_sweep_sets_the_health_gauge(
    stack: tuple[Settings, int],
    gateway_port: int,
    make_target: TargetFactory,
    tokens: Tokens,
    temporal_client: Client,
) -> None:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=60) as http:
        good = (await make_target()).create_body(
            name=f"h-{uuid.uuid4().hex[:8]}", labels={"sweep": label}
        )
        created = await http.post("/api/v1/databases", json=good, headers=operator)
        assert created.status_code == 201, created.text
        wrong = (await make_target()).create_body(name=f"h-{uuid.uuid4().hex[:8]}")
        wrong.update(password="not-the-password", labels={"sweep": label})
        created = await http.post("/api/v1/databases", json=wrong, headers=operator)
        assert created.status_code == 201, created.text
        started = await http.post(
            "/api/v1/health/sweep", params={"label": f"sweep={label}"}, headers=operator
        )
        assert started.status_code == 202, started.text
        await temporal_client.get_workflow_handle(started.json()["workflow_id"]).result()
        text = (await http.get(f"http://127.0.0.1:{stack[1]}/metrics")).text
    assert _value(text, "tenantflow_health_targets", {"state": "reachable"}) == 1
    assert _value(text, "tenantflow_health_targets", {"state": "unreachable"}) == 1
    assert _value(text, "tenantflow_health_targets", {"state": "drifted"}) == 0
    assert 'state="behind"' in text
