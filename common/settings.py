"""Settings for every tenantflow process, loaded from ``TENANTFLOW_*`` variables and ``.env``.

Nested sections use ``__`` as the delimiter: ``TENANTFLOW_TEMPORAL__ADDRESS=temporal:7233``.
Every option is documented in ``.env.example`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
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
        description="libpq URL of the catalog database; may contain a password, never logged.",
    )
    min_pool_size: int = Field(default=1, ge=0, le=100)
    max_pool_size: int = Field(default=10, ge=1, le=500)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    startup_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="How long start-up keeps retrying an unreachable catalog before giving up.",
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

    address: str = Field(default="127.0.0.1:7233", min_length=3)
    namespace: str = Field(default="default", min_length=1)
    task_queue: str = Field(default="tenantflow", min_length=1)
    tls: bool = False
    api_key: SecretStr | None = Field(default=None, description="Temporal Cloud API key.")
    rpc_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    ui_url: str | None = Field(
        default=None,
        description="The Temporal Web UI's base URL, for the dashboard's links to run histories; "
        "in development it defaults to the dev server's UI.",
    )


class WorkerSettings(BaseModel):
    """How much one ``tenantflow worker`` process takes on at a time (see docs/deployment.md)."""

    max_concurrent_activities: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Activity slots: activities (a fleet run's target batches among them) this "
        "worker runs at once; a task beyond it waits on the queue for any worker's free slot.",
    )
    max_concurrent_workflow_tasks: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Workflow task slots: workflow code steps this worker runs at once.",
    )
    activity_pollers: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Long polls this worker keeps open for activity tasks.",
    )
    workflow_pollers: int = Field(
        default=5,
        ge=2,
        le=100,
        description="Long polls this worker keeps open for workflow tasks (at least two: one for "
        "the task queue, one for the worker's sticky queue).",
    )
    eager_activities: bool = Field(
        default=True,
        description="Let the worker that runs a workflow task start the activities it schedules "
        "itself while it has free activity slots, skipping the task queue's matching round "
        "trip (a third less Temporal CPU per batch); a fleet run's batches beyond this worker's "
        "slots go through the queue to any worker.",
    )
    graceful_shutdown_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long running activities may finish before they are "
        "cancelled (and retried on another worker).",
    )


class GatewaySettings(BaseModel):
    """The HTTP API process."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    public_url: str | None = Field(
        default=None, description="Externally visible base URL; defaults to http://host:port."
    )
    readiness_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    max_body_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For is trusted for the client IP (comma list).",
    )
    system_check_timeout_seconds: float = Field(
        default=15.0, gt=0, le=300, description="How long /api/v1/system/check waits for a worker."
    )

    def base_url(self) -> str:
        """The URL clients should use to reach the gateway."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


class LogSettings(BaseModel):
    """Logging: one JSON object per line in production, readable lines in development."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    access_log: bool = True


