"""``tenantflow sets|db|migrate``: tables, a failing version, a run still running, fleet-run
controls and argument errors; in process against a real gateway, worker, Temporal and
PostgreSQL (argument errors need no gateway)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.client import Client

from cli.commands import _selector
from cli.stack import free_port
from gateway.routers import target_runs
from tests.cli.test_commands import EXAMPLE, gateway_url, invoke
from tests.conftest import TargetDatabase, TargetFactory, Tokens

__all__ = ["gateway_url"]  # the fixture, used by name

NOWHERE = "http://127.0.0.1:9"  # commands refused before any request never reach it


def _set_dir(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir()
    for name, text in files.items():
        if isinstance(text, bytes):
            (root / name).write_bytes(text)
        else:
            (root / name).write_text(text)
    return root


async def _add_target(url: str, token: str, target: TargetDatabase, *extra: str) -> str:
    added = await invoke(
        url, token, "db", "add", "--name", f"cr-{uuid.uuid4().hex[:8]}", "--host", target.host,
        "--port", str(target.port), "--database", target.database, "--user", target.user,
        "--json", *extra,
        env={"TENANTFLOW_TARGET_PASSWORD": target.password},
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    return str(json.loads(added.stdout)["id"])


def test_selector_reads_labels_all_or_explicit_targets() -> None:
    assert _selector("all", None) == {"all": True}
    assert _selector(None, None) == _selector("", None) == {"all": True}
    assert _selector(" tier = free ,region=eu", None) == {
        "labels": {"tier": "free", "region": "eu"}
    }
    assert _selector("tier=free", ["a", "b"]) == {"database_ids": ["a", "b"]}
    with pytest.raises(typer.BadParameter, match="looks like tier=free"):
        _selector("tier=free,oops", None)


async def test_register_refuses_unreadable_and_empty_directories(tmp_path: Path) -> None:
    latin1 = _set_dir(tmp_path / "latin1", {"V1__café.sql": "SELECT 'caf\xe9';".encode("latin-1")})
    refused = await invoke(NOWHERE, "t", "sets", "register", str(latin1), "--name", "x")
    assert refused.exit_code == 1
    assert f"error: cannot read {latin1 / 'V1__café.sql'}: UnicodeDecodeError" in refused.stderr
    empty = _set_dir(tmp_path / "empty", {"README.md": "no migrations here"})
    nothing = await invoke(NOWHERE, "t", "sets", "register", str(empty), "--name", "x")
    assert nothing.exit_code == 1
    assert f"error: no .sql files in {empty}" in nothing.stderr
    bad = await invoke(NOWHERE, "t", "migrate", "apply", "--set", "x", "--selector", "tier")
    assert bad.exit_code == 2
    assert "--selector looks like tier=free,region=eu (or all)" in bad.stderr


async def test_tables_and_a_version_that_fails(
    gateway_url: str, tokens: Tokens, make_target: TargetFactory, tmp_path: Path
) -> None:
    token = tokens.token("infra-admin")
    name = f"boom-{uuid.uuid4().hex[:6]}"
    ledger = f"tf_ledger_{uuid.uuid4().hex[:6]}"
    directory = _set_dir(
        tmp_path / "boom", {"V1__ok.sql": "CREATE TABLE a (id int);", "V2__boom.sql": "SELECT 1/0;"}
    )
    registered = await invoke(
        gateway_url, token, "sets", "register", str(directory), "--name", name,
        "--format", "flyway", "--ledger-table", ledger,
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert f"set {name}: 2 added, 0 unchanged, latest version 2" in registered.stdout
    shown = await invoke(gateway_url, token, "sets", "show", name)
    assert shown.exit_code == 0, shown.output
    assert f"set {name}, ledger table {ledger}" in shown.stdout
    rows = [line.split("│")[1:5] for line in shown.stdout.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row][:3] for row in rows] == [
        ["1", "ok", "no"],
        ["2", "boom", "no"],
    ]
    listed = await invoke(gateway_url, token, "sets", "list")
    assert listed.exit_code == 0, listed.output
    [mine] = [line for line in listed.stdout.splitlines() if f" {name} " in line]
    assert mine.split("│")[2].strip() == "2"
    raw_list = await invoke(gateway_url, token, "sets", "list", "--json")
    assert raw_list.exit_code == 0, raw_list.output
    [item] = [i for i in json.loads(raw_list.stdout)["items"] if i["name"] == name]
    assert item["latest_version"] == "2"

    database_id = await _add_target(gateway_url, token, await make_target())
    failed = await invoke(gateway_url, token, "migrate", "target", "--set", name,
                          "--database", database_id)  # fmt: skip
    assert failed.exit_code == 1
    assert "1  ok  (" in failed.stdout
    assert "migrate: None -> 1" in failed.stdout
    assert "failed at version 2 [22012]: division by zero" in failed.stderr
    # --json prints the answer only, and still exits 1.
    again = await invoke(gateway_url, token, "migrate", "target", "--set", name,
                         "--database", database_id, "--json")  # fmt: skip
    assert again.exit_code == 1
    result = json.loads(again.stdout)["result"]
    assert (result["from_version"], result["failure"]["sqlstate"]) == ("1", "22012")
    assert again.stderr == ""


async def test_a_run_still_running_when_the_gateway_stops_waiting(
    gateway_url: str,
    tokens: Tokens,
    target_database: TargetDatabase,
    temporal_client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(target_runs, "WAIT_SECONDS", 2.0)  # the gateway answers "running" at 2 s
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    registered = await invoke(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.exit_code == 0, registered.output
    # Nothing listens on the port: the run keeps retrying the connection.
    dead = await _add_target(gateway_url, token, target_database, "--port", str(free_port()))
    running = await invoke(gateway_url, token, "migrate", "target", "--set", name,
                           "--database", dead)  # fmt: skip
    raw = await invoke(gateway_url, token, "rollback", "target", "--set", name,
                       "--database", dead, "--to", "0", "--json")  # fmt: skip
    run_id = running.stdout.removeprefix("run ").split(":")[0]
    for workflow_id in (
        target_runs.workflow_id_for(uuid.UUID(dead), run_id),
        json.loads(raw.stdout)["workflow_id"],
    ):
        await temporal_client.get_workflow_handle(workflow_id).terminate("test over")
    assert running.exit_code == 0, running.output  # not failed: still going
    assert running.stdout == f"run {run_id}: running \n"
    assert raw.exit_code == 0, raw.output
    state = json.loads(raw.stdout)
    assert (state["status"], state["result"]) == ("running", None)


async def test_a_fleet_run_detached_paused_resumed_and_rolled_back(
    gateway_url: str, tokens: Tokens, make_target: TargetFactory
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    label = uuid.uuid4().hex[:8]
    registered = await invoke(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.exit_code == 0, registered.output
    ids = [
        await _add_target(gateway_url, token, await make_target(), "--label", f"ctl={label}")
        for _ in range(2)
    ]
    started = await invoke(
        gateway_url, token, "migrate", "apply", "--set", name, "--selector", f"ctl={label}",
        "--canary", "1", "--canary-wait", "--batch-size", "4", "--batch-connections", "2",
        "--detach",
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    run_id = started.stdout.strip()
    assert len(run_id.split()) == 1 and "started" not in run_id

    state: dict[str, Any] = {}
    for _ in range(120):
        shown = await invoke(gateway_url, token, "migrate", "status", run_id, "--json")
        assert shown.exit_code == 0, shown.output
        state = json.loads(shown.stdout)
        if state["paused_reason"]:
            break
        await asyncio.sleep(0.5)
    assert state["paused_reason"] == "canary succeeded; resume to continue"
    line = await invoke(gateway_url, token, "migrate", "status", run_id)
    assert line.stdout.startswith(f"{run_id} paused ")
    assert line.stdout.rstrip().endswith("(canary succeeded; resume to continue)")

    resumed = await invoke(gateway_url, token, "migrate", "resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout == f"resume sent to {run_id}\n"
    for _ in range(120):
        state = json.loads((await invoke(gateway_url, token, "migrate", "status", run_id,
                                         "--json")).stdout)  # fmt: skip
        if state["status"] == "completed":
            break
        await asyncio.sleep(0.5)
    assert state["status"] == "completed"
    assert (state["counts"]["succeeded"], state["counts"]["failed"]) == (2, 0)

    back = await invoke(gateway_url, token, "migrate", "rollback", run_id, "--to", "0")
    assert back.exit_code == 0, back.output
    assert back.stdout.startswith("rollback run ")
    assert '"succeeded": 2' in back.stdout
    detached = await invoke(
        gateway_url, token, "migrate", "apply", "--database", ids[0], "--set", name, "--to", "1",
        "--detach", "--json",
    )  # fmt: skip
    assert detached.exit_code == 0, detached.output
    detached_id = json.loads(detached.stdout)["run_id"]
    for _ in range(120):
        state = json.loads((await invoke(gateway_url, token, "migrate", "status", detached_id,
                                         "--json")).stdout)  # fmt: skip
        if state["status"] == "completed":
            break
        await asyncio.sleep(0.5)
    assert (state["status"], state["counts"]["succeeded"], state["total"]) == ("completed", 1, 1)
    unknown = await invoke(gateway_url, token, "migrate", "pause", "0123456789ab")
    assert unknown.exit_code == 1
    assert "error (404 not_found)" in unknown.stderr
