"""Settings for every tenantflow process, loaded from ``TENANTFLOW_*`` variables and ``.env``.

Nested sections use ``__`` as the delimiter: ``TENANTFLOW_TEMPORAL__ADDRESS=temporal:7233``.
Every option is documented in ``.env.example`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.auth import DEFAULT_ROLE_PERMISSIONS, Permission

DEV_CATALOG_DSN = "postgresql://postgres@127.0.0.1:15432/tenantflow"
DEV_ISSUER_PORT = 18080
DEV_REALM = "tenantflow"
DEV_ISSUER_URL = f"http://127.0.0.1:{DEV_ISSUER_PORT}/realms/{DEV_REALM}"
# Keys of the local dev issuer carry this key-id prefix; production refuses such tokens.
DEV_KEY_ID_PREFIX = "tenantflow-dev-"


class Profile(StrEnum):
    """Where the process runs; ``production`` refuses unsafe values."""

    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class CatalogSettings(BaseModel):
    """The control-plane PostgreSQL database (targets, migration sets, audit)."""

    dsn: SecretStr = Field(
        default=SecretStr(DEV_CATALOG_DSN),
        description="libpq URL of the catalog database. May contain the password (URL-encode "
        "special characters); never logged. The production profile requires a password and "
        "refuses the default.",
    )
    min_pool_size: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Connections each process opens at start-up and keeps. Must not exceed "
        "`MAX_POOL_SIZE`.",
    )
    max_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="Upper bound of the connection pool of each gateway and each worker "
        "process. Size PostgreSQL's `max_connections` for (gateways + workers) times this value.",
    )
    connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Timeout of one connection attempt; also the timeout of `tenantflow "
        "check`'s catalog probe.",
    )
    startup_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="How long start-up keeps retrying an unreachable catalog (backing off from "
        "0.2 s to 2 s) before the process gives up. `0` tries once.",
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> CatalogSettings:
        if self.min_pool_size > self.max_pool_size:
            raise ValueError("min_pool_size must not exceed max_pool_size")
        return self

    def redacted_dsn(self) -> str:
        """The DSN with any password replaced, safe for logs and error messages."""
        return redact_dsn(self.dsn.get_secret_value())


class TemporalSettings(BaseModel):
    """Where the Temporal frontend is and which task queue tenantflow's workers poll."""

    address: str = Field(
        default="127.0.0.1:7233",
        min_length=3,
        description="`host:port` of the Temporal frontend (gRPC).",
    )
    namespace: str = Field(
        default="default",
        min_length=1,
        description="Temporal namespace of every workflow tenantflow starts. It must exist.",
    )
    task_queue: str = Field(
        default="tenantflow",
        min_length=1,
        description="Task queue the workers poll and the gateway starts workflows on. Gateways "
        "and workers must agree.",
    )
    tls: bool = Field(
        default=False,
        description="Connect with TLS (server certificate verified against the system roots). "
        "Client certificates (mTLS) are not configurable yet.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Temporal Cloud API key, sent with every call. Leave unset for a "
        "self-hosted cluster.",
    )
    rpc_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Timeout of the Temporal health probe of `tenantflow check`. (The "
        "gateway's readiness probe uses `TENANTFLOW_GATEWAY__READINESS_TIMEOUT_SECONDS`.)",
    )
    ui_url: str | None = Field(
        default=None,
        description="The Temporal Web UI's base URL: the dashboard links each run to its "
        "history there. Unset in development: the dev server's UI, "
        "`http://127.0.0.1:{TENANTFLOW_DEV__TEMPORAL_UI_PORT}`.",
    )


