"""The Grafana dashboard and provisioning files (Grafana is not packaged for Debian: parsed,
not run). Every PromQL expression selects only metrics tenantflow exports, every panel reads the
provisioned Prometheus datasource, and the provisioning points where compose mounts the files."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metrics import HISTOGRAMS, METRICS, metric_names, unknown_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tenantflow.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "tenantflow.yml"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{panel['title']}/{target['refId']}", target)
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def _target_id(value: object) -> str:
    return value if isinstance(value, str) else ""


def _datasource() -> dict[str, Any]:
    sources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert len(sources) == 1
    source: dict[str, Any] = sources[0]
    return source


def test_dashboard_has_a_stable_uid_and_panels() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "tenantflow-overview"
    assert dashboard["title"] == "tenantflow"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(_targets()) >= 15


@pytest.mark.parametrize(("where", "target"), _targets(), ids=_target_id)
def test_every_expression_uses_only_exported_metrics(where: str, target: dict[str, Any]) -> None:
    expr = target["expr"]
    assert metric_names(expr), f"{where}: selects no metric"
    assert unknown_metrics(expr) == set(), f"{where}: unknown metric in {expr!r}"


@pytest.mark.parametrize(("where", "target"), _targets(), ids=_target_id)
def test_every_target_reads_the_provisioned_prometheus(where: str, target: dict[str, Any]) -> None:
    assert target["datasource"] == {"type": "prometheus", "uid": _datasource()["uid"]}, where


def test_the_dashboard_covers_every_tenantflow_metric() -> None:
    used = {name for _, target in _targets() for name in metric_names(target["expr"])}
    families = {name.removesuffix("_bucket") for name in used}
    expected = {name for name in METRICS if not name.endswith(("_bucket", "_sum", "_count"))}
    assert expected | HISTOGRAMS <= families | used


def test_datasource_points_at_the_compose_prometheus() -> None:
    source = _datasource()
    assert (source["type"], source["url"], source["access"]) == (
        "prometheus",
        "http://prometheus:9090",
        "proxy",
    )


def test_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    mounts = {
        str(entry).split(":")[1]: str(entry).split(":")[0]
        for entry in compose["services"]["grafana"]["volumes"]
    }
    path = providers[0]["options"]["path"]
    assert (REPO_ROOT / mounts[path]).resolve() == DASHBOARD.parent
    assert (REPO_ROOT / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule (Grafana's ``$__`` interval
    variables replaced by durations, as Grafana does before sending the query)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus package (make test does)")
    rules = [
        {
            "record": f"tenantflow_dashboard:query_{index}",
            "expr": target["expr"]
            .replace("$__rate_interval", "1m")
            .replace("$__range", "6h")
            .replace("$__interval", "15s"),
        }
        for index, (_, target) in enumerate(_targets())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(  # promtool on a file this test wrote
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
