"""The operator CLI against a real gateway over HTTP: sets, targets, migrate and rollback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.stack import free_port
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import TargetDatabase, TargetFactory, ThreadedServer, Tokens

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "core"


@pytest.fixture
def gateway_url(settings: Settings, running_worker: None) -> Iterator[str]:
    """The gateway served by uvicorn on a real port, with its lifespan."""
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def run_cli(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The CLI off the event loop: the session's worker runs on that loop and must keep going."""
    return await asyncio.to_thread(cli, *args, **kwargs)  # type: ignore[arg-type]


async def invoke(
    url: str, token: str, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> Result:
    """The CLI in this process (typer's runner), off the event loop: as ``run_cli`` without the
    interpreter start-up, and measured by the test process's coverage."""
    from cli.main import app

    full_env = {"TENANTFLOW_API_URL": url, "TENANTFLOW_TOKEN": token, **(env or {})}

    def run() -> Result:
        return CliRunner().invoke(app, list(args), input=input, env=full_env)

    return await asyncio.to_thread(run)


def cli(
    url: str, token: str, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env.update(extra_env or {})
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TENANTFLOW_API_URL": url,
            "TENANTFLOW_TOKEN": token,
            "COLUMNS": "200",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_register_migrate_rollback_from_the_command_line(
    gateway_url: str, tokens: Tokens, target_database: TargetDatabase
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    registered = await run_cli(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.returncode == 0, registered.stderr
    assert "6 added, 0 unchanged, latest version 6" in registered.stdout
    shown = await run_cli(gateway_url, token, "sets", "show", name, "--json")
    assert [m["version"] for m in json.loads(shown.stdout)["migrations"]] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]

    added = await run_cli(
        gateway_url,
        token,
        "db",
        "add",
        "--name",
        f"cli-{uuid.uuid4().hex[:6]}",
        "--host",
        target_database.host,
        "--port",
        str(target_database.port),
        "--database",
        target_database.database,
        "--user",
        target_database.user,
        "--label",
        "tier=free",
        "--json",
        extra_env={"TENANTFLOW_TARGET_PASSWORD": target_database.password},
    )
    assert added.returncode == 0, added.stderr
    database_id = json.loads(added.stdout)["id"]
    assert target_database.password not in added.stdout

    plan = await run_cli(
        gateway_url,
        token,
        "migrate",
        "target",
        "--set",
        name,
        "--database",
        database_id,
        "--to",
        "2",
        "--dry-run",
    )
    assert plan.returncode == 0, plan.stderr
    assert "CREATE TABLE customers" in plan.stdout

    applied = await run_cli(
        gateway_url, token, "migrate", "target", "--set", name, "--database", database_id
    )
    assert applied.returncode == 0, applied.stderr
    assert "migrate: None -> 6" in applied.stdout

    back = await run_cli(
        gateway_url,
        token,
        "rollback",
        "target",
        "--set",
        name,
        "--database",
        database_id,
        "--to",
        "3",
        "--json",
    )
    assert back.returncode == 0, back.stderr
    result = json.loads(back.stdout)["result"]
    assert [a["version"] for a in result["applied"]] == ["6", "5", "4"]
    assert result["to_version"] == "3"


async def test_errors_are_readable_and_exit_non_zero(gateway_url: str, tokens: Tokens) -> None:
    viewer = tokens.token("infra-viewer")
    refused = await run_cli(
        gateway_url, viewer, "sets", "register", str(EXAMPLE), "--name", "x-set"
    )
    assert refused.returncode == 1
    assert "error (403 forbidden): missing permission migrations:execute" in refused.stderr
    missing = await run_cli(
        gateway_url,
        tokens.token("infra-admin"),
        "migrate",
        "target",
        "--set",
        "nope",
        "--database",
        str(uuid.uuid4()),
    )
    assert missing.returncode == 1
    assert "404 not_found" in missing.stderr
    assert "Traceback" not in missing.stderr + refused.stderr


async def test_fleet_apply_watches_to_the_end_and_exits_by_outcome(
    gateway_url: str, tokens: Tokens, make_target: TargetFactory
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    label = uuid.uuid4().hex[:8]
    assert (
        await run_cli(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    ).returncode == 0
    for _ in range(3):
        target = await make_target()
        added = await run_cli(
            gateway_url,
            token,
            "db",
            "add",
            "--name",
            f"fl-{uuid.uuid4().hex[:6]}",
            "--host",
            target.host,
            "--port",
            str(target.port),
            "--database",
            target.database,
            "--user",
            target.user,
            "--label",
            f"fleet={label}",
            extra_env={"TENANTFLOW_TARGET_PASSWORD": target.password},
        )
        assert added.returncode == 0, added.stderr
    applied = await run_cli(
        gateway_url,
        token,
        "migrate",
        "apply",
        "--set",
        name,
        "--selector",
        f"fleet={label}",
        "--concurrency",
        "3",
        "--json",
    )
    assert applied.returncode == 0, applied.stderr
    final = json.loads(applied.stdout)
    assert final["status"] == "completed"
    assert final["counts"]["succeeded"] == 3
    status = await run_cli(gateway_url, token, "migrate", "status", final["run_id"])
    assert "completed" in status.stdout
    back = await run_cli(
        gateway_url, token, "migrate", "rollback", final["run_id"], "--to", "0", "--json"
    )
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["counts"]["succeeded"] == 3