class WorkerSettings(BaseModel):
    """How much one ``tenantflow worker`` process takes on at a time (see docs/deployment.md)."""

    max_concurrent_activities: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Activity slots: activities this worker runs at once, a fleet run's target "
        "batches among them. Tasks beyond it wait on the task queue for a free slot on any "
        "worker.",
    )
    max_concurrent_workflow_tasks: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Workflow task slots: workflow code steps this worker runs at once. Each "
        "is short (milliseconds); the default rarely needs changing.",
    )
    activity_pollers: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Long polls kept open for activity tasks.",
    )
    workflow_pollers: int = Field(
        default=5,
        ge=2,
        le=100,
        description="Long polls kept open for workflow tasks (at least two: the task queue and "
        "the worker's sticky queue each need one).",
    )
    eager_activities: bool = Field(
        default=True,
        description="Let the worker that ran a workflow task start the activities it scheduled "
        "itself while it has free activity slots, without the task queue's matching round "
        "trip (about half of Temporal's CPU on a 2,000-schema run). A fleet run's batches then "
        "stay on the worker holding the run up to its `MAX_CONCURRENT_ACTIVITIES`; the surplus "
        "goes through the queue to any worker. Set `false` to spread every batch over every "
        "worker at that cost.",
    )
    graceful_shutdown_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long running activities may finish; those still running "
        "are then cancelled and retried on another worker. Keep it below the orchestrator's "
        "kill grace period (Kubernetes `terminationGracePeriodSeconds`, compose "
        "`stop_grace_period`).",
    )


class GatewaySettings(BaseModel):
    """The HTTP API process."""

    host: str = Field(
        default="127.0.0.1",
        description="Address the gateway listens on. Use `0.0.0.0` in a container (the image "
        "does).",
    )
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="Port the gateway listens on. The gateway refuses to start if the port is "
        "taken.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed by CORS, e.g. `["http://localhost:8080"]` for the '
        'Temporal UI\'s codec calls. Empty disables CORS. `"*"` is refused in production.',
    )
    public_url: str | None = Field(
        default=None,
        description="Externally visible base URL, e.g. behind a proxy; unset: `http://HOST:PORT` "
        "(with `0.0.0.0`/`::` shown as `127.0.0.1`). When it starts with `https://`, responses "
        "carry `Strict-Transport-Security`. `tenantflow dev` also polls "
        "`<PUBLIC_URL>/health/ready` to decide that the gateway is up.",
    )
    readiness_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="How long `/health/ready` waits for each dependency (Temporal, catalog; "
        "probed concurrently) before reporting it down.",
    )
    max_body_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        description="Request bodies larger than this (default 25 MiB) are refused with 413 "
        "`payload_too_large` before they are read (chunked bodies as soon as they pass it). "
        "Migration-set archives are further limited to 20 MiB packed, 10,000 members "
        "(directories included), 10 MiB per file and 100 MiB unpacked.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses of proxies or load balancers whose "
        "`X-Forwarded-For` / `X-Forwarded-Proto` headers are trusted (`*` trusts any). The "
        "client IP drives the per-IP login limits, so set it to your load balancer's "
        "addresses, or every client shares the proxy's IP.",
    )
    system_check_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="How long `POST /api/v1/system/check` and `POST "
        "/api/v1/databases/{id}/test-connection` wait for a worker before answering 503. The "
        "workflow's own execution timeout is twice this.",
    )

    def base_url(self) -> str:
        """The URL clients should use to reach the gateway."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


class LogSettings(BaseModel):
    """Logging: one JSON object per line in production, readable lines in development."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Level of the root logger. The Temporal SDK, asyncpg and httpx loggers stay "
        "at `WARNING` unless this is `DEBUG`.",
    )
    format: Literal["json", "console"] = Field(
        default="json",
        description="`json`: one JSON object per line on stderr (time, level, logger, message, "
        "request_id, extra fields). `console`: readable lines. Production requires `json`; "
        "`tenantflow dev` defaults its children to `console`.",
    )
    access_log: bool = Field(
        default=True,
        description="One `tenantflow.access` line per HTTP request (method, path, status, "
        "duration, client, request id).",
    )


class DevSettings(BaseModel):
    """The embedded stack started by ``tenantflow dev`` and the tests."""

    data_dir: Path = Field(
        default=Path(".tenantflow"),
        description="Where the stack keeps its data and logs, relative to the working "
        "directory (see [runbooks](runbooks.md#where-the-data-and-logs-are)). `tenantflow "
        "token` looks for a relative one in the working directory and its parents (or see "
        "`TENANTFLOW_HOME` [below](#the-command-lines-own-variables)).",
    )
    postgres_port: int = Field(
        default=15432,
        ge=1,
        le=65535,
        description="Port of the embedded PostgreSQL (loopback only).",
    )
    temporal_port: int = Field(
        default=7233, ge=1, le=65535, description="Port of the Temporal dev server's frontend."
    )
    temporal_ui_port: int = Field(
        default=8233, ge=1, le=65535, description="Port of the Temporal Web UI."
    )
    issuer_port: int = Field(
        default=DEV_ISSUER_PORT,
        ge=1,
        le=65535,
        description="Port of the development identity provider. Tokens carry it in `iss`, so "
        "pass the same value to `tenantflow token`.",
    )
    startup_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="How long each start-up step (PostgreSQL, Temporal, gateway readiness) may "
        "take before `tenantflow dev` gives up.",
    )


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


