"""The metrics plumbing without a server: names and units as Prometheus expects them, the bridge
from Temporal's runtime buffer, the worker's endpoint, the OTLP push, the bounded labels."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest
from pydantic import ValidationError
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

from cli.stack import free_port
from common.settings import TelemetrySettings
from common.telemetry import recording
from common.telemetry.metrics import (
    GatewayMetrics,
    MetricsRegistry,
    TemporalMetricsBridge,
    WorkerMetrics,
    otlp_headers,
)
from common.telemetry.workflow_metrics import run_kind
from models.migrations import TargetRunKind
from models.run_state import BUDGET_PAUSE, pause_reason
from models.webhooks import DeliveryAttemptResult


def exposition(registry: MetricsRegistry) -> str:
    return registry.exposition()[0].decode()


def test_gateway_names_follow_prometheus_conventions() -> None:
    metrics = GatewayMetrics(MetricsRegistry(TelemetrySettings(), "test"))
    labels = {"route": "/api/v1/databases/{database_id}", "method": "GET"}
    metrics.http_duration.record(0.02, labels)
    metrics.http_requests.add(1, {**labels, "status": "200"})
    metrics.events_received.add(1, {"type": "tenant.created"})
    text = exposition(metrics.registry)
    assert "# TYPE tenantflow_http_requests_total counter" in text
    assert (
        'tenantflow_http_requests_total{method="GET",'
        'route="/api/v1/databases/{database_id}",status="200"} 1.0'
    ) in text
    assert "# TYPE tenantflow_http_request_duration_seconds histogram" in text
    assert 'tenantflow_http_request_duration_seconds_bucket{le="0.025",' in text
    assert 'tenantflow_events_received_total{type="tenant.created"} 1.0' in text
    # No per-process noise series: no target_info, no scope labels.
    assert "target_info" not in text and "otel_scope" not in text


def test_two_registries_keep_their_numbers_apart() -> None:
    first = GatewayMetrics(MetricsRegistry(TelemetrySettings(), "a"))
    second = GatewayMetrics(MetricsRegistry(TelemetrySettings(), "b"))
    first.events_received.add(1, {"type": "x"})
    assert "tenantflow_events_received_total" in exposition(first.registry)
    assert "tenantflow_events_received_total" not in exposition(second.registry)


def test_bridge_forwards_temporal_runtime_metrics_in_seconds() -> None:
    buffer = MetricBuffer(1000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer, attach_service_name=False))
    bridge = TemporalMetricsBridge(buffer)
    registry = MetricsRegistry(TelemetrySettings(), "worker", before_collect=bridge)
    bridge.meter = registry.meter
    meter = runtime.metric_meter
    meter.create_counter("tenantflow_targets_migrated").add(2, {"set": "core"})
    meter.create_counter("tenantflow_targets_migrated").add(1, {"set": "core"})
    meter.create_histogram_float("tenantflow_target_migration_duration_seconds", unit="s").record(
        0.3, {"set": "core"}
    )
    gauge = meter.create_gauge("tenantflow_server_connections_in_use")
    gauge.set(5, {"server": "eu-1"})
    gauge.set(2, {"server": "eu-1"})
    text = exposition(registry)  # the scrape drains the buffer first
    assert 'tenantflow_targets_migrated_total{set="core"} 3.0' in text
    assert 'tenantflow_target_migration_duration_seconds_count{set="core"} 1.0' in text
    assert 'tenantflow_target_migration_duration_seconds_bucket{le="0.5",set="core"} 1.0' in text
    assert 'tenantflow_server_connections_in_use{server="eu-1"} 2.0' in text
    assert "service_name" not in text
    assert bridge.drain() == 0


def test_metrics_off_or_unread_keep_temporals_default_runtime() -> None:
    off = WorkerMetrics(TelemetrySettings(metrics_enabled=False, worker_metrics_port=9464))
    assert off.runtime is None and off.registry is None
    # No port and no OTLP push: nobody would read them, so nothing is recorded.
    unread = WorkerMetrics(TelemetrySettings(worker_metrics_port=0))
    assert unread.runtime is None and unread.registry is None


async def test_worker_endpoint_serves_the_runtime_metrics() -> None:
    metrics = WorkerMetrics(TelemetrySettings(worker_metrics_port=free_port()))
    assert metrics.runtime is not None
    async with metrics.serving():
        metrics.runtime.metric_meter.create_counter("tenantflow_lock_timeout_retries").add(1)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"http://127.0.0.1:{metrics.port}/metrics")
    assert answer.status_code == 200
    assert "tenantflow_lock_timeout_retries_total 1.0" in answer.text
    # The endpoint is gone with the worker.
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"http://127.0.0.1:{metrics.port}/metrics")


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []  # noqa: RUF012 - test-only

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_metrics_are_pushed_over_otlp_when_asked(collector: str) -> None:
    settings = TelemetrySettings(
        otlp_endpoint=collector,
        otlp_metrics_enabled=True,
        otlp_headers="x-api-key=k1",
    )
    metrics = GatewayMetrics(MetricsRegistry(settings, "tenantflow-gateway"))
    metrics.events_received.add(1, {"type": "tenant.created"})
    assert metrics.registry.provider.force_flush()
    path, headers, body = _Collector.received[-1]
    assert path == "/v1/metrics"
    assert headers.get("x-api-key") == "k1"
    assert b"tenantflow_events_received" in body and b"tenantflow-gateway" in body
    metrics.registry.shutdown()


def test_otlp_metrics_need_an_endpoint() -> None:
    with pytest.raises(ValidationError, match="otlp_metrics_enabled needs otlp_endpoint"):
        TelemetrySettings(otlp_metrics_enabled=True)


def test_otlp_headers() -> None:
    assert otlp_headers("a=1, b = two,broken,=x") == {"a": "1", "b": "two"}
    assert otlp_headers(None) == {}


def test_labels_are_bounded() -> None:
    assert pause_reason(f"{BUDGET_PAUSE}: 3 of 10 failed") == "budget"
    assert pause_reason("canary failed; resume to continue anyway") == "canary"
    assert pause_reason("canary succeeded; resume to continue") == "canary"
    assert pause_reason("paused by an operator") == "operator"
    assert run_kind(SimpleNamespace(kind=TargetRunKind.ROLLBACK, dry_run=False)) == "rollback"
    assert run_kind(SimpleNamespace(kind=TargetRunKind.APPLY, dry_run=True)) == "dry_run"
    assert (
        recording.delivery_outcome(DeliveryAttemptResult(endpoint_state="enabled", status_code=204))
        == "delivered"
    )
    assert (
        recording.delivery_outcome(DeliveryAttemptResult(endpoint_state="enabled", status_code=500))
        == "failed"
    )
    assert (
        recording.delivery_outcome(DeliveryAttemptResult(endpoint_state="enabled", error="refused"))
        == "failed"
    )
    assert (
        recording.delivery_outcome(DeliveryAttemptResult(endpoint_state="enabled", status_code=410))
        == "disabled"
    )
    assert recording.delivery_outcome(DeliveryAttemptResult(endpoint_state="deleted")) == "disabled"


def test_recording_outside_an_activity_does_nothing() -> None:
    recording.lock_timeout_retry()
    recording.webhook_delivery("delivered")
    with recording.server_connection("eu-1"):
        pass
    assert recording._IN_USE["eu-1"] == 0
