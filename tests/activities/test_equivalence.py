"""Acceptance: tenantflow applies a migration directory exactly as ``psql -1`` file by file does,
in all three input formats, and rolling back to 0 leaves nothing behind."""

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
from models.migrations import MigrationFormat, TargetRunInput, version_key
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


async def apply_with_psql(target: TargetDatabase, files: dict[str, str], tmp: Path) -> None:
    """What teams do today: each up file with ``psql -1`` (one transaction; a no-transaction
    version without ``-1``), in version order, a fresh session per file."""
    migrations = parse_files(files)
    for migration in sorted(migrations, key=lambda m: version_key(m.version)):
        path = tmp / f"{migration.version}.sql"
        path.write_text(migration.up_sql + "\n")
        # A no-transaction version is what psql does without -1: statement by statement.
        single = [] if migration.no_transaction else ["-1"]
        await _run(
            [
                str(EmbeddedPostgres.bin_dir() / "psql"),
                "-X",
                "-q",
                *single,
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