def _default_role_permissions() -> dict[str, list[Permission]]:
    return {role: list(perms) for role, perms in DEFAULT_ROLE_PERMISSIONS.items()}


# sha256 of the empty string: never a break-glass token.
EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()
_PLAIN_BREAK_GLASS_NAMES = frozenset({"break_glass_token", "break_glass_password"})


class AuthSettings(BaseModel):
    """Keycloak (or the dev issuer): who may call the API and with which permissions."""

    issuer_url: str = Field(
        default=DEV_ISSUER_URL,
        description="The realm's issuer, `https://<keycloak>/realms/<realm>`; must contain "
        "`/realms/`. Tokens must carry exactly this `iss`. Keycloak's base URL and the realm "
        "name for the token proxy are derived from it. The production profile refuses the "
        "default (the dev issuer) and any loopback host.",
    )
    audience: str = Field(
        default="tenantflow-api",
        description="Tokens must name this in `aud` (string or list) or in `azp`.",
    )
    client_id: str = Field(
        default="tenantflow-api",
        description="Client used by `POST /api/v1/auth/token` for password grants when the "
        "request names none. Also the client whose `resource_access` roles count.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="Secret of that client, for the token proxy's password grants. `tenantflow "
        "dev` sets it.",
    )
    ui_client_id: str = Field(
        default="tenantflow-ui",
        description="Public client (no secret) the dashboard at `/ui` signs in with through the "
        "authorization-code flow with PKCE; it needs `{gateway}/ui/` as a redirect URI and the "
        "gateway as a web origin.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Where the realm's signing keys are published; unset: "
        "`{ISSUER_URL}/protocol/openid-connect/certs`. A loopback host is refused in "
        "production.",
    )
    jwks_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="How long fetched signing keys are trusted before a refetch. If a refetch "
        "fails, the keys already held stay in use.",
    )
    jwks_refresh_min_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="A token with an unknown key id triggers a JWKS refetch at most this often "
        "(picks up Keycloak key rotation without a restart, without letting made-up key ids "
        "flood Keycloak).",
    )
    leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew tolerated on `exp` and `nbf`."
    )
    http_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Timeout of calls to Keycloak (JWKS fetch, token proxy).",
    )
    role_permissions: dict[str, list[Permission]] = Field(
        default_factory=_default_role_permissions,
        description="Which permissions each realm role or `CLIENT_ID` client role grants. "
        "Replaces the whole default map. Unknown permission names are rejected at start-up.",
        json_schema_extra={
            "doc_type": "JSON map of role → list of permissions",
            "doc_default": "`infra-viewer`, `infra-operator`, `infra-admin`, "
            "`tenant-credentials` (see [api.md](api.md#roles-and-permissions))",
        },
    )
    break_glass_token_sha256: SecretStr | None = Field(
        default=None,
        description="sha256 of the emergency token, 64 lowercase hex characters; unset: "
        "break-glass is disabled. Never the token itself: `TENANTFLOW_AUTH__BREAK_GLASS_TOKEN` "
        "and the sha256 of an empty token are refused. See "
        "[runbooks](runbooks.md#break-glass-access).",
    )

    @property
    def resolved_jwks_url(self) -> str:
        """Where the signing keys are published."""
        return self.jwks_url or f"{self.issuer_url.rstrip('/')}/protocol/openid-connect/certs"

    @property
    def server_url(self) -> str:
        """Keycloak's base URL (what python-keycloak calls ``server_url``)."""
        return self.issuer_url.split("/realms/", 1)[0] + "/"

    @property
    def realm(self) -> str:
        """The realm named in the issuer URL."""
        return self.issuer_url.rstrip("/").rsplit("/realms/", 1)[-1]

    @model_validator(mode="before")
    @classmethod
    def _no_plain_break_glass_token(cls, data: object) -> object:
        # Ignored like any unknown name, a token given in clear would leave break-glass off
        # while its secret sits in the configuration: refuse it, in every profile.
        if isinstance(data, dict) and any(
            str(key).lower() in _PLAIN_BREAK_GLASS_NAMES for key in data
        ):
            raise ValueError(
                "break-glass takes the token's sha256, never the token: set "
                "TENANTFLOW_AUTH__BREAK_GLASS_TOKEN_SHA256 and remove "
                "TENANTFLOW_AUTH__BREAK_GLASS_TOKEN"
            )
        return data

    @model_validator(mode="after")
    def _issuer_has_realm(self) -> AuthSettings:
        if "/realms/" not in self.issuer_url:
            raise ValueError("issuer_url must look like https://host/realms/<realm>")
        if self.break_glass_token_sha256 is not None:
            digest = self.break_glass_token_sha256.get_secret_value()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("break_glass_token_sha256 must be 64 lowercase hex characters")
            if digest == EMPTY_TOKEN_SHA256:
                # An empty X-Break-Glass-Token header would then be the emergency credential.
                raise ValueError("break_glass_token_sha256 is the sha256 of an empty token")
        return self


