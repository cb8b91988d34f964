"""``tenantflow sets assign`` / ``sets assignments`` against a real gateway."""

from __future__ import annotations

import json
import uuid

import asyncpg

from tests.cli.test_commands import EXAMPLE, gateway_url, invoke, run_cli  # noqa: F401 - fixture
from tests.conftest import Tokens


async def test_assign_and_list_from_the_command_line(
    gateway_url: str,  # noqa: F811 - the imported fixture
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
) -> None:
    admin = tokens.token("infra-admin")
    name = f"cli-asg-{uuid.uuid4().hex[:6]}"
    registered = await run_cli(gateway_url, admin, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.returncode == 0, registered.stderr
    try:
        assigned = await run_cli(
            gateway_url, admin, "sets", "assign", name, "--selector", "tier=free,region=eu",
            "--version", "2",
        )  # fmt: skip
        assert assigned.returncode == 0, assigned.stderr
        assert f"set {name} assigned to tier=free,region=eu at version 2" in assigned.stdout
        listed = await run_cli(gateway_url, admin, "sets", "assignments", "--json")
        assert listed.returncode == 0, listed.stderr
        mine = [i for i in json.loads(listed.stdout)["items"] if i["set_name"] == name]
        assert [(i["selector"], i["version"]) for i in mine] == [
            ({"tier": "free", "region": "eu"}, "2")
        ]
        unknown = await run_cli(gateway_url, admin, "sets", "assign", name, "--version", "999")
        assert unknown.returncode == 1
        assert "400 invalid_input" in unknown.stderr
        bad = await run_cli(gateway_url, admin, "sets", "assign", name, "--selector", "tier")
        assert bad.returncode != 0
        assert "Traceback" not in bad.stderr
    finally:
        await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = $1", name)


async def test_assign_as_json_and_the_assignments_table(
    gateway_url: str,  # noqa: F811 - the imported fixture
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
) -> None:
    admin = tokens.token("infra-admin")
    name = f"cli-asg-{uuid.uuid4().hex[:6]}"
    registered = await invoke(gateway_url, admin, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.exit_code == 0, registered.output
    try:
        assigned = await invoke(gateway_url, admin, "sets", "assign", name, "--json")
        assert assigned.exit_code == 0, assigned.output
        answer = json.loads(assigned.stdout)
        assert (answer["set_name"], answer["selector"], answer["version"]) == (name, {}, "latest")
        table = await invoke(gateway_url, admin, "sets", "assignments")
        assert table.exit_code == 0, table.output
        [row] = [line for line in table.stdout.splitlines() if f" {name} " in line]
        cells = [cell.strip() for cell in row.split("│")[1:4]]
        assert cells == [name, "(every target)", "latest"]
    finally:
        await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = $1", name)
