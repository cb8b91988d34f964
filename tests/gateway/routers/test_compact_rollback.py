"""Rolling back a compact fleet run through HTTP, on a real worker, Temporal and PostgreSQL: a
compact run keeps no list of the targets it changed, so its rollback walks the run's selector
and rolls a target back only when its ledger holds rows of the run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from activities.migrations import LEDGER_TABLE
from tests.conftest import TargetDatabase, TargetFactory, Tokens

pytestmark = pytest.mark.usefixtures("running_worker")

RUNS = "/api/v1/migrations"
FILES = {
    "V1__a.sql": "CREATE TABLE a (id int);",
    "U1__a.sql": "DROP TABLE a;",
    "V2__b.sql": "CREATE TABLE b (id int);",
    "U2__b.sql": "DROP TABLE b;",
}


async def _finished(api: httpx.AsyncClient, headers: dict[str, str], url: str) -> dict[str, Any]:
    """Poll a run's progress (gently: the gateway rate-limits) until it completes."""
    for _ in range(400):
        state: dict[str, Any] = (await api.get(url, headers=headers)).json()
        if state["status"] == "completed":
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"run did not finish: {state}")


async def _run(
    api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    started = await api.post(RUNS, json=body, headers=headers)
    assert started.status_code == 202, started.text
    return await _finished(api, headers, started.json()["status_url"])


Target = tuple[TargetDatabase, str]  # a database and the schema the target is


async def _ledger(target: TargetDatabase, schema: str = "public") -> list[tuple[str, str]]:
    conn = await target.connect()
    try:
        table = f'"{schema}".{LEDGER_TABLE}'
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return []
        rows = await conn.fetch(f"SELECT version, run_id FROM {table} ORDER BY version")
        return [(r["version"], r["run_id"]) for r in rows]
    finally:
        await conn.close()


async def _tables(target: TargetDatabase, schema: str) -> list[str]:
    conn = await target.connect()
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename IN ('a', 'b') "
            "ORDER BY 1",
            schema,
        )
        return [r["tablename"] for r in rows]
    finally:
        await conn.close()


async def test_a_compact_runs_rollback_undoes_only_the_targets_the_run_changed(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"compact-{label}"
    registered = await api.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
    )
    assert registered.status_code == 201, registered.text
    # Three schema targets in one database (a batch runs them grouped, on shared connections)
    # and three database targets (a connection each).
    shared = await make_target()
    fleet: list[Target] = [(shared, f"c_{i}") for i in range(3)]
    fleet += [(await make_target(), "public") for _ in range(3)]
    ids: list[str] = []
    for target, schema in fleet:
        body = target.create_body(
            name=f"c-{uuid.uuid4().hex[:8]}",
            labels={"fleet": label},
            schema=None if schema == "public" else schema,
        )
        created = await api.post("/api/v1/databases", json=body, headers=operator)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    # One schema and one database are at the latest version before the run.
    early = [fleet[0], fleet[3]]
    rest = [fleet[1], fleet[2], fleet[4], fleet[5]]
    whole = {"batch_size": 6}  # one batch: the schemas are grouped

    before = await _run(
        api, operator, {"set": set_name, "selector": {"database_ids": [ids[0], ids[3]]}}
    )
    assert before["counts"]["succeeded"] == 2
    run = await _run(
        api, operator, {"set": set_name, "selector": {"labels": {"fleet": label}}, **whole}
    )
    assert run["targets_complete"] is False  # a compact run: nothing kept per finished target
    assert run["counts"]["succeeded"] == 4 and run["counts"]["up_to_date"] == 2
    for target, schema in rest:
        assert await _ledger(target, schema) == [("1", run["run_id"]), ("2", run["run_id"])]

    back = await api.post(
        f"{RUNS}/{run['run_id']}/rollback", json={"to_version": "0", **whole}, headers=operator
    )
    assert back.status_code == 202, back.text
    rolled = await _finished(api, operator, back.json()["status_url"])
    assert rolled["kind"] == "rollback"
    # Over the run's selector: the two it left as they were are left as they are.
    assert rolled["total"] == 6
    assert rolled["counts"]["succeeded"] == 4 and rolled["counts"]["up_to_date"] == 2
    assert rolled["counts"]["failed"] == 0
    for target, schema in rest:
        assert await _ledger(target, schema) == []
        assert await _tables(target, schema) == []
    for target, schema in early:
        assert await _ledger(target, schema) == [
            ("1", before["run_id"]),
            ("2", before["run_id"]),
        ]
        assert await _tables(target, schema) == ["a", "b"]

    # The rollback left no rows of its own: there is nothing to find its targets by.
    again = await api.post(
        f"{RUNS}/{rolled['run_id']}/rollback", json={"to_version": "0"}, headers=operator
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == "conflict"


async def test_a_dry_run_an_adopt_run_and_an_up_to_date_run_are_not_rolled_back(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"compact-{label}"
    registered = await api.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
    )
    assert registered.status_code == 201, registered.text
    fleet = [await make_target() for _ in range(2)]
    for target in fleet:
        body = target.create_body(name=f"c-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
        assert (await api.post("/api/v1/databases", json=body, headers=operator)).status_code == 201
    selector = {"labels": {"fleet": label}}

    dry = await _run(api, operator, {"set": set_name, "selector": selector, "dry_run": True})
    # Flyway never ran on these targets: every one fails, and the run still completes.
    adopt = await _run(
        api, operator, {"set": set_name, "kind": "adopt", "from": "flyway", "selector": selector}
    )
    applied = await _run(api, operator, {"set": set_name, "selector": selector})
    nothing = await _run(api, operator, {"set": set_name, "selector": selector})
    assert nothing["counts"]["up_to_date"] == 2 and nothing["targets_complete"] is False
    for run, word in ((dry, "dry run"), (adopt, "adopt"), (nothing, "changed no target")):
        refused = await api.post(
            f"{RUNS}/{run['run_id']}/rollback", json={"to_version": "0"}, headers=operator
        )
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["type"] == "conflict" and word in error["message"]
        assert error["details"]["run_id"] == run["run_id"]
    for target in fleet:
        assert await _ledger(target) == [("1", applied["run_id"]), ("2", applied["run_id"])]