class RateLimitSettings(BaseModel):
    """Rate limits (the ``limits`` library); in memory per process, or shared through Redis."""

    enabled: bool = Field(default=True, description="Turn all three limits on or off.")
    storage_url: SecretStr = Field(
        default=SecretStr("memory://"),
        description="Where counters live. `memory://` counts per gateway process, so N gateways "
        "allow N times the limit. `async+redis://host:6379` shares counters between gateways; "
        "it needs the `coredis` package, which is not installed by default.",
    )
    per_subject: str = Field(
        default="300/minute",
        description="Calls per authenticated caller (token subject) and route.",
    )
    auth_endpoints: str = Field(
        default="20/minute", description="Calls per client IP to `POST /api/v1/auth/token`."
    )
    failed_auth: str = Field(
        default="10/minute",
        description="Failed password logins (refused grant, wrong break-glass token) per client "
        "IP; beyond it, password logins and break-glass attempts from that IP get 429 until the "
        "window passes. Bad bearer tokens (not expired ones) are counted separately against "
        "the same limit and, beyond it, only further bad tokens get 429: valid tokens are "
        "always served.",
    )

    @model_validator(mode="after")
    def _parseable(self) -> RateLimitSettings:
        from limits import parse

        for name in ("per_subject", "auth_endpoints", "failed_auth"):
            try:
                parse(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name}: not a rate limit such as '10/minute'") from None
        return self


# A well-known key for development and tests only; the production profile refuses it.
DEV_ENCRYPTION_KEY_ID = "dev"
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1pbi1wcm9kISE="


class CryptoSettings(BaseModel):
    """AES-256-GCM keys for credentials at rest and Temporal payloads.

    Several keys may be configured at once so that old ciphertext still decrypts; new data is
    always encrypted with ``active_key_id``. ``tenantflow keys rotate`` re-encrypts stored data
    under the active key.
    """

    keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {DEV_ENCRYPTION_KEY_ID: SecretStr(DEV_ENCRYPTION_KEY)},
        description="Key id (`[A-Za-z0-9_-]{1,32}`) → base64 of 32 random bytes (`tenantflow "
        "keys generate` prints one). Keep retired keys listed until `tenantflow keys rotate` "
        "has re-encrypted everything under the active key. The development key is refused in "
        "production. A key that is not base64 of exactly 32 bytes stops the gateway and worker "
        "at start-up.",
        json_schema_extra={
            "doc_type": "JSON map of key id → secret",
            "doc_default": '`{"dev": <public development key>}`',
        },
    )
    active_key_id: str = Field(
        default=DEV_ENCRYPTION_KEY_ID,
        description="The key id that encrypts new data; must be one of the keys.",
    )
    encrypt_payloads: bool = Field(
        default=False,
        description="Encrypt Temporal payloads (workflow and activity inputs and results). "
        "Gateways, workers and the CLI must agree. When on, the gateway's `/codec/decode` and "
        "`/codec/encode` serve the Temporal UI; when off they answer 400. Credentials never "
        "enter payloads either way.",
    )

    @model_validator(mode="after")
    def _active_key_exists(self) -> CryptoSettings:
        if self.active_key_id not in self.keys:
            raise ValueError(f"active_key_id {self.active_key_id!r} is not among the keys")
        if not all(_KEY_ID.match(kid) for kid in self.keys):
            raise ValueError("key ids must match [A-Za-z0-9_-]{1,32}")
        return self


