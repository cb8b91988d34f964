"""``tenantflow backup`` and ``tenantflow restore`` on a real PostgreSQL and Temporal.

Every test works on a catalog database of its own (``fresh_database``): other tests share the
session's catalog, and these ones wipe theirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from temporalio.client import Client

from activities.ledger import LEDGER_TABLE
from cli.backup import BackupFailed, CatalogContents, backup_catalog, echo_contents, human_size
from cli.pg_tools import PgToolFailed
from cli.restore import RestoreRefused, restore_catalog
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.catalog import open_catalog
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.crypto import CredentialCipher, KeyRing, generate_key
from common.errors import DependencyUnavailable
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import FleetRunInput, FleetSelector, FleetStatus
from models.servers import ServerCreate
from tests.activities.test_migrations import migration
from tests.conftest import TargetDatabase, TargetFactory, make_settings
from worker.main import run_worker
from workflows.fleet import MigrateFleetWorkflow

ROOT = Path(__file__).resolve().parents[2]
Completed = subprocess.CompletedProcess[str]
STEPS = [
    migration("1", "CREATE TABLE backed_up (id int);", "DROP TABLE backed_up;"),
    migration("2", "ALTER TABLE backed_up ADD COLUMN note text;", None),
]


class OwnCatalog:
    """A catalog database of the test's own, its settings, and what was registered in it."""

    def __init__(self, postgres: EmbeddedPostgres, temporal: str, dsn: str) -> None:
        self.postgres = postgres
        self.dsn = dsn
        self.name = urlsplit(dsn).path.lstrip("/")
        self.settings: Settings = make_settings(
            postgres, temporal, catalog={"dsn": dsn, "startup_retry_seconds": 5}
        )
        self.label = uuid.uuid4().hex[:10]
        self.set_name = f"backup-{self.label}"
        self.targets: list[TargetDatabase] = []

    async def register(self, *targets: TargetDatabase, server: bool = False) -> None:
        """Schema applied; the targets (and a server) registered, the migration set too."""
        pool = await open_catalog(self.settings.catalog)
        try:
            cipher = CredentialCipher(KeyRing.from_settings(self.settings.crypto))
            repository = DatabaseRepository(pool, cipher)
            for target in targets:
                body = target.create_body(
                    name=f"b-{uuid.uuid4().hex[:8]}", labels={"fleet": self.label}
                )
                await repository.create(DatabaseCreate.model_validate(body))
                self.targets.append(target)
            if server:
                spec = ServerCreate.model_validate(
                    {
                        "name": f"pg-{self.label}",
                        "host": self.postgres.host,
                        "port": self.postgres.port,
                        "admin_user": self.postgres.user,
                        "admin_password": self.postgres.password,
                        "sslmode": "disable",
                    }
                )
                await ServerRepository(pool, cipher).create(spec)
            await MigrationSetRepository(pool).register(self.set_name, STEPS)  # idempotent
        finally:
            await pool.close()

    async def rows(self) -> dict[str, int]:
        """Rows per table of the catalog, as it is now."""
        conn = await asyncpg.connect(self.dsn)
        try:
            names = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
            return {
                r["tablename"]: await conn.fetchval(f'SELECT count(*) FROM "{r["tablename"]}"')
                for r in names
            }
        finally:
            await conn.close()

    async def sql(self, statement: str) -> None:
        """Run one statement in the catalog."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def wipe(self) -> None:
        """Drop the catalog database and create it again, empty."""
        admin = await asyncpg.connect(self.postgres.dsn("postgres"))
        try:
            await admin.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()

    async def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``tenantflow ARGS`` against this catalog, off the event loop (workers run on it)."""
        return await asyncio.to_thread(self._cli, args, env)

    def _cli(
        self, args: tuple[str, ...], extra: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTFLOW_", "PG"))}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "TENANTFLOW_PROFILE": "test",
                "TENANTFLOW_CATALOG__DSN": self.dsn,
                "COLUMNS": "200",
                **extra,
            }
        )
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            cwd=self.postgres.data_dir,  # no developer's .env
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        # The catalog's DSN and password never show, whatever happened.
        for secret in (self.postgres.password, self.dsn):
            assert secret not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result


@pytest.fixture
async def own(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, fresh_database: str
) -> OwnCatalog:
    return OwnCatalog(postgres, temporal_server.address, fresh_database)


