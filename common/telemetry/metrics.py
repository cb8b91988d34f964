"""Prometheus metrics for the gateway and the worker, with the OpenTelemetry SDK.

Each process role owns a ``MetricsRegistry``: its own ``MeterProvider`` and its own Prometheus
``CollectorRegistry`` (no global state), so a gateway and a worker sharing one process (as in the
tests) never report each other's numbers. Metrics may also be pushed over OTLP.

The worker records through Temporal's metric meters rather than through OpenTelemetry directly:
``activity.metric_meter()`` in activities and ``workflow.metric_meter()`` in workflows (replay-safe:
nothing is recorded while a workflow replays). The worker's Temporal runtime buffers every update
(``MetricBuffer``, durations in seconds), and ``TemporalMetricsBridge`` forwards the buffer into
the worker's OpenTelemetry meter, so the SDK's own ``temporal_*`` metrics and tenantflow's come
out of one endpoint, with one naming scheme, and go over OTLP too when that is on.

Names follow Prometheus conventions: a ``tenantflow_`` prefix, seconds, ``_total`` on counters
(the exporter adds it); no label carries a tenant's or a target's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

from common.settings import TelemetrySettings

log = logging.getLogger(__name__)

# --- names: alert rules and the Grafana dashboard (deploy/) are written against exactly these.
# Counters are named without ``_total``: the Prometheus exporter appends it.
HTTP_REQUESTS = "tenantflow_http_requests"
HTTP_REQUEST_DURATION = "tenantflow_http_request_duration_seconds"
RUNS_STARTED = "tenantflow_runs_started"
RUNS_ENDED = "tenantflow_runs_ended"
RUNS_PAUSED = "tenantflow_runs_paused"
TARGETS_MIGRATED = "tenantflow_targets_migrated"
TARGETS_FAILED = "tenantflow_targets_failed"
TARGET_MIGRATION_DURATION = "tenantflow_target_migration_duration_seconds"
VERSIONS_APPLIED = "tenantflow_versions_applied"
LOCK_TIMEOUT_RETRIES = "tenantflow_lock_timeout_retries"
SERVER_CONNECTIONS_IN_USE = "tenantflow_server_connections_in_use"
PROVISIONING_DURATION = "tenantflow_provisioning_duration_seconds"
EVENTS_RECEIVED = "tenantflow_events_received"
WEBHOOK_DELIVERIES = "tenantflow_webhook_deliveries"
HEALTH_TARGETS = "tenantflow_health_targets"

# Seconds, from a fast HTTP answer to an hour-long migration.
DURATION_BUCKETS: Sequence[float] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
# The Temporal runtime buffers updates between drains; a drain runs every second and per scrape.
BUFFER_SIZE = 100_000
DRAIN_SECONDS = 1.0


def otlp_headers(raw: str | None) -> dict[str, str]:
    """``key=value,key2=value2`` (the OTEL_EXPORTER_OTLP_HEADERS format) as a dict."""
    headers: dict[str, str] = {}
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


class MetricsRegistry:
    """One process role's meter, Prometheus registry and (optionally) OTLP push."""

    def __init__(
        self,
        settings: TelemetrySettings,
        service_name: str,
        *,
        before_collect: Collector | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        if before_collect is not None:
            # Registered first, so it runs (drains the Temporal buffer) before the reader reads.
            self.registry.register(before_collect)
        readers: list[MetricReader] = [
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=self.registry
            )
        ]
        if settings.otlp_metrics_enabled and settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(
                endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/metrics",
                headers=otlp_headers(
                    settings.otlp_headers.get_secret_value() if settings.otlp_headers else None
                ),
                timeout=settings.otlp_timeout_seconds,
            )
            readers.append(
                PeriodicExportingMetricReader(
                    exporter,
                    export_interval_millis=settings.otlp_metrics_interval_seconds * 1000,
                )
            )
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": settings.service_name or service_name}),
        )
        self.meter = self.provider.get_meter("tenantflow")

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def shutdown(self) -> None:
        """Flush an OTLP push and unregister the readers."""
        self.provider.shutdown()


