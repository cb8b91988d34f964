"""Static checks of the container deployment: docker-compose.yml and deploy/ (the Dockerfile and
.dockerignore are checked in test_dockerfile.py).

No Docker engine is needed: the files are parsed (YAML, JSON) and their contents checked against
the contract with the Python code (commands, settings variables, compose hostnames) and the
deployment rules (pinned images, health checks, no literal secrets).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
REALM_FILE = REPO_ROOT / "deploy" / "keycloak" / "tenantflow-realm.json"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"

SERVICES = frozenset(
    {
        "postgres",
        "temporal",
        "temporal-ui",
        "keycloak",
        "gateway",
        "worker",
        "prometheus",
        "grafana",
    }
)
APP_SERVICES = ("gateway", "worker")
THIRD_PARTY_SERVICES = ("postgres", "temporal", "temporal-ui", "keycloak", "prometheus", "grafana")

# (service, dependency): every edge must wait for the dependency's health check.
DEPENDENCIES = (
    ("gateway", "postgres"),
    ("gateway", "temporal"),
    ("gateway", "keycloak"),
    ("worker", "postgres"),
    ("worker", "temporal"),
    ("worker", "keycloak"),
    ("temporal", "postgres"),
    ("temporal-ui", "temporal"),
    ("keycloak", "postgres"),
    ("grafana", "prometheus"),
)

# (service, host port, container port)
PUBLISHED_PORTS = (
    ("gateway", "8000", "8000"),
    ("temporal", "7233", "7233"),
    ("temporal-ui", "8080", "8080"),
    ("keycloak", "8081", "8080"),
    ("prometheus", "9090", "9090"),
    ("grafana", "3000", "3000"),
)

ROLES = ("infra-viewer", "infra-operator", "infra-admin")

# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED_VAR = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]+\}")
# Any compose substitution, with an optional `:-default` / `-default` / `:?err` / `?err` part.
SUBSTITUTION = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# Keycloak realm import placeholders: `${NAME}` resolved from Keycloak's environment.
REALM_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY|CRYPTO__KEYS|CRYPTO_KEYS")
URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@]+:(?P<password>.+)@[^@]+$")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _mapping(value: object, what: str) -> dict[str, Any]:
    assert isinstance(value, dict), f"{what} must be a mapping, got {type(value).__name__}"
    return value


def _render(value: str) -> str:
    """``value`` as compose would pass it: defaults applied, required variables set to 'x'."""

    def replace(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        return match.group("arg") if "-" in op else "x"

    return SUBSTITUTION.sub(replace, value)


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = _mapping(compose.get("services"), "services")
    return _mapping(services.get(name), f"service {name!r}")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {
        str(key): "" if value is None else str(value) for key, value in _mapping(env, "env").items()
    }


def _healthcheck_command(service: dict[str, Any]) -> list[str]:
    healthcheck = _mapping(service.get("healthcheck"), "healthcheck")
    test = healthcheck.get("test")
    assert isinstance(test, list), "healthcheck.test must be a list (CMD or CMD-SHELL form)"
    return [str(part) for part in test]


def _published(service: dict[str, Any]) -> set[tuple[str, str]]:
    """``{(host port, container port)}`` from short-syntax ``[ip:]host:container`` entries."""
    pairs: set[tuple[str, str]] = set()
    for entry in service.get("ports", []):
        parts = str(entry).rsplit(":", 2)
        assert len(parts) >= 2, f"port {entry!r} publishes no host port"
        pairs.add((parts[-2], parts[-1].removesuffix("/tcp")))
    return pairs


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{container path: source}`` of short-syntax volume entries."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        mounts[target] = source
    return mounts


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{ENV_EXAMPLE.name}: {line!r} is not NAME=value"
        values[key] = value.strip("'")
    return values


def _client(realm: dict[str, Any], client_id: str) -> dict[str, Any]:
    matches = [c for c in realm.get("clients", []) if c.get("clientId") == client_id]
    assert len(matches) == 1, f"realm must define client {client_id!r} exactly once"
    return _mapping(matches[0], client_id)


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _mapping(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), "docker-compose.yml")


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    return _mapping(json.loads(REALM_FILE.read_text(encoding="utf-8")), "realm file")


# ---------------------------------------------------------------------------------------------
# docker-compose.yml: services, images, ports, health checks, dependencies
# ---------------------------------------------------------------------------------------------


def test_compose_defines_exactly_the_stack_services(compose: dict[str, Any]) -> None:
    assert set(_mapping(compose["services"], "services")) == SERVICES


@pytest.mark.parametrize("name", THIRD_PARTY_SERVICES)
def test_third_party_images_are_pinned(compose: dict[str, Any], name: str) -> None:
    service = _service(compose, name)
    image = str(service["image"])
    repository, sep, tag = image.rpartition(":")
    assert "build" not in service
    assert sep and repository and "/" not in tag, f"{name}: image {image!r} has no tag"
    # prom/prometheus tags carry a leading v (v2.53.3).
    assert tag != "latest" and re.match(r"^v?\d+(\.\d+)*", tag), f"{name}: tag {tag!r} not pinned"
    assert "$" not in image, f"{name}: the image tag must not come from a variable"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_from_the_deploy_dockerfile(compose: dict[str, Any], name: str) -> None:
    service = _service(compose, name)
    build = _mapping(service["build"], f"{name}.build")
    assert "image" not in service, f"{name} must be built, not pulled"
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO_ROOT
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (REPO_ROOT / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize(("name", "command"), [("gateway", ["gateway"]), ("worker", ["worker"])])
def test_app_services_run_their_tenantflow_command(
    compose: dict[str, Any], name: str, command: list[str]
) -> None:
    assert _service(compose, name)["command"] == command


@pytest.mark.parametrize(("name", "host", "container"), PUBLISHED_PORTS)
def test_published_ports(compose: dict[str, Any], name: str, host: str, container: str) -> None:
    assert (host, container) in _published(_service(compose, name))


@pytest.mark.parametrize("name", ["postgres", "worker"])
def test_internal_services_publish_no_port(compose: dict[str, Any], name: str) -> None:
    assert "ports" not in _service(compose, name)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    command = _healthcheck_command(_service(compose, name))
    assert command[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck {command!r} runs nothing"
    assert len(command) >= 2


def test_worker_healthcheck_runs_tenantflow_check(compose: dict[str, Any]) -> None:
    assert _healthcheck_command(_service(compose, "worker")) == ["CMD", "tenantflow", "check"]


def test_gateway_healthcheck_gets_health_with_urllib(compose: dict[str, Any]) -> None:
    command = " ".join(_healthcheck_command(_service(compose, "gateway")))
    assert "urllib.request" in command
    assert "http://127.0.0.1:8000/health'" in command


def test_postgres_healthcheck_is_pg_isready_over_tcp(compose: dict[str, Any]) -> None:
    command = _healthcheck_command(_service(compose, "postgres"))
    assert command[:2] == ["CMD", "pg_isready"]
    # Over the socket, pg_isready already succeeds while the init scripts are still running.
    assert "--host=127.0.0.1" in command


def test_temporal_healthcheck_asks_the_cluster_for_serving(compose: dict[str, Any]) -> None:
    command = " ".join(_healthcheck_command(_service(compose, "temporal")))
    assert "cluster health" in command
    assert "--address temporal:7233" in command
    assert "grep -q SERVING" in command


def test_keycloak_healthcheck_probes_readiness_on_the_management_port(
    compose: dict[str, Any],
) -> None:
    keycloak = _service(compose, "keycloak")
    command = " ".join(_healthcheck_command(keycloak))
    assert _environment(keycloak)["KC_HEALTH_ENABLED"] == "true"
    assert "/dev/tcp/127.0.0.1/9000" in command
    assert "GET /health/ready " in command
    assert "curl" not in command and "wget" not in command, "the Keycloak image has neither"


@pytest.mark.parametrize(("name", "dependency"), DEPENDENCIES)
def test_dependency_waits_for_health(compose: dict[str, Any], name: str, dependency: str) -> None:
    depends_on = _mapping(_service(compose, name).get("depends_on"), f"{name}.depends_on")
    condition = _mapping(depends_on.get(dependency), f"{name} -> {dependency}")
    assert condition["condition"] == "service_healthy"


def test_dependency_graph_has_only_the_expected_edges(compose: dict[str, Any]) -> None:
    edges = {
        (name, dependency)
        for name in SERVICES
        for dependency in _mapping(_service(compose, name).get("depends_on", {}), name)
    }
    assert edges == set(DEPENDENCIES)


# ---------------------------------------------------------------------------------------------
# docker-compose.yml: environment of gateway and worker, the other services' wiring
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_uses_production_profile_and_json_logs(compose: dict[str, Any], name: str) -> None:
    env = _environment(_service(compose, name))
    assert env["TENANTFLOW_PROFILE"] == "production"
    assert env["TENANTFLOW_LOG__FORMAT"] == "json"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_points_at_compose_hostnames(compose: dict[str, Any], name: str) -> None:
    env = _environment(_service(compose, name))
    dsn = urlsplit(_render(env["TENANTFLOW_CATALOG__DSN"]))
    issuer = urlsplit(env["TENANTFLOW_AUTH__ISSUER_URL"])

    assert env["TENANTFLOW_TEMPORAL__ADDRESS"] == "temporal:7233"
    assert env["TENANTFLOW_TEMPORAL__NAMESPACE"] == "default"
    assert env["TENANTFLOW_TEMPORAL__TASK_QUEUE"] == "tenantflow"
    assert (dsn.scheme, dsn.hostname, dsn.port, dsn.path) == (
        "postgresql",
        "postgres",
        5432,
        "/tenantflow",
    )
    assert (issuer.hostname, issuer.port, issuer.path) == ("keycloak", 8080, "/realms/tenantflow")
    assert env["TENANTFLOW_AUTH__AUDIENCE"] == "tenantflow-api"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_configures_payload_encryption(compose: dict[str, Any], name: str) -> None:
    env = _environment(_service(compose, name))
    assert REQUIRED_VAR.fullmatch(env["TENANTFLOW_CRYPTO__KEYS"])
    assert REQUIRED_VAR.fullmatch(env["TENANTFLOW_CRYPTO__ACTIVE_KEY_ID"])


def test_worker_env_is_the_gateway_env_without_gateway_settings(compose: dict[str, Any]) -> None:
    gateway = _environment(_service(compose, "gateway"))
    worker = _environment(_service(compose, "worker"))
    gateway_only = {k: v for k, v in gateway.items() if k.startswith("TENANTFLOW_GATEWAY__")}
    assert {**worker, **gateway_only} == gateway


def test_gateway_listens_on_all_interfaces_on_port_8000(compose: dict[str, Any]) -> None:
    env = _environment(_service(compose, "gateway"))
    assert env["TENANTFLOW_GATEWAY__HOST"] == "0.0.0.0"  # noqa: S104 - inside its container
    assert env["TENANTFLOW_GATEWAY__PORT"] == "8000"


def test_prometheus_reads_the_shipped_config_and_rules(compose: dict[str, Any]) -> None:
    prometheus = _service(compose, "prometheus")
    mounts = _volume_mounts(prometheus)
    assert (REPO_ROOT / mounts["/etc/prometheus"]).resolve() == REPO_ROOT / "deploy" / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts["/prometheus"] in _mapping(compose.get("volumes"), "volumes")
    assert "/-/ready" in " ".join(_healthcheck_command(prometheus))


def test_prometheus_scrapes_the_ports_gateway_and_worker_listen_on(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load(
        (REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    gateway = _environment(_service(compose, "gateway"))
    worker = _environment(_service(compose, "worker"))
    assert targets["tenantflow-gateway"] == [f"gateway:{gateway['TENANTFLOW_GATEWAY__PORT']}"]
    assert targets["tenantflow-worker"] == [
        f"worker:{worker['TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT']}"
    ]
    assert worker["TENANTFLOW_TELEMETRY__WORKER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104
    assert json.loads(worker["TENANTFLOW_ALERTS__GATEWAY_METRICS_URLS"]) == [
        f"http://gateway:{gateway['TENANTFLOW_GATEWAY__PORT']}/metrics"
    ]


def test_grafana_is_provisioned_from_deploy_grafana(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    mounts = _volume_mounts(grafana)
    env = _environment(grafana)
    assert (REPO_ROOT / mounts["/etc/grafana/provisioning"]).resolve() == (
        REPO_ROOT / "deploy" / "grafana" / "provisioning"
    )
    dashboards = REPO_ROOT / mounts["/var/lib/grafana/dashboards"]
    assert (dashboards / "tenantflow.json").is_file()
    home = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert REQUIRED_VAR.fullmatch(home)
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        "/var/lib/grafana/dashboards/tenantflow.json"
    )
    assert "/api/health" in " ".join(_healthcheck_command(grafana))


def test_temporal_ui_decodes_payloads_through_the_gateway(compose: dict[str, Any]) -> None:
    ui = _environment(_service(compose, "temporal-ui"))
    gateway = _environment(_service(compose, "gateway"))
    assert ui["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8000/codec"
    # The browser calls the codec from the UI's origin, which the gateway must allow.
    assert "http://localhost:8080" in json.loads(gateway["TENANTFLOW_GATEWAY__CORS_ORIGINS"])


def test_temporal_persists_in_the_stack_postgres(compose: dict[str, Any]) -> None:
    env = _environment(_service(compose, "temporal"))
    assert env["DB"] == "postgres12"
    assert env["DB_PORT"] == "5432"
    assert env["POSTGRES_SEEDS"] == "postgres"
    assert env["POSTGRES_USER"] == "temporal"
    assert REQUIRED_VAR.fullmatch(env["POSTGRES_PWD"])


def test_keycloak_uses_the_stack_postgres_and_the_gateway_issuer(compose: dict[str, Any]) -> None:
    keycloak = _environment(_service(compose, "keycloak"))
    gateway = _environment(_service(compose, "gateway"))
    assert keycloak["KC_DB"] == "postgres"
    assert keycloak["KC_DB_URL"] == "jdbc:postgresql://postgres:5432/keycloak"
    assert keycloak["KC_DB_USERNAME"] == "keycloak"
    # A fixed hostname makes every token's `iss` the URL the gateway validates.
    assert keycloak["KC_HOSTNAME"] + "/realms/tenantflow" == gateway["TENANTFLOW_AUTH__ISSUER_URL"]


def test_postgres_init_script_creates_every_database_the_services_use(
    compose: dict[str, Any],
) -> None:
    postgres = _service(compose, "postgres")
    scripts = [
        REPO_ROOT / source
        for target, source in _volume_mounts(postgres).items()
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert len(scripts) == 1 and scripts[0].is_file()
    created = set(re.findall(r"CREATE DATABASE (\w+)", scripts[0].read_text(encoding="utf-8")))

    catalog = urlsplit(
        _render(_environment(_service(compose, "gateway"))["TENANTFLOW_CATALOG__DSN"])
    )
    temporal = _environment(_service(compose, "temporal"))
    keycloak_db = _environment(_service(compose, "keycloak"))["KC_DB_URL"].rsplit("/", 1)[1]
    used = {
        catalog.path.lstrip("/"),
        temporal["DBNAME"],
        temporal["VISIBILITY_DBNAME"],
        keycloak_db,
    }
    assert used == {"tenantflow", "temporal", "temporal_visibility", "keycloak"}
    assert used <= created


def test_postgres_data_lives_in_a_named_volume(compose: dict[str, Any]) -> None:
    mounts = _volume_mounts(_service(compose, "postgres"))
    volume = mounts["/var/lib/postgresql/data"]
    assert volume in _mapping(compose.get("volumes"), "volumes")


# ---------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------


def _all_environment(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (name, key, value)
        for name in sorted(SERVICES)
        for key, value in _environment(_service(compose, name)).items()
    ]


def test_secret_variables_are_required_substitutions(compose: dict[str, Any]) -> None:
    secrets = [(n, k, v) for n, k, v in _all_environment(compose) if SECRET_NAME.search(k)]
    assert len(secrets) >= 8, "expected the passwords, client secret and crypto keys"
    # A flag such as TEMPORAL_CODEC_PASS_ACCESS_TOKEN=true names a token but holds none.
    literal = [
        (n, k)
        for n, k, v in secrets
        if not REQUIRED_VAR.fullmatch(v) and str(v).lower() not in ("true", "false")
    ]
    assert literal == [], f"secrets must be ${{NAME:?...}} substitutions: {literal}"


def test_passwords_inside_urls_are_required_substitutions(compose: dict[str, Any]) -> None:
    urls = [
        (name, key, match.group("password"))
        for name, key, value in _all_environment(compose)
        if (match := URL_WITH_PASSWORD.match(value))
    ]
    assert [key for _, key, _ in urls] == ["TENANTFLOW_CATALOG__DSN"] * 2  # gateway, worker
    assert all(REQUIRED_VAR.fullmatch(password) for _, _, password in urls)


def _strings(node: object) -> list[str]:
    """Every string value of a parsed YAML document (comments are not part of it)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def test_required_variables_are_listed_in_the_env_example(compose: dict[str, Any]) -> None:
    required = {name for value in _strings(compose) for name in REQUIRED_VAR.findall(value)}
    assert required, "docker-compose.yml requires no variable"
    assert required == set(_env_example())