class DevSettings(BaseModel):
    """The embedded stack started by ``tenantflow dev`` and the tests."""

    data_dir: Path = Path(".tenantflow")
    postgres_port: int = Field(default=15432, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    issuer_port: int = Field(default=DEV_ISSUER_PORT, ge=1, le=65535)
    startup_timeout_seconds: float = Field(default=60.0, gt=0, le=600)


class WebhookSettings(BaseModel):
    """Outgoing webhooks: the delivery schedule and the HTTP attempt's limits."""

    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        max_length=20,
        description="Delay before each attempt (Standard Webhooks schedule: about 28 h in all).",
    )
    attempt_timeout_seconds: float = Field(default=15.0, gt=0, le=120)

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
        description="Seconds between evaluations; 0 stops the watcher (workers do not start it).",
    )
    failure_rate: float = Field(
        default=0.2, gt=0, le=1, description="alert.failure_rate: share of ended runs that failed."
    )
    failure_rate_window_seconds: int = Field(
        default=1800, ge=60, le=7 * 86400, description="Runs that ended this recently count."
    )
    failure_rate_min_runs: int = Field(
        default=5, ge=1, description="Fewer ended runs than this never fire alert.failure_rate."
    )
    min_workers: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="alert.no_worker fires when fewer workers poll the task queue (set it to the "
        "replica count; the watcher runs on a worker, so it cannot see the last one go).",
    )
    no_worker_seconds: int = Field(
        default=120,
        ge=10,
        le=86400,
        description="A poller unseen for this long is gone; a watcher that could not run for "
        "this long reports the outage once a worker is back.",
    )
    gateway_metrics_urls: list[str] = Field(
        default_factory=list,
        description="Gateways' /metrics URLs read for alert.gateway_errors and "
        "alert.gateway_latency (JSON list); empty: those two are not evaluated.",
    )
    gateway_error_ratio: float = Field(
        default=0.05, gt=0, le=1, description="alert.gateway_errors: share of 5xx answers."
    )
    gateway_latency_seconds: float = Field(
        default=1.0, gt=0, le=600, description="alert.gateway_latency: p95 request duration."
    )
    gateway_min_requests: int = Field(
        default=20,
        ge=1,
        description="Fewer requests between two evaluations than this judge neither gateway alert.",
    )


class HealthSettings(BaseModel):
    """Fleet health sweeps (``FleetHealthWorkflow``) run by a Temporal Schedule."""

    interval_seconds: int = Field(
        default=300,
        ge=0,
        le=7 * 86400,
        description="Seconds between scheduled sweeps; 0 disables (and removes) the schedule.",
    )
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    concurrency: int = Field(default=8, ge=1, le=100, description="Batches in flight.")
    batch_size: int = Field(default=10, ge=1, le=100, description="Targets per activity.")


class MonitoringSettings(BaseModel):
    """The monitoring API (``/api/v1/monitoring``): one snapshot shared by every viewer."""

    snapshot_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="A summary or performance snapshot is computed at most once per this many "
        "seconds per gateway process, whatever the number of viewers.",
    )
    window_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="Runs by outcome: those closed this recently."
    )
    max_active_runs: int = Field(
        default=50, ge=0, le=1000, description="Active runs listed with their progress."
    )
    sampled_runs: int = Field(
        default=20,
        ge=0,
        le=500,
        description="Recently closed runs whose results give the failure rate and per-target "
        "migration times (each run's history is read once per gateway process).",
    )
    latency_samples: int = Field(
        default=1000, ge=10, le=100_000, description="Latencies kept per route (newest)."
    )
    latency_window_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="Latencies older than this are dropped."
    )


class TelemetrySettings(BaseModel):
    """Observability: traces exported over OTLP (and metrics); everything is off by default."""

    # --- traces (common/telemetry/tracing.py) ---
    traces_enabled: bool = Field(
        default=False,
        description="Trace HTTP requests, workflows, activities and their SQL (needs "
        "otlp_endpoint).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL, e.g. http://otel-collector:4318 "
        "(traces go to {otlp_endpoint}/v1/traces).",
    )
    otlp_headers: SecretStr | None = Field(
        default=None,
        description="Headers for the collector as key=value pairs separated by commas "
        "(e.g. an API key); never logged.",
    )
    otlp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    service_name: str | None = Field(
        default=None,
        description="service.name of the spans; defaults to tenantflow-gateway or "
        "tenantflow-worker.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; workflows and activities follow the request.",
    )

    # --- metrics (common/telemetry/metrics.py) ---
    metrics_enabled: bool = Field(
        default=True,
        description="Record Prometheus metrics (gateway /metrics, worker metrics port); false "
        "makes /metrics answer 404 and the worker record nothing.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the worker's metrics endpoint binds (0.0.0.0 in a container).",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus endpoint (/metrics); 0 serves none.",
    )
    otlp_metrics_enabled: bool = Field(
        default=False,
        description="Also push metrics to {otlp_endpoint}/v1/metrics (OTLP/HTTP).",
    )
    otlp_metrics_interval_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="How often metrics are pushed over OTLP."
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
        description="database mode: copy tenants' databases from a template database kept at "
        "their sets' versions (built on first need); false: always create empty and migrate.",
    )


