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

DEV_CATALOG_DSN = "postgresql://postgres@127.0.0.1:15432/tenantflow"


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


class GatewaySettings(BaseModel):
    """The HTTP API process."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    public_url: str | None = Field(
        default=None, description="Externally visible base URL; defaults to http://host:port."
    )
    readiness_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
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
    startup_timeout_seconds: float = Field(default=60.0, gt=0, le=600)


class Settings(BaseSettings):
    """All settings of one tenantflow process."""

    model_config = SettingsConfigDict(
        env_prefix="TENANTFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    profile: Profile = Profile.DEV
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    dev: DevSettings = Field(default_factory=DevSettings)

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
    elif not urlsplit(dsn).password and "password=" not in dsn:
        problems.append("TENANTFLOW_CATALOG__DSN has no password")
    if "*" in settings.gateway.cors_origins:
        problems.append("TENANTFLOW_GATEWAY__CORS_ORIGINS must list origins, not '*'")
    if settings.log.format != "json":
        problems.append("TENANTFLOW_LOG__FORMAT must be 'json' so log shippers can parse it")
    return problems


def redact_dsn(dsn: str) -> str:
    """Replace the password of a libpq URL (and ``password=`` keywords) with ``***``."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        dsn = parts._replace(netloc=netloc).geturl()
    if "password=" in dsn:
        dsn = re.sub(r"password=[^&\s]*", "password=***", dsn)
    return dsn


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
