"""FleetHealthWorkflow through HTTP (sweeps started and snapshots read through the gateway) on a
real Temporal server and worker, real PostgreSQL clusters (one of them started and stopped by
the test) and a real webhook receiver verifying signatures; plus the replay of its committed
history.

To re-record the committed history after an intended change, run
``TENANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows/test_health.py`` and commit the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from cli.stack import EmbeddedPostgres, free_port
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import NotFound
from common.settings import Settings
from models.assignments import AssignmentSpec
from models.databases import DatabaseCreate
from models.fleet import FleetSelector
from models.health import FleetHealthInput, FleetHealthResult
from models.webhooks import WebhookCreate, WebhookEventType, WebhookUpdate
from tests.conftest import LEAK_CANARIES, TargetFactory, Tokens
from tests.workflows.test_fleet import Fleet
from tests.workflows.test_webhooks import Receiver
from worker.registry import WORKFLOWS
from worker.schedules import ensure_health_schedule, health_schedule_id
from workflows.health import FleetHealthWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")

HISTORY = Path(__file__).parent / "histories" / "fleet_health.json"
HEALTH_EVENTS = [
    WebhookEventType.DATABASE_UNHEALTHY,
    WebhookEventType.DATABASE_RECOVERED,
    WebhookEventType.DATABASE_DRIFTED,
]


@pytest.fixture
async def receiver(catalog_pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Receiver]:
    """A real receiver subscribed to the health events; its endpoint is deleted afterwards."""
    repository = WebhookRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    created = await repository.create(
        WebhookCreate(url="http://127.0.0.1:9/placeholder", event_types=HEALTH_EVENTS)
    )
    LEAK_CANARIES.add(created.secret)
    found = Receiver(created.id, created.secret, [(200, {})])
    found.start()
    await repository.update(created.id, WebhookUpdate(url=found.url))
    yield found
    found.stop()
    with contextlib.suppress(NotFound):
        await repository.delete(created.id)


async def sweep(
    api: httpx.AsyncClient, tokens: Tokens, client: Client, label: str
) -> tuple[FleetHealthResult, WorkflowHandle[FleetHealthWorkflow, FleetHealthResult]]:
    """One sweep over the targets labelled ``label`` (the catalog also holds every other
    test's targets), started through the API, to its end."""
    started = await api.post(
        "/api/v1/health/sweep", params={"label": label}, headers=tokens.headers("infra-operator")
    )
    assert started.status_code == 202, started.text
    handle: WorkflowHandle[FleetHealthWorkflow, FleetHealthResult] = client.get_workflow_handle_for(
        FleetHealthWorkflow.run, started.json()["workflow_id"]
    )
    return await handle.result(), handle


async def snapshot(api: httpx.AsyncClient, tokens: Tokens, database_id: uuid.UUID) -> Any:
    """``GET /api/v1/databases/{id}/health`` as a viewer."""
    found = await api.get(
        f"/api/v1/databases/{database_id}/health", headers=tokens.headers("infra-viewer")
    )
    assert found.status_code == 200, found.text
    return found.json()


async def listed(api: httpx.AsyncClient, tokens: Tokens, label: str, health: str) -> set[str]:
    """Ids of the targets labelled ``label`` that ``?health=`` keeps."""
    found = await api.get(
        "/api/v1/databases",
        params={"label": label, "health": health},
        headers=tokens.headers("infra-viewer"),
    )
    assert found.status_code == 200, found.text
    return {d["id"] for d in found.json()["items"]}


def events_about(receiver: Receiver, database_ids: set[uuid.UUID]) -> list[tuple[str, str]]:
    """(type, database id) of every verified delivery about ``database_ids``."""
    found: list[tuple[str, str]] = []
    for item in receiver.received:
        assert item.verified
        body = json.loads(item.body)
        database_id = body["data"].get("database_id")
        if database_id is not None and uuid.UUID(database_id) in database_ids:
            found.append((body["type"], database_id))
    return found


async def wait_for(receiver: Receiver, database_ids: set[uuid.UUID], count: int) -> None:
    """Poll until ``count`` deliveries about ``database_ids`` arrived (30 s at most)."""
    for _ in range(600):
        if len(events_about(receiver, database_ids)) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"expected {count} events, got {events_about(receiver, database_ids)}")


