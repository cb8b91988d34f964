"""Fleet runs end to end through HTTP: real gateway (uvicorn), worker, Temporal, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from activities.migrations import LEDGER_TABLE
from cli.stack import free_port
from cli.temporal_server import TemporalDevServer, temporal_binary
from common.settings import Settings
from gateway.app import create_app
from gateway.routers.migrations import QUERY_TIMEOUT_SECONDS
from tests.conftest import TargetDatabase, TargetFactory, ThreadedServer, Tokens
from tests.workflows.test_migrations import _start_worker

pytestmark = pytest.mark.usefixtures("running_worker")

# The acceptance size: 50 databases, each with its own login role.
ACCEPTANCE_TARGETS = 50

FILES = {
    "V1__a.sql": "CREATE TABLE a (id int);\nSELECT pg_sleep(0.1);",
    "U1__a.sql": "DROP TABLE a;",
    "V2__b.sql": "CREATE TABLE b (id int);",
    "U2__b.sql": "DROP TABLE b;",
}

# Slow enough that a worker can be killed inside a migration.
SLOW = {
    "V1__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.6);",
    "V2__after.sql": "CREATE TABLE after (id int);",
}


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    server.stop()


async def _fleet(
    http: httpx.AsyncClient,
    tokens: Tokens,
    make_target: TargetFactory,
    count: int,
    files: dict[str, str] = FILES,
) -> tuple[str, str, list[TargetDatabase]]:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"fleet-{label}"
    registered = await http.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": files}, headers=operator
    )
    assert registered.status_code == 201
    targets = [await make_target() for _ in range(count)]
    for target in targets:
        body = target.create_body(name=f"f-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
        assert (
            await http.post("/api/v1/databases", json=body, headers=operator)
        ).status_code == 201
    return label, set_name, targets


async def _start_run(
    http: httpx.AsyncClient, headers: dict[str, str], set_name: str, label: str, **options: Any
) -> dict[str, Any]:
    """``POST /api/v1/migrations`` over the fleet labelled ``label``: 202 and the run."""
    started = await http.post(
        "/api/v1/migrations",
        json={"set": set_name, "selector": {"labels": {"fleet": label}}, **options},
        headers=headers,
    )
    assert started.status_code == 202, started.text
    run: dict[str, Any] = started.json()
    return run


async def _until(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    condition: Callable[[dict[str, Any]], bool],
    tries: int,
) -> dict[str, Any]:
    """Poll a run's progress every 0.1 s until ``condition`` holds (at most ``tries`` times);
    the last progress either way, for the caller's assertions."""
    for _ in range(tries):
        state: dict[str, Any] = (await http.get(url, headers=headers)).json()
        if condition(state):
            break
        await asyncio.sleep(0.1)
    return state


async def _ledger(target: TargetDatabase) -> list[str]:
    conn = await target.connect()
    try:
        exists = await conn.fetchval(f"SELECT to_regclass('{LEDGER_TABLE}') IS NOT NULL")
        if not exists:
            return []
        return [r["version"] for r in await conn.fetch(f"SELECT version FROM {LEDGER_TABLE}")]
    finally:
        await conn.close()


async def _listed_by_visibility(
    http: httpx.AsyncClient, tokens: Tokens, set_name: str, run_id: str
) -> None:
    """The finished run is found through Temporal visibility by set, requester and status."""
    viewer = tokens.headers("infra-viewer")
    operator = tokens.headers("infra-operator")
    me = (await http.get("/api/v1/auth/me", headers=operator)).json()["subject"]
    expected = {
        (("set", set_name),): [run_id],
        (("set", set_name), ("requester", me)): [run_id],
        (("set", set_name), ("status", "completed")): [run_id],
        (("set", set_name), ("status", "running")): [],
        (("set", set_name), ("requester", "somebody-else")): [],
    }
    for _ in range(100):  # visibility is eventually consistent
        found = {
            filters: [
                item["run_id"]
                for item in (
                    await http.get("/api/v1/migrations", params=dict(filters), headers=viewer)
                ).json()["items"]
            ]
            for filters in expected
        }
        if found == expected:
            break
        await asyncio.sleep(0.1)
    assert found == expected
    summary = (
        await http.get("/api/v1/migrations", params={"set": set_name}, headers=viewer)
    ).json()["items"][0]
    assert (summary["set_name"], summary["requester"], summary["status"]) == (
        set_name,
        me,
        "completed",
    )


