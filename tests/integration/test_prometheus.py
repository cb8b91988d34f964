"""A real Prometheus (Debian's ``prometheus``) scrapes a real gateway and worker after a fleet run,
and PromQL returns the run's counts and the HTTP series with the right values.

Not skipped when Prometheus is missing: ``make test`` installs it as root and names the package
otherwise; a test that CI would skip proves nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import free_port
from common.settings import Settings
from tests.conftest import TargetFactory, Tokens

FILES = {
    "V1__a.sql": "CREATE TABLE a (id int);",
    "V2__b.sql": "CREATE TABLE b (id int);",
}
TARGETS = 3


@pytest.fixture
def prometheus_binary() -> str:
    """Debian's Prometheus server; its absence fails the test with what to install."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "Prometheus is not installed: run `make test` as root, or "
            "`sudo apt-get install -y --no-install-recommends prometheus`"
        )
    return found


def _start_prometheus(
    binary: str, directory: Path, gateway: int, worker: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{gateway}']}}]\n"
        f"  - job_name: worker\n    static_configs: [{{targets: ['127.0.0.1:{worker}']}}]\n"
    )
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={directory / 'data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, port


async def _value(prom: httpx.AsyncClient, query: str, expected: float, tries: int = 120) -> float:
    """Poll an instant PromQL query until it returns ``expected`` (scrapes come every second);
    the last value either way, for the caller's assertion."""
    value = float("nan")
    for _ in range(tries):
        answer = (await prom.get("/api/v1/query", params={"query": query})).json()
        result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
        if result:
            value = float(result[0]["value"][1])
            if value == expected:
                break
        await asyncio.sleep(0.5)
    return value


async def test_prometheus_scrapes_gateway_and_worker_after_a_fleet_run(
    prometheus_binary: str,
    stack: tuple[Settings, int],
    gateway_port: int,
    make_target: TargetFactory,
    tokens: Tokens,
    service_dir: Path,
) -> None:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"metrics-{label}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=60) as http:
        registered = await http.post(
            "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
        )
        assert registered.status_code == 201, registered.text
        for _ in range(TARGETS):
            target = await make_target()
            body = target.create_body(name=f"m-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
            created = await http.post("/api/v1/databases", json=body, headers=operator)
            assert created.status_code == 201, created.text
        started = await http.post(
            "/api/v1/migrations",
            json={"set": set_name, "selector": {"labels": {"fleet": label}}},
            headers=operator,
        )
        assert started.status_code == 202, started.text
        run = started.json()
        for _ in range(300):
            progress = (await http.get(run["status_url"], headers=operator)).json()
            if progress["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        assert progress["status"] == "completed", progress
        assert progress["counts"]["succeeded"] == TARGETS

        # The worker's endpoint answers in the Prometheus text format by itself too.
        worker_port = stack[1]
        text = (await http.get(f"http://127.0.0.1:{worker_port}/metrics")).text
        assert "# TYPE tenantflow_targets_migrated_total counter" in text

    process, port = _start_prometheus(prometheus_binary, service_dir, gateway_port, worker_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
            for _ in range(100):
                try:
                    if (await prom.get("/-/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            on_set = f'set="{set_name}"'
            # The run's counts, from the worker.
            assert await _value(prom, 'sum(up{job=~"gateway|worker"})', 2) == 2
            assert await _value(prom, f"sum(tenantflow_targets_migrated_total{{{on_set}}})", 3) == 3
            assert await _value(prom, f"sum(tenantflow_versions_applied_total{{{on_set}}})", 6) == 6
            assert (
                await _value(
                    prom, f"sum(tenantflow_target_migration_duration_seconds_count{{{on_set}}})", 3
                )
                == 3
            )
            assert (
                await _value(
                    prom, f"sum(tenantflow_targets_failed_total{{{on_set}}}) or vector(0)", 0
                )
                == 0
            )
            assert (
                await _value(
                    prom, 'sum(tenantflow_runs_started_total{job="worker",kind="apply"})', 1
                )
                == 1
            )
            assert (
                await _value(
                    prom,
                    'sum(tenantflow_runs_ended_total{job="worker",kind="apply",outcome="completed"})',
                    1,
                )
                == 1
            )
            # The Temporal SDK's own metrics, durations in seconds, on the same endpoint.
            assert (
                await _value(
                    prom,
                    'sum(temporal_workflow_completed_total{workflow_type="MigrateFleetWorkflow"})',
                    1,
                )
                == 1
            )
            assert (
                await _value(
                    prom,
                    "count(temporal_activity_execution_latency_seconds_count"
                    '{activity_type="run_target_batch"}) > bool 0',
                    1,
                )
                == 1
            )
            # The HTTP series, from the gateway: by route template, method and status.
            start_series = 'route="/api/v1/migrations",method="POST"'
            assert (
                await _value(
                    prom,
                    f'sum(tenantflow_http_requests_total{{job="gateway",{start_series},status="202"}})',
                    1,
                )
                == 1
            )
            assert (
                await _value(
                    prom,
                    f'sum(tenantflow_http_request_duration_seconds_count{{job="gateway",{start_series}}})',
                    1,
                )
                == 1
            )
            assert (
                await _value(
                    prom,
                    'sum(tenantflow_http_requests_total{job="gateway",'
                    'route="/api/v1/databases",method="POST",status="201"})',
                    TARGETS,
                )
                == TARGETS
            )
            # No label carries a target's id: the status route is counted by its template.
            assert (
                await _value(
                    prom,
                    'count(tenantflow_http_requests_total{job="gateway",route=~".*[0-9a-f]{8}-.*"})'
                    " or vector(0)",
                    0,
                )
                == 0
            )
    finally:
        process.terminate()
        process.wait(30)