def test_env_example_holds_placeholders_not_secrets() -> None:
    values = _env_example()
    secret_values = {key: value for key, value in values.items() if SECRET_NAME.search(key)}
    assert secret_values, "the env example lists no secret"
    for key, value in secret_values.items():
        assert "change-me" in value or "REPLACE" in value, f"{key} looks like a real secret"


def test_env_example_crypto_keys_contain_the_active_key_id() -> None:
    values = _env_example()
    keys = json.loads(values["TENANTFLOW_CRYPTO_KEYS"])
    assert isinstance(keys, dict)
    assert values["TENANTFLOW_CRYPTO_ACTIVE_KEY_ID"] in keys


# ---------------------------------------------------------------------------------------------
# Keycloak realm
# ---------------------------------------------------------------------------------------------


def test_realm_file_is_the_tenantflow_realm_signed_with_rs256(realm: dict[str, Any]) -> None:
    assert realm["realm"] == "tenantflow"
    assert realm["enabled"] is True
    assert realm["defaultSignatureAlgorithm"] == "RS256"


def test_realm_roles_chain_admin_operator_viewer(realm: dict[str, Any]) -> None:
    roles = {role["name"]: role for role in realm["roles"]["realm"]}
    assert set(ROLES) <= set(roles)
    assert roles["infra-viewer"].get("composite", False) is False
    assert roles["infra-operator"]["composites"]["realm"] == ["infra-viewer"]
    assert roles["infra-admin"]["composites"]["realm"] == ["infra-operator"]


