"""``tenantflow monitor`` over HTTP against a real gateway, worker, Temporal and PostgreSQL; the
health part is scoped by a label of the test's own."""

from __future__ import annotations

import json
import uuid

import httpx
from temporalio.client import Client

from cli.stack import free_port
from tests.cli.test_commands import run_cli
from tests.cli.test_servers import gateway_url
from tests.conftest import TargetFactory, Tokens

__all__ = ["gateway_url"]


async def test_monitor_prints_the_summary_and_the_performance(
    gateway_url: str, tokens: Tokens, temporal_client: Client, make_target: TargetFactory
) -> None:
    tag = uuid.uuid4().hex[:8]
    target = await make_target()
    async with httpx.AsyncClient(
        base_url=gateway_url, headers=tokens.headers("infra-operator"), timeout=60
    ) as http:
        # Nothing listens on this port: the target is unreachable.
        body = target.create_body(name=f"mon-{tag}", port=free_port(), labels={"mon": tag})
        assert (await http.post("/api/v1/databases", json=body)).status_code == 201
        sweep = await http.post("/api/v1/health/sweep", params={"label": f"mon={tag}"})
        assert sweep.status_code == 202, sweep.text
        await temporal_client.get_workflow_handle(sweep.json()["workflow_id"]).result()

    viewer = tokens.token("infra-viewer")
    shown = await run_cli(gateway_url, viewer, "monitor", "--label", f"mon={tag}")
    assert shown.returncode == 0, shown.stderr
    assert f"health (mon={tag}): 1 checked, 1 unreachable, 0 drifted, 0 behind" in shown.stdout
    assert "failure rate" in shown.stdout

    raw = await run_cli(gateway_url, viewer, "monitor", "--label", f"mon={tag}", "--json")
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["health"]["unreachable"] == 1

    performance = await run_cli(gateway_url, viewer, "monitor", "--performance")
    assert performance.returncode == 0, performance.stderr
    assert "GET /api/v1/monitoring/summary" in performance.stdout
    assert "NO WORKER" not in performance.stdout

    refused = await run_cli(gateway_url, viewer, "monitor", "--label", "no-equals-sign")
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
