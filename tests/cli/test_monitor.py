"""``tenantflow monitor`` over HTTP against a real gateway, worker, Temporal and PostgreSQL; the
health part is scoped by a label of the test's own."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx
from temporalio.client import Client

from cli.stack import free_port
from tests.cli.test_commands import EXAMPLE, invoke, run_cli
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


async def test_monitor_lists_active_runs_and_the_health_of_each_set(
    gateway_url: str,
    tokens: Tokens,
    temporal_client: Client,
    make_target: TargetFactory,
    catalog_pool: asyncpg.Pool,
) -> None:
    admin = tokens.token("infra-admin")
    tag = uuid.uuid4().hex[:8]
    name = f"mon-{tag}"
    registered = await invoke(gateway_url, admin, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.exit_code == 0, registered.output
    async with httpx.AsyncClient(
        base_url=gateway_url, headers=tokens.headers("infra-admin"), timeout=60
    ) as http:
        ids = []
        for _ in range(2):
            target = await make_target()
            body = target.create_body(name=f"mon-{uuid.uuid4().hex[:8]}", labels={"mon": tag})
            created = await http.post("/api/v1/databases", json=body)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        migrated = await http.post(
            f"/api/v1/databases/{ids[0]}/migrate", json={"set": name, "to_version": "2"}
        )
        assert migrated.json()["status"] == "completed", migrated.text
        # The sweep records the versions of the sets assigned to each target.
        assigned = await http.put(
            f"/api/v1/assignments/{name}", json={"selector": {"mon": tag}, "version": "latest"}
        )
        assert assigned.status_code == 200, assigned.text
        try:
            sweep = await http.post("/api/v1/health/sweep", params={"label": f"mon={tag}"})
            assert sweep.status_code == 202, sweep.text
            await temporal_client.get_workflow_handle(sweep.json()["workflow_id"]).result()
        finally:
            await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = $1", name)
        # A fleet run held after its canary: open while the monitor looks.
        started = await http.post(
            "/api/v1/migrations",
            json={
                "set": name,
                "selector": {"labels": {"mon": tag}},
                "canary": 1,
                "canary_wait_for_resume": True,
            },
        )
        assert started.status_code in (200, 201, 202), started.text
        run_id = started.json()["run_id"]
        for _ in range(120):
            state = (await http.get(f"/api/v1/migrations/{run_id}")).json()
            if state["paused_reason"]:
                break
            await asyncio.sleep(0.5)
        try:
            shown = await invoke(
                gateway_url, tokens.token("infra-viewer"), "monitor", "--label", f"mon={tag}"
            )
        finally:
            await http.post(f"/api/v1/migrations/{run_id}/cancel")
    assert shown.exit_code == 0, shown.output
    assert f"health (mon={tag}): 2 checked, 0 unreachable, 0 drifted, 2 behind" in shown.stdout
    [run_row] = [line for line in shown.stdout.splitlines() if run_id in line]
    assert "paused" in run_row
    [set_row] = [line for line in shown.stdout.splitlines() if line.startswith(f"│ {name} ")]
    assert [cell.strip() for cell in set_row.split("│")[1:3]] == [name, "2"]
    assert "none: 1, 2: 1" in set_row
