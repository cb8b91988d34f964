"""WatchAlertsWorkflow on a real Temporal server and worker: the fleet-wide alert conditions
reach a real webhook receiver signed, once per change (firing, then resolved), never once per
evaluation; plus the replay of its committed history.

The gateway is a small HTTP server serving a scripted ``/metrics``; the failure rate comes from
a run terminated on the test's own task queue; "no worker" from ``min_workers`` 2 with one
worker, and from a watcher that wakes up long after it was due.

To re-record the committed history after an intended change, run
``TENANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows/test_alerts.py`` and commit the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import NotFound
from common.settings import AlertSettings, Settings, WebhookSettings
from models.alerts import (
    AlertName,
    AlertWatchState,
    WatchAlertsInput,
    WatchAlertsResult,
    watch_alerts_workflow_id,
)
from models.webhooks import WebhookEventType
from tests.workflows.test_webhooks import Receiver, _endpoint, _received
from worker.registry import WORKFLOWS, build_activities
from worker.schedules import ensure_alert_watch
from workflows.alerts import WatchAlertsWorkflow

HISTORY = Path(__file__).parent / "histories" / "watch_alerts.json"
SHORT = WebhookSettings(retry_schedule_seconds=[0, 0.3, 0.3], attempt_timeout_seconds=5)
ALERT_TYPES = [
    WebhookEventType.ALERT_FAILURE_RATE,
    WebhookEventType.ALERT_NO_WORKER,
    WebhookEventType.ALERT_GATEWAY_ERRORS,
    WebhookEventType.ALERT_GATEWAY_LATENCY,
]


class FakeGateway:
    """Serves ``/metrics`` as a gateway would: the first read is the baseline, the second adds
    100 requests of which 10 answered 500 and all took 1-2.5 s, every later one adds 100 fast
    200s."""

    def __init__(self) -> None:
        self.reads = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def exposition(self) -> str:
        n = self.reads
        ok = 100 + 90 * (n >= 2) + 100 * max(0, n - 2)
        errors = 10 * (n >= 2)
        fast = 100 + 100 * max(0, n - 2)
        slow = 100 * (n >= 2)
        series = 'method="GET",route="/api/v1/databases"'
        return (
            f'tenantflow_http_requests_total{{{series},status="200"}} {ok}\n'
            f'tenantflow_http_requests_total{{{series},status="500"}} {errors}\n'
            f'tenantflow_http_request_duration_seconds_bucket{{{series},le="0.5"}} {fast}\n'
            f'tenantflow_http_request_duration_seconds_bucket{{{series},le="1.0"}} {fast}\n'
            f'tenantflow_http_request_duration_seconds_bucket{{{series},le="2.5"}} {fast + slow}\n'
            f'tenantflow_http_request_duration_seconds_bucket{{{series},le="+Inf"}} {fast + slow}\n'
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gateway.reads += 1
                body = gateway.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.stop()


@pytest.fixture
def repository(catalog_pool: asyncpg.Pool, settings: Settings) -> WebhookRepository:
    return WebhookRepository(catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto)))


@pytest.fixture
async def receivers(repository: WebhookRepository) -> AsyncIterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()
        with contextlib.suppress(NotFound):
            await repository.delete(receiver.endpoint_id)


async def _terminated_run(client: Client, task_queue: str) -> None:
    """A run that ended terminated on ``task_queue``, visible to visibility queries."""
    handle = await client.start_workflow(
        "RollbackTargetWorkflow",
        id=f"alerts-failed-run-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    await handle.terminate(reason="tests: a failed run for the failure rate")
    query = f"WorkflowId = '{handle.id}' AND ExecutionStatus = 'Terminated'"
    for _ in range(200):  # visibility is eventually consistent
        if [w async for w in client.list_workflows(query)]:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the terminated run never appeared in visibility")


async def test_alert_events_are_sent_signed_once_per_change(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    repository: WebhookRepository,
    receivers: list[Receiver],
    gateway: FakeGateway,
) -> None:
    task_queue = f"alerts-{uuid.uuid4().hex[:8]}"
    alerts = AlertSettings(
        interval_seconds=1,
        failure_rate_min_runs=1,
        min_workers=2,
        gateway_metrics_urls=[gateway.url],
        gateway_min_requests=20,
    )
    _, receiver = await _endpoint(repository, receivers, [(200, {})], ALERT_TYPES)
    await _terminated_run(temporal_client, task_queue)
    worker = Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            catalog_pool,
            CredentialCipher(KeyRing.from_settings(settings.crypto)),
            temporal=temporal_client,
            webhook_settings=SHORT,
            task_queue=task_queue,
            alert_settings=alerts,
        ),
    )
    async with worker:
        # The watcher was due ten minutes ago: no worker ran it in between.
        handle = await temporal_client.start_workflow(
            WatchAlertsWorkflow.run,
            WatchAlertsInput(
                state=AlertWatchState(next_due=datetime.now(UTC) - timedelta(minutes=10)),
                max_evaluations=4,
            ),
            id=f"watch-alerts-test-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        result: WatchAlertsResult = await handle.result()
        bodies = await _received(receiver, 7)

    assert result.evaluations == 4
    assert result.events == 7
    assert result.firing == [AlertName.FAILURE_RATE, AlertName.NO_WORKER]
    assert all(r.verified for r in receiver.received)
    changes = sorted(
        (str(body["type"]), str(_data(body)["status"]), str(body["subject"])) for body in bodies
    )
    assert changes == [
        ("alert.failure_rate", "firing", "alert/failure_rate"),
        ("alert.gateway_errors", "firing", "alert/gateway_errors"),
        ("alert.gateway_errors", "resolved", "alert/gateway_errors"),
        ("alert.gateway_latency", "firing", "alert/gateway_latency"),
        ("alert.gateway_latency", "resolved", "alert/gateway_latency"),
        ("alert.no_worker", "firing", "alert/no_worker"),
        ("alert.no_worker", "resolved", "alert/no_worker"),
    ]
    assert len({body["id"] for body in bodies}) == 7
    by_change = {(str(b["type"]), str(_data(b)["status"])): _data(b) for b in bodies}
    rate = by_change[("alert.failure_rate", "firing")]
    assert (rate["value"], rate["threshold"]) == (1.0, 0.2)
    assert rate["details"] == {"ended": 1, "failed": 1, "window_seconds": 1800}
    assert rate["prometheus_alert"] == "TenantflowRunFailureRate"
    assert rate["runbook"] == "docs/runbooks.md#tenantflowrunfailurerate"
    errors = by_change[("alert.gateway_errors", "firing")]
    assert (errors["value"], errors["threshold"]) == (0.1, 0.05)
    latency = by_change[("alert.gateway_latency", "firing")]
    assert latency["value"] == pytest.approx(2.425)
    resolved = by_change[("alert.gateway_errors", "resolved")]
    assert resolved["firing_since"] == errors["firing_since"]
    assert resolved["resolved_at"] is not None
    late = by_change[("alert.no_worker", "resolved")]
    late_details = late["details"]
    assert isinstance(late_details, dict)
    assert late_details["late_seconds"] >= 600
    workers = by_change[("alert.no_worker", "firing")]
    assert (workers["value"], workers["threshold"]) == (1.0, 2)

    history = await handle.fetch_history()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        HISTORY.write_text(history.to_json())


def _data(body: dict[str, object]) -> dict[str, object]:
    data = body["data"]
    assert isinstance(data, dict)
    return data


async def test_every_worker_joins_one_watcher(temporal_client: Client) -> None:
    task_queue = f"alerts-none-{uuid.uuid4().hex[:8]}"  # no worker: the watcher only waits
    await ensure_alert_watch(temporal_client, AlertSettings(interval_seconds=0), task_queue)
    workflow_id = watch_alerts_workflow_id(task_queue)
    assert not [w async for w in temporal_client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    await ensure_alert_watch(temporal_client, AlertSettings(), task_queue)
    first = await temporal_client.get_workflow_handle(workflow_id).describe()
    await ensure_alert_watch(temporal_client, AlertSettings(), task_queue)
    second = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert first.run_id == second.run_id
    assert second.status is WorkflowExecutionStatus.RUNNING
    await temporal_client.get_workflow_handle(workflow_id).terminate(reason="tests: done")


async def test_committed_history_replays() -> None:
    history = WorkflowHistory.from_json("watch_alerts", HISTORY.read_text())
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