async def test_one_altered_target_of_five_is_drifted_and_named(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
    receiver: Receiver,
) -> None:
    fleet = Fleet(catalog_pool, settings, temporal_client)
    targets = [await make_target() for _ in range(5)]
    for target in targets:
        await fleet.add(target)
    migrated = await (await fleet.start()).result()
    assert migrated.counts.succeeded == 5
    await AssignmentRepository(catalog_pool).put(
        fleet.set_name, AssignmentSpec(selector={"fleet": fleet.label})
    )
    conn = await targets[2].connect()
    try:
        await conn.execute("ALTER TABLE b ADD COLUMN note text")
    finally:
        await conn.close()
    registered = (await fleet.repository.list(labels={"fleet": fleet.label})).items
    ids = {d.id for d in registered}
    altered = next(d.id for d in registered if d.database == targets[2].database)

    result, handle = await sweep(api, tokens, temporal_client, f"fleet={fleet.label}")

    snapshots = {i: await snapshot(api, tokens, i) for i in ids}
    drifted = [i for i, s in snapshots.items() if s["drift"]["drifted"]]
    assert drifted == [altered]
    report = snapshots[altered]["drift"]
    assert report["differences"] == ["table b: column note added"]
    assert report["source"] == "reference" and report["version"] == "2"
    for found in snapshots.values():
        assert found["reachable"] and found["ledger_version"] == "2"
        assert found["behind_sets"] == [] and found["latency_ms"] is not None
        assert found["sets"] == [
            {"set_name": fleet.set_name, "version": "2", "expected": "2", "behind": False}
        ]
        assert found["server_version"] and found["fingerprint"]
    assert len({s["fingerprint"] for s in snapshots.values()}) == 2
    assert result.counts.drifted >= 1 and result.counts.checked >= 5
    label = f"fleet={fleet.label}"
    assert await listed(api, tokens, label, "drifted") == {str(altered)}
    assert await listed(api, tokens, label, "unreachable") == set()
    assert await listed(api, tokens, label, "behind") == set()
    drift = await api.get(
        "/api/v1/drift", params={"set": fleet.set_name}, headers=tokens.headers("infra-viewer")
    )
    assert drift.status_code == 200, drift.text
    versions = drift.json()["versions"]
    assert [(v["version"], v["targets"]) for v in versions] == [("2", 5)]
    assert [d["database_id"] for d in versions[0]["drifted"]] == [str(altered)]
    assert versions[0]["drifted"][0]["differences"] == ["table b: column note added"]
    await wait_for(receiver, set(ids), 1)
    assert events_about(receiver, set(ids)) == [("database.drifted", str(altered))]

    # Nothing changed: the next sweep sends nothing at all.
    again, _ = await sweep(api, tokens, temporal_client, f"fleet={fleet.label}")
    assert again.counts.events == 0
    assert len(events_about(receiver, set(ids))) == 1

    history = await handle.fetch_history()
    await Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter
    ).replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        HISTORY.write_text(history.to_json())


async def _second_cluster_targets(
    cluster: EmbeddedPostgres, repository: DatabaseRepository, label: str
) -> set[uuid.UUID]:
    LEAK_CANARIES.add(cluster.password)
    ids: set[uuid.UUID] = set()
    for _ in range(2):
        name = f"far_{uuid.uuid4().hex[:8]}"
        await cluster.create_database(name)
        created = await repository.create(
            DatabaseCreate.model_validate(
                {
                    "name": name.replace("_", "-"),
                    "host": cluster.host,
                    "port": cluster.port,
                    "database": name,
                    "user": cluster.user,
                    "password": cluster.password,
                    "labels": {"health": label},
                }
            )
        )
        ids.add(created.id)
    return ids


