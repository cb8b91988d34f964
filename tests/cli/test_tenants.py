"""``tenantflow tenant create|list|show|rotate|rm`` end to end over HTTP against a real gateway,
worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from cli.stack import EmbeddedPostgres
from common.catalog.migration_sets import MigrationSetRepository
from tests.activities.test_migrations import BASE
from tests.cli.test_commands import invoke, run_cli
from tests.cli.test_servers import gateway_url
from tests.conftest import Tokens

__all__ = ["gateway_url"]  # the fixture, shared with the server commands' tests


async def test_a_tenant_from_the_command_line(
    gateway_url: str, tokens: Tokens, postgres: EmbeddedPostgres, catalog_pool: asyncpg.Pool
) -> None:
    admin = tokens.token("infra-admin")
    server = f"pg-{uuid.uuid4().hex[:8]}"
    added = await run_cli(
        gateway_url,
        admin,
        "server",
        "add",
        "--name",
        server,
        "--host",
        postgres.host,
        "--port",
        str(postgres.port),
        "--admin-user",
        postgres.user,
        "--password-env",
        "PGADMIN",
        "--sslmode",
        "disable",
        extra_env={"PGADMIN": postgres.password},
    )
    assert added.returncode == 0, added.stderr
    set_name = f"core-{uuid.uuid4().hex[:6]}"
    await MigrationSetRepository(catalog_pool).register(set_name, BASE)
    tenant = f"cli{uuid.uuid4().hex[:8]}"
    created = await run_cli(
        gateway_url,
        admin,
        "tenant",
        "create",
        tenant,
        "--server",
        server,
        "--mode",
        "schema",
        "--set",
        f"{set_name}@2",
        "--label",
        "plan=free",
    )
    assert created.returncode == 0, created.stderr + created.stdout
    assert f"tenant {tenant}: active" in created.stdout
    assert f"{set_name} 2" in created.stdout
    shown = await run_cli(gateway_url, admin, "tenant", "show", tenant, "--json")
    assert json.loads(shown.stdout)["versions"] == {set_name: "2"}
    listed = await run_cli(gateway_url, admin, "tenant", "list", "--status", "active", "--json")
    assert tenant in [t["tenant_id"] for t in json.loads(listed.stdout)]
    rotated = await run_cli(gateway_url, admin, "tenant", "rotate", tenant)
    assert rotated.returncode == 0, rotated.stderr
    # A bad request is the API's error, exit 1, no traceback.
    again = await run_cli(gateway_url, admin, "tenant", "create", tenant, "--server", server)
    assert again.returncode == 1
    assert "409 conflict" in again.stderr and "Traceback" not in again.stderr
    removed = await run_cli(gateway_url, admin, "tenant", "rm", tenant, "--yes")
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert f"tenant {tenant}: deprovisioned" in removed.stdout


async def test_tenant_options_failure_confirmation_and_pages(
    gateway_url: str, tokens: Tokens, postgres: EmbeddedPostgres, catalog_pool: asyncpg.Pool
) -> None:
    admin = tokens.token("infra-admin")
    # Refused before any request: a malformed --set; a removal not confirmed.
    malformed = await invoke(gateway_url, admin, "tenant", "create", "t1", "--set", "@2")
    assert malformed.exit_code == 2
    assert "'@2': sets look like NAME or NAME@VERSION" in malformed.stderr
    kept = await invoke(gateway_url, admin, "tenant", "rm", "t1", input="n\n")
    assert kept.exit_code == 1
    assert "Drop tenant t1 and all its data?" in kept.output
    assert "deprovisioning" not in kept.output

    tag = uuid.uuid4().hex[:8]
    added = await invoke(
        gateway_url, admin, "server", "add", "--name", f"pg-{tag}", "--host", postgres.host,
        "--port", str(postgres.port), "--admin-user", postgres.user, "--password-env", "PW",
        "--sslmode", "disable", "--label", f"pick=pg-{tag}", env={"PW": postgres.password},
    )  # fmt: skip
    assert added.exit_code == 0, added.output

    # Placed by server labels, in a shared database of its own; not waited for.
    tenant = f"cli{tag}"
    accepted = await invoke(
        gateway_url, admin, "tenant", "create", tenant, "--server-label", f"pick=pg-{tag}",
        "--mode", "schema", "--shared-database", f"shared_{tag}", "--no-wait", "--json",
    )  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["created"] is True
    shown = ""
    for _ in range(240):
        shown = (await invoke(gateway_url, admin, "tenant", "show", tenant)).stdout
        if not shown.startswith(f"tenant {tenant}: provisioning"):
            break
        await asyncio.sleep(0.5)
    assert shown.startswith(f"tenant {tenant}: active\n"), shown
    assert f"  server    pg-{tag}\n" in shown
    assert f"  mode      schema (shared_{tag} / schema " in shown
    listed = await invoke(gateway_url, admin, "tenant", "list")
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if f" {tenant} " in line]
    assert [cell.strip() for cell in row.split("│")[1:5]] == [
        tenant,
        "active",
        "schema",
        f"pg-{tag}",
    ]

    # The same request again: already requested, waited for, the tenant as JSON.
    again = await invoke(
        gateway_url, admin, "tenant", "create", tenant, "--server-label", f"pick=pg-{tag}",
        "--mode", "schema", "--shared-database", f"shared_{tag}", "--json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    record = json.loads(again.stdout)
    assert (record["tenant_id"], record["status"], record["server"]) == (
        tenant,
        "active",
        f"pg-{tag}",
    )

    quick = await invoke(
        gateway_url, admin, "tenant", "create", tenant, "--server-label", f"pick=pg-{tag}",
        "--mode", "schema", "--shared-database", f"shared_{tag}", "--no-wait",
    )  # fmt: skip
    assert quick.exit_code == 0, quick.output
    assert quick.stdout == f"tenant {tenant}: already requested (run {record['run_id']})\n"

    removing = await invoke(gateway_url, admin, "tenant", "rm", tenant, "--no-wait", input="y\n")
    assert removing.exit_code == 0, removing.output
    assert f"tenant {tenant}: deprovisioning (run " in removing.stdout

    # More tenants than one page (500) in one status: the listing follows next_cursor.
    await catalog_pool.execute(
        "INSERT INTO tenants (tenant_id, status, mode, role_name, database_name, request_hash,"
        " run_id) SELECT $1 || n, 'deprovisioned', 'database', 'r', 'd', 'h', 'run'"
        " FROM generate_series(1, 501) AS n",
        f"page{tag}-",
    )
    try:
        every = await invoke(gateway_url, admin, "tenant", "list", "--status", "deprovisioned",
                             "--json")  # fmt: skip
    finally:
        await catalog_pool.execute("DELETE FROM tenants WHERE tenant_id LIKE $1", f"page{tag}-%")
    assert every.exit_code == 0, every.output
    ids = [t["tenant_id"] for t in json.loads(every.stdout)]
    assert len([i for i in ids if i.startswith(f"page{tag}-")]) == 501
    assert len(ids) == len(set(ids))
