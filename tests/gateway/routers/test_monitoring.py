"""``/api/v1/monitoring`` on the real gateway, worker, Temporal and PostgreSQL: a finished run
and a health sweep in the summary, a paused run with its progress, latencies and the task queue
in the performance view, one computation for 20 viewers, and Temporal down as a 503.

The catalog and Temporal are shared with other tests: assertions are on this test's own set and
labels, or are lower bounds on global counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from cli.stack import free_port
from common.settings import MonitoringSettings, Settings
from gateway.app import create_app
from gateway.monitoring import LatencyWindow, SnapshotCache
from tests.conftest import TargetFactory, Tokens, serve

pytestmark = pytest.mark.usefixtures("running_worker")

FILES = {"V1__a.sql": "CREATE TABLE a (id int);", "V2__b.sql": "CREATE TABLE b (id int);"}
SUMMARY = "/api/v1/monitoring/summary"
PERFORMANCE = "/api/v1/monitoring/performance"


def _with_monitoring(settings: Settings, **values: Any) -> Settings:
    return settings.model_copy(update={"monitoring": MonitoringSettings(**values)})


@pytest.fixture
async def fresh(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose snapshots are never reused: each call shows the state of now."""
    async for client in serve(create_app(_with_monitoring(settings, snapshot_seconds=0))):
        yield client


async def _register_set(api: httpx.AsyncClient, tokens: Tokens) -> str:
    name = f"mon-{uuid.uuid4().hex[:8]}"
    created = await api.post(
        "/api/v1/migration-sets",
        json={"name": name, "files": FILES},
        headers=tokens.headers("infra-operator"),
    )
    assert created.status_code == 201, created.text
    return name


async def _register(api: httpx.AsyncClient, tokens: Tokens, body: dict[str, object]) -> None:
    created = await api.post(
        "/api/v1/databases", json=body, headers=tokens.headers("infra-operator")
    )
    assert created.status_code == 201, created.text


async def test_summary_after_a_finished_run_and_a_sweep(
    fresh: httpx.AsyncClient,
    tokens: Tokens,
    make_target: TargetFactory,
    temporal_client: Client,
) -> None:
    operator, viewer = tokens.headers("infra-operator"), tokens.headers("infra-viewer")
    label = uuid.uuid4().hex[:8]
    set_name = await _register_set(fresh, tokens)
    assigned = await fresh.put(
        f"/api/v1/assignments/{set_name}", json={"selector": {"mon": label}}, headers=operator
    )
    assert assigned.status_code == 200, assigned.text
    good, stuck, locked = [await make_target() for _ in range(3)]
    # Already has table b: version 2 fails there, so it stays at 1 (behind, with an extra table).
    conn = await stuck.connect()
    try:
        await conn.execute("CREATE TABLE b (id int)")
    finally:
        await conn.close()
    for target, password in ((good, None), (stuck, None), (locked, "not-the-password")):
        body = target.create_body(name=f"m-{uuid.uuid4().hex[:8]}", labels={"mon": label})
        if password:
            body["password"] = password  # its credentials fail: failed in the run, unreachable
        await _register(fresh, tokens, body)

    started = await fresh.post(
        "/api/v1/migrations",
        json={"set": set_name, "selector": {"labels": {"mon": label}}},
        headers=operator,
    )
    assert started.status_code == 202, started.text
    await temporal_client.get_workflow_handle(started.json()["workflow_id"]).result()
    sweep = await fresh.post(
        "/api/v1/health/sweep", params={"label": f"mon={label}"}, headers=operator
    )
    assert sweep.status_code == 202, sweep.text
    await temporal_client.get_workflow_handle(sweep.json()["workflow_id"]).result()

    response = await fresh.get(SUMMARY, params={"label": f"mon={label}"}, headers=viewer)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["labels"] == {"mon": label}
    assert summary["outcomes"]["completed"] >= 1
    targets = summary["targets"]
    assert targets["sampled_runs"] >= 1
    assert targets["succeeded"] >= 1 and targets["failed"] >= 2
    assert 0 < targets["failure_rate"] < 1
    assert summary["target_migration_time"]["samples"] >= 1
    assert summary["target_migration_time"]["p50_ms"] is not None
    assert summary["target_migration_time"]["p95_ms"] >= summary["target_migration_time"]["p50_ms"]
    health = summary["health"]
    # The stuck target's extra table b is drift against the set replayed to version 1.
    assert (health["checked"], health["unreachable"], health["behind"], health["drifted"]) == (
        3,
        1,
        1,
        1,
    )
    [ours_set] = [s for s in health["sets"] if s["set_name"] == set_name]
    assert ours_set["versions"] == {"1": 1, "2": 1}
    assert (ours_set["targets"], ours_set["behind"], ours_set["drifted"]) == (2, 1, 1)
    assert locked.password not in response.text
    await fresh.delete(f"/api/v1/assignments/{set_name}", headers=operator)