_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class Settings(BaseSettings):
    """All settings of one tenantflow process."""

    model_config = SettingsConfigDict(
        env_prefix="TENANTFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A rejected value may be a DSN with its password: never echo inputs in errors.
        hide_input_in_errors=True,
    )

    profile: Profile = Field(
        default=Profile.DEV,
        description="Where the process runs. `production` refuses unsafe values (see "
        "[Profiles](#profiles)); `dev` and `test` behave the same.",
    )
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    dev: DevSettings = Field(default_factory=DevSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.profile is not Profile.PRODUCTION:
            return self
        problems = production_problems(self)
        if problems:
            raise ValueError("refusing to start in the production profile: " + "; ".join(problems))
        return self


def production_problems(settings: Settings) -> list[str]:
    """Every unsafe value that the production profile refuses, as readable sentences."""
    problems: list[str] = []
    dsn = settings.catalog.dsn.get_secret_value()
    if dsn == DEV_CATALOG_DSN:
        problems.append("TENANTFLOW_CATALOG__DSN is the development default")
    elif not dsn_has_password(dsn):
        problems.append("TENANTFLOW_CATALOG__DSN has no password")
    if "*" in settings.gateway.cors_origins:
        problems.append("TENANTFLOW_GATEWAY__CORS_ORIGINS must list origins, not '*'")
    if settings.log.format != "json":
        problems.append("TENANTFLOW_LOG__FORMAT must be 'json' so log shippers can parse it")
    if settings.auth.issuer_url.rstrip("/") == DEV_ISSUER_URL or is_loopback_url(
        settings.auth.issuer_url
    ):
        problems.append(
            "TENANTFLOW_AUTH__ISSUER_URL points at a loopback address (the development issuer?)"
        )
    if settings.auth.jwks_url is not None and is_loopback_url(settings.auth.jwks_url):
        problems.append(
            "TENANTFLOW_AUTH__JWKS_URL points at a loopback address (the development issuer?)"
        )
    if any(is_dev_encryption_key(key.get_secret_value()) for key in settings.crypto.keys.values()):
        problems.append("TENANTFLOW_CRYPTO__KEYS contains the development encryption key")
    return problems


_LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is this machine: a loopback or unspecified address (``127.0.0.2``,
    ``[::1]``, ``0.0.0.0``, ``[::ffff:127.0.0.1]``) or a ``localhost`` name (RFC 6761)."""
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def is_dev_encryption_key(encoded: str) -> bool:
    """Whether a configured key is the built-in development key, however it is written (the
    key ring strips blanks, and unpadded base64 names the same bytes)."""
    text = "".join(encoded.split())
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return key == base64.b64decode(DEV_ENCRYPTION_KEY)


# A libpq ``password`` keyword: in a URL query (``?password=x&``) or a keyword/value string
# (``password='two words'``), but not ``sslpassword`` or other keys that merely end in "password".
_DSN_PASSWORD = re.compile(
    r"(?P<lead>(?:^|[\s?&])password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&]*)",
    re.IGNORECASE,
)


def dsn_has_password(dsn: str) -> bool:
    """Whether a libpq URL or keyword string carries a non-empty login password."""
    if urlsplit(dsn).password:
        return True
    return any(m["value"] not in ("", "''") for m in _DSN_PASSWORD.finditer(dsn))


def redact_dsn(dsn: str) -> str:
    """Replace the password of a libpq URL (and ``password=`` keywords) with ``***``."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        dsn = parts._replace(netloc=netloc).geturl()
    return _DSN_PASSWORD.sub(lambda m: f"{m['lead']}***", dsn)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