async def test_a_stopped_cluster_turns_unhealthy_then_recovers_once(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    service_dir: Path,
    receiver: Receiver,
) -> None:
    cluster = EmbeddedPostgres(service_dir / "second", free_port())
    cluster.start()
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    label = uuid.uuid4().hex[:8]
    try:
        ids = await _second_cluster_targets(cluster, repository, label)
        first, _ = await sweep(api, tokens, temporal_client, f"health={label}")
        for i in ids:
            assert (await snapshot(api, tokens, i))["reachable"]
        assert events_about(receiver, ids) == []

        cluster.stop()
        down, _ = await sweep(api, tokens, temporal_client, f"health={label}")
        assert down.counts.unreachable >= 2
        for i in ids:
            found = await snapshot(api, tokens, i)
            assert not found["reachable"] and found["error"]
            assert cluster.password not in found["error"]
        assert await listed(api, tokens, f"health={label}", "unreachable") == {str(i) for i in ids}
        await wait_for(receiver, ids, 2)
        assert sorted(events_about(receiver, ids)) == sorted(
            ("database.unhealthy", str(i)) for i in ids
        )

        cluster.start()
        await sweep(api, tokens, temporal_client, f"health={label}")
        await wait_for(receiver, ids, 4)
        assert sorted(events_about(receiver, ids)[2:]) == sorted(
            ("database.recovered", str(i)) for i in ids
        )
        assert await listed(api, tokens, f"health={label}", "unreachable") == set()

        quiet, _ = await sweep(api, tokens, temporal_client, f"health={label}")
        assert quiet.counts.events == 0
        assert len(events_about(receiver, ids)) == 4
        assert first.counts.checked >= 2
    finally:
        cluster.stop()
        for i in await _registered(catalog_pool, cluster.port):
            await repository.delete(i)


async def _registered(pool: asyncpg.Pool, port: int) -> list[uuid.UUID]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM databases WHERE port = $1", port)]


async def test_the_schedule_is_created_updated_and_removed(
    temporal_client: Client, settings: Settings
) -> None:
    queue = f"schedule-{uuid.uuid4().hex[:8]}"
    wanted = settings.health.model_copy(update={"interval_seconds": 3600})
    await ensure_health_schedule(temporal_client, wanted, queue)
    handle = temporal_client.get_schedule_handle(health_schedule_id(queue))
    described = await handle.describe()
    assert described.schedule.spec.intervals[0].every.total_seconds() == 3600
    await ensure_health_schedule(
        temporal_client, wanted.model_copy(update={"interval_seconds": 600}), queue
    )
    described = await handle.describe()
    assert described.schedule.spec.intervals[0].every.total_seconds() == 600
    await ensure_health_schedule(
        temporal_client, wanted.model_copy(update={"interval_seconds": 0}), queue
    )
    with pytest.raises(Exception, match=r"(?i)not found|not exist"):
        await handle.describe()
    # Deleting what is not there is fine (a worker restarted with the schedule disabled).
    await ensure_health_schedule(
        temporal_client, wanted.model_copy(update={"interval_seconds": 0}), queue
    )


async def test_a_large_sweep_continues_as_new_and_checks_every_target_once(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    sweep = {"sweep": uuid.uuid4().hex[:10]}
    for _ in range(3):
        target = await make_target()
        body = target.create_body(name=f"can-{uuid.uuid4().hex[:8]}", labels=sweep)
        await repository.create(DatabaseCreate.model_validate(body))
    total = 3
    run_id = uuid.uuid4().hex[:12]
    handle = await temporal_client.start_workflow(
        FleetHealthWorkflow.run,
        # One page of two targets per run: every page after the first starts a new run. Scoped
        # by labels: the catalog also holds every other test's targets.
        FleetHealthInput(
            run_id=run_id,
            selector=FleetSelector(labels=sweep),
            page_size=2,
            continue_after_events=1,
        ),
        id=f"fleet-health-{run_id}",
        task_queue=settings.temporal.task_queue,
    )
    result = await handle.result()
    assert result.run_id == run_id
    assert result.counts.checked == total
    described = await handle.describe()
    assert described.run_id != handle.first_execution_run_id
    checked = await catalog_pool.fetchval(
        "SELECT count(*) FROM target_health WHERE run_id = $1", run_id
    )
    assert checked == total
