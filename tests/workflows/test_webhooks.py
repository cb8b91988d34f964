"""DeliverWebhookWorkflow on a real Temporal server and worker, POSTing to a real receiver that
verifies every signature with ``standardwebhooks``; plus the replay of its committed history.

To re-record the committed history after an intended change, run
``TENANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows/test_webhooks.py`` and commit the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.webhooks import WebhookActivities, parse_retry_after
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import NotFound
from common.settings import Settings, WebhookSettings
from common.temporal_client import connect_temporal
from models.fleet import FleetStatus
from models.webhooks import (
    DeliveryOutcome,
    DeliveryResult,
    EventOut,
    WebhookCreate,
    WebhookEventType,
    WebhookUpdate,
)
from tests.conftest import LEAK_CANARIES, TargetFactory, Tokens
from tests.workflows.test_fleet import Fleet
from worker.main import run_worker
from worker.registry import WORKFLOWS
from workflows.fleet import MigrateFleetWorkflow
from workflows.webhooks import DeliverWebhookWorkflow, next_delay

HISTORIES = Path(__file__).parent / "histories"
HISTORY = HISTORIES / "deliver_webhook.json"
FLEET_HISTORY = HISTORIES / "migrate_fleet_webhooks.json"
SHORT = WebhookSettings(retry_schedule_seconds=[0, 0.3, 0.3, 0.3], attempt_timeout_seconds=5)


@dataclass
class Received:
    """One request the receiver got, and whether its signature verified."""

    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """A real HTTP server answering from a script (the last answer repeats)."""

    endpoint_id: uuid.UUID
    secret: str
    answers: list[tuple[int, dict[str, str]]]
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Verifier(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                receiver.received.append(Received(headers, body, verified))
                status, extra = receiver.answers[
                    min(len(receiver.received), len(receiver.answers)) - 1
                ]
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
async def webhook_settings(settings: Settings) -> AsyncIterator[Settings]:
    """A worker of the module's own, with a retry schedule of fractions of a second."""
    own = settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(
                update={"task_queue": f"webhooks-{uuid.uuid4().hex[:8]}"}
            ),
            "webhooks": SHORT,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(own, stop=stop, install_signal_handlers=False))
    yield own
    stop.set()
    await asyncio.wait_for(task, timeout=60)


@pytest.fixture
def repository(catalog_pool: asyncpg.Pool, settings: Settings) -> WebhookRepository:
    return WebhookRepository(catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto)))


@pytest.fixture
async def publisher(repository: WebhookRepository, webhook_settings: Settings) -> WebhookActivities:
    client = await connect_temporal(webhook_settings.temporal, crypto=webhook_settings.crypto)
    return WebhookActivities(
        repository,
        temporal=client,
        settings=SHORT,
        task_queue=webhook_settings.temporal.task_queue,
    )


@pytest.fixture
async def receivers(repository: WebhookRepository) -> AsyncIterator[list[Receiver]]:
    """Receivers started by the test; their endpoints are deleted afterwards, so later tests'
    events go only to their own."""
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()
        with contextlib.suppress(NotFound):
            await repository.delete(receiver.endpoint_id)


async def _endpoint(
    repository: WebhookRepository,
    receivers: list[Receiver],
    answers: list[tuple[int, dict[str, str]]],
    types: list[WebhookEventType] | None = None,
) -> tuple[uuid.UUID, Receiver]:
    created = await repository.create(
        WebhookCreate(
            url="http://127.0.0.1:9/placeholder",
            event_types=types or [WebhookEventType.MIGRATION_COMPLETED],
        )
    )
    LEAK_CANARIES.add(created.secret)
    receiver = Receiver(created.id, created.secret, answers)
    receiver.start()
    receivers.append(receiver)
    await repository.update(created.id, WebhookUpdate(url=receiver.url))
    return created.id, receiver


def _event(kind: WebhookEventType = WebhookEventType.MIGRATION_COMPLETED) -> EventOut:
    return EventOut(
        id=f"run-{uuid.uuid4().hex[:12]}-{kind.value}",
        type=kind,
        subject="migrate-fleet-1234",
        data={"run_id": "1234", "succeeded": 3},
        time=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
    )


async def _publish(publisher: WebhookActivities, event: EventOut, endpoint_id: uuid.UUID) -> str:
    """Publish and return the delivery started for ``endpoint_id``."""
    started = (await publisher.publish_event(event)).workflow_ids
    mine = [w for w in started if w.startswith(f"webhook-{endpoint_id}-")]
    assert mine == [f"webhook-{endpoint_id}-{event.id}"]
    return mine[0]


async def _result(client: Client, workflow_id: str) -> DeliveryResult:
    handle: WorkflowHandle[DeliverWebhookWorkflow, DeliveryResult] = client.get_workflow_handle_for(
        DeliverWebhookWorkflow.run, workflow_id
    )
    return await handle.result()


