"""``tenantflow sets register --ledger-table`` against a real gateway."""

from __future__ import annotations

import json
import uuid

from tests.cli.test_commands import EXAMPLE, gateway_url, run_cli  # noqa: F401 - fixture
from tests.conftest import Tokens


async def test_register_names_the_ledger_table_once(
    gateway_url: str,  # noqa: F811 - the imported fixture
    tokens: Tokens,
) -> None:
    token = tokens.token("infra-admin")
    name, table = f"cli-led-{uuid.uuid4().hex[:6]}", f"core_{uuid.uuid4().hex[:6]}"
    registered = await run_cli(
        gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name,
        "--ledger-table", table, "--json",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["ledger_table"] == table
    shown = await run_cli(gateway_url, token, "sets", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert f"set {name}, ledger table {table}" in shown.stdout
    moved = await run_cli(
        gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name,
        "--ledger-table", "elsewhere",
    )  # fmt: skip
    assert moved.returncode == 1
    assert "409 conflict" in moved.stderr and table in moved.stderr
    bad = await run_cli(
        gateway_url, token, "sets", "register", str(EXAMPLE), "--name", f"{name}-x",
        "--ledger-table", "Bad-Name",
    )  # fmt: skip
    assert bad.returncode == 1 and "422" in bad.stderr
