"""``tenantflow migrate targets``: a run's targets in one state, from a real gateway over HTTP."""

from __future__ import annotations

import json

import asyncpg
import httpx
import pytest

from common.settings import Settings
from tests.cli.test_commands import gateway_url, run_cli
from tests.conftest import TargetFactory, Tokens
from tests.gateway.routers.test_run_targets import _register, _run, _schema_targets, _until

__all__ = ["gateway_url"]  # the fixture, used by name

pytestmark = pytest.mark.usefixtures("running_worker")


async def test_migrate_targets_pages_a_runs_targets_by_state(
    gateway_url: str,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    label, ids, names = await _schema_targets(make_target, catalog_pool, settings, 5, {1, 3})
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as api:
        set_name = await _register(api, tokens, label)
        url = await _run(api, tokens, set_name, {"labels": {"rt": label}})
        await _until(api, tokens, url, {"completed"})
    run_id = url.rsplit("/", 1)[1]
    token = tokens.token("infra-viewer")

    failed = await run_cli(
        gateway_url, token, "migrate", "targets", run_id, "--state", "failed", "--json"
    )
    assert failed.returncode == 0, failed.stderr
    body = json.loads(failed.stdout)
    assert {i["database_id"] for i in body["items"]} == {ids[1], ids[3]}
    assert (body["next_cursor"], body["failed_not_listed"], body["complete"]) == (None, 0, True)

    # One page at a time: the next cursor is printed for the following call.
    first = await run_cli(gateway_url, token, "migrate", "targets", run_id, "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[names[k], k] for k in ids[:2]]
    assert lines[1].split("\t")[2] == "failed" and "already exists" in lines[1]
    [hint] = [line for line in first.stderr.splitlines() if line.startswith("more: --cursor ")]
    second = await run_cli(
        gateway_url,
        token,
        "migrate",
        "targets",
        run_id,
        "--limit",
        "2",
        "--cursor",
        hint.removeprefix("more: --cursor "),
    )
    assert [line.split("\t")[1] for line in second.stdout.splitlines()] == ids[2:4]

    # --all follows every page.
    every = await run_cli(
        gateway_url, token, "migrate", "targets", run_id, "--limit", "2", "--all", "--state", "done"
    )
    assert every.returncode == 0, every.stderr
    assert [line.split("\t")[1] for line in every.stdout.splitlines()] == [ids[0], ids[2], ids[4]]
    assert "more:" not in every.stderr

    unknown = await run_cli(gateway_url, token, "migrate", "targets", "0123456789ab")
    assert unknown.returncode != 0
    assert "0123456789ab" in unknown.stderr + unknown.stdout
