"""Settings groups of the features: webhooks, alerts, health sweeps, monitoring, telemetry,
provisioning, the network allow-list. Part of ``common.settings``, which re-exports them."""

from __future__ import annotations

from ipaddress import ip_network
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, model_validator


class WebhookSettings(BaseModel):
    """Outgoing webhooks: the delivery schedule and the HTTP attempt's limits."""

    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        max_length=20,
        description="Delay before each delivery attempt, each 0-604800: the Standard Webhooks "
        "schedule (at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; about 28 h in all). Its "
        "length is the number of attempts. Tests use fractions of a second.",
    )
    attempt_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="How long one POST may take before it counts as failed.",
    )

    @model_validator(mode="after")
    def _delays_are_sane(self) -> WebhookSettings:
        if any(d < 0 or d > 7 * 86400 for d in self.retry_schedule_seconds):
            raise ValueError("retry delays must be between 0 and 7 days")
        return self


class AlertSettings(BaseModel):
    """The webhook side of the alert rules (``WatchAlertsWorkflow``): the same conditions and
    thresholds as deploy/prometheus/alerts.yml, for teams without Prometheus."""

    interval_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="Seconds between evaluations. `0`: workers do not start the watcher, and a "
        "running one ends at its next evaluation. The test fixtures set 0.",
    )
    failure_rate: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="`alert.failure_rate` fires when more than this share of the runs (fleet, "
        "target, rollback) that ended within the window failed, were terminated or timed out.",
    )
    failure_rate_window_seconds: int = Field(
        default=1800,
        ge=60,
        le=7 * 86400,
        description="The window (Temporal visibility: runs closed this recently on the task "
        "queue).",
    )
    failure_rate_min_runs: int = Field(
        default=5, ge=1, description="Fewer ended runs in the window never fire it."
    )
    min_workers: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="`alert.no_worker` fires when fewer workers poll the task queue (for "
        "workflow and activity tasks). Set it to the replica count: the watcher runs on a "
        "worker, so the survivors report a loss; the loss of the last one is reported as "
        "`resolved` when a worker is back (see the runbook).",
    )
    no_worker_seconds: int = Field(
        default=120,
        ge=10,
        le=86400,
        description="A poller unseen for this long is gone; a watcher that wakes up this much "
        "later than due reports the outage.",
    )
    gateway_metrics_urls: list[str] = Field(
        default_factory=list,
        description='Every gateway\'s `/metrics` (`["http://gateway:8000/metrics"]` in '
        "compose; `tenantflow dev` sets its own). Empty: `alert.gateway_errors` and "
        "`alert.gateway_latency` are not evaluated.",
    )
    gateway_error_ratio: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="`alert.gateway_errors`: share of 5xx answers between two evaluations.",
    )
    gateway_latency_seconds: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="`alert.gateway_latency`: p95 request duration between two evaluations "
        "(Server-Sent Event streams left out).",
    )
    gateway_min_requests: int = Field(
        default=20,
        ge=1,
        description="Fewer requests between two evaluations judge neither gateway alert.",
    )


class HealthSettings(BaseModel):
    """Fleet health sweeps (``FleetHealthWorkflow``) run by a Temporal Schedule."""

    interval_seconds: int = Field(
        default=300,
        ge=0,
        le=7 * 86400,
        description="Seconds between scheduled sweeps; `0` disables them and deletes the "
        "schedule at the next worker start. The test fixtures set 0.",
    )
    connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="How long connecting to one target may take before it counts as unreachable.",
    )
    concurrency: int = Field(
        default=8, ge=1, le=100, description="Batches of targets checked at once by one sweep."
    )
    batch_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Targets per `check_health_batch` activity (checked concurrently within it).",
    )


class MonitoringSettings(BaseModel):
    """The monitoring API (``/api/v1/monitoring``): one snapshot shared by every viewer."""

    snapshot_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Longest a snapshot is served before the next viewer triggers one new "
        "computation (which all concurrent viewers share). `0`: computed for each call "
        "(concurrent calls still share one).",
    )
    window_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 90,
        description="Runs by outcome, failure rate and per-target times cover fleet runs "
        "closed this recently.",
    )
    max_active_runs: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="Open runs listed with their progress (one progress query each, through "
        "the progress cache).",
    )
    sampled_runs: int = Field(
        default=20,
        ge=0,
        le=500,
        description="Newest closed runs whose results give the failure rate and the p50/p95 "
        "per-target migration time. Each one's history is read once per gateway process. `0` "
        "leaves both empty.",
    )
    latency_samples: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Request latencies kept per route template (the newest).",
    )
    latency_window_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="Request latencies older than this are left out of the percentiles.",
    )