async def test_start_stream_to_the_end_then_roll_back(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    label, set_name, targets = await _fleet(http, tokens, make_target, ACCEPTANCE_TARGETS)
    operator = tokens.headers("infra-operator")
    run = await _start_run(http, operator, set_name, label, concurrency=8)

    events: list[tuple[str, dict[str, object]]] = []
    async with http.stream("GET", run["stream_url"], headers=tokens.headers("infra-viewer")) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in s.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    assert events[-1] == ("end", {"status": "completed"})
    final = events[-2][1]
    assert final["counts"] == {
        "pending": 0,
        "running": 0,
        "succeeded": ACCEPTANCE_TARGETS,
        "failed": 0,
        "up_to_date": 0,
    }
    for target in targets:
        assert sorted(await _ledger(target)) == ["1", "2"]  # one row per version
    one = (
        await http.get("/api/v1/databases", params={"label": f"fleet={label}"}, headers=operator)
    ).json()["items"][0]
    answer = await http.get(f"/api/v1/databases/{one['id']}/history", headers=operator)
    assert answer.status_code == 200, answer.text
    history = answer.json()
    assert [e["version"] for e in history["entries"]] == ["1", "2"]
    assert all(e["run_id"] == run["run_id"] and e["success"] for e in history["entries"])
    assert history["schema"] == "public"

    answer = await http.get(run["status_url"], headers=operator)
    assert answer.headers["content-encoding"] == "gzip"  # httpx asks for it, and decodes it
    progress = answer.json()
    assert progress["status"] == "completed" and progress["total"] == ACCEPTANCE_TARGETS
    assert len(progress["targets"]) == ACCEPTANCE_TARGETS
    assert {t["to_version"] for t in progress["targets"].values()} == {"2"}
    for view, size in (("none", 0), ("succeeded", ACCEPTANCE_TARGETS), ("failed", 0)):
        light = await http.get(run["status_url"], params={"targets": view}, headers=operator)
        assert light.status_code == 200, light.text
        assert len(light.json()["targets"]) == size
        assert light.json()["counts"]["succeeded"] == ACCEPTANCE_TARGETS
    assert (await http.post(f"{run['status_url']}/pause", headers=operator)).status_code == 409
    await _listed_by_visibility(http, tokens, set_name, run["run_id"])

    back = await http.post(
        f"{run['status_url']}/rollback", json={"to_version": "0"}, headers=operator
    )
    assert back.status_code == 202, back.text
    rollback_url = back.json()["status_url"]
    state = await _until(http, rollback_url, operator, lambda p: p["status"] == "completed", 200)
    assert state["counts"]["succeeded"] == ACCEPTANCE_TARGETS
    for target in targets:
        assert await _ledger(target) == []


async def test_pause_from_the_api_resume_with_the_temporal_cli(
    http: httpx.AsyncClient,
    tokens: Tokens,
    make_target: TargetFactory,
    temporal_server: TemporalDevServer,
) -> None:
    label, set_name, _ = await _fleet(http, tokens, make_target, 6)
    operator = tokens.headers("infra-operator")
    run = await _start_run(http, operator, set_name, label, concurrency=1, batch_size=1)
    assert (await http.post(f"{run['status_url']}/pause", headers=operator)).status_code == 202
    state = await _until(
        http,
        run["status_url"],
        operator,
        lambda p: p["status"] == "paused" and p["counts"]["running"] == 0,
        200,
    )
    assert state["counts"]["succeeded"] < 6
    changed = await http.patch(run["status_url"], json={"concurrency": 3}, headers=operator)
    assert changed.json() == {"concurrency": 3}
    bad = await http.patch(run["status_url"], json={"concurrency": 0}, headers=operator)
    assert bad.status_code == 422
    signal = await asyncio.to_thread(
        subprocess.run,
        [
            temporal_binary(),
            "workflow",
            "signal",
            "--workflow-id",
            run["workflow_id"],
            "--name",
            "resume",
            "--address",
            temporal_server.address,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert signal.returncode == 0, signal.stderr
    state = await _until(
        http, run["status_url"], operator, lambda p: p["status"] == "completed", 300
    )
    assert state["counts"]["succeeded"] == 6


async def test_unknown_runs_and_bad_requests(http: httpx.AsyncClient, tokens: Tokens) -> None:
    operator = tokens.headers("infra-operator")
    assert (await http.get("/api/v1/migrations/nope", headers=operator)).status_code == 404
    assert (await http.post("/api/v1/migrations/nope/cancel", headers=operator)).status_code == 404
    no_set = await http.post(
        "/api/v1/migrations", json={"set": "missing", "selector": {"all": True}}, headers=operator
    )
    assert no_set.status_code == 404
    two_selectors = await http.post(
        "/api/v1/migrations",
        json={"set": "x", "selector": {"all": True, "labels": {"a": "b"}}},
        headers=operator,
    )
    assert two_selectors.status_code == 422
    no_connection = await http.post(
        "/api/v1/migrations",
        json={"set": "x", "selector": {"all": True}, "batch_connections": 0},
        headers=operator,
    )
    assert no_connection.status_code == 422
    error = no_connection.json()["error"]
    assert error["type"] == "validation_error" and "batch_connections" in str(error["details"])
    listed = await http.get("/api/v1/migrations", headers=tokens.headers("infra-viewer"))
    assert listed.status_code == 200
    assert "items" in listed.json()


async def test_dynamic_migration_is_a_recorded_set_and_rolls_back(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    label, _, targets = await _fleet(http, tokens, make_target, 3)
    operator = tokens.headers("infra-operator")
    started = await http.post(
        "/api/v1/migrations/dynamic",
        json={
            "description": "add audit table",
            "up_sql": "CREATE TABLE dyn_audit (id int);",
            "down_sql": "DROP TABLE dyn_audit;",
            "selector": {"labels": {"fleet": label}},
        },
        headers=operator,
    )
    assert started.status_code == 202, started.text
    run = started.json()
    state = await _until(
        http, run["status_url"], operator, lambda p: p["status"] == "completed", 200
    )
    assert state["counts"]["succeeded"] == 3
    recorded = (
        await http.get(f"/api/v1/migration-sets/{state['set_name']}", headers=operator)
    ).json()
    assert [m["version"] for m in recorded["migrations"]] == ["1"]
    for target in targets:
        assert await _ledger(target) == ["1"]
    back = await http.post(
        f"{run['status_url']}/rollback", json={"to_version": "0"}, headers=operator
    )
    assert back.status_code == 202
    await _until(
        http, back.json()["status_url"], operator, lambda p: p["status"] == "completed", 200
    )
    for target in targets:
        assert await _ledger(target) == []


async def test_only_an_explicit_id_list_has_a_size_limit(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    """A compact run keeps no entry per target, so a selector by labels (or all) has no size
    limit; an explicit list of ids rides in the request and the run's input: 10,000 at most."""
    operator = tokens.headers("infra-operator")
    too_many = await http.post(
        "/api/v1/migrations/dynamic",
        json={
            "description": "x",
            "up_sql": "SELECT 1;",
            "selector": {"database_ids": [str(uuid.uuid4()) for _ in range(10_001)]},
        },
        headers=operator,
    )
    assert too_many.status_code == 422, too_many.text
    assert too_many.json()["error"]["type"] == "validation_error"


async def test_over_the_budget_pauses_and_says_why_then_cancel_stops_cleanly(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    label, set_name, targets = await _fleet(http, tokens, make_target, 4)
    operator = tokens.headers("infra-operator")
    # A target whose credentials are wrong; named to be resolved first.
    wrong = (await make_target()).create_body(name=f"0-{uuid.uuid4().hex[:8]}")
    wrong.update(password="not-the-password", labels={"fleet": label})
    assert (await http.post("/api/v1/databases", json=wrong, headers=operator)).status_code == 201
    run = await _start_run(
        http,
        operator,
        set_name,
        label,
        concurrency=1,
        batch_size=1,
        failure_budget={"max_failed": 0},
    )
    state = await _until(
        http,
        run["status_url"],
        operator,
        lambda p: p["status"] == "paused" and p["counts"]["running"] == 0,
        300,
    )
    assert state["status"] == "paused"
    assert state["paused_reason"] == "failure budget exceeded: 1 of 5 failed"
    failed = (
        await http.get(run["status_url"], params={"targets": "failed"}, headers=operator)
    ).json()["targets"]
    [error] = [t["error"] for t in failed.values()]
    assert "password authentication failed" in error
    assert (await http.post(f"{run['status_url']}/cancel", headers=operator)).status_code == 202
    state = await _until(
        http, run["status_url"], operator, lambda p: p["status"] == "cancelled", 300
    )
    assert state["status"] == "cancelled"
    assert state["counts"]["failed"] == 1
    assert state["counts"]["pending"] + state["counts"]["succeeded"] == 4
    # Nothing half-applied: every target has all of the set or none of it.
    for target in targets:
        assert sorted(await _ledger(target)) in ([], ["1", "2"])


def own_gateway(settings: Settings, prefix: str) -> tuple[Settings, str, ThreadedServer, int]:
    """Settings on a task queue of the test's own (no other worker serves it) and a started
    gateway on them: the settings, the queue, the server (stop it) and its port."""
    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"task_queue": queue})}
    )
    port = free_port()
    server = ThreadedServer(create_app(own), port, lifespan="on")
    server.start()
    return own, queue, server, port


async def test_worker_killed_mid_run_a_new_worker_finishes_and_nothing_is_applied_twice(
    settings: Settings, tokens: Tokens, make_target: TargetFactory, tmp_path: Path
) -> None:
    # A gateway and worker processes of its own, on a task queue no other worker serves.
    own, queue, server, port = own_gateway(settings, "fleet-kill")
    first = _start_worker(own, queue, tmp_path / "w1.log")
    second = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            label, set_name, targets = await _fleet(http, tokens, make_target, 6, files=SLOW)
            operator = tokens.headers("infra-operator")
            run = await _start_run(
                http,
                operator,
                set_name,
                label,
                concurrency=2,
                batch_size=1,
                heartbeat_timeout_seconds=3,
            )
            await _until(
                http,
                run["status_url"],
                operator,
                lambda p: p["counts"]["succeeded"] >= 2 and p["counts"]["running"] >= 1,
                300,
            )
            # A viewer's stream, open across the kill: it must not break while no worker
            # answers the progress query, and ends with the run.
            events: list[str] = []

            async def watch() -> None:
                async with http.stream("GET", run["stream_url"], headers=operator) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            events.append(line.split(":", 1)[1])

            watcher = asyncio.create_task(watch())
            for _ in range(600):
                if events:
                    break
                await asyncio.sleep(0.1)
            first.kill()  # SIGKILL: no goodbye, its batch is abandoned mid-migration
            await asyncio.to_thread(first.wait, 10)
            # Two query timeouts: a stale snapshot is served while the first query waits, and
            # the next viewer's tick waits for one of its own, which fails too.
            await asyncio.sleep(2 * QUERY_TIMEOUT_SECONDS + 3)
            assert not watcher.done()
            second = _start_worker(own, queue, tmp_path / "w2.log")
            await asyncio.wait_for(watcher, 300)
            final = json.loads(events[-2])
            assert json.loads(events[-1]) == {"status": "completed"}
            assert final["counts"]["succeeded"] == 6
            for target in targets:
                assert sorted(await _ledger(target)) == ["1", "2"]  # each version exactly once
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                await asyncio.to_thread(process.wait, 45)
        server.stop()


async def test_a_run_terminated_through_temporal_is_listed_as_terminated(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory, temporal_client: Client
) -> None:
    """Issue 9, point 12: Temporal's close status wins over the run's own search attribute."""
    label, set_name, _ = await _fleet(http, tokens, make_target, 3, SLOW)
    operator = tokens.headers("infra-operator")
    viewer = tokens.headers("infra-viewer")
    run = await _start_run(http, operator, set_name, label, concurrency=1, batch_size=1)
    await temporal_client.get_workflow_handle(run["workflow_id"]).terminate("test")
    expected = {(): ["terminated"], (("status", "running"),): []}
    for _ in range(100):  # visibility is eventually consistent
        found = {
            filters: [
                item["status"]
                for item in (
                    await http.get(
                        "/api/v1/migrations",
                        params={"set": set_name, **dict(filters)},
                        headers=viewer,
                    )
                ).json()["items"]
            ]
            for filters in expected
        }
        if found == expected:
            break
        await asyncio.sleep(0.1)
    assert found == expected


async def test_rolling_back_a_dry_run_or_an_up_to_date_run_touches_nothing(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    """Issue 9, point 10: only what a run changed is rolled back; dry runs changed nothing."""
    label, set_name, targets = await _fleet(http, tokens, make_target, 2)
    operator = tokens.headers("infra-operator")

    async def finished(**options: Any) -> dict[str, Any]:
        run = await _start_run(http, operator, set_name, label, **options)
        state = await _until(
            http, run["status_url"], operator, lambda p: p["status"] == "completed", 300
        )
        assert state["status"] == "completed"
        return run

    dry = await finished(dry_run=True)
    refused = await http.post(
        f"{dry['status_url']}/rollback", json={"to_version": "0"}, headers=operator
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["type"] == "conflict"
    await finished()
    again = await finished()  # every target already up to date
    refused = await http.post(
        f"{again['status_url']}/rollback", json={"to_version": "0"}, headers=operator
    )
    assert refused.status_code == 409, refused.text
    for target in targets:
        assert sorted(await _ledger(target)) == ["1", "2"]
