"""``tenantflow db show|update|test|rm``: text and JSON output, exclusive options and the
confirmation, in process against a real gateway, worker, Temporal and PostgreSQL."""

from __future__ import annotations

import json
import uuid

from cli.stack import EmbeddedPostgres, free_port
from tests.cli.test_commands import gateway_url, invoke
from tests.conftest import TargetDatabase, Tokens

__all__ = ["gateway_url"]  # the fixture, used by name


async def test_db_show_update_test_and_rm(
    gateway_url: str, tokens: Tokens, target_database: TargetDatabase, postgres: EmbeddedPostgres
) -> None:
    token = tokens.token("infra-operator")
    # Refused before any request.
    both = await invoke(gateway_url, token, "db", "update", "x", "--server", "s",
                        "--detach-server")  # fmt: skip
    assert both.exit_code == 2
    assert "--server and --detach-server exclude each other" in both.stderr
    kept = await invoke(gateway_url, token, "db", "rm", "some-id", input="n\n")
    assert kept.exit_code == 1
    assert "Forget target some-id?" in kept.output and "removed" not in kept.output

    server = f"pg-{uuid.uuid4().hex[:8]}"
    on_server = await invoke(
        gateway_url, token, "server", "add", "--name", server, "--host", postgres.host,
        "--port", str(postgres.port), "--admin-user", postgres.user, "--password-env", "PW",
        "--sslmode", "disable", env={"PW": postgres.password},
    )  # fmt: skip
    assert on_server.exit_code == 0, on_server.output
    name = f"dbs-{uuid.uuid4().hex[:8]}"
    added = await invoke(
        gateway_url, token, "db", "add", "--name", name, "--host", target_database.host,
        "--port", str(free_port()), "--database", target_database.database,
        "--user", target_database.user, "--server", server, "--sslmode", "disable",
        "--label", "tier=free", "--json",
        env={"TENANTFLOW_TARGET_PASSWORD": target_database.password},
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    created = json.loads(added.stdout)
    database_id = created["id"]
    assert created["server_id"] is not None

    shown = await invoke(gateway_url, token, "db", "show", database_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"database {name} ({database_id})"
    assert "(sslmode disable)" in lines[1]
    assert lines[-1].split() == ["labels", "tier=free"]
    assert f"server     {created['server_id']}" in shown.stdout
    assert target_database.password not in shown.stdout

    # Nothing listens on its port: the test fails, in JSON too, exit 1.
    refused = await invoke(gateway_url, token, "db", "test", database_id, "--json")
    assert refused.exit_code == 1
    answer = json.loads(refused.stdout)
    assert answer["ok"] is False and answer["error"]

    detached = await invoke(
        gateway_url, token, "db", "update", database_id, "--detach-server",
        "--port", str(target_database.port), "--json",
    )  # fmt: skip
    assert detached.exit_code == 0, detached.output
    changed = json.loads(detached.stdout)
    assert (changed["server_id"], changed["port"]) == (None, target_database.port)
    works = await invoke(gateway_url, token, "db", "test", database_id, "--json")
    assert works.exit_code == 0, works.output
    assert json.loads(works.stdout)["ok"] is True

    removed = await invoke(gateway_url, token, "db", "rm", database_id, input="y\n")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.rstrip().endswith(f"removed {database_id}")
    gone = await invoke(gateway_url, token, "db", "show", database_id, "--json")
    assert gone.exit_code == 1 and "404 not_found" in gone.stderr
    assert (await invoke(gateway_url, token, "server", "rm", server, "--yes")).exit_code == 0