async def test_retries_503_until_delivered_signed_and_deduplicated(
    publisher: WebhookActivities,
    repository: WebhookRepository,
    receivers: list[Receiver],
    temporal_client: Client,
    api: httpx.AsyncClient,
    tokens: Tokens,
) -> None:
    endpoint_id, receiver = await _endpoint(
        repository, receivers, [(503, {}), (503, {}), (200, {})]
    )
    other_id, other = await _endpoint(
        repository, receivers, [(200, {})], [WebhookEventType.DATABASE_DRIFTED]
    )
    event = _event()
    published = await publisher.publish_event(event)
    workflow_id = f"webhook-{endpoint_id}-{event.id}"
    assert workflow_id in published.workflow_ids
    assert not any(str(other_id) in w for w in published.workflow_ids)

    result = await _result(temporal_client, workflow_id)
    assert result.outcome is DeliveryOutcome.DELIVERED
    assert [a.status_code for a in result.attempts] == [503, 503, 200]
    assert all(a.next_attempt_at is not None for a in result.attempts[:2])
    assert result.attempts[-1].next_attempt_at is None
    assert len(receiver.received) == 3
    assert all(r.verified for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {event.id}
    first = receiver.received[0]
    assert first.headers["content-type"] == "application/cloudevents+json"
    body = json.loads(first.body)
    assert body["specversion"] == "1.0"
    assert (body["id"], body["type"], body["subject"]) == (
        event.id,
        "migration.completed",
        "migrate-fleet-1234",
    )
    assert body["data"] == {"run_id": "1234", "succeeded": 3}
    assert other.received == []  # subscribed to another type

    # The same event again: the same delivery, nothing sent twice.
    assert await _publish(publisher, event, endpoint_id) == workflow_id
    assert len(receiver.received) == 3

    handle = temporal_client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    secret = receiver.secret
    assert secret not in history.to_json()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        HISTORY.write_text(history.to_json())

    # Through the API: the delivery is listed with its outcome, and its attempts shown.
    headers = tokens.headers("infra-operator")
    listed: list[dict[str, object]] = []
    for _ in range(100):  # visibility is eventually consistent
        page = await api.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", headers=headers)
        assert page.status_code == 200, page.text
        listed = page.json()["items"]
        if listed and listed[0]["outcome"] == "delivered":
            break
        await asyncio.sleep(0.1)
    assert [(d["event_id"], d["event_type"], d["outcome"]) for d in listed] == [
        (event.id, "migration.completed", "delivered")
    ]
    detail = await api.get(f"/api/v1/webhooks/{endpoint_id}/deliveries/{event.id}", headers=headers)
    assert detail.status_code == 200, detail.text
    assert detail.json()["outcome"] == "delivered"
    assert [a["status_code"] for a in detail.json()["attempts"]] == [503, 503, 200]
    assert secret not in detail.text
    nothing = await api.get(f"/api/v1/webhooks/{other_id}/deliveries", headers=headers)
    assert nothing.json()["items"] == []


async def test_410_disables_the_endpoint_and_stops(
    publisher: WebhookActivities,
    repository: WebhookRepository,
    receivers: list[Receiver],
    temporal_client: Client,
) -> None:
    endpoint_id, receiver = await _endpoint(repository, receivers, [(410, {})])
    event = _event()
    workflow_id = await _publish(publisher, event, endpoint_id)
    result = await _result(temporal_client, workflow_id)
    assert result.outcome is DeliveryOutcome.GONE
    assert [a.status_code for a in result.attempts] == [410]
    assert len(receiver.received) == 1
    endpoint = await repository.get(endpoint_id)
    assert endpoint.enabled is False
    assert endpoint.disabled_reason is not None and "410" in endpoint.disabled_reason
    # A disabled endpoint is not subscribed any more.
    later = (await publisher.publish_event(_event())).workflow_ids
    assert not any(str(endpoint_id) in w for w in later)


async def test_retry_after_is_honoured(
    publisher: WebhookActivities,
    repository: WebhookRepository,
    receivers: list[Receiver],
    temporal_client: Client,
) -> None:
    endpoint_id, receiver = await _endpoint(
        repository, receivers, [(429, {"Retry-After": "2"}), (200, {})]
    )
    workflow_id = await _publish(publisher, _event(), endpoint_id)
    result = await _result(temporal_client, workflow_id)
    assert result.outcome is DeliveryOutcome.DELIVERED
    first, second = result.attempts
    assert (first.status_code, first.retry_after_seconds) == (429, 2.0)
    assert first.next_attempt_at is not None
    # The schedule said 0.3 s; the receiver asked for 2 s, and got them.
    assert first.next_attempt_at - first.at >= timedelta(seconds=2)
    assert second.at >= first.next_attempt_at
    assert len(receiver.received) == 2


@pytest.mark.parametrize("how", ["disabled", "deleted"])
async def test_a_disabled_or_deleted_endpoint_stops_the_retries(
    how: str,
    repository: WebhookRepository,
    receivers: list[Receiver],
    temporal_client: Client,
    webhook_settings: Settings,
) -> None:
    endpoint_id, receiver = await _endpoint(repository, receivers, [(503, {})])
    slow = WebhookActivities(
        repository,
        temporal=temporal_client,
        settings=WebhookSettings(retry_schedule_seconds=[0, 3, 3]),
        task_queue=webhook_settings.temporal.task_queue,
    )
    workflow_id = await _publish(slow, _event(), endpoint_id)
    handle: WorkflowHandle[DeliverWebhookWorkflow, DeliveryResult] = (
        temporal_client.get_workflow_handle_for(DeliverWebhookWorkflow.run, workflow_id)
    )
    for _ in range(200):
        if await handle.query(DeliverWebhookWorkflow.attempts):
            break
        await asyncio.sleep(0.05)
    if how == "disabled":
        await repository.update(endpoint_id, WebhookUpdate(enabled=False))
    else:
        await repository.delete(endpoint_id)
    result = await handle.result()
    assert result.outcome is DeliveryOutcome.STOPPED
    assert [a.status_code for a in result.attempts] == [503, None]
    assert result.attempts[1].error == f"endpoint {how}"
    assert len(receiver.received) == 1


def test_retry_after_bounds_and_parsing() -> None:
    assert next_delay(5, None) == 5
    assert next_delay(5, 1) == 5  # never earlier than the schedule
    assert next_delay(5, 30) == 30
    assert next_delay(5, 86400) == 50  # at most ten times the scheduled delay
    assert next_delay(0.3, 2) == 2  # sub-second schedules are bounded from a 1 s base
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Wed, 02 Dec 2026 12:01:00 GMT", now) == 60
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_committed_history_replays() -> None:
    history = WorkflowHistory.from_json("deliver_webhook", HISTORY.read_text())
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def _received(receiver: Receiver, count: int) -> list[dict[str, object]]:
    """The first ``count`` bodies the receiver got, waiting for them to arrive."""
    for _ in range(600):
        if len(receiver.received) >= count:
            return [json.loads(r.body) for r in receiver.received]
        await asyncio.sleep(0.05)
    pytest.fail(f"the receiver got {len(receiver.received)} of {count} events")


async def test_a_fleet_run_emits_paused_then_completed(
    repository: WebhookRepository,
    receivers: list[Receiver],
    catalog_pool: asyncpg.Pool,
    webhook_settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    _, receiver = await _endpoint(
        repository,
        receivers,
        [(200, {})],
        [
            WebhookEventType.MIGRATION_PAUSED,
            WebhookEventType.MIGRATION_COMPLETED,
            WebhookEventType.MIGRATION_FAILED,
        ],
    )
    fleet = Fleet(catalog_pool, webhook_settings, temporal_client)
    for _ in range(2):
        await fleet.add(await make_target())
    handle = await fleet.start(canary=1, canary_wait_for_resume=True)

    (paused,) = await _received(receiver, 1)
    assert paused["type"] == "migration.paused"
    assert paused["subject"] == f"migrate-fleet-{fleet.label}"
    data = paused["data"]
    assert isinstance(data, dict)
    assert data["status"] == "paused"
    assert data["paused_reason"] == "canary succeeded; resume to continue"

    await handle.signal(MigrateFleetWorkflow.resume)
    result = await handle.result()
    assert result.status is FleetStatus.COMPLETED
    _, completed = await _received(receiver, 2)
    assert completed["type"] == "migration.completed"
    data = completed["data"]
    assert isinstance(data, dict)
    assert data["run_id"] == fleet.label
    assert data["counts"] == {**data["counts"], "succeeded": 2, "failed": 0}
    assert all(r.verified for r in receiver.received)
    assert len(receiver.received) == 2  # one event each, however often the loop ran

    history = await handle.fetch_history()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        FLEET_HISTORY.write_text(history.to_json())


async def test_a_fleet_run_with_a_failed_target_emits_failed(
    repository: WebhookRepository,
    receivers: list[Receiver],
    catalog_pool: asyncpg.Pool,
    webhook_settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    _, receiver = await _endpoint(
        repository,
        receivers,
        [(200, {})],
        [WebhookEventType.MIGRATION_COMPLETED, WebhookEventType.MIGRATION_FAILED],
    )
    fleet = Fleet(catalog_pool, webhook_settings, temporal_client)
    await fleet.add(await make_target())
    await fleet.add(await make_target(), password="not-the-password")
    handle = await fleet.start()
    result = await handle.result()
    assert result.counts.failed == 1
    (failed,) = await _received(receiver, 1)
    assert failed["type"] == "migration.failed"
    data = failed["data"]
    assert isinstance(data, dict)
    assert data["counts"] == {**data["counts"], "failed": 1, "succeeded": 1}
