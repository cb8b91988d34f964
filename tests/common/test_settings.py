"""Settings: defaults, ``TENANTFLOW_*`` variables, ``.env`` files and the production guard."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from common.settings import (
    DEV_CATALOG_DSN,
    DEV_ENCRYPTION_KEY,
    AuthSettings,
    CatalogSettings,
    CryptoSettings,
    GatewaySettings,
    LogSettings,
    Profile,
    RateLimitSettings,
    Settings,
    get_settings,
    is_dev_encryption_key,
    production_problems,
    redact_dsn,
)

SAFE_DSN = "postgresql://tenantflow:Sup3r-Secret-PW@db.internal:5432/tenantflow"
PASSWORD = "Sup3r-Secret-PW"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``TENANTFLOW_*`` variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("TENANTFLOW_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# What production needs besides a catalog DSN: a real issuer and a non-development key.
PRODUCTION_AUTH = {"issuer_url": "https://sso.example.com/realms/tenantflow"}
PRODUCTION_KEY = "a2V5LW9uZS1mb3ItdGhlLXRlc3RzLW9ubHktMzJieXQ="
PRODUCTION_CRYPTO = {
    "keys": {"k1": PRODUCTION_KEY},
    "active_key_id": "k1",
}


def production(**overrides: object) -> Settings:
    """A production profile built from init values only (no ``.env``)."""
    values: dict[str, object] = {
        "profile": Profile.PRODUCTION,
        "auth": PRODUCTION_AUTH,
        "crypto": PRODUCTION_CRYPTO,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


# --- defaults -------------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.profile is Profile.DEV
    assert settings.catalog.dsn.get_secret_value() == DEV_CATALOG_DSN
    assert settings.catalog.min_pool_size == 1
    assert settings.catalog.max_pool_size == 10
    assert settings.catalog.connect_timeout_seconds == 5.0
    assert settings.catalog.startup_retry_seconds == 30.0
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.temporal.namespace == "default"
    assert settings.temporal.task_queue == "tenantflow"
    assert settings.temporal.tls is False
    assert settings.temporal.api_key is None
    assert settings.gateway.host == "127.0.0.1"
    assert settings.gateway.port == 8000
    assert settings.gateway.cors_origins == []
    assert settings.gateway.public_url is None
    assert settings.log.level == "INFO"
    assert settings.log.format == "json"
    assert settings.log.access_log is True
    assert settings.dev.data_dir == Path(".tenantflow")
    assert settings.dev.postgres_port == 15432
    assert settings.dev.temporal_port == 7233
    assert settings.dev.temporal_ui_port == 8233


def test_default_sections_are_not_shared_between_instances() -> None:
    first = Settings(_env_file=None)
    second = Settings(_env_file=None)
    first.gateway.cors_origins.append("http://a")
    assert second.gateway.cors_origins == []


# --- environment variables ------------------------------------------------------------------------


def test_environment_variables_with_prefix_and_nested_delimiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTFLOW_PROFILE", "test")
    monkeypatch.setenv("TENANTFLOW_TEMPORAL__ADDRESS", "temporal:7233")
    monkeypatch.setenv("TENANTFLOW_TEMPORAL__TLS", "true")
    monkeypatch.setenv("TENANTFLOW_TEMPORAL__API_KEY", "tk-123")
    monkeypatch.setenv("TENANTFLOW_GATEWAY__CORS_ORIGINS", '["http://a"]')
    monkeypatch.setenv("TENANTFLOW_GATEWAY__PORT", "9001")
    monkeypatch.setenv("TENANTFLOW_CATALOG__MIN_POOL_SIZE", "3")
    monkeypatch.setenv("TENANTFLOW_CATALOG__DSN", SAFE_DSN)
    monkeypatch.setenv("TENANTFLOW_LOG__LEVEL", "DEBUG")
    monkeypatch.setenv("TENANTFLOW_DEV__DATA_DIR", "/srv/tenantflow/data")

    settings = Settings(_env_file=None)

    assert settings.profile is Profile.TEST
    assert settings.temporal.address == "temporal:7233"
    assert settings.temporal.tls is True
    assert settings.temporal.api_key is not None
    assert settings.temporal.api_key.get_secret_value() == "tk-123"
    assert settings.gateway.cors_origins == ["http://a"]
    assert settings.gateway.port == 9001
    assert settings.catalog.min_pool_size == 3
    assert settings.catalog.max_pool_size == 10  # untouched sibling keeps its default
    assert settings.catalog.dsn.get_secret_value() == SAFE_DSN
    assert settings.log.level == "DEBUG"
    assert settings.dev.data_dir == Path("/srv/tenantflow/data")
    # Untouched sections keep their defaults.
    assert settings.temporal.namespace == "default"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL__ADDRESS", "elsewhere:7233")
    monkeypatch.setenv("PROFILE", "production")
    settings = Settings(_env_file=None)
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.profile is Profile.DEV


def test_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_GATEWAY__PORT", "0")
    with pytest.raises(ValidationError, match="port"):
        Settings(_env_file=None)


def test_invalid_log_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_LOG__LEVEL", "CHATTY")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


# --- .env files -----------------------------------------------------------------------------------


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "TENANTFLOW_TEMPORAL__NAMESPACE=from-dotenv\n"
        "TENANTFLOW_GATEWAY__HOST=0.0.0.0\n"
        "TENANTFLOW_CATALOG__MAX_POOL_SIZE=42\n"
        "UNRELATED_VARIABLE=ignored\n",
        encoding="utf-8",
    )
    settings = Settings(_env_file=env_file)
    assert settings.temporal.namespace == "from-dotenv"
    assert settings.gateway.host == "0.0.0.0"  # noqa: S104
    assert settings.catalog.max_pool_size == 42


def test_environment_overrides_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TENANTFLOW_TEMPORAL__NAMESPACE=from-dotenv\n", encoding="utf-8")
    monkeypatch.setenv("TENANTFLOW_TEMPORAL__NAMESPACE", "from-environment")
    assert Settings(_env_file=env_file).temporal.namespace == "from-environment"


def test_missing_env_file_is_not_an_error(tmp_path: Path) -> None:
    settings = Settings(_env_file=tmp_path / "does-not-exist.env")
    assert settings.profile is Profile.DEV


def test_get_settings_reads_dotenv_of_cwd_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("TENANTFLOW_TEMPORAL__TASK_QUEUE=from-cwd\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    first = get_settings()
    assert first.temporal.task_queue == "from-cwd"
    assert get_settings() is first


# --- production profile ---------------------------------------------------------------------------


def test_production_refuses_the_default_dsn() -> None:
    with pytest.raises(ValueError, match="TENANTFLOW_CATALOG__DSN is the development default"):
        production()


def test_production_refuses_a_dsn_without_password() -> None:
    with pytest.raises(ValueError, match="TENANTFLOW_CATALOG__DSN has no password"):
        production(catalog=CatalogSettings(dsn=SecretStr("postgresql://tf@db.internal/tf")))


def test_production_refuses_an_empty_url_password() -> None:
    with pytest.raises(ValueError, match="has no password"):
        production(catalog=CatalogSettings(dsn=SecretStr("postgresql://tf:@db.internal/tf")))


def test_production_refuses_wildcard_cors() -> None:
    with pytest.raises(ValueError, match=r"CORS_ORIGINS must list origins, not '\*'"):
        production(
            catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)),
            gateway=GatewaySettings(cors_origins=["http://a", "*"]),
        )


def test_production_refuses_console_log_format() -> None:
    with pytest.raises(ValueError, match="TENANTFLOW_LOG__FORMAT must be 'json'"):
        production(
            catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), log=LogSettings(format="console")
        )


def test_production_error_names_every_problem_but_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTFLOW_PROFILE", "production")
    monkeypatch.setenv("TENANTFLOW_CATALOG__DSN", SAFE_DSN)
    monkeypatch.setenv("TENANTFLOW_GATEWAY__CORS_ORIGINS", '["*"]')
    monkeypatch.setenv("TENANTFLOW_LOG__FORMAT", "console")
    with pytest.raises(ValueError, match="refusing to start in the production profile") as info:
        Settings(_env_file=None)
    message = str(info.value)
    assert "CORS_ORIGINS" in message
    assert "LOG__FORMAT" in message
    assert "has no password" not in message
    assert "development default" not in message
    assert PASSWORD not in message


def test_production_error_lists_dsn_cors_and_format_together() -> None:
    with pytest.raises(ValueError) as info:
        production(
            catalog=CatalogSettings(dsn=SecretStr("postgresql://tf@db.internal/tf")),
            gateway=GatewaySettings(cors_origins=["*"]),
            log=LogSettings(format="console"),
        )
    message = str(info.value)
    for fragment in ("has no password", "CORS_ORIGINS", "LOG__FORMAT"):
        assert fragment in message


def test_production_accepts_a_safe_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_PROFILE", "production")
    monkeypatch.setenv("TENANTFLOW_CATALOG__DSN", SAFE_DSN)
    monkeypatch.setenv("TENANTFLOW_GATEWAY__CORS_ORIGINS", '["https://app.example.com"]')
    monkeypatch.setenv("TENANTFLOW_AUTH__ISSUER_URL", PRODUCTION_AUTH["issuer_url"])
    monkeypatch.setenv("TENANTFLOW_CRYPTO__KEYS", json.dumps(PRODUCTION_CRYPTO["keys"]))
    monkeypatch.setenv("TENANTFLOW_CRYPTO__ACTIVE_KEY_ID", "k1")
    settings = Settings(_env_file=None)
    assert settings.profile is Profile.PRODUCTION
    assert production_problems(settings) == []


def test_production_accepts_a_password_keyword() -> None:
    dsn = "host=db.internal dbname=tf user=tf password=kw-secret"
    settings = production(catalog=CatalogSettings(dsn=SecretStr(dsn)))
    assert settings.catalog.dsn.get_secret_value() == dsn


def test_unsafe_values_are_fine_outside_production() -> None:
    settings = Settings(
        _env_file=None,
        profile=Profile.DEV,
        gateway=GatewaySettings(cors_origins=["*"]),
        log=LogSettings(format="console"),
    )
    # DSN, CORS and log format, plus the development issuer and encryption key.
    assert len(production_problems(settings)) == 5


def test_production_refuses_the_dev_issuer_and_the_dev_key() -> None:
    with pytest.raises(ValueError) as info:
        production(catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), auth={}, crypto={})
    message = str(info.value)
    assert "TENANTFLOW_AUTH__ISSUER_URL points at a loopback address" in message
    assert "TENANTFLOW_CRYPTO__KEYS contains the development encryption key" in message


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://tf@db.internal/tf?sslpassword=keyphrase",
        "postgresql://tf@db.internal/tf?password=",
    ],
)
def test_production_refuses_dsn_whose_only_password_is_not_one(dsn: str) -> None:
    with pytest.raises(ValueError, match="has no password"):
        production(catalog=CatalogSettings(dsn=SecretStr(dsn)))


# --- redact_dsn -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://tf:hunter2@db.internal:5432/tf",
            "postgresql://tf:***@db.internal:5432/tf",
        ),
        ("postgres://u:p%40ss@h/db", "postgres://u:***@h/db"),
        ("postgresql://u:pa:ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=hunter2&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("host=h dbname=db password=hunter2 user=u", "host=h dbname=db password=*** user=u"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (DEV_CATALOG_DSN, DEV_CATALOG_DSN),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_redacted_dsn_of_catalog_settings() -> None:
    catalog = CatalogSettings(dsn=SecretStr(SAFE_DSN))
    redacted = catalog.redacted_dsn()
    assert PASSWORD not in redacted
    assert redacted == "postgresql://tenantflow:***@db.internal:5432/tenantflow"


def test_redact_dsn_quoted_keyword_password() -> None:
    redacted = redact_dsn("host=h dbname=db password='correct horse' user=u")
    assert "horse" not in redacted
    assert "correct" not in redacted


# --- pool bounds ----------------------------------------------------------------------------------


def test_min_pool_size_above_max_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_pool_size must not exceed max_pool_size"):
        CatalogSettings(min_pool_size=5, max_pool_size=2)


def test_min_pool_size_above_max_is_refused_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTFLOW_CATALOG__MIN_POOL_SIZE", "20")
    with pytest.raises(ValidationError, match="min_pool_size must not exceed max_pool_size"):
        Settings(_env_file=None)


def test_equal_pool_bounds_are_accepted() -> None:
    catalog = CatalogSettings(min_pool_size=4, max_pool_size=4)
    assert (catalog.min_pool_size, catalog.max_pool_size) == (4, 4)


# --- gateway base URL -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104
def test_base_url_replaces_wildcard_host(host: str) -> None:
    assert GatewaySettings(host=host, port=8080).base_url() == "http://127.0.0.1:8080"


def test_base_url_uses_host_and_port() -> None:
    assert GatewaySettings(host="gw.internal", port=9000).base_url() == "http://gw.internal:9000"


def test_base_url_prefers_public_url_without_trailing_slash() -> None:
    gateway = GatewaySettings(
        host="0.0.0.0",  # noqa: S104
        port=8080,
        public_url="https://tenantflow.example.com/",
    )
    assert gateway.base_url() == "https://tenantflow.example.com"


# --- secrets stay secret --------------------------------------------------------------------------


def test_catalog_dsn_is_not_revealed_by_repr_or_str() -> None:
    catalog = CatalogSettings(dsn=SecretStr(SAFE_DSN))
    settings = Settings(_env_file=None, catalog=catalog)
    for text in (
        repr(catalog.dsn),
        str(catalog.dsn),
        repr(catalog),
        str(catalog),
        repr(settings),
        str(settings),
    ):
        assert PASSWORD not in text
    assert settings.catalog.dsn.get_secret_value() == SAFE_DSN


def test_temporal_api_key_is_not_revealed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_TEMPORAL__API_KEY", "very-secret-api-key")
    settings = Settings(_env_file=None)
    assert "very-secret-api-key" not in repr(settings)
    assert "very-secret-api-key" not in settings.model_dump_json()


# --- production: dev issuers, dev keys, break-glass without a hash --------------------------------


@pytest.mark.parametrize(
    "issuer_url",
    [
        "http://localhost:8080/realms/tenantflow",
        "http://localhost.:8080/realms/tenantflow",
        "http://LOCALHOST/realms/tenantflow",
        "http://keycloak.localhost/realms/tenantflow",
        "http://127.0.0.2:18080/realms/tenantflow",
        "http://[::1]:18080/realms/tenantflow",
        "http://0.0.0.0:18080/realms/tenantflow",
        "http://[::ffff:127.0.0.1]:18080/realms/tenantflow",
        "http://127.0.0.1:28080/realms/another",
    ],
)
def test_production_refuses_an_issuer_on_any_loopback_host(issuer_url: str) -> None:
    with pytest.raises(ValueError, match="ISSUER_URL points at a loopback address"):
        production(
            catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), auth={"issuer_url": issuer_url}
        )


def test_production_accepts_an_issuer_whose_name_merely_contains_localhost() -> None:
    auth = {"issuer_url": "https://localhost-proxy.example.com/realms/tenantflow"}
    settings = production(catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), auth=auth)
    assert production_problems(settings) == []


def test_production_refuses_a_loopback_jwks_url() -> None:
    auth = {
        **PRODUCTION_AUTH,
        "jwks_url": "http://127.0.0.1:18080/realms/tenantflow/protocol/openid-connect/certs",
    }
    with pytest.raises(ValueError, match="TENANTFLOW_AUTH__JWKS_URL points at a loopback"):
        production(catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), auth=auth)
    fine = {**PRODUCTION_AUTH, "jwks_url": "https://sso.example.com/keys"}
    assert (
        production_problems(production(catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), auth=fine))
        == []
    )


@pytest.mark.parametrize(
    "written",
    [
        DEV_ENCRYPTION_KEY,
        f"  {DEV_ENCRYPTION_KEY}\n",
        DEV_ENCRYPTION_KEY.rstrip("="),
    ],
)
def test_production_refuses_the_dev_key_however_written_and_named(written: str) -> None:
    crypto = {
        "keys": {"k1": PRODUCTION_KEY, "old": written},
        "active_key_id": "k1",
    }
    with pytest.raises(ValueError, match="contains the development encryption key"):
        production(catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)), crypto=crypto)


def test_production_accepts_a_non_dev_key() -> None:
    assert is_dev_encryption_key(PRODUCTION_KEY) is False
    assert is_dev_encryption_key("not base64 at all!") is False


def test_a_plain_break_glass_token_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTFLOW_PROFILE", "production")
    monkeypatch.setenv("TENANTFLOW_CATALOG__DSN", SAFE_DSN)
    monkeypatch.setenv("TENANTFLOW_AUTH__ISSUER_URL", PRODUCTION_AUTH["issuer_url"])
    monkeypatch.setenv("TENANTFLOW_CRYPTO__KEYS", json.dumps(PRODUCTION_CRYPTO["keys"]))
    monkeypatch.setenv("TENANTFLOW_CRYPTO__ACTIVE_KEY_ID", "k1")
    monkeypatch.setenv("TENANTFLOW_AUTH__BREAK_GLASS_TOKEN", "plain-emergency-token")
    with pytest.raises(ValidationError, match="never the token") as info:
        Settings(_env_file=None)
    assert "plain-emergency-token" not in str(info.value)
    # The same settings with the token's hash instead start.
    monkeypatch.delenv("TENANTFLOW_AUTH__BREAK_GLASS_TOKEN")
    digest = hashlib.sha256(b"plain-emergency-token").hexdigest()
    monkeypatch.setenv("TENANTFLOW_AUTH__BREAK_GLASS_TOKEN_SHA256", digest)
    settings = Settings(_env_file=None)
    assert production_problems(settings) == []
    assert settings.auth.break_glass_token_sha256 is not None


def test_a_plain_break_glass_token_is_refused_in_every_profile(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TENANTFLOW_AUTH__BREAK_GLASS_TOKEN=from-dotenv\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="BREAK_GLASS_TOKEN_SHA256"):
        Settings(_env_file=env_file)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        (hashlib.sha256(b"").hexdigest(), "sha256 of an empty token"),
        ("not-a-hash", "64 lowercase hex characters"),
        (hashlib.sha256(b"token").hexdigest().upper(), "64 lowercase hex characters"),
        ("", "64 lowercase hex characters"),
    ],
)
def test_break_glass_needs_a_real_hash(digest: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        production(
            catalog=CatalogSettings(dsn=SecretStr(SAFE_DSN)),
            auth={**PRODUCTION_AUTH, "break_glass_token_sha256": digest},
        )


# --- network -------------------------------------------------------------------------------------


def test_network_defaults_refuse_link_local_and_metadata_addresses() -> None:
    network = Settings(_env_file=None).network
    assert [str(n) for n in network.allowed_networks] == ["0.0.0.0/0", "::/0"]
    denied = {str(n) for n in network.denied_networks}
    assert {"169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"} <= denied
    assert network.allow_unix_sockets is True


def test_network_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_NETWORK__ALLOWED_NETWORKS", '["10.20.0.0/16", "fd12::/16"]')
    monkeypatch.setenv("TENANTFLOW_NETWORK__DENIED_NETWORKS", "[]")
    monkeypatch.setenv("TENANTFLOW_NETWORK__ALLOW_UNIX_SOCKETS", "false")
    network = Settings(_env_file=None).network
    assert [str(n) for n in network.allowed_networks] == ["10.20.0.0/16", "fd12::/16"]
    assert network.denied_networks == []
    assert network.allow_unix_sockets is False


@pytest.mark.parametrize("value", ['["10.0.0.1/8"]', '["not a network"]', '"10.0.0.0/8"'])
def test_network_settings_refuse_what_is_not_a_cidr_list(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TENANTFLOW_NETWORK__ALLOWED_NETWORKS", value)
    with pytest.raises((ValidationError, ValueError), match="allowed_networks"):
        Settings(_env_file=None)


# --- security sections ----------------------------------------------------------------------------


def test_an_issuer_url_without_a_realm_is_refused() -> None:
    with pytest.raises(ValidationError, match="issuer_url must look like"):
        AuthSettings(issuer_url="https://sso.example.com/tenantflow")


@pytest.mark.parametrize("name", ["per_subject", "auth_endpoints", "failed_auth"])
def test_a_rate_limit_that_does_not_parse_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValidationError, match=f"{name}: not a rate limit"):
        RateLimitSettings.model_validate({name: "lots per minute"})
    assert getattr(RateLimitSettings.model_validate({name: "5/second"}), name) == "5/second"


def test_the_active_key_must_be_one_of_the_keys() -> None:
    with pytest.raises(ValidationError, match="active_key_id 'k2' is not among the keys"):
        CryptoSettings.model_validate({"keys": {"k1": PRODUCTION_KEY}, "active_key_id": "k2"})


def test_key_ids_must_be_short_words() -> None:
    with pytest.raises(ValidationError, match=r"key ids must match"):
        CryptoSettings.model_validate(
            {"keys": {"k1": PRODUCTION_KEY, "bad id!": PRODUCTION_KEY}, "active_key_id": "k1"}
        )
