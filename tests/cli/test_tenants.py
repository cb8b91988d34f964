"""``tenantflow tenant create|list|show|rotate|rm`` end to end over HTTP against a real gateway,
worker, Temporal and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import asyncpg

from cli.stack import EmbeddedPostgres
from common.catalog.migration_sets import MigrationSetRepository
from tests.activities.test_migrations import BASE
from tests.cli.test_commands import run_cli
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
