"""``tenantflow health show|list|sweep|drift`` end to end over HTTP against a real gateway,
worker, Temporal and PostgreSQL; sweeps are scoped by a label of the test's own (the catalog
holds every other test's targets too)."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
from temporalio.client import Client, WorkflowHandle

from cli.stack import free_port
from common.catalog.migration_sets import MigrationSetRepository
from models.health import FleetHealthResult
from tests.activities.test_migrations import BASE
from tests.cli.test_commands import run_cli
from tests.cli.test_servers import gateway_url
from tests.conftest import TargetFactory, Tokens
from workflows.health import FleetHealthWorkflow

__all__ = ["gateway_url"]  # the fixture, shared with the server commands' tests


async def _register(http: httpx.AsyncClient, body: dict[str, object]) -> str:
    created = await http.post("/api/v1/databases", json=body)
    assert created.status_code == 201, created.text
    database_id: str = created.json()["id"]
    return database_id


async def _migrate(http: httpx.AsyncClient, database_id: str, set_name: str, to: str) -> None:
    ran = await http.post(
        f"/api/v1/databases/{database_id}/migrate", json={"set": set_name, "to_version": to}
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["status"] == "completed", ran.text


async def test_show_list_sweep_and_drift_from_the_command_line(
    gateway_url: str,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    admin, viewer = tokens.token("infra-admin"), tokens.token("infra-viewer")
    tag = uuid.uuid4().hex[:8]
    label = f"h={tag}"
    set_name = f"health-{tag}"
    await MigrationSetRepository(catalog_pool).register(set_name, BASE)
    altered, lagging = await make_target(), await make_target()
    async with httpx.AsyncClient(
        base_url=gateway_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
    ) as http:
        assigned = await http.put(
            f"/api/v1/assignments/{set_name}", json={"selector": {"h": tag}, "version": "latest"}
        )
        assert assigned.status_code == 200, assigned.text
        drifted_id = await _register(http, altered.create_body(name=f"a-{tag}", labels={"h": tag}))
        behind_id = await _register(http, lagging.create_body(name=f"b-{tag}", labels={"h": tag}))
        # Nothing listens on this port: the target is unreachable.
        down_id = await _register(
            http, altered.create_body(name=f"c-{tag}", port=free_port(), labels={"h": tag})
        )
        await _migrate(http, drifted_id, set_name, "10")
        await _migrate(http, behind_id, set_name, "2")
    conn = await altered.connect()
    try:
        await conn.execute("ALTER TABLE customers ADD COLUMN note text")
    finally:
        await conn.close()

    unchecked = await run_cli(gateway_url, viewer, "health", "show", drifted_id)
    assert unchecked.returncode == 1
    assert f"404 not_found): database {drifted_id} has not been checked yet" in unchecked.stderr
    assert "Traceback" not in unchecked.stderr

    started = await run_cli(gateway_url, admin, "health", "sweep", "--label", label)
    assert started.returncode == 0, started.stderr
    words = started.stdout.split()
    assert words[0] == "sweep" and words[2] == "started", started.stdout
    run_id, workflow_id = words[1], words[4].rstrip(")")
    handle: WorkflowHandle[FleetHealthWorkflow, FleetHealthResult] = (
        temporal_client.get_workflow_handle_for(FleetHealthWorkflow.run, workflow_id)
    )
    result = await handle.result()
    assert result.run_id == run_id and result.counts.checked == 3

    shown = await run_cli(gateway_url, viewer, "health", "show", drifted_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"health of {drifted_id}"
    assert "  reachable     yes" in lines
    assert any(line.startswith("  latency       ") and line.endswith(" ms") for line in lines)
    assert any(line.startswith("  server        PostgreSQL 18") for line in lines)
    assert f"  sets          {set_name}  ledger 10, assigned 10" in lines
    assert f"  drift         drifted against reference ({set_name} at 10): 1 object(s)" in lines
    assert "                  table customers: column note added" in lines
    assert any(
        line.startswith("  last checked  ") and line.endswith(f"(sweep {run_id})") for line in lines
    )
    behind = await run_cli(gateway_url, viewer, "health", "show", behind_id)
    assert f"  sets          {set_name}  ledger 2, assigned 10  behind" in behind.stdout
    assert "  drift         none" in behind.stdout
    down = await run_cli(gateway_url, viewer, "health", "show", down_id)
    assert down.returncode == 0, down.stderr
    assert "  reachable     no: " in down.stdout and "  latency       -" in down.stdout
    assert altered.password not in down.stdout
    raw = await run_cli(gateway_url, viewer, "health", "show", behind_id, "--json")
    snapshot = json.loads(raw.stdout)
    assert snapshot["behind_sets"] == [set_name] and snapshot["run_id"] == run_id

    listed = await run_cli(gateway_url, viewer, "health", "list", "--label", label, "--json")
    assert listed.returncode == 0, listed.stderr
    states = {d["id"]: d["health"] for d in json.loads(listed.stdout)["items"]}
    assert states == {drifted_id: ["drifted"], behind_id: ["behind"], down_id: ["unreachable"]}
    table = await run_cli(gateway_url, viewer, "health", "list", "--label", label)
    rows = [line for line in table.stdout.splitlines() if tag in line]
    assert len(rows) == 3
    assert any(f"a-{tag}" in r and drifted_id in r and "drifted" in r for r in rows)
    only = await run_cli(
        gateway_url, viewer, "health", "list", "--state", "unreachable", "--label", label
    )
    assert only.returncode == 0, only.stderr
    assert down_id in only.stdout and drifted_id not in only.stdout

    drift = await run_cli(gateway_url, viewer, "health", "drift", "--set", set_name)
    assert drift.returncode == 0, drift.stderr
    out = drift.stdout.splitlines()
    assert out[0] == f"set {set_name}"
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out if "│" in line]
    assert cells == [["2", "1", "0"], ["10", "1", "1"]]  # version, targets, drifted
    assert f"drifted at 10: a-{tag} ({drifted_id}), 1 object(s) against reference" in out, (
        drift.stdout
    )
    assert "  table customers: column note added" in out


async def test_gateway_errors_and_bad_options_are_one_line_without_a_traceback(
    gateway_url: str, tokens: Tokens
) -> None:
    viewer = tokens.token("infra-viewer")
    missing = str(uuid.uuid4())
    unknown = await run_cli(gateway_url, viewer, "health", "show", missing)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(f"error (404 not_found): no database {missing}\n")
    no_set = await run_cli(gateway_url, viewer, "health", "drift", "--set", "no-such-set")
    assert no_set.returncode == 1
    assert no_set.stderr.startswith("error (404 not_found): ")
    refused = await run_cli(gateway_url, viewer, "health", "sweep", "--label", "h=x")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error (403 forbidden): ")
    bad_state = await run_cli(gateway_url, viewer, "health", "list", "--state", "sleepy")
    assert bad_state.returncode == 2
    bad_label = await run_cli(gateway_url, viewer, "health", "list", "--label", "nope")
    assert bad_label.returncode == 2
    assert "key=value" in bad_label.stderr
    down = await run_cli(f"http://127.0.0.1:{free_port()}", viewer, "health", "list")
    assert down.returncode == 1
    assert down.stderr.startswith("error (0 unreachable): ")
    for result in (unknown, no_set, refused, bad_state, bad_label, down):
        assert "Traceback" not in result.stderr