class GatewayMetrics:
    """The gateway's instruments: HTTP traffic and received events."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        meter = registry.meter
        self.http_requests = meter.create_counter(
            HTTP_REQUESTS, description="HTTP requests by route template, method and status."
        )
        self.http_duration = meter.create_histogram(
            HTTP_REQUEST_DURATION,
            unit="s",
            description="HTTP request latency by route template and method.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.events_received = meter.create_counter(
            EVENTS_RECEIVED, description="Events received on /api/v1/events, by type."
        )


class TemporalMetricsBridge(Collector):
    """Forwards the Temporal runtime's buffered metric updates into an OpenTelemetry meter.

    Registered in the worker's Prometheus registry ahead of the reader, so every scrape sees
    every update made before it; a background drain keeps the buffer from filling between
    scrapes and feeds the OTLP push.
    """

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._instruments: dict[str, Any] = {}
        self.meter: Any = None

    def collect(self) -> Iterable[Any]:
        """Drain before the exporter reads (a Prometheus ``Collector`` yielding nothing)."""
        self.drain()
        return []

    def drain(self) -> int:
        """Apply every buffered update; returns how many there were."""
        if self.meter is None:
            return 0
        with self._lock:
            updates = self._buffer.retrieve_updates()
            for update in updates:
                metric = update.metric
                instrument = self._instruments.get(metric.name)
                if instrument is None:
                    instrument = self._instrument(metric.name, metric.kind, metric.unit)
                    self._instruments[metric.name] = instrument
                attributes = _attributes(update.attributes)
                if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    instrument.add(update.value, attributes)
                elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                    instrument.set(update.value, attributes)
                else:
                    instrument.record(update.value, attributes)
            return len(updates)

    def _instrument(self, name: str, kind: int, unit: str | None) -> Any:
        description = name.replace("_", " ")
        if kind == BUFFERED_METRIC_KIND_COUNTER:
            return self.meter.create_counter(name, description=description)
        if kind == BUFFERED_METRIC_KIND_GAUGE:
            return self.meter.create_gauge(name, description=description)
        # Temporal's durations arrive in seconds (MetricBuffer's duration format) with unit "s";
        # the exporter then names them ``*_seconds``.
        return self.meter.create_histogram(
            name,
            unit="s" if unit in ("s", "duration") else (unit or ""),
            description=description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )


def _attributes(raw: Mapping[str, Any]) -> dict[str, str | bool | int | float]:
    return {
        str(k): v if isinstance(v, str | bool | int | float) else str(v) for k, v in raw.items()
    }


class WorkerMetrics:
    """The worker's Temporal runtime (metrics buffered in seconds), bridge, endpoint and drain.

    With metrics off, or with nothing to read them (no port and no OTLP push), the worker keeps
    Temporal's default runtime and records nothing: no cost for numbers nobody reads.
    """

    def __init__(self, settings: TelemetrySettings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.registry: MetricsRegistry | None = None
        self.bridge: TemporalMetricsBridge | None = None
        self.port: int | None = None
        if not settings.metrics_enabled or not (
            settings.worker_metrics_port or settings.otlp_metrics_enabled
        ):
            return
        buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        self.bridge = TemporalMetricsBridge(buffer)
        self.registry = MetricsRegistry(settings, "tenantflow-worker", before_collect=self.bridge)
        self.bridge.meter = self.registry.meter
        self.runtime = Runtime(
            # service_name would be one more constant label on every series.
            telemetry=TelemetryConfig(metrics=buffer, attach_service_name=False)
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Serve ``/metrics`` on the configured port (0: none) and drain in the background."""
        if self.registry is None or self.bridge is None:
            yield
            return
        server = None
        if self.settings.worker_metrics_port:
            from prometheus_client import start_http_server

            server, _thread = start_http_server(
                self.settings.worker_metrics_port,
                addr=self.settings.worker_metrics_host,
                registry=self.registry.registry,
            )
            self.port = server.server_port
            log.info(
                "worker metrics endpoint started",
                extra={"host": self.settings.worker_metrics_host, "port": self.port},
            )
        bridge = self.bridge

        async def drain_forever() -> None:
            while True:
                await asyncio.sleep(DRAIN_SECONDS)
                bridge.drain()

        task = asyncio.create_task(drain_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            bridge.drain()
            if server is not None:
                server.shutdown()
                server.server_close()
            self.registry.shutdown()
