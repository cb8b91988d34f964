"""Settings for every tenantflow process, loaded from ``TENANTFLOW_*`` variables and ``.env``.

Nested sections use ``__`` as the delimiter: ``TENANTFLOW_TEMPORAL__ADDRESS=temporal:7233``.
Every option is documented in ``.env.example`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv6Address, ip_address
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings_features import (
    DEFAULT_DENIED_NETWORKS as DEFAULT_DENIED_NETWORKS,
)
from common.settings_features import (
    AlertSettings as AlertSettings,
)
from common.settings_features import (
    HealthSettings as HealthSettings,
)
from common.settings_features import (
    MonitoringSettings as MonitoringSettings,
)
from common.settings_features import (
    NetworkSettings as NetworkSettings,
)
from common.settings_features import (
    ProvisioningSettings as ProvisioningSettings,
)
from common.settings_features import (
    TelemetrySettings as TelemetrySettings,
)
from common.settings_features import (
    WebhookSettings as WebhookSettings,
)
from common.settings_security import (
    DEV_ENCRYPTION_KEY as DEV_ENCRYPTION_KEY,
)
from common.settings_security import (
    DEV_ENCRYPTION_KEY_ID as DEV_ENCRYPTION_KEY_ID,
)
from common.settings_security import (
    EMPTY_TOKEN_SHA256 as EMPTY_TOKEN_SHA256,
)
from common.settings_security import (
    AuthSettings as AuthSettings,
)
from common.settings_security import (
    CryptoSettings as CryptoSettings,
)
from common.settings_security import (
    RateLimitSettings as RateLimitSettings,
)
from common.settings_services import (
    DEV_CATALOG_DSN as DEV_CATALOG_DSN,
)
from common.settings_services import (
    DEV_ISSUER_PORT as DEV_ISSUER_PORT,
)
from common.settings_services import (
    DEV_ISSUER_URL as DEV_ISSUER_URL,
)
from common.settings_services import (
    DEV_KEY_ID_PREFIX as DEV_KEY_ID_PREFIX,
)
from common.settings_services import (
    DEV_REALM as DEV_REALM,
)
from common.settings_services import (
    CatalogSettings as CatalogSettings,
)
from common.settings_services import (
    DevSettings as DevSettings,
)
from common.settings_services import (
    GatewaySettings as GatewaySettings,
)
from common.settings_services import (
    LogSettings as LogSettings,
)
from common.settings_services import (
    TemporalSettings as TemporalSettings,
)
from common.settings_services import (
    WorkerSettings as WorkerSettings,
)
from common.settings_services import (
    dsn_has_password as dsn_has_password,
)
from common.settings_services import (
    redact_dsn as redact_dsn,
)


class Profile(StrEnum):
    """Where the process runs; ``production`` refuses unsafe values."""

    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