class TelemetrySettings(BaseModel):
    """Observability: traces exported over OTLP (and metrics); everything is off by default."""

    # --- traces (common/telemetry/tracing.py) ---
    traces_enabled: bool = Field(
        default=False,
        description="Trace HTTP requests, workflows, activities and their SQL. Needs "
        "`OTLP_ENDPOINT`. Set it on the gateway and on every worker: the trace ends at a "
        "worker without it.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="Base URL (http:// or https://) of an OTLP/HTTP collector (OpenTelemetry "
        "Collector, Jaeger, Tempo, ...), e.g. `http://otel-collector:4318`; spans are posted to "
        "`{OTLP_ENDPOINT}/v1/traces` as protobuf. OTLP over gRPC is not supported.",
    )
    otlp_headers: SecretStr | None = Field(
        default=None,
        description="Headers sent to the collector, `key=value` pairs separated by commas (the "
        "`OTEL_EXPORTER_OTLP_HEADERS` format), e.g. a vendor's API key. Never logged.",
    )
    otlp_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="Timeout of one export request. Exports run in a background thread; a "
        "collector that is down loses spans, never slows a request.",
    )
    service_name: str | None = Field(
        default=None,
        description="`service.name` of the process's spans; unset: `tenantflow-gateway` or "
        "`tenantflow-worker`.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces (HTTP requests) recorded. Workflows, activities and "
        "SQL follow the decision of the request that started them, so a trace is either whole "
        "or absent.",
    )

    # --- metrics (common/telemetry/metrics.py) ---
    metrics_enabled: bool = Field(
        default=True,
        description="Prometheus metrics: the gateway serves `/metrics` (unauthenticated, like "
        "`/health`), the worker records into its Temporal runtime. `false`: `/metrics` answers "
        "404 and the worker keeps Temporal's default runtime (records nothing).",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the worker's metrics endpoint binds; `0.0.0.0` in a container "
        "that Prometheus scrapes from outside.",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus endpoint (any path answers, `/metrics` by "
        "convention): tenantflow's worker metrics and the Temporal SDK's `temporal_*` ones, "
        "durations in seconds. `0` serves none (the default, so several workers on one host "
        "never collide; compose and `make dev` use 9464), and then, without "
        "`OTLP_METRICS_ENABLED`, the worker records nothing.",
    )
    otlp_metrics_enabled: bool = Field(
        default=False,
        description="Also push the same metrics to `{OTLP_ENDPOINT}/v1/metrics` (OTLP/HTTP, "
        "protobuf, `OTLP_HEADERS` sent), for a collector instead of (or besides) a Prometheus "
        "scrape. Needs `OTLP_ENDPOINT`.",
    )
    otlp_metrics_interval_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="How often metrics are pushed over OTLP (cumulative).",
    )

    @model_validator(mode="after")
    def _otlp_metrics_need_an_endpoint(self) -> TelemetrySettings:
        if self.otlp_metrics_enabled and not self.otlp_endpoint:
            raise ValueError(
                "otlp_metrics_enabled needs otlp_endpoint (an OTLP/HTTP collector URL)"
            )
        return self

    @model_validator(mode="after")
    def _traces_need_an_endpoint(self) -> TelemetrySettings:
        if self.traces_enabled and not self.otlp_endpoint:
            raise ValueError("traces_enabled needs otlp_endpoint (an OTLP/HTTP collector URL)")
        if self.otlp_endpoint and urlsplit(self.otlp_endpoint).scheme not in ("http", "https"):
            raise ValueError("otlp_endpoint must be an http:// or https:// URL")
        return self


class ProvisioningSettings(BaseModel):
    """Tenant provisioning (``ProvisionTenantWorkflow``)."""

    templates: bool = Field(
        default=True,
        description="`database` mode: copy a new tenant's database from a template database "
        "kept at its sets' versions (`CREATE DATABASE ... TEMPLATE`, the provisioning fast "
        "path; built by `BuildTenantTemplateWorkflow` the first time it is needed). `false`: "
        "always create the database empty and migrate it. See [the fast "
        "path](api.md#the-template-fast-path).",
    )


# Addresses no target or server should be on: the local host's "this network", link-local
# ranges (where every cloud's instance metadata lives) and the metadata services outside them.
DEFAULT_DENIED_NETWORKS = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
    "169.254.0.0/16",  # IPv4 link-local: 169.254.169.254 (AWS, GCP, Azure, OCI, OpenStack, ...)
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure WireServer
    "192.0.0.192/32",  # Oracle Cloud metadata (legacy)
    "::/128",  # the unspecified address
    "fe80::/10",  # IPv6 link-local (fe80::a9fe:a9fe: OpenStack metadata)
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "fd20:ce::254/128",  # Google Cloud metadata over IPv6
)


class NetworkSettings(BaseModel):
    """The networks target databases and servers may be on: checked when one is registered or
    its host changes (literal addresses) and on every worker connection (resolved addresses)."""

    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("0.0.0.0/0"), ip_network("::/0")],
        max_length=1000,
        description="CIDR networks targets and servers may be on, as a JSON list, e.g. "
        '`["10.20.0.0/16", "fd12:3456::/48"]`. An address in none of them is refused. The '
        "default allows every address except `DENIED_NETWORKS`.",
    )
    denied_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network(n) for n in DEFAULT_DENIED_NETWORKS],
        max_length=1000,
        description="CIDR networks refused even inside an allowed one. The most specific "
        "network of the two lists containing an address decides, and the same network in both "
        "is allowed, so listing `169.254.0.0/16` (or a smaller part of it) in `ALLOWED_NETWORKS` "
        "lifts the default refusal of link-local addresses; `[]` refuses nothing by itself.",
    )
    allow_unix_sockets: bool = Field(
        default=True,
        description="Accept targets and servers whose host is a Unix socket directory (starting "
        "with `/`), which reach a PostgreSQL on the worker's own machine; the development stack "
        "and the tests use them.",
    )
    resolve_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a worker waits for DNS to resolve a target's host name before "
        "the connection counts as failed.",
    )