def test_api_client_is_confidential_with_service_account(realm: dict[str, Any]) -> None:
    client = _client(realm, "tenantflow-api")
    assert client["publicClient"] is False
    assert client["serviceAccountsEnabled"] is True
    assert client["directAccessGrantsEnabled"] is True
    assert client["standardFlowEnabled"] is False
    assert client.get("implicitFlowEnabled", False) is False
    assert REALM_PLACEHOLDER.fullmatch(client["secret"]), "the client secret must be a placeholder"


def test_cli_client_is_public_with_password_grant(realm: dict[str, Any]) -> None:
    client = _client(realm, "tenantflow-cli")
    assert client["publicClient"] is True
    assert client["directAccessGrantsEnabled"] is True
    assert client["standardFlowEnabled"] is False
    assert "secret" not in client


@pytest.mark.parametrize("client_id", ["tenantflow-api", "tenantflow-cli"])
def test_client_tokens_carry_the_api_audience(realm: dict[str, Any], client_id: str) -> None:
    audiences = [
        mapper["config"]
        for mapper in _client(realm, client_id).get("protocolMappers", [])
        if mapper["protocolMapper"] == "oidc-audience-mapper"
    ]
    assert [c["included.client.audience"] for c in audiences] == ["tenantflow-api"]
    assert audiences[0]["access.token.claim"] == "true"


