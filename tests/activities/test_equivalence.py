"""Acceptance: tenantflow applies a migration directory exactly as ``psql -1`` file by file does,
in all three input formats, and rolling back to 0 leaves nothing behind; each format's own
features (Flyway repeatables and ``.sql.conf``, dbmate's per-section ``transaction:false``,
golang-migrate's up-only sets and down marker) register, apply, re-apply as a no-op and roll
back as psql running the downs does."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from activities.migrations import LEDGER_TABLE
from cli.stack import EmbeddedPostgres
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.migrations.loader import load_directory, parse_files, to_format
from common.settings import Settings
from models.databases import DatabaseCreate
from models.migrations import MigrationFormat, TargetRunInput, TargetRunResult, version_key
from tests.conftest import TargetDatabase, TargetFactory
from workflows.migrations import MigrateTargetWorkflow, RollbackTargetWorkflow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "core"
# pg_dump 18 brackets its output with \restrict <random key>; they differ on every run.
_VOLATILE = re.compile(r"^\\(un)?restrict .*$|^-- Dumped (from|by) .*$", re.MULTILINE)


async def _run(args: list[str], password: str) -> str:
    env = {**os.environ, "PGPASSWORD": password}
    result = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, check=False, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def schema_dump(target: TargetDatabase) -> str:
    """``pg_dump --schema-only`` without owners, privileges, the ledger or volatile lines."""
    dump = await _run(
        [
            str(EmbeddedPostgres.bin_dir() / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--exclude-table=public.{LEDGER_TABLE}",
            "-h",
            target.host,
            "-p",
            str(target.port),
            "-U",
            target.user,
            target.database,
        ],
        target.password,
    )
    return _VOLATILE.sub("", dump)


async def psql_file(target: TargetDatabase, sql: str, path: Path, single: bool) -> None:
    """One script with ``psql`` (``-1``: in one transaction), stopping at the first error."""
    await asyncio.to_thread(path.write_text, sql + "\n")
    await _run(
        [
            str(EmbeddedPostgres.bin_dir() / "psql"),
            "-X",
            "-q",
            *(["-1"] if single else []),
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(path),
            "-h",
            target.host,
            "-p",
            str(target.port),
            "-U",
            target.user,
            target.database,
        ],
        target.password,
    )


async def apply_with_psql(target: TargetDatabase, files: dict[str, str], tmp: Path) -> None:
    """What teams do today: each up file with ``psql -1`` (one transaction; a no-transaction
    version without ``-1``), in version order, a fresh session per file."""
    migrations = parse_files(files)
    versions = sorted(
        (m for m in migrations if not m.repeatable), key=lambda m: version_key(m.version)
    )
    # Flyway's order: the versions, then the repeatables by description (as parse_files has them).
    for migration in [*versions, *(m for m in migrations if m.repeatable)]:
        name = migration.version.replace(":", "_").replace(" ", "_")
        # A no-transaction version is what psql does without -1: statement by statement.
        await psql_file(target, migration.up_sql, tmp / f"{name}.sql", not migration.no_transaction)


@pytest.mark.usefixtures("running_worker")
@pytest.mark.parametrize("fmt", list(MigrationFormat), ids=lambda f: f.value)
async def test_tenantflow_and_psql_produce_identical_schemas_and_rollback_to_zero_is_empty(
    fmt: MigrationFormat,
    make_target: TargetFactory,
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    files = to_format(load_directory(EXAMPLE), fmt)
    (tmp_path / "set").mkdir()
    for name, text in files.items():
        (tmp_path / "set" / name).write_text(text)
    migrations = load_directory(tmp_path / "set")  # detected, as a user's directory would be
    assert len(migrations) >= 6

    by_tenantflow, by_psql = await make_target(), await make_target()
    empty = await schema_dump(by_tenantflow)

    set_name = f"core-{fmt.value}-{uuid.uuid4().hex[:6]}"
    await MigrationSetRepository(catalog_pool).register(set_name, migrations)
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    database = await repository.create(DatabaseCreate.model_validate(by_tenantflow.create_body()))
    params = TargetRunInput(run_id=f"eq-{fmt.value}", database_id=database.id, set_name=set_name)
    result = await temporal_client.execute_workflow(
        MigrateTargetWorkflow.run,
        params,
        id=f"target-run-{database.id}-eq",
        task_queue=settings.temporal.task_queue,
    )
    assert result.failure is None, result.failure
    assert result.to_version == migrations[-1].version

    await apply_with_psql(by_psql, files, tmp_path)
    tenantflow_schema = await schema_dump(by_tenantflow)
    assert tenantflow_schema == await schema_dump(by_psql)
    assert "CREATE VIEW public.customer_summaries" in tenantflow_schema

    back = await temporal_client.execute_workflow(
        RollbackTargetWorkflow.run,
        params.model_copy(update={"run_id": f"eq-back-{fmt.value}", "target_version": "0"}),
        id=f"target-run-{database.id}-eq-back",
        task_queue=settings.temporal.task_queue,
    )
    assert back.failure is None, back.failure
    assert [a.version for a in back.applied] == [m.version for m in reversed(migrations)]
    assert await schema_dump(by_tenantflow) == empty


# Issue 9: a set built from what real histories contain (points 1, 2 and 6; point 4's two
# concurrent builds in one file join it with statement-by-statement no-transaction versions).
HARD_CASES = {
    # pg_dump's first lines empty the search_path for the rest of the session (point 1).
    "000001_initial_dump.up.sql": (
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "CREATE TABLE public.accounts (id bigint PRIMARY KEY, name text);\n"
    ),
    "000001_initial_dump.down.sql": "DROP TABLE public.accounts;\n",
    "000002_notes.up.sql": "CREATE TABLE notes (id bigint, account bigint REFERENCES accounts);\n",
    "000002_notes.down.sql": "DROP TABLE notes;\n",
    # A version that only concerns another engine: empty up and down (point 6).
    "000003_mysql_only.up.sql": "-- nothing to do on PostgreSQL\n",
    "000003_mysql_only.down.sql": "",
    # golang-migrate style transaction control, marked no-transaction (point 2).
    "000004_tags.up.sql": (
        "-- tenantflow:no-transaction\nBEGIN;\nCREATE TABLE tags (id bigint, label text);\n"
        "INSERT INTO tags VALUES (1, 'a');\nCOMMIT;\n"
    ),
    "000004_tags.down.sql": "DROP TABLE tags;\n",
    # Two concurrent builds in one file, and their concurrent drops (point 4).
    "000005_indexes.up.sql": (
        "-- tenantflow:no-transaction\n"
        "CREATE INDEX CONCURRENTLY notes_account ON notes (account);\n"
        "CREATE INDEX CONCURRENTLY tags_label ON tags (label);\n"
    ),
    "000005_indexes.down.sql": (
        "-- tenantflow:no-transaction\n"
        "DROP INDEX CONCURRENTLY tags_label;\nDROP INDEX CONCURRENTLY notes_account;\n"
    ),
    "000006_after.up.sql": "CREATE TABLE later (id bigint);\n",
    "000006_after.down.sql": "DROP TABLE later;\n",
}


@pytest.mark.usefixtures("running_worker")
async def test_real_history_hard_cases_match_psql_and_roll_back_to_empty(
    make_target: TargetFactory,
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    migrations = parse_files(HARD_CASES)
    assert [m.no_transaction for m in migrations] == [False, False, False, True, True, False]
    by_tenantflow, by_psql = await make_target(), await make_target()
    empty = await schema_dump(by_tenantflow)
    set_name = f"hard-{uuid.uuid4().hex[:6]}"
    await MigrationSetRepository(catalog_pool).register(set_name, migrations)
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    database = await repository.create(DatabaseCreate.model_validate(by_tenantflow.create_body()))
    params = TargetRunInput(run_id="eq-hard", database_id=database.id, set_name=set_name)
    result = await temporal_client.execute_workflow(
        MigrateTargetWorkflow.run,
        params,
        id=f"target-run-{database.id}-eq-hard",
        task_queue=settings.temporal.task_queue,
    )
    assert result.failure is None, result.failure
    assert result.to_version == "6"

    await apply_with_psql(by_psql, HARD_CASES, tmp_path)
    tenantflow_schema = await schema_dump(by_tenantflow)
    assert tenantflow_schema == await schema_dump(by_psql)
    assert "CREATE TABLE public.later" in tenantflow_schema
    assert "CREATE INDEX notes_account" in tenantflow_schema

    back = await temporal_client.execute_workflow(
        RollbackTargetWorkflow.run,
        params.model_copy(update={"run_id": "eq-hard-back", "target_version": "0"}),
        id=f"target-run-{database.id}-eq-hard-back",
        task_queue=settings.temporal.task_queue,
    )
    assert back.failure is None, back.failure
    assert [a.version for a in back.applied] == ["6", "5", "4", "3", "2", "1"]
    assert await schema_dump(by_tenantflow) == empty


async def roll_back_with_psql(target: TargetDatabase, files: dict[str, str], tmp: Path) -> None:
    """Each down file with ``psql -1`` (without for a down that runs outside a transaction), in
    reverse version order; repeatables have no down."""
    versions = [m for m in parse_files(files) if not m.repeatable]
    for migration in sorted(versions, key=lambda m: version_key(m.version), reverse=True):
        assert migration.down_sql is not None
        await psql_file(
            target,
            migration.down_sql,
            tmp / f"down_{migration.version}.sql",
            single=not migration.down_outside_transaction,
        )


# Flyway (examples/flyway-features): repeatables (a view, a function, and one outside a
# transaction) after the versions in description order, V and U scripts with their own
# .sql.conf. The downs drop what depends on their tables, as a team's undo scripts must for
# psql to run them.
FLYWAY_FEATURES = {
    path.name: path.read_text()
    for path in sorted((EXAMPLE.parent / "flyway-features").iterdir())
    if path.name.endswith((".sql", ".sql.conf"))
}
# dbmate: the up and the down of a section each say transaction:false, or not, on their own.
DBMATE_FEATURES = {
    "20240101000001_create_t.sql": (
        "-- migrate:up\nCREATE TABLE t (x int, y int);\n-- migrate:down\nDROP TABLE t;\n"
    ),
    "20240101000002_both_outside.sql": (
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY t_x ON t (x);\n"
        "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY t_x;\n"
    ),
    "20240101000003_up_outside.sql": (
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY t_y ON t (y);\n"
        "-- migrate:down\nDROP INDEX t_y;\nALTER TABLE t ADD COLUMN dropped_y_index bool;\n"
    ),
    "20240101000004_down_outside.sql": (
        "-- migrate:up\nCREATE TABLE u (x int);\nCREATE INDEX u_x ON u (x);\n"
        "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY u_x;\nDROP TABLE u;\n"
    ),
    # dbmate takes the leading digits as the version; the description may be absent.
    "20240101000005.sql": (
        "-- migrate:up\nCREATE TABLE v (x int);\n-- migrate:down\nDROP TABLE v;\n"
    ),
}
# golang-migrate: the down file's own marker line runs it outside a transaction.
GOLANG_FEATURES = {
    "000001_items.up.sql": "CREATE TABLE items (id bigint, label text);\n",
    "000001_items.down.sql": "DROP TABLE items;\n",
    "000002_.up.sql": "CREATE INDEX items_label ON items (label);\n",  # an empty title
    "000002_.down.sql": ("-- tenantflow:no-transaction\nDROP INDEX CONCURRENTLY items_label;\n"),
}
# golang-migrate: an up-only set (no down files at all).
GOLANG_UP_ONLY = {
    "000001_items.up.sql": "CREATE TABLE items (id bigint, label text);\n",
    "000002_labels.up.sql": (
        "-- tenantflow:no-transaction\nCREATE INDEX CONCURRENTLY items_label ON items (label);\n"
    ),
    "000003_more.up.sql": "ALTER TABLE items ADD COLUMN price numeric;\n",
}
FEATURES = {
    "flyway": FLYWAY_FEATURES,
    "dbmate": DBMATE_FEATURES,
    "golang-migrate": GOLANG_FEATURES,
    "golang-migrate-up-only": GOLANG_UP_ONLY,
}


@pytest.mark.usefixtures("running_worker")
@pytest.mark.parametrize("feature", list(FEATURES))
async def test_each_formats_features_match_psql_file_by_file(
    feature: str,
    make_target: TargetFactory,
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    files = FEATURES[feature]
    migrations = parse_files(files)
    versions = [m.version for m in migrations if not m.repeatable]
    by_tenantflow, by_psql = await make_target(), await make_target()
    empty = await schema_dump(by_tenantflow)
    set_name = f"feat-{feature}-{uuid.uuid4().hex[:6]}"
    registered = await MigrationSetRepository(catalog_pool).register(set_name, migrations)
    assert registered.added == [m.version for m in migrations]
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    database = await repository.create(DatabaseCreate.model_validate(by_tenantflow.create_body()))
    params = TargetRunInput(run_id=f"feat-{feature}", database_id=database.id, set_name=set_name)

    async def run(suffix: str, **update: object) -> TargetRunResult:
        run_params = params.model_copy(update={"run_id": f"feat-{feature}-{suffix}", **update})
        return await temporal_client.execute_workflow(
            RollbackTargetWorkflow.run if "target_version" in update else MigrateTargetWorkflow.run,
            run_params,
            id=f"target-run-{database.id}-{suffix}",
            task_queue=settings.temporal.task_queue,
        )

    applied = await run("up")
    assert applied.failure is None, applied.failure
    assert [a.version for a in applied.applied] == [m.version for m in migrations]
    assert [a.repeatable for a in applied.applied] == [m.repeatable for m in migrations]
    assert applied.to_version == versions[-1]
    again = await run("again")
    assert again.failure is None, again.failure
    assert again.applied == []  # a no-op, repeatables included

    await apply_with_psql(by_psql, files, tmp_path)
    assert await schema_dump(by_tenantflow) == await schema_dump(by_psql)

    back = await run("down", target_version="0")
    if feature == "golang-migrate-up-only":
        # As golang-migrate's `migrate down`: no down file, no rollback; nothing changes.
        assert back.failure is not None
        assert back.failure.reason == "missing_down"
        assert back.failure.message == "no down script for version(s) 3, 2, 1"
        assert await schema_dump(by_tenantflow) == await schema_dump(by_psql)
        return
    assert back.failure is None, back.failure
    assert [a.version for a in back.applied] == versions[::-1]
    await roll_back_with_psql(by_psql, files, tmp_path)
    rolled_back = await schema_dump(by_tenantflow)
    assert rolled_back == await schema_dump(by_psql)
    if feature != "dbmate":  # its version 3's down leaves a column behind on purpose
        assert rolled_back == empty
    conn = await by_tenantflow.connect()
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {LEDGER_TABLE}") == 0
    finally:
        await conn.close()
