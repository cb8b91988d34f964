"""Adopt and baseline fleet runs through HTTP (``POST /api/v1/migrations`` with ``kind``), on a
real worker, Temporal and PostgreSQL: fleets of 10 databases that Flyway, golang-migrate or
dbmate brought to version 4 of ``examples/core`` are adopted, then finished by a normal run,
and every schema equals a fresh tenantflow apply."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.adoption import HISTORY_TABLES
from models.adoption import AdoptSource
from tests.activities.test_adoption import CORE, app_schema, history_rows, migrate_as
from tests.conftest import TargetDatabase, TargetFactory, Tokens

pytestmark = pytest.mark.usefixtures("running_worker")

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "core"
FILES = {path.name: path.read_text() for path in sorted(EXAMPLE.glob("*.sql"))}
FLEET = 10
RUNS = "/api/v1/migrations"


async def _register_set(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    name = f"adopt-{uuid.uuid4().hex[:8]}"
    answer = await api.post(
        "/api/v1/migration-sets", json={"name": name, "files": FILES}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    return name


async def _register_target(
    api: httpx.AsyncClient, headers: dict[str, str], target: TargetDatabase, label: str
) -> str:
    body = target.create_body(name=f"a-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
    answer = await api.post("/api/v1/databases", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def _finished(
    api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    """Start a fleet run and poll (gently: the gateway rate-limits) until it completes."""
    started = await api.post(RUNS, json=body, headers=headers)
    assert started.status_code == 202, started.text
    url = started.json()["status_url"]
    for _ in range(600):
        state: dict[str, Any] = (await api.get(url, headers=headers)).json()
        if state["status"] == "completed":
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"run did not finish: {state}")


async def _break(target: TargetDatabase, tool: AdoptSource) -> str:
    """Bring a target to version 4 with ``tool`` and leave it in the state the tool's refusal
    case describes; the version the refusal must name."""
    conn = await target.connect()
    try:
        if tool is AdoptSource.FLYWAY:  # a file changed after Flyway ran it
            await migrate_as(conn, tool, CORE[:4])
            await conn.execute(
                "UPDATE flyway_schema_history SET checksum = checksum + 1 WHERE version = '3'"
            )
            return "3"
        if tool is AdoptSource.GOLANG_MIGRATE:  # stopped part-way through version 4
            await migrate_as(conn, tool, CORE[:4])
            await conn.execute("UPDATE schema_migrations SET dirty = true")
            return "4"
        await migrate_as(conn, tool, CORE[:4])  # a version the set does not have
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ('20990101000000')")
        return "20990101000000"
    finally:
        await conn.close()


@pytest.mark.parametrize("tool", list(AdoptSource), ids=lambda t: t.value)
async def test_a_fleet_migrated_by_another_tool_is_adopted_then_finished_by_a_normal_run(
    tool: AdoptSource, api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    headers = tokens.headers("infra-operator")
    set_name = await _register_set(api, headers)
    label = uuid.uuid4().hex[:8]
    fleet = [await make_target() for _ in range(FLEET)]
    for target in fleet:
        conn = await target.connect()
        try:
            await migrate_as(conn, tool, CORE[:4])
        finally:
            await conn.close()
    refused = await make_target()
    refused_version = await _break(refused, tool)
    ids = [await _register_target(api, headers, t, label) for t in fleet]
    refused_id = await _register_target(api, headers, refused, label)
    conn = await refused.connect()
    try:
        refused_history = await history_rows(conn, tool, "public")
    finally:
        await conn.close()

    adopted = await _finished(
        api,
        headers,
        {
            "set": set_name,
            "kind": "adopt",
            "from": tool.value,
            "selector": {"labels": {"fleet": label}},
        },
    )
    assert adopted["counts"]["succeeded"] == FLEET and adopted["counts"]["failed"] == 1
    assert (adopted["kind"], adopted["adopt_from"]) == ("adopt", tool.value)
    assert {adopted["targets"][i]["to_version"] for i in ids} == {"4"}
    error = adopted["targets"][refused_id]["error"]
    assert f"version {refused_version}" in error, error
    # The refused target is as it was: no ledger, the tool's table untouched.
    conn = await refused.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('tenantflow_schema_history')") is None
        assert await history_rows(conn, tool, "public") == refused_history
    finally:
        await conn.close()

    history = await api.get(
        f"/api/v1/databases/{ids[0]}/history", params={"set": set_name}, headers=headers
    )
    assert history.status_code == 200, history.text
    assert [(e["version"], e["adopted_from"]) for e in history.json()["entries"]] == [
        (v, tool.value) for v in ("1", "2", "3", "4")
    ]

    fresh = await make_target()
    fresh_id = await _register_target(api, headers, fresh, uuid.uuid4().hex[:8])
    applied = await _finished(
        api, headers, {"set": set_name, "selector": {"database_ids": [*ids, fresh_id]}}
    )
    assert applied["counts"]["succeeded"] == FLEET + 1, applied
    assert {applied["targets"][i]["from_version"] for i in ids} == {"4"}
    assert {t["to_version"] for t in applied["targets"].values()} == {"6"}
    reference = await app_schema(fresh)
    for target in fleet:
        conn = await target.connect()
        try:
            await conn.execute(f"DROP TABLE {HISTORY_TABLES[tool]}")
        finally:
            await conn.close()
        assert await app_schema(target) == reference


async def test_a_fleet_never_under_a_tool_is_baselined(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    headers = tokens.headers("infra-operator")
    set_name = await _register_set(api, headers)
    label = uuid.uuid4().hex[:8]
    fleet = [await make_target() for _ in range(3)]
    for target in fleet:
        conn = await target.connect()
        try:
            for migration in CORE[:4]:  # built by hand
                await conn.execute(migration.up_sql)
        finally:
            await conn.close()
    ids = [await _register_target(api, headers, t, label) for t in fleet]
    selector = {"labels": {"fleet": label}}
    planned = await _finished(
        api,
        headers,
        {
            "set": set_name,
            "kind": "baseline",
            "version": "4",
            "selector": selector,
            "dry_run": True,
        },
    )
    assert planned["counts"]["succeeded"] == 3 and planned["dry_run"] is True
    done = await _finished(
        api, headers, {"set": set_name, "kind": "baseline", "version": "4", "selector": selector}
    )
    assert done["counts"]["succeeded"] == 3
    assert {done["targets"][i]["to_version"] for i in ids} == {"4"}
    # Rolling a baseline back would run down scripts of versions no run of tenantflow applied.
    refused = await api.post(
        f"/api/v1/migrations/{done['run_id']}/rollback", json={"to_version": "0"}, headers=headers
    )
    assert refused.status_code == 409, refused.text
    assert "baseline" in refused.json()["error"]["message"]
    applied = await _finished(api, headers, {"set": set_name, "selector": selector})
    assert applied["counts"]["succeeded"] == 3
    assert {applied["targets"][i]["from_version"] for i in ids} == {"4"}
    history = await api.get(
        f"/api/v1/databases/{ids[0]}/history", params={"set": set_name}, headers=headers
    )
    assert [e["adopted_from"] for e in history.json()["entries"]] == ["baseline"] * 4 + [None] * 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "adopt"}, "from"),
        ({"kind": "adopt", "from": "liquibase"}, "from"),
        ({"kind": "baseline"}, "version"),
        ({"kind": "apply", "from": "flyway"}, "from"),
        ({"kind": "adopt", "from": "dbmate", "to_version": "3"}, "to_version"),
        ({"kind": "baseline", "version": "4", "to_version": "4"}, "to_version"),
    ],
)
async def test_kinds_take_only_their_own_fields(
    api: httpx.AsyncClient, tokens: Tokens, body: dict[str, Any], field: str
) -> None:
    answer = await api.post(
        RUNS,
        json={"set": "core", "selector": {"all": True}, **body},
        headers=tokens.headers("infra-operator"),
    )
    assert answer.status_code == 422, answer.text
    assert field in answer.text


async def test_a_baseline_version_outside_the_set_is_refused_before_the_run(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    headers = tokens.headers("infra-operator")
    set_name = await _register_set(api, headers)
    answer = await api.post(
        RUNS,
        json={"set": set_name, "kind": "baseline", "version": "9", "selector": {"all": True}},
        headers=headers,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["details"] == {"set": set_name, "version": "9"}
    viewer = await api.post(
        RUNS,
        json={"set": set_name, "kind": "adopt", "from": "flyway", "selector": {"all": True}},
        headers=tokens.headers("infra-viewer"),
    )
    assert viewer.status_code == 403
