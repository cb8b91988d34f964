"""docs/deployment.md and docs/user-guide.md against the code they describe.

The Kubernetes manifests of the deployment guide parse, run the image's user, probe routes the
gateway has, and their configuration is accepted by the production profile; every
``TENANTFLOW_<SECTION>__<OPTION>`` the guides name is a real setting; the search attributes they
tell operators to register are the ones the code uses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.routing import APIRoute
from pydantic import BaseModel

from cli.temporal_server import SEARCH_ATTRIBUTES
from common.crypto import generate_key
from common.settings import Profile, Settings, WorkerSettings
from gateway.routers.health import router as health_router

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO_ROOT / "docs" / "deployment.md"
USER_GUIDE = REPO_ROOT / "docs" / "user-guide.md"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
SETTING = re.compile(r"\bTENANTFLOW_([A-Z]+(?:_[A-Z]+)*)__([A-Z]+(?:_[A-Z]+)*)\b")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    section = _section(DEPLOYMENT.read_text(encoding="utf-8"), "Kubernetes")
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1
    return [doc for doc in yaml.safe_load_all(blocks[0]) if doc]


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = text[text.rindex("\nFROM ") :]
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_the_manifests_are_the_pieces_the_guide_names(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in manifests)
    assert kinds == [
        ("ConfigMap", "tenantflow"),
        ("Deployment", "tenantflow-gateway"),
        ("Deployment", "tenantflow-worker"),
        ("PodDisruptionBudget", "tenantflow-worker"),
        ("Secret", "tenantflow"),
        ("Service", "tenantflow-gateway"),
    ]


@pytest.mark.parametrize(("name", "command"), [("gateway", "gateway"), ("worker", "worker")])
def test_deployments_run_the_image_as_its_user(
    manifests: list[dict[str, Any]], name: str, command: str
) -> None:
    deployment = _one(manifests, "Deployment", f"tenantflow-{name}")
    pod = deployment["spec"]["template"]["spec"]
    uid = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert uid
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": int(uid.group(1)),
        "runAsGroup": int(uid.group(2)),
    }
    container = _container(deployment)
    assert container["args"] == [command]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp", _dockerfile_env()["HOME"]}, "the writable places"  # noqa: S108
    assert (
        deployment["spec"]["selector"]["matchLabels"]
        == deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e] == [
        "tenantflow"
    ]


def test_gateway_probes_name_its_health_routes(manifests: list[dict[str, Any]]) -> None:
    container = _container(_one(manifests, "Deployment", "tenantflow-gateway"))
    routes = {r.path for r in health_router.routes if isinstance(r, APIRoute)}
    liveness = container["livenessProbe"]["httpGet"]["path"]
    readiness = container["readinessProbe"]["httpGet"]["path"]
    assert (liveness, readiness) == ("/health", "/health/ready")
    assert {liveness, readiness, container["startupProbe"]["httpGet"]["path"]} <= routes
    port = container["ports"][0]
    assert port["containerPort"] == int(_dockerfile_env()["TENANTFLOW_GATEWAY__PORT"])
    service = _one(manifests, "Service", "tenantflow-gateway")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    template = _one(manifests, "Deployment", "tenantflow-gateway")["spec"]["template"]
    assert service["spec"]["selector"] == template["metadata"]["labels"]


def test_worker_is_not_restarted_for_a_dependency_and_drains(
    manifests: list[dict[str, Any]],
) -> None:
    deployment = _one(manifests, "Deployment", "tenantflow-worker")
    container = _container(deployment)
    assert "livenessProbe" not in container
    assert container["readinessProbe"]["exec"]["command"] == ["tenantflow", "check"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= WorkerSettings().graceful_shutdown_seconds + 15
    config = _one(manifests, "ConfigMap", "tenantflow")["data"]
    assert container["ports"][0]["containerPort"] == int(
        config["TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT"]
    )
    pdb = _one(manifests, "PodDisruptionBudget", "tenantflow-worker")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_example_configuration_starts_in_the_production_profile(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _one(manifests, "Secret", "tenantflow")["stringData"]
    config = _one(manifests, "ConfigMap", "tenantflow")["data"]
    assert not set(secret) & set(config)
    secret_names = {"TENANTFLOW_CATALOG__DSN", "TENANTFLOW_CRYPTO__KEYS"}
    assert secret_names <= set(secret), "secrets go in the Secret"
    assert not {n for n in config if re.search(r"DSN|KEYS$|SECRET|PASSWORD|API_KEY", n)}

    filled = {k: v.replace("REPLACE", "s3cret") for k, v in secret.items()}
    filled["TENANTFLOW_CRYPTO__KEYS"] = (
        f'{{"{config["TENANTFLOW_CRYPTO__ACTIVE_KEY_ID"]}": "{generate_key()}"}}'
    )
    for name in list(os.environ):
        if name.startswith("TENANTFLOW_"):
            monkeypatch.delenv(name)
    for name, value in {**_dockerfile_env(), **config, **filled}.items():
        if name.startswith("TENANTFLOW_"):
            monkeypatch.setenv(name, str(value))
    settings = Settings(_env_file=None)
    assert settings.profile is Profile.PRODUCTION
    assert settings.temporal.namespace == config["TENANTFLOW_TEMPORAL__NAMESPACE"]


@pytest.mark.parametrize("path", [DEPLOYMENT, USER_GUIDE], ids=["deployment", "user-guide"])
def test_every_setting_the_guides_name_exists(path: Path) -> None:
    named = set(SETTING.findall(path.read_text(encoding="utf-8")))
    assert named or path == USER_GUIDE
    for section, option in named:
        field = Settings.model_fields.get(section.lower())
        assert field is not None, f"TENANTFLOW_{section}__{option}: no section {section}"
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        assert option.lower() in model.model_fields, f"TENANTFLOW_{section}__{option}"


def test_the_search_attributes_to_register_are_the_codes() -> None:
    section = _section(DEPLOYMENT.read_text(encoding="utf-8"), "Temporal")
    table = dict(re.findall(r"^\| `(Tenantflow\w+)` \| `(\w+)` \|", section, re.MULTILINE))
    commands = dict(
        re.findall(r"search-attribute create --name (Tenantflow\w+) --type (\w+)", section)
    )
    assert table == commands == dict(SEARCH_ATTRIBUTES)
