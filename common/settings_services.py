"""Settings groups of the processes and the services they reach: catalog, Temporal, worker,
gateway, logging, the dev stack. Part of ``common.settings``, which re-exports them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator

DEV_CATALOG_DSN = "postgresql://postgres@127.0.0.1:15432/tenantflow"
DEV_ISSUER_PORT = 18080
DEV_REALM = "tenantflow"
DEV_ISSUER_URL = f"http://127.0.0.1:{DEV_ISSUER_PORT}/realms/{DEV_REALM}"
# Keys of the local dev issuer carry this key-id prefix; production refuses such tokens.
DEV_KEY_ID_PREFIX = "tenantflow-dev-"


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
