"""The shipped Prometheus files: ``promtool check config`` and ``promtool test rules`` pass, every
alert is tested firing and silent, has a runbook, names the webhook event type that carries the
same condition, and uses only metrics tenantflow exports.

promtool comes from Debian's ``prometheus`` package (``make test`` installs it when run as root).
Without it these tests fail, never skip: an untested alert rule must not pass CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import AlertSettings
from models.webhooks import WebhookEventType
from tests.deploy.metrics import unknown_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"

# Every condition the issue asks for, by alert name.
EXPECTED_ALERTS = frozenset(
    {
        "TenantflowRunFailed",
        "TenantflowRunPaused",
        "TenantflowRunFailureRate",
        "TenantflowTargetsUnreachable",
        "TenantflowTargetsDrifted",
        "TenantflowNoWorkerPolling",
        "TenantflowGatewayErrors",
        "TenantflowGatewayLatency",
    }
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install -y --no-install-recommends prometheus); `make test` does it as root"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # promtool on files of this repository.
    return subprocess.run(
        [_promtool(), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _rule_tests() -> list[dict[str, Any]]:
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_promtool_check_config_passes() -> None:
    result = _run("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_passes() -> None:
    result = _run("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_the_gateway_and_the_worker() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for static in job["static_configs"] for t in static["targets"]]
        for name, job in jobs.items()
    }
    assert targets["tenantflow-gateway"] == ["gateway:8000"]
    assert jobs["tenantflow-gateway"]["metrics_path"] == "/metrics"
    assert targets["tenantflow-worker"] == ["worker:9464"]
    assert config["rule_files"] == [ALERTS.name]


def test_every_expected_alert_exists_once() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert sorted(names) == sorted(EXPECTED_ALERTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_every_alert_is_tested_firing_and_silent(name: str) -> None:
    cases = [case for case in _rule_tests() if case["alertname"] == name]
    assert any(case["exp_alerts"] for case in cases), f"{name}: no test where it fires"
    assert any(not case["exp_alerts"] for case in cases), f"{name}: no test where it is silent"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_has_a_runbook(rule: dict[str, Any]) -> None:
    runbook = rule["annotations"]["runbook"]
    path, _, anchor = runbook.partition("#")
    assert path == "docs/runbooks.md"
    headings = [
        _anchor(line.lstrip("#"))
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]
    assert anchor in headings, f"{rule['alert']}: docs/runbooks.md has no heading #{anchor}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_names_its_webhook_event(rule: dict[str, Any]) -> None:
    event = rule["labels"]["webhook_event"]
    assert event in {t.value for t in WebhookEventType}
    assert rule["labels"]["severity"] in {"warning", "critical"}


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_alerts_use_only_exported_metrics(rule: dict[str, Any]) -> None:
    assert unknown_metrics(rule["expr"]) == set()


def test_metric_scanner_reports_unknown_names() -> None:
    expr = 'sum by (kind) (rate(tenantflow_runs_total{kind="x"}[5m])) / up'
    assert unknown_metrics(expr) == {"tenantflow_runs_total"}


def _rule(name: str) -> dict[str, Any]:
    (rule,) = [rule for rule in _rules() if rule["alert"] == name]
    return rule


def _compact(expr: str) -> str:
    return " ".join(expr.split())


def test_thresholds_are_the_webhook_alert_defaults() -> None:
    """The webhook side (TENANTFLOW_ALERTS__*) judges with the rules' numbers."""
    defaults = AlertSettings()
    rate = _compact(_rule("TenantflowRunFailureRate")["expr"])
    window = f"[{defaults.failure_rate_window_seconds // 60}m]"
    assert f") > {defaults.failure_rate}" in rate
    assert rate.count(window) == 3
    assert f">= {defaults.failure_rate_min_runs}" in rate
    errors = _compact(_rule("TenantflowGatewayErrors")["expr"])
    assert errors.endswith(f") > {defaults.gateway_error_ratio}")
    latency = _compact(_rule("TenantflowGatewayLatency")["expr"])
    assert latency.startswith("histogram_quantile(0.95,")
    assert latency.endswith(f") > {defaults.gateway_latency_seconds:g}")
    assert 'route!~".*/stream"' in latency  # as parse_gateway_metrics leaves streams out
    assert _rule("TenantflowNoWorkerPolling")["for"] == f"{defaults.no_worker_seconds // 60}m"