def test_realm_users_have_no_real_passwords(realm: dict[str, Any]) -> None:
    for user in realm.get("users", []):
        credentials = user.get("credentials", [])
        for credential in credentials:
            assert credential.get("temporary") is True, user["username"]
            assert REALM_PLACEHOLDER.fullmatch(credential.get("value", "")), user["username"]
            assert "secretData" not in credential and "hashedSaltedValue" not in credential
        if credentials:
            assert "UPDATE_PASSWORD" in user.get("requiredActions", []), user["username"]


def test_realm_placeholders_are_provided_to_keycloak(compose: dict[str, Any]) -> None:
    placeholders = set(REALM_PLACEHOLDER.findall(REALM_FILE.read_text(encoding="utf-8")))
    env = _environment(_service(compose, "keycloak"))
    assert placeholders, "the realm should take its client secret from the environment"
    for name in placeholders:
        assert REQUIRED_VAR.fullmatch(env.get(name, "")), f"keycloak env lacks required {name}"


def test_compose_imports_the_realm_file(compose: dict[str, Any]) -> None:
    keycloak = _service(compose, "keycloak")
    imports = {
        target: (REPO_ROOT / source).resolve()
        for target, source in _volume_mounts(keycloak).items()
        if target.startswith("/opt/keycloak/data/import/")
    }
    assert list(imports.values()) == [REALM_FILE]
    assert next(iter(imports)).endswith(".json")
    assert "--import-realm" in keycloak["command"]