async def test_a_paused_run_is_listed_with_its_progress(
    fresh: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    operator, viewer = tokens.headers("infra-operator"), tokens.headers("infra-viewer")
    label = uuid.uuid4().hex[:8]
    set_name = await _register_set(fresh, tokens)
    for _ in range(2):
        target = await make_target()
        body = target.create_body(name=f"m-{uuid.uuid4().hex[:8]}", labels={"mon": label})
        await _register(fresh, tokens, body)
    started = await fresh.post(
        "/api/v1/migrations",
        json={
            "set": set_name,
            "selector": {"labels": {"mon": label}},
            "canary": 1,
            "canary_wait_for_resume": True,
        },
        headers=operator,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    run: dict[str, Any] = {}
    for _ in range(200):
        summary = (await fresh.get(SUMMARY, headers=viewer)).json()
        run = next((r for r in summary["active_runs"] if r["run_id"] == run_id), {})
        if run.get("status") == "paused":
            break
        await asyncio.sleep(0.2)
    assert run["status"] == "paused", run
    assert run["set_name"] == set_name
    assert run["total"] == 2 and run["counts"]["succeeded"] == 1
    assert run["percent_done"] == 50.0
    assert run["paused_reason"]
    cancelled = await fresh.post(f"/api/v1/migrations/{run_id}/cancel", headers=operator)
    assert cancelled.status_code == 202


async def test_performance_shows_route_latencies_and_the_polled_queue(
    fresh: httpx.AsyncClient, tokens: Tokens, settings: Settings
) -> None:
    viewer = tokens.headers("infra-viewer")
    for _ in range(3):
        assert (await fresh.get("/api/v1/auth/me", headers=viewer)).status_code == 200
    await fresh.get("/api/v1/no-such-route", headers=viewer)
    response = await fresh.get(PERFORMANCE, headers=viewer)
    assert response.status_code == 200, response.text
    performance = response.json()
    routes = {r["route"]: r for r in performance["routes"]}
    me = routes["GET /api/v1/auth/me"]
    assert me["count"] == 3
    assert 0 <= me["p50_ms"] <= me["p95_ms"] <= me["p99_ms"] <= me["max_ms"]
    assert routes["(unmatched)"]["count"] == 1
    assert performance["latency_scope"] == "process"
    queues = {q["type"]: q for q in performance["task_queues"]}
    assert set(queues) == {"workflow", "activity"}
    for queue in queues.values():
        assert queue["task_queue"] == settings.temporal.task_queue
        assert queue["polled"] is True and queue["pollers"]
        assert queue["pollers"][0]["identity"]
        assert queue["backlog"] is None or queue["backlog"] >= 0


async def test_twenty_viewers_cost_one_computation(settings: Settings, tokens: Tokens) -> None:
    app = create_app(_with_monitoring(settings, snapshot_seconds=60))
    viewer = tokens.headers("infra-viewer")
    async for api in serve(app):
        responses = await asyncio.gather(*(api.get(SUMMARY, headers=viewer) for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        assert len({r.content for r in responses}) == 1  # the very same snapshot
        assert app.state.monitoring.snapshots.computations == 1
        again = await api.get(SUMMARY, headers=viewer)
        assert again.content == responses[0].content
        assert app.state.monitoring.snapshots.computations == 1


async def test_temporal_unreachable_is_a_503_envelope(settings: Settings, tokens: Tokens) -> None:
    temporal = settings.temporal.model_copy(update={"address": f"127.0.0.1:{free_port()}"})
    down = settings.model_copy(update={"temporal": temporal})
    viewer = tokens.headers("infra-viewer")
    async for api in serve(create_app(down)):
        for path in (SUMMARY, PERFORMANCE):
            response = await api.get(path, headers=viewer)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "dependency_unavailable"
            assert error["details"]["dependency"] == "temporal"


@pytest.mark.parametrize("path", [SUMMARY, PERFORMANCE])
async def test_permissions(fresh: httpx.AsyncClient, tokens: Tokens, path: str) -> None:
    assert (await fresh.get(path)).status_code == 401
    allowed = await fresh.get(path, headers=tokens.headers("infra-viewer"))
    assert allowed.status_code == 200
    refused = await fresh.get(path, headers=tokens.headers("tenant-credentials"))
    assert refused.status_code == 403


# -- the machinery alone (no services) ----------------------------------------------------------
async def test_a_failed_computation_reaches_its_viewers_and_is_not_kept() -> None:
    cache = SnapshotCache(max_age=60)
    calls = 0

    async def broken() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("down")

    results = await asyncio.gather(
        *(cache.get("k", broken) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results) and calls == 1

    async def working() -> bytes:
        return b"ok"

    assert await cache.get("k", working) == b"ok"
    assert cache.computations == 2


def test_the_latency_window_is_bounded_and_ages_out() -> None:
    now = [0.0]
    window = LatencyWindow(samples=10, max_age=60, clock=lambda: now[0])
    for ms in range(100):
        window.record("GET /x", float(ms))
    [route] = window.summary()
    assert (route.count, route.p50_ms, route.max_ms) == (10, 94.0, 99.0)
    now[0] = 61.0
    assert window.summary() == []
