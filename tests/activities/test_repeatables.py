"""Flyway's repeatable migrations (``R__<description>.sql``) in the engine, on real PostgreSQL:
applied after the versions in description order, recorded in the ledger with their checksum,
applied again exactly once when they change, a no-op otherwise, forgotten by a rollback."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from activities.migrations import LEDGER_TABLE
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import Conflict
from common.migrations.loader import parse_files
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import FleetRunInput, FleetSelector, FleetStatus, TargetProgress, TargetState
from models.migrations import TargetRunKind
from tests.activities.test_migrations import Engine
from tests.conftest import TargetDatabase, TargetFactory, Tokens
from tests.workflows.test_fleet import replay_and_record
from workflows.fleet import MigrateFleetWorkflow

FILES = {
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, name text, active bool);",
    "U1__accounts.sql": "DROP VIEW IF EXISTS active_accounts;\nDROP TABLE accounts;",
    "V2__notes.sql": "CREATE TABLE notes (id bigint, body text);",
    "U2__notes.sql": "DROP TABLE notes;",
    # Description order, not file or upload order: "active accounts" before "b note count".
    "R__b_note_count.sql": (
        "CREATE OR REPLACE FUNCTION note_count() RETURNS bigint LANGUAGE sql "
        "AS $$ SELECT count(*) FROM notes $$;"
    ),
    "R__active_accounts.sql": (
        "CREATE OR REPLACE VIEW active_accounts AS SELECT id FROM accounts WHERE active;"
    ),
}
VIEW_V2 = "CREATE OR REPLACE VIEW active_accounts AS SELECT id, name FROM accounts WHERE active;"


@pytest.fixture
async def engine(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> AsyncIterator[Engine]:
    engine = Engine(catalog_pool, settings, target_database)
    await engine.register_target()
    yield engine


async def ledger(engine: Engine) -> dict[str, tuple[str, bool]]:
    conn = await engine.connect()
    try:
        rows = await conn.fetch(f"SELECT version, checksum, success FROM {LEDGER_TABLE}")
    finally:
        await conn.close()
    return {r["version"]: (r["checksum"], r["success"]) for r in rows}


async def view_columns(engine: Engine) -> list[str]:
    conn = await engine.connect()
    try:
        rows = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('active_accounts') "
            "AND attnum > 0 ORDER BY attnum"
        )
    finally:
        await conn.close()
    return [r["attname"] for r in rows]


async def test_repeatables_apply_after_the_versions_in_description_order(engine: Engine) -> None:
    migrations = parse_files(FILES)
    registered = await engine.sets.register(engine.set_name, migrations)
    assert registered.added == ["1", "2", "R:active accounts", "R:b note count"]
    assert registered.latest_version == "2"  # repeatables are not versions
    info = await engine.sets.info(engine.set_name)
    assert info.latest_version == "2"
    assert [m.repeatable for m in info.migrations] == [False, False, True, True]

    plan = await engine.run(dry_run=True)
    assert [(p.version, p.repeatable) for p in plan.planned] == [
        ("1", False),
        ("2", False),
        ("R:active accounts", True),
        ("R:b note count", True),
    ]
    first = await engine.run()
    assert first.failure is None, first.failure
    assert [(a.version, a.repeatable) for a in first.applied] == [
        ("1", False),
        ("2", False),
        ("R:active accounts", True),
        ("R:b note count", True),
    ]
    assert (first.from_version, first.to_version) == (None, "2")
    rows = await ledger(engine)
    assert rows["R:active accounts"] == (migrations[2].checksum, True)
    again = await engine.run()
    assert (again.applied, again.failure, again.to_version) == ([], None, "2")
    assert (await engine.run(dry_run=True)).planned == []


async def test_a_changed_repeatable_is_registered_and_applied_again_once(engine: Engine) -> None:
    await engine.sets.register(engine.set_name, parse_files(FILES))
    assert (await engine.run()).failure is None
    assert await view_columns(engine) == ["id"]

    changed = parse_files({**FILES, "R__active_accounts.sql": VIEW_V2})
    registered = await engine.sets.register(engine.set_name, changed)
    assert registered.added == []
    assert registered.updated == ["R:active accounts"]
    assert registered.unchanged == ["1", "2", "R:b note count"]
    # Versioned migrations stay immutable.
    with pytest.raises(Conflict, match="version 2 of set"):
        await engine.sets.register(
            engine.set_name, parse_files({**FILES, "V2__notes.sql": "CREATE TABLE notes (x int);"})
        )

    plan = await engine.run(dry_run=True)
    assert [(p.version, p.sql) for p in plan.planned] == [("R:active accounts", VIEW_V2)]
    runs = await asyncio.gather(*(engine.run() for _ in range(3)))
    assert all(r.failure is None and r.to_version == "2" for r in runs)
    # Three concurrent runs: the changed repeatable is applied exactly once.
    assert [a.version for r in runs for a in r.applied] == ["R:active accounts"]
    assert await view_columns(engine) == ["id", "name"]
    assert (await ledger(engine))["R:active accounts"] == (changed[2].checksum, True)
    assert (await engine.run()).applied == []


async def test_a_failing_repeatable_stops_the_run_naming_it_and_keeps_the_versions(
    engine: Engine,
) -> None:
    files = {**FILES, "R__active_accounts.sql": "CREATE VIEW active_accounts AS SELECT nope;"}
    await engine.sets.register(engine.set_name, parse_files(files))
    result = await engine.run()
    assert result.failure is not None
    assert (result.failure.version, result.failure.reason) == ("R:active accounts", "sql_error")
    assert result.failure.sqlstate == "42703"
    assert [a.version for a in result.applied] == ["1", "2"]
    assert result.to_version == "2"
    assert set(await ledger(engine)) == {"1", "2"}  # b note count was not reached


async def test_no_transaction_repeatable_is_applied_again_when_it_changes(engine: Engine) -> None:
    index = "CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_body ON notes (body);"
    conf = {"R__notes_index.sql.conf": "executeInTransaction=false"}
    files = {**FILES, "R__notes_index.sql": index, **conf}
    await engine.sets.register(engine.set_name, parse_files(files))
    first = await engine.run()
    assert first.failure is None, first.failure
    assert first.applied[-1].version == "R:notes index"

    rebuilt = "DROP INDEX CONCURRENTLY IF EXISTS notes_body;\n" + index.replace("(body)", "(id)")
    changed = parse_files({**files, "R__notes_index.sql": rebuilt})
    assert changed[-1].no_transaction
    await engine.sets.register(engine.set_name, changed)
    second = await engine.run()
    assert second.failure is None, second.failure
    assert [a.version for a in second.applied] == ["R:notes index"]
    assert (await ledger(engine))["R:notes index"] == (changed[-1].checksum, True)
    conn = await engine.connect()
    try:
        definition = await conn.fetchval("SELECT pg_get_indexdef('notes_body'::regclass)")
    finally:
        await conn.close()
    assert definition.endswith("(id)")
    assert (await engine.run()).applied == []


async def test_rollback_forgets_repeatables_and_the_next_apply_runs_them_again(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, parse_files(FILES))
    assert (await engine.run()).failure is None
    plan = await engine.run(TargetRunKind.ROLLBACK, target_version="1", dry_run=True)
    assert [p.version for p in plan.planned] == ["2"]  # repeatables have no down
    back = await engine.run(TargetRunKind.ROLLBACK, target_version="1")
    assert back.failure is None, back.failure
    assert [a.version for a in back.applied] == ["2"]
    assert set(await ledger(engine)) == {"1"}
    # The repeatables' objects stay as the downs leave them: the view on accounts is there.
    assert await view_columns(engine) == ["id"]
    forward = await engine.run()
    assert [a.version for a in forward.applied] == ["2", "R:active accounts", "R:b note count"]
    back_to_zero = await engine.run(TargetRunKind.ROLLBACK, target_version="0")
    assert back_to_zero.failure is None, back_to_zero.failure
    assert [a.version for a in back_to_zero.applied] == ["2", "1"]
    assert await ledger(engine) == {}
    assert await view_columns(engine) == []  # U1 dropped it, as psql would have


async def test_a_repeatable_in_the_ledger_but_not_in_the_set_is_an_unknown_version(
    engine: Engine,
) -> None:
    await engine.sets.register(engine.set_name, parse_files(FILES))
    assert (await engine.run()).failure is None
    conn = await engine.connect()
    try:
        await conn.execute(
            f"UPDATE {LEDGER_TABLE} SET version = 'R:gone' WHERE version LIKE 'R:b%'"
        )
    finally:
        await conn.close()
    result = await engine.run()
    assert result.failure is not None
    assert (result.failure.version, result.failure.reason) == ("R:gone", "unknown_version")


@pytest.mark.usefixtures("running_worker")
async def test_a_fleet_run_reports_the_repeatables_each_target_got(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    label = uuid.uuid4().hex[:10]
    set_name = f"fleet-r-{label}"
    sets = MigrationSetRepository(catalog_pool)
    databases = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    for _ in range(2):
        body = (await make_target()).create_body(
            name=f"r-{uuid.uuid4().hex[:8]}", labels={"fleet": label}
        )
        await databases.create(DatabaseCreate.model_validate(body))

    async def fleet_run(run: str, **options: object) -> dict[str, TargetProgress]:
        params = FleetRunInput.model_validate(
            {
                "run_id": f"{label}-{run}",
                "set_name": set_name,
                "selector": FleetSelector(labels={"fleet": label}),
                **options,
            }
        )
        handle = await temporal_client.start_workflow(
            MigrateFleetWorkflow.run,
            params,
            id=f"migrate-fleet-{label}-{run}",
            task_queue=settings.temporal.task_queue,
        )
        result = await handle.result()
        assert result.status is FleetStatus.COMPLETED
        assert result.counts.failed == 0
        if run == "second":  # the run that reports a re-applied repeatable
            await replay_and_record(handle, "migrate_fleet_repeatables.json")
        return (await handle.query(MigrateFleetWorkflow.progress)).targets

    await sets.register(set_name, parse_files(FILES))
    first = await fleet_run("first")
    assert [(t.state, t.to_version, t.repeatables) for t in first.values()] == [
        (TargetState.SUCCEEDED, "2", ["R:active accounts", "R:b note count"])
    ] * 2
    await sets.register(set_name, parse_files({**FILES, "R__active_accounts.sql": VIEW_V2}))
    plan = await fleet_run("plan", dry_run=True)
    assert [t.repeatables for t in plan.values()] == [["R:active accounts"]] * 2
    second = await fleet_run("second")
    # Only a repeatable changed: the targets changed, their version did not.
    assert [(t.state, t.from_version, t.to_version, t.repeatables) for t in second.values()] == [
        (TargetState.SUCCEEDED, "2", "2", ["R:active accounts"])
    ] * 2
    third = await fleet_run("third")
    assert [(t.state, t.repeatables) for t in third.values()] == [(TargetState.UP_TO_DATE, [])] * 2


def _tgz(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"db/migrations/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_through_the_api_repeatables_and_script_configuration_arrive_whole(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    operator = tokens.headers("infra-operator")
    files = {
        **FILES,
        "V3__notes_index.sql": "CREATE INDEX CONCURRENTLY notes_body ON notes (body);",
        "V3__notes_index.sql.conf": "executeInTransaction=false\n",
    }
    name = f"api-r-{uuid.uuid4().hex[:6]}"
    archived = await api.post(
        "/api/v1/migration-sets/archive",
        data={"name": name},
        files={"archive": ("set.tgz", _tgz(files), "application/octet-stream")},
        headers=operator,
    )
    assert archived.status_code == 201, archived.text
    assert archived.json()["added"] == ["1", "2", "3", "R:active accounts", "R:b note count"]
    info = (await api.get(f"/api/v1/migration-sets/{name}", headers=operator)).json()
    assert [(m["version"], m["no_transaction"], m["repeatable"]) for m in info["migrations"]][
        2:
    ] == [
        ("3", True, False),  # the .sql.conf came with the archive
        ("R:active accounts", False, True),
        ("R:b note count", False, True),
    ]
    version = await api.get(
        f"/api/v1/migration-sets/{name}/versions/R:active accounts", headers=operator
    )
    assert version.status_code == 200, version.text
    assert version.json()["up_sql"] == FILES["R__active_accounts.sql"]

    changed = await api.post(
        "/api/v1/migration-sets",
        json={"name": name, "files": {**files, "R__active_accounts.sql": VIEW_V2}},
        headers=operator,
    )
    assert changed.status_code == 201, changed.text
    assert changed.json()["updated"] == ["R:active accounts"]

    target = await make_target()
    created = await api.post(
        "/api/v1/databases",
        json=target.create_body(name=f"r-{uuid.uuid4().hex[:8]}"),
        headers=tokens.headers("infra-admin"),
    )
    assert created.status_code == 201, created.text
    database_id = created.json()["id"]
    applied = await api.post(
        f"/api/v1/databases/{database_id}/migrate", json={"set": name}, headers=operator
    )
    assert applied.status_code == 200, applied.text
    result = applied.json()["result"]
    assert [(a["version"], a["repeatable"]) for a in result["applied"]][-2:] == [
        ("R:active accounts", True),
        ("R:b note count", True),
    ]
    history = await api.get(
        f"/api/v1/databases/{database_id}/history",
        params={"set": name},
        headers=tokens.headers("infra-viewer"),
    )
    assert [e["version"] for e in history.json()["entries"]] == [
        "1",
        "2",
        "3",
        "R:active accounts",
        "R:b note count",
    ]
    withdrawn = await api.post(
        f"/api/v1/migration-sets/{name}/versions/R:b note count/withdraw", headers=operator
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["repeatable"] is True