async def plaintext_of(archive: Path) -> str:
    """The archive as SQL text (what pg_restore would run)."""
    bin_dir = EmbeddedPostgres.bin_dir()
    result = await asyncio.to_thread(
        subprocess.run,
        [str(bin_dir / "pg_restore"), "--file=-", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


async def ledger_versions(target: TargetDatabase) -> list[str]:
    conn = await target.connect()
    try:
        rows = await conn.fetch(f"SELECT version FROM {LEDGER_TABLE} ORDER BY applied_at")
    finally:
        await conn.close()
    return [r["version"] for r in rows]


async def test_backup_wipe_restore_then_a_rollout_runs(
    own: OwnCatalog,
    make_target: TargetFactory,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    await own.register(*[await make_target() for _ in range(3)], server=True)
    archive = tmp_path / "catalog.dump"

    backed_up = await own.cli("backup", str(archive), "--json")
    assert backed_up.returncode == 0, backed_up.stderr
    summary = json.loads(backed_up.stdout)
    tables = summary["contents"]["tables"]
    assert tables["public.databases"] == 3 and tables["public.servers"] == 1
    assert tables["public.migration_sets"] >= 1
    assert summary["contents"]["key_ids"] == {"dev": 4}  # 3 targets, 1 server: encrypted
    assert summary["bytes"] == archive.stat().st_size > 0
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    sql = await plaintext_of(archive)
    assert "tf1:dev:" in sql  # the credentials as stored ...
    for target in own.targets:  # ... and never their plaintext
        assert target.password not in sql
    assert own.postgres.password not in sql
    # An existing file is not replaced by accident.
    again = await own.cli("backup", str(archive))
    assert again.returncode == 1 and "exists" in again.stderr

    before = await own.rows()
    await own.wipe()
    assert await own.rows() == {}
    restored = await own.cli("restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "restored the catalog from" in restored.stdout
    assert "4 under key id 'dev'" in restored.stdout
    assert "each key id decrypts: 'dev'" in restored.stdout
    assert (
        "verified: every table holds as many rows (and credentials) as the archive"
        in restored.stdout
    )
    after = await own.rows()
    assert after == {**before, "audit_events": before["audit_events"] + 1}  # the restore's record

    # The restored catalog drives a rollout: targets resolved, credentials decrypted.
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(own.settings, stop=stop, install_signal_handlers=False))
    params = FleetRunInput.model_validate(
        {
            "run_id": own.label,
            "set_name": own.set_name,
            "selector": FleetSelector(labels={"fleet": own.label}),
            "concurrency": 2,
        }
    )
    try:
        result = await temporal_client.execute_workflow(
            MigrateFleetWorkflow.run,
            params,
            id=f"migrate-fleet-{own.label}",
            task_queue=own.settings.temporal.task_queue,
        )
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=60)
    assert result.status is FleetStatus.COMPLETED
    assert (result.counts.succeeded, result.counts.failed) == (3, 0)
    for target in own.targets:
        assert await ledger_versions(target) == ["1", "2"]  # every version, exactly once


async def test_restore_refuses_a_dump_under_keys_it_does_not_have(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target(), server=True)
    archive = tmp_path / "catalog.dump"
    assert (await own.cli("backup", str(archive))).returncode == 0
    before = await own.rows()

    other = {
        "TENANTFLOW_CRYPTO__KEYS": json.dumps({"other": generate_key()}),
        "TENANTFLOW_CRYPTO__ACTIVE_KEY_ID": "other",
    }
    refused = await own.cli("restore", str(archive), "--force", **other)
    assert refused.returncode == 1
    assert "key id(s) 'dev', not among the configured keys ('other')" in refused.stderr
    # The same key id with other key material: the id alone does not pass.
    impostor = {"TENANTFLOW_CRYPTO__KEYS": json.dumps({"dev": generate_key()})}
    refused = await own.cli("restore", str(archive), "--force", **impostor)
    assert refused.returncode == 1
    assert "'dev' are configured but do not decrypt" in refused.stderr
    assert await own.rows() == before  # untouched

    # With the old key back beside a new active one, the archive is accepted.
    both = {
        "TENANTFLOW_CRYPTO__KEYS": json.dumps(
            {"dev": "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1pbi1wcm9kISE=", "new": generate_key()}
        ),
        "TENANTFLOW_CRYPTO__ACTIVE_KEY_ID": "new",
    }
    accepted = await own.cli("restore", str(archive), "--force", **both)
    assert accepted.returncode == 0, accepted.stderr


async def test_restore_into_a_catalog_with_data_needs_force(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target(), await make_target())
    archive = tmp_path / "catalog.dump"
    assert (await own.cli("backup", str(archive))).returncode == 0
    await own.register(await make_target())  # a third target after the backup
    before = await own.rows()

    refused = await own.cli("restore", str(archive))
    assert refused.returncode == 1
    assert "the catalog is not empty (" in refused.stderr
    assert "databases 3" in refused.stderr and "--force" in refused.stderr
    assert await own.rows() == before

    # A connected worker or gateway blocks it, forced or not.
    session = await asyncpg.connect(own.dsn)
    try:
        busy = await own.cli("restore", str(archive), "--force")
    finally:
        await session.close()
    assert busy.returncode == 1 and "other sessions are connected" in busy.stderr
    assert await own.rows() == before

    # A failure half-way (a view blocks dropping a table) rolls the whole restore back.
    await own.sql("CREATE VIEW blocker AS SELECT id FROM databases")
    failed = await own.cli("restore", str(archive), "--force")
    assert failed.returncode == 1
    assert "pg_restore failed and its transaction was rolled back" in failed.stderr
    assert await own.rows() == before
    await own.sql("DROP VIEW blocker")

    forced = await own.cli("restore", str(archive), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced the catalog's previous contents (" in forced.stdout
    assert "databases 3" in forced.stdout
    assert (await own.rows())["databases"] == 2  # the archive's two, the third is gone


async def test_a_file_that_is_no_dump_is_refused_clearly(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target())
    before = await own.rows()
    text = tmp_path / "notes.txt"
    text.write_text("not a backup\n")
    refused = await own.cli("restore", str(text), "--force")
    assert refused.returncode == 1
    assert "is not a pg_dump custom-format archive" in refused.stderr

    missing = await own.cli("restore", str(tmp_path / "nowhere.dump"))
    assert missing.returncode == 1 and "cannot be opened" in missing.stderr

    archive = tmp_path / "catalog.dump"
    assert (await own.cli("backup", str(archive))).returncode == 0
    truncated = tmp_path / "truncated.dump"
    data = archive.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    broken = await own.cli("restore", str(truncated), "--force")
    assert broken.returncode == 1
    assert "truncated.dump cannot be read in full (truncated or corrupt?)" in broken.stderr
    # Written by a newer pg_dump than the only pg_restore there is.
    old_tools = tmp_path / "old-bin"
    old_tools.mkdir()
    fake = old_tools / "pg_restore"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "pg_restore (PostgreSQL) 15.2"; exit 0; fi\n'
        'echo "pg_restore: error: unsupported version (1.16) in file header" >&2; exit 1\n'
    )
    fake.chmod(0o755)
    newer = await own.cli("restore", str(archive), "--force", "--pg-bin", str(old_tools))
    assert newer.returncode == 1
    assert "was written by a newer pg_dump than any pg_restore found" in newer.stderr
    assert await own.rows() == before


async def test_backup_and_restore_in_process(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target(), server=True)
    archive = tmp_path / "catalog.dump"
    backed_up = await backup_catalog(own.settings, archive)
    assert backed_up.contents.key_ids == {"dev": 2}
    assert backed_up.contents.data_rows()["public.databases"] == 1
    assert backed_up.server_version.startswith("18.")

    # A table the archive does not hold would survive a restore: refused, forced or not.
    await own.sql("CREATE TABLE stray (id int)")
    with pytest.raises(RestoreRefused, match=r"tables the archive does not hold \(public\.stray"):
        await restore_catalog(own.settings, archive, force=True)
    await own.sql("DROP TABLE stray")

    restored = await restore_catalog(own.settings, archive, force=True)
    assert restored.verified and restored.decrypted_key_ids == ["dev"]
    assert restored.contents.key_ids == {"dev": 2}
    assert restored.replaced["public.databases"] == 1
    assert restored.sha256 == backed_up.sha256


async def test_backup_refuses_what_is_no_catalog(own: OwnCatalog, tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match="no tenantflow catalog schema"):
        await backup_catalog(own.settings, tmp_path / "empty.dump")  # nothing applied yet
    with pytest.raises(BackupFailed, match="does not exist"):
        await backup_catalog(own.settings, tmp_path / "no" / "such.dump")
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []  # no partial file
    unreachable = f"postgresql://postgres:{own.postgres.password}@127.0.0.1:{free_port()}/x"
    settings = make_settings(
        own.postgres, "127.0.0.1:1", catalog={"dsn": unreachable, "connect_timeout_seconds": 2}
    )
    with pytest.raises(DependencyUnavailable) as caught:
        await backup_catalog(settings, tmp_path / "x.dump")
    assert own.postgres.password not in str(caught.value.details)
    assert caught.value.details["dsn"].startswith("postgresql://postgres:***@")


async def test_backup_names_what_to_install_without_client_tools(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target())
    empty = tmp_path / "bin"
    empty.mkdir()
    result = await own.cli("backup", str(tmp_path / "x.dump"), "--pg-bin", str(empty))
    assert result.returncode == 1
    assert "pg_dump was not found" in result.stderr
    assert "apt-get install postgresql-client-" in result.stderr
    assert "tenantflow[embedded]" in result.stderr
    assert not (tmp_path / "x.dump").exists()


def test_sizes_are_human_readable() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 3 * 1024**2, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]
    assert human_size(3 * 1024**4) == "3072.0 GiB"  # GiB is the largest unit


def test_contents_without_credentials_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    echo_contents(CatalogContents(tables={"public.audit_events": 2, "ops.notes": 1}))
    assert capsys.readouterr().out.splitlines() == [
        "  2 tables, 3 rows:",
        "    audit_events  2",
        "    ops.notes     1",
        "  credentials: none",
    ]


async def test_a_failing_pg_dump_is_reported_without_the_password(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target())
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 18.1"; exit 0; fi\n'
        'echo "pg_dump: error: server said: bad password $PGPASSWORD" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    destination = tmp_path / "out" / "x.dump"
    destination.parent.mkdir()
    with pytest.raises(PgToolFailed) as caught:
        await backup_catalog(own.settings, destination, pg_bin=tools)
    assert caught.value.message == "pg_dump failed: pg_dump: error: server said: bad password ***"
    assert caught.value.details["tool"] == str(fake)
    assert own.postgres.password not in str(caught.value.details)
    assert list(destination.parent.iterdir()) == []  # no partial archive left behind