def _default_role_permissions() -> dict[str, list[Permission]]:
    return {role: list(perms) for role, perms in DEFAULT_ROLE_PERMISSIONS.items()}


class AuthSettings(BaseModel):
    """Keycloak (or the dev issuer): who may call the API and with which permissions."""

    issuer_url: str = Field(
        default=DEV_ISSUER_URL,
        description="The realm's issuer, e.g. https://keycloak.example.com/realms/tenantflow.",
    )
    audience: str = Field(default="tenantflow-api", description="Expected in aud or azp.")
    client_id: str = Field(default="tenantflow-api", description="Client for the token proxy.")
    client_secret: SecretStr | None = Field(default=None, description="That client's secret.")
    ui_client_id: str = Field(
        default="tenantflow-ui",
        description="Public client the dashboard signs in with (authorization code with PKCE).",
    )
    jwks_url: str | None = Field(
        default=None, description="Defaults to {issuer_url}/protocol/openid-connect/certs."
    )
    jwks_cache_seconds: float = Field(default=300.0, ge=0, le=86400)
    jwks_refresh_min_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Unknown key ids refetch the JWKS at most this often.",
    )
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    role_permissions: dict[str, list[Permission]] = Field(
        default_factory=_default_role_permissions,
        description="Realm or client role -> permissions (JSON).",
    )
    break_glass_token_sha256: SecretStr | None = Field(
        default=None, description="sha256 hex of the emergency token; unset disables break-glass."
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

    @model_validator(mode="after")
    def _issuer_has_realm(self) -> AuthSettings:
        if "/realms/" not in self.issuer_url:
            raise ValueError("issuer_url must look like https://host/realms/<realm>")
        if self.break_glass_token_sha256 is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.break_glass_token_sha256.get_secret_value()
        ):
            raise ValueError("break_glass_token_sha256 must be 64 lowercase hex characters")
        return self


class RateLimitSettings(BaseModel):
    """Rate limits (the ``limits`` library); in memory per process, or shared through Redis."""

    enabled: bool = True
    storage_url: SecretStr = Field(
        default=SecretStr("memory://"),
        description="memory:// or async+redis://host:6379 to share limits between gateways.",
    )
    per_subject: str = Field(default="300/minute", description="Per caller and route.")
    auth_endpoints: str = Field(default="20/minute", description="Per client IP on /auth/*.")
    failed_auth: str = Field(
        default="10/minute",
        description="Failed password logins per client IP before 429; bad bearer tokens are "
        "counted apart and only slow further bad tokens, never valid ones.",
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
        description="Key id -> base64 of 32 random bytes (tenantflow keys generate).",
    )
    active_key_id: str = DEV_ENCRYPTION_KEY_ID
    encrypt_payloads: bool = Field(
        default=False, description="Encrypt Temporal payloads (workflow inputs, results, ...)."
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

    profile: Profile = Profile.DEV
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
    issuer_host = (urlsplit(settings.auth.issuer_url).hostname or "").lower()
    if settings.auth.issuer_url.rstrip("/") == DEV_ISSUER_URL or issuer_host in (
        "localhost",
        "127.0.0.1",
        "::1",
    ):
        problems.append(
            "TENANTFLOW_AUTH__ISSUER_URL points at a loopback address (the development issuer?)"
        )
    if any(key.get_secret_value() == DEV_ENCRYPTION_KEY for key in settings.crypto.keys.values()):
        problems.append("TENANTFLOW_CRYPTO__KEYS contains the development encryption key")
    return problems


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
