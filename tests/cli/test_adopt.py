"""``tenantflow migrate adopt`` and ``migrate baseline`` against a real gateway over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx

from models.adoption import AdoptSource
from tests.activities.test_adoption import CORE, migrate_as
from tests.cli.test_commands import EXAMPLE, gateway_url, invoke, run_cli  # noqa: F401 - a fixture
from tests.conftest import TargetDatabase, TargetFactory, Tokens


async def _register(url: str, token: str, target: TargetDatabase, label: str) -> str:
    body = target.create_body(name=f"cli-{uuid.uuid4().hex[:8]}", labels={"fleet": label})
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        created = await http.post(
            "/api/v1/databases", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_adopt_and_baseline_from_the_command_line(
    gateway_url: str,  # noqa: F811 - the fixture
    tokens: Tokens,
    make_target: TargetFactory,
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    registered = await run_cli(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.returncode == 0, registered.stderr
    label = uuid.uuid4().hex[:8]
    for _ in range(2):
        target = await make_target()
        conn = await target.connect()
        try:
            await migrate_as(conn, AdoptSource.DBMATE, CORE[:4])
        finally:
            await conn.close()
        await _register(gateway_url, token, target, label)

    # The wrong tool: every target refused, named, exit 1.
    wrong = await run_cli(
        gateway_url, token, "migrate", "adopt", "--set", name, "--from", "flyway",
        "--selector", f"fleet={label}",
    )  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stderr.count("no_history") == 2, wrong.stderr

    adopted = await run_cli(
        gateway_url, token, "migrate", "adopt", "--set", name, "--from", "dbmate",
        "--selector", f"fleet={label}", "--json",
    )  # fmt: skip
    assert adopted.returncode == 0, adopted.stderr
    final = json.loads(adopted.stdout)
    assert final["counts"]["succeeded"] == 2
    assert {t["to_version"] for t in final["targets"].values()} == {"4"}

    by_hand = await make_target()
    conn = await by_hand.connect()
    try:
        for migration in CORE[:2]:
            await conn.execute(migration.up_sql)
    finally:
        await conn.close()
    database_id = await _register(gateway_url, token, by_hand, uuid.uuid4().hex[:8])
    baselined = await run_cli(
        gateway_url, token, "migrate", "baseline", "--set", name, "--version", "2",
        "--database", database_id, "--json",
    )  # fmt: skip
    assert baselined.returncode == 0, baselined.stderr
    assert json.loads(baselined.stdout)["targets"][database_id]["to_version"] == "2"
    unknown = await run_cli(
        gateway_url, token, "migrate", "baseline", "--set", name, "--version", "9",
        "--database", database_id,
    )  # fmt: skip
    assert unknown.returncode == 1 and "version 9 is not in set" in unknown.stderr


async def test_detach_prints_the_run_and_returns(
    gateway_url: str,  # noqa: F811 - the fixture
    tokens: Tokens,
    target_database: TargetDatabase,
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    registered = await invoke(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.exit_code == 0, registered.output
    database_id = await _register(gateway_url, token, target_database, uuid.uuid4().hex[:8])
    common = ["--set", name, "--database", database_id, "--dry-run", "--detach"]
    plain = await invoke(gateway_url, token, "migrate", "baseline", "--version", "2", *common)
    assert plain.exit_code == 0, plain.output
    run_ids = [plain.stdout.strip()]
    assert len(run_ids[0].split()) == 1 and "started" not in plain.stdout
    raw = await invoke(
        gateway_url, token, "migrate", "adopt", "--from", "dbmate", *common, "--json"
    )
    assert raw.exit_code == 0, raw.output
    run_ids.append(json.loads(raw.stdout)["run_id"])
    # Both runs are real: they end (a dry run changes nothing) and are found by their ids.
    for run_id, kind in zip(run_ids, ("baseline", "adopt"), strict=True):
        for _ in range(120):
            state = json.loads(
                (await invoke(gateway_url, token, "migrate", "status", run_id, "--json")).stdout
            )
            if state["status"] in ("completed", "cancelled"):
                break
            await asyncio.sleep(0.5)
        assert state["status"] == "completed", state
        assert (state["kind"], state["dry_run"]) == (kind, True)
