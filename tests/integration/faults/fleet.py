"""The fleet a fault test rolls out to and checks: target databases (each with its own login
role), a small migration set whose version 2 sleeps, long on the ``fslow_`` targets, so a fault
lands mid-version, and the checks that every target holds every version exactly once."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import httpx

from activities.migrations import LEDGER_TABLE
from cli.stack import EmbeddedPostgres
from tests.conftest import LEAK_CANARIES, TargetDatabase

T = TypeVar("T")
VERSIONS = ["1", "2", "3"]
# Version 2 and 3 each record that they ran in ``applied``: a version applied twice shows there
# even though the ledger's primary key would refuse its second row.
FILES = {
    "V1__applied.sql": "CREATE TABLE applied (version text NOT NULL);",
    "V2__slow.sql": (
        "INSERT INTO applied VALUES ('2');\n"
        "SELECT pg_sleep(CASE WHEN current_database() LIKE 'fslow%' THEN 2.0 ELSE 0.3 END);"
    ),
    "V3__after.sql": "INSERT INTO applied VALUES ('3');",
}
SLOW_QUERY = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' "
    "AND datname LIKE 'fslow%' AND query LIKE '%pg_sleep%'"
)


async def gather_bounded(calls: Sequence[Callable[[], Awaitable[T]]], at_once: int = 6) -> list[T]:
    """Run ``calls`` with at most ``at_once`` in flight; results in order."""
    semaphore = asyncio.Semaphore(at_once)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def create_targets(
    postgres: EmbeddedPostgres, count: int, slow_every: int
) -> list[TargetDatabase]:
    """``count`` databases on ``postgres``; every ``slow_every``-th one is slow (``fslow_``)."""
    targets = [
        TargetDatabase(
            postgres,
            f"{'fslow' if i % slow_every == 0 else 'fault'}_{uuid.uuid4().hex[:10]}",
            uuid.uuid4().hex,
        )
        for i in range(count)
    ]
    LEAK_CANARIES.update(target.password for target in targets)

    async def create(share: Sequence[TargetDatabase]) -> None:
        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            for target in share:
                password = await admin.fetchval("SELECT format('%L', $1::text)", target.password)
                await admin.execute(f'CREATE ROLE "{target.user}" LOGIN PASSWORD {password}')
                await admin.execute(f'CREATE DATABASE "{target.database}" OWNER "{target.user}"')
        finally:
            await admin.close()

    await asyncio.gather(*(create(targets[i::3]) for i in range(3)))
    return targets


async def drop_targets(postgres: EmbeddedPostgres, targets: Sequence[TargetDatabase]) -> None:
    async def drop(share: Sequence[TargetDatabase]) -> None:
        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            for target in share:
                await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
                await admin.execute(f'DROP ROLE IF EXISTS "{target.user}"')
        finally:
            await admin.close()

    await asyncio.gather(*(drop(targets[i::3]) for i in range(3)))


async def register(
    http: httpx.AsyncClient, headers: dict[str, str], targets: Sequence[TargetDatabase]
) -> tuple[str, str]:
    """Register the set and the targets (labelled ``fleet=<label>``): the label and set."""
    label = uuid.uuid4().hex[:8]
    set_name = f"faults-{label}"
    answer = await http.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=headers
    )
    assert answer.status_code == 201, answer.text

    def registration(target: TargetDatabase) -> Callable[[], Awaitable[httpx.Response]]:
        # Random names: a label selector runs targets by name, and the slow ones should be
        # spread through the run, not all at its end.
        body = target.create_body(name=f"t-{uuid.uuid4().hex[:12]}", labels={"fleet": label})
        return lambda: http.post("/api/v1/databases", json=body, headers=headers)

    for response in await gather_bounded([registration(t) for t in targets]):
        assert response.status_code == 201, response.text
    return label, set_name


async def start_run(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    set_name: str,
    label: str,
    concurrency: int = 4,
) -> dict[str, Any]:
    """A run over the fleet: 4 targets at a time, one per batch, a lost worker's batch
    retried after 3 s without a heartbeat."""
    answer = await http.post(
        "/api/v1/migrations",
        json={
            "set": set_name,
            "selector": {"labels": {"fleet": label}},
            "concurrency": concurrency,
            "batch_size": 1,
            "heartbeat_timeout_seconds": 3,
        },
        headers=headers,
    )
    assert answer.status_code == 202, answer.text
    run: dict[str, Any] = answer.json()
    return run


async def wait_mid_version(
    postgres: EmbeddedPostgres, run_id: str, *, within: float = 120.0
) -> None:
    """Until a slow target of ``postgres`` is inside version 2's sleep for ``run_id``."""
    conn = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await conn.fetchval(SLOW_QUERY, f"tenantflow:{run_id}"):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError("no slow target was ever mid-version")


async def state_of(target: TargetDatabase) -> tuple[list[tuple[str, bool]], list[str]]:
    """The target's ledger (version, success) and what ``applied`` recorded, in order."""
    conn = await target.connect()
    try:
        if not await conn.fetchval(f"SELECT to_regclass('{LEDGER_TABLE}') IS NOT NULL"):
            return [], []
        ledger = [
            (r["version"], r["success"])
            for r in await conn.fetch(
                f"SELECT version, success FROM {LEDGER_TABLE} ORDER BY version::int"
            )
        ]
        applied: list[str] = []
        if await conn.fetchval("SELECT to_regclass('applied') IS NOT NULL"):
            applied = [r["version"] for r in await conn.fetch("SELECT version FROM applied")]
        return ledger, sorted(applied)
    finally:
        await conn.close()


async def assert_consistent(
    targets: Sequence[TargetDatabase], *, complete: bool = True
) -> dict[str, int]:
    """Every target's ledger is whole versions in order, each once, each with its effect
    committed once (never half a version); with ``complete``, every version. Returns how many
    targets stand at each version."""
    at: dict[str, int] = {}
    states = await gather_bounded([functools.partial(state_of, t) for t in targets])
    for target, (ledger, applied) in zip(targets, states, strict=True):
        versions = [version for version, _ in ledger]
        assert all(success for _, success in ledger), (target.database, ledger)
        assert versions == VERSIONS[: len(versions)], (target.database, versions)
        assert applied == [v for v in versions if v != "1"], (target.database, versions, applied)
        if complete:
            assert versions == VERSIONS, (target.database, versions)
        key = versions[-1] if versions else "0"
        at[key] = at.get(key, 0) + 1
    return at
